"""GLUE task files → examples: which columns each split has, read and checked row by row."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from ..errors import SmallBertError

NUM_LABELS = 2  # SST-2: 0 = negative, 1 = positive
SPLIT_COLUMNS = {"train": ("sentence", "label"), "dev": ("sentence", "label"), "test": ("index", "sentence")}


@dataclasses.dataclass
class Split:
    """One SST-2 split as read from its TSV.

    sentences: the raw sentences, N of them.
    labels: int32 [N] in {0, 1}, or None for test.tsv.
    index: int64 [N], test.tsv's `index` column (what GLUE's submission format echoes), or None.
    digest: SHA-1 of the file's bytes (part of the cache key).
    """

    name: str
    path: str
    sentences: list[str]
    labels: np.ndarray | None
    index: np.ndarray | None
    digest: str


def read_split(data_dir: str, name: str) -> Split:
    """Reads and checks `data_dir/<name>.tsv` ("train", "dev" or "test") in GLUE's SST-2 format.

    The header names the columns (train/dev: `sentence`, `label`; test: `index`, `sentence`); fields are split on
    tabs only (GLUE's files have no quoting). Blank lines are skipped. Raises SmallBertError naming the file and
    line for a missing file, a bad header, a row with the wrong number of fields, a label outside {0, 1}, a
    non-integer index or a file without rows.
    """
    path = os.path.join(data_dir, f"{name}.tsv")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise SmallBertError(f"{path}: SST-2 {name} split not found (--data_dir must hold GLUE's "
                             f"{name}.tsv)") from None
    except OSError as err:
        raise SmallBertError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SmallBertError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    # split("\n") rather than splitlines(): sentences may hold \x0b, \x1c or U+2028, which are not row ends.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    header = lines[0].split("\t") if lines else []
    required = SPLIT_COLUMNS[name]
    if any(column not in header for column in required):
        raise SmallBertError(f"{path}:1: header must name the columns {' and '.join(required)} "
                             f"(tab-separated), got {lines[0][:80]!r}")
    column = {c: header.index(c) for c in required}
    sentences, values = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SmallBertError(f"{path}:{lineno}: malformed row: expected {len(header)} tab-separated fields "
                                 f"({', '.join(header)}), got {len(fields)}")
        sentences.append(fields[column["sentence"]])
        key = "label" if "label" in column else "index"
        value = fields[column[key]].strip()
        if key == "label" and value not in ("0", "1"):
            raise SmallBertError(f"{path}:{lineno}: label {value!r} is not 0 or 1")
        if key == "index" and not value.isdigit():
            raise SmallBertError(f"{path}:{lineno}: index {value!r} is not a non-negative integer")
        values.append(int(value))
    if not sentences:
        raise SmallBertError(f"{path}: no examples after the header")
    is_test = "index" in column
    return Split(name=name, path=path, sentences=sentences,
                 labels=None if is_test else np.asarray(values, np.int32),
                 index=np.asarray(values, np.int64) if is_test else None,
                 digest=hashlib.sha1(raw).hexdigest())

