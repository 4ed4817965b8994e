"""Input text → documents (lists of sentences), streamed.

Two kinds of input:
  * Wikipedia dumps (`.xml`, `.xml.bz2`, or any file whose text starts with `<mediawiki`, such as the split
    dumps `...articles1.xml-p1p41242.bz2`): run through `wikiextractor` 3.1.0 as a subprocess that
    writes its JSON lines to our pipe (it parallelizes itself and keeps page order); redirects
    and empty articles are dropped, entities unescaped, its `formula_N` / `codice_N` placeholders
    and the empty brackets left by dropped templates removed, and each paragraph split into
    sentences with `sentencex` (Wikimedia's segmenter, ~300 languages, Rust-backed; chosen over
    pysbd, blingfire and syntok: on a hand-labelled sample of abbreviations, initials, decimals
    and quotes it made no boundary error and was the fastest, 25 MB/s; Chinese splits on
    。！？； and friends).
  * Anything else: Google's text format, one sentence per line and a blank line between
    documents (`.gz` / `.bz2` compressed files too). A file's end also ends its last document.
Text files are read in `Decoding.encoding` (UTF-8 by default; dumps are always UTF-8). Undecodable bytes are
replaced (U+FFFD, which the tokenizer drops), counted, and the first place noted for a warning; with
`errors="strict"` the first one is an error naming file and line.
"""
from __future__ import annotations

import bz2
import codecs
import functools
import glob
import gzip
import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import IO, Iterator

import sentencex

from smallbert.errors import SmallBertError

Document = list[str]  # sentences
WIKI_SUFFIXES = (".xml", ".xml.bz2")
_PLACEHOLDER = re.compile(r"\b(?:formula|codice)_\d+\b")  # wikiextractor's stand-ins for <math>, <code>
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")  # left where templates were dropped
_BRACKET_LEAD = re.compile(r"\(\s*[,;:]\s*")  # "(; born 1900)" -> "(born 1900)"
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass
class Decoding:
    """How text files are decoded (`errors`: "replace" or "strict"), and the first line that failed, as file:line."""

    encoding: str = "utf-8"
    errors: str = "replace"
    first_undecodable: str | None = None

    def validate(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise SmallBertError(f"--encoding={self.encoding}: unknown encoding") from None
        if self.errors not in ("replace", "strict"):
            raise SmallBertError(f"--encoding_errors={self.errors}: must be replace or strict")


def expand_inputs(patterns: str | list[str]) -> list[str]:
    """Comma-separated paths or globs → files, in the order given (each glob sorted).

    Raises SmallBertError naming a pattern that matches no file.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    files = []
    for pattern in (p.strip() for group in patterns for p in group.split(",")):
        if not pattern:
            continue
        pattern = os.path.abspath(os.path.expanduser(pattern))  # messages and metadata name the real files
        matches = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
        if not matches:
            raise SmallBertError(f"--input_file: {pattern}: no such input file")
        files.extend(matches)
    if not files:
        raise SmallBertError("--input_file: no input given")
    return files


@functools.lru_cache(maxsize=4096)
def is_wiki_dump(path: str) -> bool:
    """Whether `path` is a MediaWiki XML dump: by its name (`.xml`, `.xml.bz2`), else by its (decompressed) text
    starting with `<mediawiki`. The content check catches Wikimedia's split dumps, named like
    `enwiki-latest-pages-articles1.xml-p1p41242.bz2`, which would otherwise be read as text, XML and all."""
    if path.endswith(WIKI_SUFFIXES):
        return True
    try:
        with open(path, "rb") as file, _decompressed(path, file) as f:
            head = f.read(1024)
    except (OSError, EOFError):  # unreadable or not really compressed: the text reader reports it
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<mediawiki")


def split_sentences(paragraph: str, language: str = "en") -> list[str]:
    """The sentences of one paragraph, stripped, empty ones dropped."""
    return [s.strip() for s in sentencex.segment(language, paragraph) if s.strip()]


def clean_wiki_text(text: str) -> list[str]:
    """wikiextractor's article text → non-empty paragraphs with its leftovers removed."""
    text = _PLACEHOLDER.sub("", html.unescape(text))
    text = _BRACKET_LEAD.sub("(", _EMPTY_BRACKETS.sub("", text))
    paragraphs = (_SPACES.sub(" ", p).strip() for p in text.split("\n"))
    return [p for p in paragraphs if p]


def _decompressed(path: str, file: IO[bytes]) -> IO[bytes]:
    if path.endswith(".bz2"):
        return bz2.open(file, "rb")
    if path.endswith(".gz"):
        return gzip.open(file, "rb")
    return file


def read_text_documents(path: str, counts: Counter, decoding: Decoding | None = None) -> Iterator[Document]:
    """Documents of a Google-format text file. Counts `undecodable_lines` in `counts`, and
    `input_bytes_read` (of the file as stored, for progress) at each document.

    Raises SmallBertError naming file and line at an undecodable line if `decoding.errors` is "strict".
    """
    decoding = decoding or Decoding()
    document: Document = []
    done = 0
    with open(path, "rb") as file, _decompressed(path, file) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode(decoding.encoding)
            except UnicodeDecodeError as err:
                if decoding.errors == "strict":
                    raise SmallBertError(f"{path}:{number}: not valid {decoding.encoding} ({err.reason} at byte "
                                         f"{err.start} of the line); give the right --encoding, or "
                                         "--encoding_errors replace to drop such bytes") from None
                counts["undecodable_lines"] += 1
                decoding.first_undecodable = decoding.first_undecodable or f"{path}:{number}"
                line = raw.decode(decoding.encoding, "replace")
            line = line.strip()
            if line:
                document.append(line)
            elif document:
                counts["input_bytes_read"] += file.tell() - done
                done = file.tell()
                yield document
                document = []
        counts["input_bytes_read"] += file.tell() - done
    if document:
        yield document


def read_wiki_documents(path: str, counts: Counter, language: str = "en", processes: int = 1) -> Iterator[Document]:
    """Articles of a Wikipedia dump, as sentences; `wikiextractor` runs with `processes` workers.

    Counts `empty_articles` (no text left after extraction) in `counts`. Raises SmallBertError
    with wikiextractor's last message if it fails.
    """
    command = [sys.executable, "-m", "wikiextractor.WikiExtractor", path, "--json", "--output", "-",
               "--discard_empty", "--quiet", "--processes", str(max(1, processes))]
    with tempfile.TemporaryFile() as stderr:
        # Its own session, so that stopping early ends wikiextractor's worker processes too.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        finished = False
        try:
            for line in proc.stdout:
                article = json.loads(line)
                sentences = [s for p in clean_wiki_text(article["text"]) for s in split_sentences(p, language)]
                if sentences:
                    yield sentences
                else:
                    counts["empty_articles"] += 1
            finished = True
        finally:
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.stdout.close()
            proc.wait()
        if proc.returncode != 0:
            stderr.seek(0)
            lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise SmallBertError(f"{path}: wikiextractor failed: {lines[-1] if lines else proc.returncode}")


def read_documents(files: list[str], counts: Counter, language: str = "en", processes: int = 1,
                   decoding: Decoding | None = None) -> Iterator[Document]:
    """Documents of all input files, in order (text files decoded as `decoding` says). Counts `input_files` and
    `empty_input_files`."""
    for path in files:
        counts["input_files"] += 1
        before = counts["documents_read"]
        reader = (read_wiki_documents(path, counts, language, processes) if is_wiki_dump(path)
                  else read_text_documents(path, counts, decoding))
        for document in reader:
            counts["documents_read"] += 1
            yield document
        if counts["documents_read"] == before:
            counts["empty_input_files"] += 1
