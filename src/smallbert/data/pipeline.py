"""The streaming pipeline: input files → documents → chunks → instances → MindRecord shards.

The document stream (see `extract.py`) is cut into chunks of `documents_per_chunk` documents,
fewer if they reach `CHUNK_TEXT_BUDGET / dupe_factor` characters (a longer document is cut at a
sentence boundary). Worker processes turn each chunk into instances with Google's algorithm
(`instances.py`) and the chunk's own `random.Random(random_seed + (chunk << 32))`, and write them
as the chunk's shard `part-<chunk>.mindrecord` in a temporary directory; this process renames the
shards into the output in chunk order. A shard depends on nothing but its chunk's documents, the
flags and its index: the output is byte-identical for any `--processes`, and `--num_shards K
--shard_index I` (chunks with index % K == I) splits the work across machines into the same files.
At most processes + 1 chunks are in flight, so memory does not grow with the corpus. No process
imports `mindspore`: the writer loads only its C++ MindRecord module (`records.write_mindrecord`).

Where this differs from Google's `create_pretraining_data.py`, and why:
  * Google loads the whole corpus, shuffles all documents, draws random next sentences from any
    document and shuffles all instances: memory grows with the corpus and it runs on one core.
    Here the document shuffle, the random-next-sentence pool and the instance shuffle span one
    chunk (500 documents by default). The trainer's reader shuffles all rows every epoch.
    With a single chunk (a corpus of at most `documents_per_chunk` documents) and chunk 0's seed
    being `random_seed`, the instances are exactly Google's.
  * A file's end ends its last document (Google lets it run on into the next file).
  * Output is MindRecord shards plus metadata JSON, not TFRecords.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import random
import re
import shutil
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Iterable, Iterator

import numpy as np

from smallbert.data.extract import Decoding, Document, expand_inputs, is_wiki_dump, read_documents
from smallbert.data.instances import WORD_CONTINUATION, InstanceConfig, TokenIds, create_instance_arrays
from smallbert.data.records import (METADATA_FORMAT, file_facts, metadata_name, sha256_file, summarize,
                                    write_mindrecord)
from smallbert.errors import SmallBertError, output_directory
from smallbert.fileio import atomic_open, write_json
from smallbert.tokenization import CJK_RANGES, FullTokenizer, load_wordpiece_vocab

# A chunk's instances (and their memory) grow with its text times --dupe_factor: chunks hold at
# most this many characters divided by --dupe_factor (~30,000 instances of 128 tokens).
CHUNK_TEXT_BUDGET = 16 << 20
logger = logging.getLogger("smallbert")
_CJK_RUN = re.compile("([" + "".join(f"\\U{a:08X}-\\U{b:08X}" for a, b in CJK_RANGES) + "]+)")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run depends on (flags of tools/create_pretraining_data.py)."""

    input_files: tuple[str, ...]
    output_dir: str
    vocab_file: str
    do_lower_case: bool = True
    instances: InstanceConfig = InstanceConfig()
    random_seed: int = 12345
    processes: int = 1
    documents_per_chunk: int = 500
    num_shards: int = 1
    shard_index: int = 0
    language: str = "en"
    chinese_whole_word_mask: bool = False  # group Chinese characters into words (rjieba) for masking
    extract_only: bool = False
    overwrite: bool = False  # replace an earlier run's output (of this --shard_index) in output_dir
    encoding: str = "utf-8"  # of text inputs (dumps are UTF-8)
    encoding_errors: str = "replace"  # or "strict": an undecodable line is an error


def chunk_documents(documents: Iterable[Document], documents_per_chunk: int,
                    max_chars: int) -> Iterator[list[Document]]:
    """Groups documents into chunks of `documents_per_chunk`, or fewer reaching `max_chars`
    characters; a document longer than that is cut at sentence boundaries."""
    chunk: list[Document] = []
    chars = 0
    for document in documents:
        piece: Document = []
        for sentence in document:
            piece.append(sentence)
            chars += len(sentence)
            if chars >= max_chars:
                chunk.append(piece)
                yield chunk
                chunk, piece, chars = [], [], 0
        if piece:
            chunk.append(piece)
        if len(chunk) >= documents_per_chunk:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def shard_name(chunk_index: int) -> str:
    return f"part-{chunk_index:06d}.mindrecord"


class _Worker:
    """Per-process state: the tokenizer and vocab facts, built once."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.tokenizer = FullTokenizer(config.vocab_file, config.do_lower_case)
        self.ids = TokenIds.from_vocab(self.tokenizer.vocab, config.vocab_file)

    def process(self, chunk_index: int, documents: list[Document]) -> tuple[dict | None, Counter]:
        """Tokenizes one chunk, builds its instances and writes them as the chunk's shard, staged under the
        temporary directory (`_stage`) for this process to publish in chunk order.

        Returns (the staged shard's {"rows", "checks"}, or None if the chunk made no instance; counts).
        """
        config, counts = self.config.instances, Counter()
        sentences = [s for d in documents for s in d]
        encoded = iter(self._encode_chinese_words(sentences) if self.config.chinese_whole_word_mask
                       else self.tokenizer.encode_batch(sentences))
        tokenized = []
        for document in documents:
            document_ids = [ids for ids in (next(encoded) for _ in document) if ids]  # Google drops empty lines
            counts["sentences"] += len(document_ids)
            counts["documents" if document_ids else "empty_documents"] += 1
            counts["single_sentence_documents"] += len(document_ids) == 1
            if document_ids:
                tokenized.append(document_ids)
        rng = random.Random(self.config.random_seed + (chunk_index << 32))
        arrays = create_instance_arrays(tokenized, config, self.ids, rng)
        if not len(arrays["input_ids"]):
            return None, counts
        counts.update(_instance_counts(arrays, self.ids.mask))
        return _stage(self.config, chunk_index, arrays), counts

    def _encode_chinese_words(self, sentences: list[str]) -> list[list[int]]:
        """`encode_batch`, with the 2nd and later characters of each multi-character Chinese word
        (segmented by jieba) marked as word continuations (`WORD_CONTINUATION`).

        Google's tokenizer makes every CJK ideograph a word of its own, so cutting the text at
        CJK runs changes no token; each run is segmented into words, each character one token.
        """
        import rjieba

        encoded = []
        for sentence in sentences:
            pieces = _CJK_RUN.split(sentence)  # odd indices: CJK runs
            ids_per_piece = self.tokenizer.encode_batch(pieces)
            ids: list[int] = []
            for k, (piece, piece_ids) in enumerate(zip(pieces, ids_per_piece)):
                if k % 2 == 0:
                    ids.extend(piece_ids)
                    continue
                position = 0
                for word in rjieba.cut(piece):
                    word_ids = piece_ids[position:position + len(word)]
                    ids.extend([word_ids[0], *(i + WORD_CONTINUATION for i in word_ids[1:])])
                    position += len(word)
            encoded.append(ids)
        return encoded


def _stage(config: PipelineConfig, chunk_index: int, arrays: dict[str, np.ndarray]) -> dict:
    """Writes a chunk's shard and index under the temporary directory (in the worker that made it: the writes
    run in parallel, and the arrays never cross processes).

    Returns {"rows": instances, "checks": `file_facts` of the shard and its index by file name}, for the metadata.
    """
    name = shard_name(chunk_index)
    work_dir = os.path.join(_tmp_dir(config), name)
    os.makedirs(work_dir, exist_ok=True)
    write_mindrecord(os.path.join(work_dir, name), arrays)
    return {"rows": len(arrays["input_ids"]),
            "checks": {name + suffix: file_facts(os.path.join(work_dir, name + suffix)) for suffix in ("", ".db")}}


def _publish(config: PipelineConfig, chunk_index: int) -> str:
    """Renames a staged shard into the output (its index first, the shard itself last: both complete); returns
    its name."""
    name = shard_name(chunk_index)
    work_dir = os.path.join(_tmp_dir(config), name)
    for suffix in (".db", ""):
        os.replace(os.path.join(work_dir, name + suffix), os.path.join(config.output_dir, name + suffix))
    os.rmdir(work_dir)
    return name


def _instance_counts(arrays: dict[str, np.ndarray], mask_id: int) -> dict[str, int]:
    """Counts for the statistics: instances, real tokens, masked tokens by replacement kind, NSP."""
    weights = arrays["masked_lm_weights"] > 0
    at_positions = np.take_along_axis(arrays["input_ids"], arrays["masked_lm_positions"], axis=1)
    as_mask = (at_positions == mask_id) & weights
    kept = (at_positions == arrays["masked_lm_ids"]) & weights & ~as_mask
    return {"instances": len(weights), "tokens": int(arrays["input_mask"].sum()),
            "masked_tokens": int(weights.sum()), "masked_as_mask": int(as_mask.sum()),
            "masked_as_kept": int(kept.sum()), "masked_as_random": int((weights & ~as_mask & ~kept).sum()),
            "random_next": int(arrays["next_sentence_labels"].sum())}


_WORKER: _Worker | None = None
_SHARD_FILE = re.compile(r"part-(\d{6})\.mindrecord(\.db)?")
_TMP_SUFFIX = re.compile(r"\.tmp(-\d+)?$")  # fileio.atomic_open's, and older runs' ".tmp"


def _init_worker(config: PipelineConfig) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER = _Worker(config)


def _process_in_worker(chunk_index: int, documents: list[Document]):
    return _WORKER.process(chunk_index, documents)


def _tmp_dir(config: PipelineConfig) -> str:
    return os.path.join(config.output_dir, f".incomplete-{config.shard_index:05d}")


def _corpus_name(config: PipelineConfig) -> str:
    """The text file an `extract_only` run writes."""
    if config.num_shards == 1:
        return "corpus.txt"
    return f"corpus-{config.shard_index:05d}-of-{config.num_shards:05d}.txt"


def _is_ours(config: PipelineConfig, name: str) -> bool:
    """Whether `name` in the output dir is (or is a temporary of) what this run, or an earlier one of the same
    --shard_index, writes."""
    shard = _SHARD_FILE.fullmatch(name)
    return (_TMP_SUFFIX.sub("", name) in (metadata_name(config.num_shards, config.shard_index), _corpus_name(config))
            or name == os.path.basename(_tmp_dir(config))
            or (shard is not None and int(shard[1]) % config.num_shards == config.shard_index))


def _check_output_dir(config: PipelineConfig) -> None:
    """The output dir must be empty, except for other shards' files when the work is split, and for an earlier
    run's output with `overwrite`."""
    out = config.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise SmallBertError(f"--output_dir={out}: exists and is not a directory")
    if not os.path.isdir(out):
        return
    for name in sorted(os.listdir(out)):
        ours = _is_ours(config, name)
        if ours and config.overwrite:
            continue
        hint = "; use a new directory" + (", or --overwrite to replace that run's output" if ours else "")
        if config.num_shards == 1:
            raise SmallBertError(f"--output_dir={out}: not empty (found {name}){hint}")
        if ours:
            raise SmallBertError(f"--output_dir={out}: already holds {name} of --shard_index "
                                 f"{config.shard_index}{hint}")


def _remove_ours(config: PipelineConfig) -> None:
    """Deletes what `_is_ours` in the output dir: an earlier run's output (`overwrite`), or an interrupted
    run's partial output."""
    for name in os.listdir(config.output_dir):
        if _is_ours(config, name):
            path = os.path.join(config.output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _validate(config: PipelineConfig) -> tuple[list[str], dict[str, int]]:
    """Checks the flags, inputs, vocab and output dir; returns (the input files, the vocab). The tokenizer
    itself is built where it runs, in the workers."""
    config.instances.validate()
    if config.processes < 1:
        raise SmallBertError(f"--processes={config.processes}: must be at least 1")
    if config.documents_per_chunk < 1:
        raise SmallBertError(f"--documents_per_chunk={config.documents_per_chunk}: must be at least 1")
    if config.chinese_whole_word_mask:
        if config.instances.dynamic_masking or not config.instances.do_whole_word_mask:
            raise SmallBertError("--chinese_whole_word_mask: needs --do_whole_word_mask and static masking "
                                 "(the word boundaries are not stored for --dynamic_masking)")
        if importlib.util.find_spec("rjieba") is None:
            raise SmallBertError("--chinese_whole_word_mask: needs rjieba (pip install 'smallbert[chinese]')")
    if not 0 <= config.shard_index < config.num_shards:
        raise SmallBertError(f"--shard_index={config.shard_index}: must be in [0, --num_shards={config.num_shards})")
    Decoding(config.encoding, config.encoding_errors).validate()
    files = expand_inputs(list(config.input_files))
    vocab = load_wordpiece_vocab(config.vocab_file)
    TokenIds.from_vocab(vocab, config.vocab_file)
    _check_output_dir(config)
    return files, vocab


def _bounded_map(config: PipelineConfig, chunks: Iterator[tuple[int, list[Document]]]):
    """Yields (chunk index, documents, `_Worker.process` result) in chunk order, with at most
    processes + 1 chunks in flight (the staged shards wait for this process to publish them).

    The workers start with SIGINT ignored (inherited), so Ctrl-C interrupts this process alone, which
    terminates them when the generator is closed or fails, without waiting for their chunks.
    """
    if config.processes == 1:
        worker = _Worker(config)
        for index, documents in chunks:
            yield index, len(documents), worker.process(index, documents)
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = get_context("spawn").Pool(config.processes, initializer=_init_worker, initargs=(config,))
    finally:
        signal.signal(signal.SIGINT, handler)
    with pool:  # leaving it terminates the workers
        pending: deque = deque()
        for index, documents in chunks:
            pending.append((index, len(documents), pool.apply_async(_process_in_worker, (index, documents))))
            if len(pending) > config.processes:
                index, size, result = pending.popleft()
                yield index, size, result.get()
        while pending:
            index, size, result = pending.popleft()
            yield index, size, result.get()


class _Progress:
    """A progress bar: over input bytes with an ETA when all inputs are text files (a dump's size
    says little about its articles), else over documents; documents/s and instances as postfix."""

    def __init__(self, config: PipelineConfig, files: list[str], reading: Counter):
        from tqdm import tqdm

        by_bytes = not any(is_wiki_dump(f) for f in files)
        self.reading, self.by_bytes, self.documents, self.start = reading, by_bytes, 0, time.time()
        self.bar = tqdm(desc="extract" if config.extract_only else "create_pretraining_data",
                        total=sum(os.path.getsize(f) for f in files) if by_bytes else None,
                        unit="B" if by_bytes else " docs", unit_scale=by_bytes, dynamic_ncols=True)

    def update(self, documents: int, instances: int | None = None) -> None:
        self.documents += documents
        self.bar.update(self.reading["input_bytes_read"] - self.bar.n if self.by_bytes else documents)
        postfix = {"docs/s": f"{self.documents / max(time.time() - self.start, 1e-9):.0f}"}
        if instances is not None:
            postfix["instances"] = instances
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _extract_only(config: PipelineConfig, chunks: Iterator[tuple[int, list[Document]]], progress: _Progress) -> str:
    """Writes the documents in Google's text format; returns the file written."""
    path = os.path.join(config.output_dir, _corpus_name(config))
    with atomic_open(path) as f:
        for _, documents in chunks:
            for document in documents:
                f.write("\n".join(document) + "\n\n")
            progress.update(len(documents))
    return path


def create_pretraining_data(config: PipelineConfig) -> dict[str, Any]:
    """Runs the pipeline; returns the metadata written beside the shards (or, with
    `extract_only`, {"corpus": path, "counts": ...}).

    Everything is checked before anything is written. A failed or interrupted run removes its partial output
    (and the output dir, if it made it and it is left empty); Ctrl-C then raises KeyboardInterrupt saying so.
    """
    files, vocab = _validate(config)
    if config.overwrite and os.path.isdir(config.output_dir):
        _remove_ours(config)
    with output_directory(config.output_dir, clean=lambda: _remove_ours(config)):
        try:
            return _run(config, files, vocab)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"removed the partial output in {config.output_dir}") from None


def _run(config: PipelineConfig, files: list[str], vocab: dict[str, int]) -> dict[str, Any]:
    reading: Counter = Counter()  # the same for every --shard_index: all read the whole input
    counts: Counter = Counter()  # of this run's chunks
    decoding = Decoding(config.encoding, config.encoding_errors)
    documents = read_documents(files, reading, config.language, config.processes, decoding)
    max_chars = CHUNK_TEXT_BUDGET // config.instances.dupe_factor
    chunks = ((i, c) for i, c in enumerate(chunk_documents(documents, config.documents_per_chunk, max_chars))
              if i % config.num_shards == config.shard_index)
    progress = _Progress(config, files, reading)
    results = _bounded_map(config, chunks)
    try:
        if config.extract_only:
            return {"corpus": _extract_only(config, chunks, progress), "input_counts": dict(reading)}
        shards, rows, checks = [], [], {}
        for index, num_documents, (staged, chunk_counts) in results:
            counts.update(chunk_counts)
            counts["chunks"] += 1
            if staged is not None:
                shards.append(_publish(config, index))
                rows.append(staged["rows"])
                checks.update(staged["checks"])
            progress.update(num_documents, counts["instances"])
    finally:
        results.close()  # ends the workers, then wikiextractor, now rather than when the traceback is freed
        documents.close()
        progress.close()
    shutil.rmtree(_tmp_dir(config), ignore_errors=True)
    if reading["undecodable_lines"]:
        logger.warning("%d input line(s) were not valid %s; their bad bytes were dropped (first: %s). "
                       "Give the right --encoding, or --encoding_errors strict to stop at such lines",
                       reading["undecodable_lines"], config.encoding, decoding.first_undecodable)
    if not counts["instances"]:
        raise SmallBertError(f"--input_file: no instances could be made from {len(files)} file(s) "
                             f"({counts['documents']} non-empty documents)")
    metadata = _metadata(config, files, vocab, shards, rows, checks, counts, reading)
    write_json(os.path.join(config.output_dir, metadata_name(config.num_shards, config.shard_index)), metadata,
               sort_keys=True)
    return metadata


def _metadata(config: PipelineConfig, files: list[str], vocab: dict[str, int], shards: list[str],
              rows: list[int], checks: dict[str, dict], counts: Counter, reading: Counter) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "format": METADATA_FORMAT,
        **dataclasses.asdict(config.instances),
        "do_lower_case": config.do_lower_case, "random_seed": config.random_seed,
        "documents_per_chunk": config.documents_per_chunk, "language": config.language,
        "chinese_whole_word_mask": config.chinese_whole_word_mask,
        "encoding": config.encoding, "encoding_errors": config.encoding_errors,
        "num_shards": config.num_shards, "shard_index": config.shard_index,
        "input_files": [os.path.abspath(f) for f in files],
        "vocab_file": os.path.abspath(config.vocab_file), "vocab_sha256": sha256_file(config.vocab_file),
        "vocab_size": len(vocab), "max_token_id": max(vocab.values()),
        "special_token_ids": {t: vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab},
        "input_counts": dict(sorted(reading.items())),
        "files": shards, "rows_per_file": rows, "file_checks": checks, "counts": dict(sorted(counts.items())),
        "statistics": summarize(counts),
    }
    if config.instances.dynamic_masking and config.instances.do_whole_word_mask:
        metadata["continuation_token_ids"] = sorted(i for t, i in vocab.items() if t.startswith("##"))
    return metadata
