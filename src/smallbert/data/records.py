"""Pretraining records: MindRecord shards + metadata JSON on disk, and the `mindspore.dataset` reader.

On disk (one directory):
  part-NNNNNN.mindrecord (+ .db index)  one per document window ("chunk"), Google's features:
      input_ids, input_mask, segment_ids    int32 [max_seq_length]
      masked_lm_positions, masked_lm_ids    int32 [max_predictions_per_seq]
      masked_lm_weights                     float32 [max_predictions_per_seq]
      next_sentence_labels                  int32 [1] (1 = B is a random sentence)
  metadata.json (or metadata-I-of-K.json per `--shard_index`): flags, vocab facts, statistics.

The reader yields one epoch in an order that is a pure function of (seed, epoch), split across
data-parallel ranks, and can start `skip_batches` in without reading the skipped rows; with
`dynamic_masking` shards it masks each row as a pure function of (seed, epoch, row index).
Google-format TFRecord files are read too (without TensorFlow), in a (seed, epoch) file order.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import mmap
import os
import random
import sqlite3
import stat
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np

from smallbert import native
from smallbert.data.instances import TokenIds, create_masked_lm_predictions
from smallbert.errors import SmallBertError

COLUMNS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
           "masked_lm_weights", "next_sentence_labels")
METADATA_FORMAT = "smallbert-pretraining-data/1"
SHARD_PATTERN = "part-*.mindrecord"
VERIFY_MODES = ("full", "fast", "off")

logger = logging.getLogger("smallbert")


def schema(max_seq_length: int, max_predictions_per_seq: int) -> dict[str, dict]:
    """The MindRecord schema of Google's features."""
    seq, pred = [max_seq_length], [max_predictions_per_seq]
    return {"input_ids": {"type": "int32", "shape": seq}, "input_mask": {"type": "int32", "shape": seq},
            "segment_ids": {"type": "int32", "shape": seq},
            "masked_lm_positions": {"type": "int32", "shape": pred},
            "masked_lm_ids": {"type": "int32", "shape": pred},
            "masked_lm_weights": {"type": "float32", "shape": pred},
            "next_sentence_labels": {"type": "int32", "shape": [1]}}


def _mindrecord_module():
    """MindSpore's C++ MindRecord bindings (`mindspore._c_mindrecord`), without importing `mindspore`.

    The package's `__init__` costs ~1.6 s of CPU per process (graph compiler, ops, nn); the writer needs none of
    it. The extension module is loaded from the package directory under its own name, so a later
    `import mindspore` finds and reuses it instead of loading it twice.
    """
    name = "mindspore._c_mindrecord"
    if name not in sys.modules:
        package = importlib.util.find_spec("mindspore")  # locates the package without running its __init__
        if package is None or not package.submodule_search_locations:
            raise SmallBertError("writing MindRecord needs mindspore (pip install mindspore)")
        spec = importlib.machinery.PathFinder.find_spec("_c_mindrecord", package.submodule_search_locations)
        if spec is None:
            raise SmallBertError(f"mindspore at {package.origin} has no _c_mindrecord extension")
        spec.name = name
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


HEADER_SIZE = 1 << 20  # FileWriter's defaults (16 MB header, 32 MB pages) make even tiny shards 48 MB
PAGE_SIZE = 8 << 20
_RAW_ROW = struct.pack("<Q", 5) + b"\x81\xa2id\x00"  # a row's raw record: msgpack {"id": 0}, MindSpore's stand-in
_ROWS_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records.cc")


def write_mindrecord(path: str, arrays: dict[str, np.ndarray], page_size: int = PAGE_SIZE) -> None:
    """Writes `arrays` (the COLUMNS, one row per instance) as one single-shard MindRecord file plus its `.db`
    index. The shard is byte-identical to what `mindspore.mindrecord.FileWriter` writes with one `write_raw_data`
    call, and the index has the same tables and rows (both tested).

    The pages are written here (`_write_pages`), the rows packed and compressed by `records.cc`: MindSpore's
    writer costs ~14 us a row, and importing FileWriter imports all of MindSpore. Without a C++ compiler, or
    for a shard whose raw records overflow one page, MindSpore's C++ writer is called directly instead.
    """
    n = len(arrays["input_ids"])
    fields = sorted(COLUMNS)  # MindRecord's blob-field order: its schema is a sorted map
    columns = [np.ascontiguousarray(arrays[field].reshape(n, -1)) for field in fields]
    lib = _rows_library()
    if lib is None or n == 0 or n * len(_RAW_ROW) > page_size:
        _write_with_shard_writer(path, columns, fields, arrays, page_size)
    else:
        _write_pages(path, columns, arrays, page_size, lib)
    write_index(path)
    for written in (path, path + ".db"):
        os.chmod(written, stat.S_IRUSR | stat.S_IWUSR)  # as FileWriter leaves them


@functools.lru_cache(maxsize=None)
def _rows_library() -> ctypes.CDLL | None:
    """records.cc, built on first call; None if switched off (SMALLBERT_NATIVE_DATA=0) or it can't be built."""
    lib = native.load_data_library(_ROWS_SOURCE, "native MindRecord writer",
                                   "writing shards with MindSpore's writer (slower)")
    if lib is None:
        return None
    p = ctypes.c_void_p
    lib.sb_mindrecord_rows.restype = ctypes.c_int64
    lib.sb_mindrecord_rows.argtypes = [ctypes.c_int64, ctypes.c_int32, p, p, p, p, p]
    return lib


def _header_json(path: str, arrays: dict[str, np.ndarray], pages: list[dict], page_size: int,
                 compression_size: int) -> bytes:
    """The shard header as MindSpore serializes it: nlohmann's sorted, compact JSON, with `compression_size`
    inserted after `page_size`."""
    def dump(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    content = schema(arrays["input_ids"].shape[1], arrays["masked_lm_ids"].shape[1])
    parts = {"header_size": HEADER_SIZE, "index_fields": None, "page": pages, "page_size": page_size,
             "compression_size": compression_size,
             "schema": [{"blob_fields": sorted(content), "desc": "bert_pretraining", "schema": content}],
             "shard_addresses": [os.path.basename(path)], "shard_id": 0, "statistics": None, "version": "3.0"}
    return ("{" + ",".join(f"{dump(key)}:{dump(value)}" for key, value in parts.items()) + "}").encode()


def _write_pages(path: str, columns: list[np.ndarray], arrays: dict[str, np.ndarray], page_size: int,
                 lib: ctypes.CDLL) -> None:
    """The shard as MindSpore's ShardWriter lays out one write of all rows: the header (8-byte little-endian
    length, JSON, zeros up to HEADER_SIZE); blob pages 0..k-1, each holding the next rows that fit in page_size;
    then raw page k with every row's raw record. Page i starts at HEADER_SIZE + i * page_size; the last page ends
    the file."""
    if any(c.dtype not in (np.int32, np.float32) for c in columns):
        raise SmallBertError(f"{path}: the MindRecord writer takes int32 and float32 columns only")
    n = len(columns[0])
    widths = np.array([c.shape[1] for c in columns], np.int64)
    is_int32 = np.array([c.dtype == np.int32 for c in columns], np.int32)
    pointers = (ctypes.c_void_p * len(columns))(*(c.ctypes.data for c in columns))
    bound = int(8 + sum(8 + (4 + (w + 3) // 4 if i else 0) + 4 * w for w, i in zip(widths, is_int32)))
    buffer = np.empty(bound * n, np.uint8)
    row_ends = np.empty(n, np.int64)
    saved = lib.sb_mindrecord_rows(n, len(columns), pointers, widths.ctypes.data, is_int32.ctypes.data,
                                   buffer.ctypes.data, row_ends.ctypes.data)
    # ShardWriter's row groups: a blob page takes the next rows while they fit
    starts, used = [0], 0
    for row, size in enumerate(np.diff(row_ends, prepend=0).tolist()):
        if row and used + size > page_size:
            starts.append(row)
            used = 0
        used += size
    starts.append(n)
    pages, offsets = [], np.concatenate([[0], row_ends])
    for page_id, (first, last) in enumerate(zip(starts, starts[1:])):
        pages.append({"end_row_id": last, "page_id": page_id, "page_size": int(offsets[last] - offsets[first]),
                      "page_type": "BLOB_DATA", "page_type_id": page_id, "row_group_ids": [{"id": 0, "offset": 0}],
                      "shard_id": 0, "start_row_id": first})
    blob_pages = len(pages)
    pages.append({"end_row_id": 0, "page_id": blob_pages, "page_size": n * len(_RAW_ROW), "page_type": "RAW_DATA",
                  "page_type_id": 0, "row_group_ids": [{"id": page, "offset": first * len(_RAW_ROW)}
                                                       for page, first in enumerate(starts[:-1])],
                  "shard_id": 0, "start_row_id": 0})
    header = _header_json(path, arrays, pages, page_size, int(saved))
    if 8 + len(header) > HEADER_SIZE:
        raise SmallBertError(f"{path}: MindRecord header of {len(header)} bytes exceeds {HEADER_SIZE}")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for page in pages[:blob_pages]:
            f.seek(HEADER_SIZE + page_size * page["page_id"])  # the gaps read as zeros, as MindSpore pads them
            f.write(memoryview(buffer)[offsets[page["start_row_id"]]:offsets[page["end_row_id"]]])
        f.seek(HEADER_SIZE + page_size * blob_pages)
        f.write(_RAW_ROW * n)


def _write_with_shard_writer(path: str, columns: list[np.ndarray], fields: list[str], arrays: dict[str, np.ndarray],
                             page_size: int) -> None:
    """The same shard through MindSpore's C++ `ShardWriter`, making the calls FileWriter makes (its Python side
    re-reads the schema for every row); rows are packed with numpy into FileWriter's uncompressed blob layout."""
    mr = _mindrecord_module()

    def check(status, what: str) -> None:
        if status != mr.MSRStatus.SUCCESS:
            raise SmallBertError(f"{path}: MindRecord {what} failed")

    header = mr.ShardHeader()
    content = schema(arrays["input_ids"].shape[1], arrays["masked_lm_ids"].shape[1])
    if header.add_schema(mr.Schema.build("bert_pretraining", content)) == -1:
        raise SmallBertError(f"{path}: MindRecord schema rejected")
    writer = mr.ShardWriter()
    check(writer.set_header_size(HEADER_SIZE), "set_header_size")
    check(writer.set_page_size(page_size), "set_page_size")
    check(writer.open([path], False, True), "open")  # (paths, append, overwrite)
    check(writer.set_shard_header(header), "set_shard_header")
    if header.get_meta()[0].get_schema_content()["blob_fields"] != fields:
        raise SmallBertError(f"{path}: MindRecord's blob fields are not {fields}")
    n = len(columns[0])
    if n:
        parts = []
        for column in columns:
            parts.append(np.full((n, 1), column.shape[1] * column.itemsize, ">u8").view(np.uint8))
            parts.append(column.view(np.uint8))
        blobs = [row.tobytes() for row in np.concatenate(parts, axis=1)]
        check(writer.write_raw_data({}, blobs, False, False), "write_raw_data")
    check(writer.commit(), "commit")


_INDEX_TABLE = ("CREATE TABLE INDEXES(  ROW_ID               INT  NOT NULL, PAGE_ID_RAW          INT  NOT NULL"
                ", PAGE_OFFSET_RAW      INT  NOT NULL, PAGE_OFFSET_RAW_END  INT  NOT NULL"
                ", ROW_GROUP_ID         INT  NOT NULL, PAGE_ID_BLOB         INT  NOT NULL"
                ", PAGE_OFFSET_BLOB     INT  NOT NULL, PAGE_OFFSET_BLOB_END INT  NOT NULL, PRIMARY KEY(ROW_ID));")


def write_index(path: str) -> None:
    """Writes `<path>.db`, the SQLite index of the single-schema MindRecord shard `path` (no index fields), with
    the tables, column order and rows of MindSpore's `ShardIndexGenerator` (tested against it).

    MindSpore's generator seeks and reads the file twice and parses a msgpack record per row, ~10 us a row;
    here the row offsets are walked in the mapped file and inserted with one `executemany`. The shard's
    layout: an 8-byte little-endian length, then the JSON header, in the first `header_size` bytes; page k at
    header_size + k * page_size. Each row is an 8-byte-length-prefixed record in its raw page (at its row
    group's offset) and one in its blob page (from the page's start), rows in page order.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        (length,) = struct.unpack_from("<Q", data, 0)
        header = json.loads(data[8:8 + length])
        if len(header["schema"]) != 1:
            raise SmallBertError(f"{path}: write_index handles one schema, found {len(header['schema'])}")
        page_size, header_size = header["page_size"], header["header_size"]
        pages = sorted(header["page"], key=lambda page: page["page_id"])
        blob_pages = {page["page_type_id"]: page for page in pages if page["page_type"] == "BLOB_DATA"}
        rows = []
        for raw in (page for page in pages if page["page_type"] == "RAW_DATA"):
            raw_base = header_size + page_size * raw["page_id"]
            for group in raw["row_group_ids"]:
                blob = blob_pages[group["id"]]
                blob_base = header_size + page_size * blob["page_id"]
                raw_offset, blob_offset = group["offset"], 0
                for row_id in range(blob["start_row_id"], blob["end_row_id"]):
                    raw_end = raw_offset + 8 + struct.unpack_from("<Q", data, raw_base + raw_offset)[0]
                    blob_end = blob_offset + 8 + struct.unpack_from("<Q", data, blob_base + blob_offset)[0]
                    rows.append((row_id, group["id"], raw["page_id"], raw_offset, raw_end, blob["page_id"],
                                 blob_offset, blob_end))
                    raw_offset, blob_offset = raw_end, blob_end
    db_path = path + ".db"
    if os.path.exists(db_path):
        os.remove(db_path)
    db = sqlite3.connect(db_path)
    try:
        with db:  # one transaction
            db.execute(_INDEX_TABLE)
            db.execute("CREATE TABLE SHARD_NAME(NAME TEXT NOT NULL);")
            db.execute("INSERT INTO SHARD_NAME (NAME) VALUES (?);", (os.path.basename(path),))
            db.executemany("INSERT INTO INDEXES (ROW_ID,ROW_GROUP_ID,PAGE_ID_RAW,PAGE_OFFSET_RAW,PAGE_OFFSET_RAW_END,"
                           "PAGE_ID_BLOB,PAGE_OFFSET_BLOB,PAGE_OFFSET_BLOB_END) VALUES (?,?,?,?,?,?,?,?)", rows)
    finally:
        db.close()


def list_shards(path_or_glob: str) -> list[str]:
    """MindRecord shards of a data directory, or the files of a `*.tfrecord*` glob, sorted.

    Raises SmallBertError if there are none.
    """
    if os.path.isdir(path_or_glob):
        files = sorted(glob.glob(os.path.join(glob.escape(path_or_glob), SHARD_PATTERN)))
    else:
        files = sorted(f for f in glob.glob(path_or_glob) if os.path.isfile(f))
    if not files:
        raise SmallBertError(f"{path_or_glob}: no pretraining shards ({SHARD_PATTERN} in a directory, "
                             "or a glob of *.tfrecord files)")
    return files


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB blocks (hashlib releases the GIL: threads hash in parallel)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_facts(path: str) -> dict[str, Any]:
    """{"bytes": size, "sha256": hex digest}: what metadata.json records of every shard and index file."""
    return {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def metadata_name(num_shards: int, shard_index: int) -> str:
    """The metadata file a run writes: one per `--shard_index` when the work is split."""
    return "metadata.json" if num_shards == 1 else f"metadata-{shard_index:05d}-of-{num_shards:05d}.json"


def summarize(counts: dict[str, int]) -> dict[str, Any]:
    """Statistics: the raw counts plus the fractions that describe the data."""
    stats: dict[str, Any] = dict(counts)
    masked, instances = counts.get("masked_tokens", 0), counts.get("instances", 0)
    stats["masked_fraction"] = masked / max(counts.get("tokens", 0), 1)
    for kind in ("mask", "random", "kept"):
        stats[f"{kind}_replacement_fraction"] = counts.get(f"masked_as_{kind}", 0) / max(masked, 1)
    stats["next_sentence_random_fraction"] = counts.get("random_next", 0) / max(instances, 1)
    return stats


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of a data directory (`path` may also be a file in it).

    When the data was made in several `--shard_index` runs, their metadata files are merged:
    same settings required, all shards required, files listed together and counts summed.
    """
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    names = sorted(glob.glob(os.path.join(glob.escape(directory), "metadata*.json")))
    if not names:
        raise SmallBertError(f"{directory}: no metadata.json (not made by create_pretraining_data.py, "
                             "or the run did not finish)")
    parts = []
    for name in names:
        try:
            with open(name, encoding="utf-8") as f:
                parts.append(json.load(f))
        except (OSError, ValueError) as err:
            raise SmallBertError(f"{name}: unreadable metadata ({err})") from None
        if parts[-1].get("format") != METADATA_FORMAT:
            raise SmallBertError(f"{name}: not {METADATA_FORMAT} metadata")
    first = parts[0]
    per_run = ("shard_index", "files", "rows_per_file", "file_checks", "counts", "statistics")
    local_paths = ("input_files", "vocab_file")  # machines may mount the same files elsewhere

    def settings(part: dict) -> dict:
        return {k: v for k, v in part.items() if k not in per_run + local_paths}

    for name, part in zip(names, parts):
        if settings(part) != settings(first):
            raise SmallBertError(f"{name}: made with other settings than {names[0]}")
    found = sorted(p["shard_index"] for p in parts)
    if found != list(range(first["num_shards"])):
        raise SmallBertError(f"{directory}: has shards {found} of {first['num_shards']}; "
                             "run the missing --shard_index values first")
    merged = {k: v for k, v in first.items() if k not in per_run}
    files = sorted((f, rows) for p in parts for f, rows in zip(p["files"], p["rows_per_file"]))
    merged["files"] = [f for f, _ in files]
    merged["rows_per_file"] = [rows for _, rows in files]
    if all("file_checks" in p for p in parts):  # older data tools recorded no sizes or hashes
        merged["file_checks"] = {name: facts for p in parts for name, facts in p["file_checks"].items()}
    counts: dict[str, int] = {}
    for part in parts:
        for key, value in part["counts"].items():
            counts[key] = counts.get(key, 0) + value
    merged["counts"] = counts
    merged["statistics"] = summarize(counts)
    return merged


def validate_for_model(data: str | dict, *, vocab_size: int, max_position_embeddings: int,
                       max_seq_length: int | None = None, where: str | None = None) -> dict[str, Any]:
    """Checks a data directory (or its metadata) against a model config before any compile.

    `where` names the data in messages (default: the directory given). Raises SmallBertError naming the
    mismatch; returns the metadata.
    """
    metadata = read_metadata(data) if isinstance(data, str) else data
    where = where or (data if isinstance(data, str) else "the data")
    if metadata["max_token_id"] >= vocab_size:
        raise SmallBertError(f"{where}: token ids reach {metadata['max_token_id']} "
                             f"(vocab of {metadata['vocab_size']}) but the model's vocab_size is {vocab_size}")
    if metadata["max_seq_length"] > max_position_embeddings:
        raise SmallBertError(f"{where}: max_seq_length {metadata['max_seq_length']} exceeds the model's "
                             f"max_position_embeddings {max_position_embeddings}")
    if max_seq_length is not None and max_seq_length != metadata["max_seq_length"]:
        raise SmallBertError(f"{where}: sequences are {metadata['max_seq_length']} long, "
                             f"--max_seq_length is {max_seq_length}")
    return metadata


def check_vocab(metadata: dict[str, Any] | None, data_dir: str, vocab_file: str | None,
                checkpoint: str | None = None) -> None:
    """Checks that `vocab_file` and the checkpoint's vocab.txt (a directory's, or the one beside a weights file)
    are the vocabulary the shards were made with (metadata's `vocab_sha256`; None for TFRecords, whose files do
    not say: then only the two given files are compared with each other).

    Raises SmallBertError naming both files.
    """
    recorded = None
    if metadata is not None and metadata.get("vocab_sha256"):
        recorded = (metadata["vocab_sha256"], f"the vocab {data_dir} was made with ({metadata['vocab_file']}, "
                                              f"per its metadata.json)")
    candidates = []
    if vocab_file:
        candidates.append(("--vocab_file", vocab_file))
    if checkpoint:
        directory = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
        if os.path.isfile(os.path.join(directory, "vocab.txt")):
            candidates.append(("--init_checkpoint", os.path.join(directory, "vocab.txt")))
    for flag, path in candidates:
        digest = sha256_file(path)
        if recorded is None:
            recorded = (digest, path)
        elif digest != recorded[0]:
            raise SmallBertError(f"{flag}: {path} is not {recorded[1]}: their sha256 differ; the token ids "
                                 "would mean other words")


def verify_shards(files: list[str], metadata: dict[str, Any], mode: str = "full") -> None:
    """Checks a data directory's MindRecord shards (`list_shards`) against its metadata before training.

    off: nothing. fast: every listed shard and its .db index exist and no unlisted shard is present; sizes are
    as recorded; each shard's header parses and accounts for its size and rows; each index is a sound SQLite
    file with one entry per row. full: fast, plus every file's sha256 as recorded, hashed in parallel threads,
    so one flipped byte anywhere is caught. Metadata of older data tools has no sizes or hashes: a warning,
    then fast without the sizes. Raises SmallBertError naming the file.
    """
    if mode not in VERIFY_MODES:
        raise SmallBertError(f"--verify_data: {mode!r} is not one of {', '.join(VERIFY_MODES)}")
    if mode == "off" or not files:
        return
    directory = os.path.dirname(files[0])
    listed, present = metadata["files"], {os.path.basename(f) for f in files}
    for name in sorted(present - set(listed)):
        raise SmallBertError(f"{os.path.join(directory, name)}: shard not listed in its directory's metadata "
                             "(left from another run?); remove it or remake the directory")
    checks = metadata.get("file_checks")
    if checks is None:
        logger.warning("%s: metadata has no shard sizes or hashes (written by an older data tool): checking "
                       "headers and indexes only (--verify_data fast)", directory)
        mode = "fast"
    paths = []
    for name, rows in zip(listed, metadata["rows_per_file"]):
        path = os.path.join(directory, name)
        for file in (path, path + ".db"):
            if not os.path.isfile(file):
                raise SmallBertError(f"{file}: listed in the metadata but missing; copy it again or remake "
                                     "the directory")
            if checks is not None and os.path.getsize(file) != checks[os.path.basename(file)]["bytes"]:
                raise SmallBertError(f"{file}: {os.path.getsize(file)} bytes, the metadata records "
                                     f"{checks[os.path.basename(file)]['bytes']} (truncated or replaced)")
        _check_shard_header(path, rows)
        _check_shard_index(path + ".db", name, rows)
        paths += [path, path + ".db"]
    if mode == "full":
        _check_hashes(paths, checks)


def _check_shard_header(path: str, rows: int) -> None:
    """A MindRecord shard's JSON header (8-byte little-endian length, then JSON) parses, and its pages add up to
    the file's size (header, full pages, then the used part of the last) and to `rows` rows."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
            header = json.loads(f.read(length)) if 0 < length < 1 << 26 else None
        pages = sorted(header["page"], key=lambda page: page["page_id"])
        size = header["header_size"] + header["page_size"] * (len(pages) - 1) + pages[-1]["page_size"]
        stored_rows = sum(p["end_row_id"] - p["start_row_id"] for p in pages if p["page_type"] == "BLOB_DATA")
    except (TypeError, KeyError, IndexError, ValueError):
        raise SmallBertError(f"{path}: not a readable MindRecord shard (corrupt header)") from None
    if size != os.path.getsize(path):
        raise SmallBertError(f"{path}: {os.path.getsize(path)} bytes, its header describes {size} "
                             "(truncated or corrupt)")
    if stored_rows != rows:
        raise SmallBertError(f"{path}: holds {stored_rows} rows, the metadata records {rows}")


def _check_shard_index(path: str, name: str, rows: int) -> None:
    """A shard's `.db` index (SQLite) passes SQLite's quick check, names the shard and has rows 0..rows-1."""
    from urllib.parse import quote

    try:
        db = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro&immutable=1", uri=True)
        try:
            sound = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            count, low, high = db.execute("SELECT COUNT(*), MIN(ROW_ID), MAX(ROW_ID) FROM INDEXES").fetchone()
            names = [n for (n,) in db.execute("SELECT NAME FROM SHARD_NAME")]
        finally:
            db.close()
    except sqlite3.Error as err:
        raise SmallBertError(f"{path}: corrupt shard index ({err})") from None
    if not sound or (count, low, high) != (rows, 0, rows - 1) or names != [name]:
        raise SmallBertError(f"{path}: corrupt shard index (does not describe the {rows} rows of {name})")


def _check_hashes(paths: list[str], checks: dict[str, dict[str, Any]]) -> None:
    """Hashes `paths` in parallel threads (a progress bar after 2 s); raises on the first that differs from `checks`."""
    from tqdm import tqdm

    total = sum(os.path.getsize(p) for p in paths)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=total, unit="B", unit_scale=True, desc="verify data", leave=False, delay=2,
                 dynamic_ncols=True) as bar:
        for path, digest in zip(paths, pool.map(sha256_file, paths)):
            bar.update(os.path.getsize(path))
            if digest != checks[os.path.basename(path)]["sha256"]:
                raise SmallBertError(f"{path}: content differs from its sha256 in the metadata (corrupt); copy "
                                     "it again or remake the directory")


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C of `data`, rotated and offset ("masked")."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def verify_tfrecords(files: list[str], mode: str = "full") -> None:
    """Checks Google TFRecord files before training (fast and full alike, unless "off"): every record's length
    field matches its checksum and the records end exactly at the file's end, so a truncated file or a corrupt
    length is caught. Google's files come with no sizes or hashes, and the payload checksums are not verified
    (CRC-32C in Python is too slow): corrupt payloads are caught by the per-batch id check instead.
    Raises SmallBertError naming the file and offset.
    """
    if mode not in VERIFY_MODES:
        raise SmallBertError(f"--verify_data: {mode!r} is not one of {', '.join(VERIFY_MODES)}")
    if mode == "off":
        return
    for path in files:
        size, offset = os.path.getsize(path), 0
        with open(path, "rb") as f:
            while offset < size:
                head = f.read(12)
                length = int.from_bytes(head[:8], "little")
                if len(head) < 12 or masked_crc32c(head[:8]) != int.from_bytes(head[8:], "little"):
                    raise SmallBertError(f"{path}: corrupt TFRecord framing at byte {offset}")
                offset += 12 + length + 4
                if offset > size:
                    raise SmallBertError(f"{path}: truncated: the record at byte {offset - length - 16} "
                                         f"needs {offset - size} more bytes")
                f.seek(offset)


def epoch_order(num_rows: int, *, epoch: int, seed: int, shuffle: bool, num_shards: int,
                shard_id: int) -> np.ndarray:
    """Row indices one rank reads in one epoch: a (seed, epoch) permutation, cut to a multiple of
    `num_shards` so every rank gets as many rows, then every `num_shards`-th row from `shard_id`."""
    if not 0 <= shard_id < num_shards:
        raise SmallBertError(f"shard_id={shard_id}: must be in [0, num_shards={num_shards})")
    order = np.random.default_rng([seed, epoch]).permutation(num_rows) if shuffle else np.arange(num_rows)
    order = order[:num_rows - num_rows % num_shards]
    return order[shard_id::num_shards]


class _DynamicMasker:
    """`batch(per_batch_map=...)`: masks the rows of a batch anew, each from its own
    `random.Random(f"{seed}/{epoch}/{row index}")`, with Google's masking procedure."""

    def __init__(self, metadata: dict[str, Any], rows: np.ndarray, batch_size: int, *, seed: int, epoch: int):
        special = metadata["special_token_ids"]
        self.ids = TokenIds(cls=special["[CLS]"], sep=special["[SEP]"], mask=special["[MASK]"],
                            words=tuple(range(metadata["vocab_size"])),
                            continuation=frozenset(metadata.get("continuation_token_ids", ())))
        self.masked_lm_prob = metadata["masked_lm_prob"]
        self.do_whole_word_mask = metadata["do_whole_word_mask"]
        self.rows, self.batch_size, self.seed, self.epoch = rows, batch_size, seed, epoch

    def __call__(self, input_ids, input_mask, positions, labels, weights, batch_info):
        start = batch_info.get_batch_num() * self.batch_size
        out_ids, out_pos, out_lab, out_w = [], [], [], []
        for k, (ids, mask) in enumerate(zip(input_ids, input_mask)):
            rng = random.Random(f"{self.seed}/{self.epoch}/{int(self.rows[start + k])}")
            length = int(mask.sum())
            masked, pos, lab = create_masked_lm_predictions(
                ids[:length].tolist(), self.masked_lm_prob, len(weights[k]), self.ids, self.do_whole_word_mask, rng)
            row_ids = ids.copy()
            row_ids[:length] = masked
            row_pos, row_lab, row_w = (np.zeros_like(positions[k]), np.zeros_like(labels[k]),
                                       np.zeros_like(weights[k]))
            row_pos[:len(pos)], row_lab[:len(lab)], row_w[:len(pos)] = pos, lab, 1.0
            out_ids.append(row_ids)
            out_pos.append(row_pos)
            out_lab.append(row_lab)
            out_w.append(row_w)
        return out_ids, input_mask, out_pos, out_lab, out_w


def _tfrecord_dataset(files: list[str], *, epoch: int, seed: int, shuffle: bool, num_shards: int, shard_id: int,
                      num_parallel_workers: int):
    """Google's TFRecords (int64 features) as int32/float32 columns, files in a (seed, epoch) order."""
    import mindspore as ms
    import mindspore.dataset as ds

    order = np.random.default_rng([seed, epoch]).permutation(len(files)) if shuffle else range(len(files))
    tf_schema = ds.Schema()
    for column in COLUMNS:
        tf_schema.add_column(column, de_type=ms.float32 if column == "masked_lm_weights" else ms.int64)
    data = ds.TFRecordDataset([files[i] for i in order], schema=tf_schema, columns_list=list(COLUMNS),
                              shuffle=False, num_shards=num_shards, shard_id=shard_id, shard_equal_rows=True,
                              num_parallel_workers=num_parallel_workers)
    for column in COLUMNS:
        if column != "masked_lm_weights":
            data = data.map(operations=ds.transforms.TypeCast(ms.int32), input_columns=[column])
    return data


def shard_rows(files: list[str], metadata: dict[str, Any]) -> list[int]:
    """Rows of each of `files` (shard paths), as their directory's metadata records them. Raises SmallBertError
    naming a shard the metadata does not list (caught earlier by `verify_shards`, unless --verify_data off)."""
    rows_per_file = dict(zip(metadata["files"], metadata["rows_per_file"]))
    for file in files:
        if os.path.basename(file) not in rows_per_file:
            raise SmallBertError(f"{os.path.abspath(file)}: shard is not listed in its directory's metadata")
    return [rows_per_file[os.path.basename(f)] for f in files]


def _rank_rows(files: list[str], metadata: dict[str, Any], **order) -> np.ndarray:
    """`epoch_order` of the rows of `files` (numbered through the files in order) for one rank."""
    return epoch_order(sum(shard_rows(files, metadata)), **order)


def checked_batches(files: list[str], batch_size: int, *, vocab_size: int, epoch: int = 0, seed: int = 0,
                    shuffle: bool = True, num_shards: int = 1, shard_id: int = 0, skip_batches: int = 0,
                    metadata: dict[str, Any] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """`pretraining_dataset`'s batches as numpy dicts, each checked before it is yielded: ids in
    [0, vocab_size), positions inside the sequence, masks, segments and labels 0 or 1, weights in [0, 1]
    (a few vectorised min/max per batch). A corrupt row raises SmallBertError naming its shard and row
    (TFRecords: the files, whose rows cannot be told apart), instead of training on garbage."""
    dataset = pretraining_dataset(files, batch_size, epoch=epoch, seed=seed, shuffle=shuffle, num_shards=num_shards,
                                  shard_id=shard_id, skip_batches=skip_batches, metadata=metadata)
    rows = ends = None
    if metadata is not None:
        rows = _rank_rows(files, metadata, epoch=epoch, seed=seed, shuffle=shuffle, num_shards=num_shards,
                          shard_id=shard_id)[skip_batches * batch_size:]
        ends = np.cumsum(shard_rows(files, metadata))
    for k, batch in enumerate(dataset.create_dict_iterator(num_epochs=1, output_numpy=True)):
        problem = bad_row(batch, vocab_size)
        if problem is None:
            yield batch
            continue
        row, what = problem
        if rows is None:
            raise SmallBertError(f"{', '.join(files)}: a row holds {what}: the data is corrupt")
        index = int(rows[k * batch_size + row])
        shard = int(np.searchsorted(ends, index, side="right"))
        raise SmallBertError(f"{files[shard]}: row {index - (ends[shard - 1] if shard else 0)} holds {what}: "
                             "the shard is corrupt (check it with --verify_data full, or remake it)")


def bad_row(batch: dict[str, np.ndarray], vocab_size: int) -> tuple[int, str] | None:
    """The first row of a batch (COLUMNS → [B, ...] arrays) holding an impossible value, as (row, what), or None."""
    seq_length = batch["input_ids"].shape[1]
    limits = (("input_ids", 0, vocab_size - 1), ("masked_lm_ids", 0, vocab_size - 1),
              ("masked_lm_positions", 0, seq_length - 1), ("input_mask", 0, 1), ("segment_ids", 0, 1),
              ("next_sentence_labels", 0, 1), ("masked_lm_weights", 0.0, 1.0))
    for column, low, high in limits:
        values = batch[column].reshape(len(batch[column]), -1)
        if values.min() >= low and values.max() <= high:  # also False for nan
            continue
        bad = ~((values >= low) & (values <= high))
        row, position = (int(i) for i in np.argwhere(bad)[0])
        return row, f"{column} {values[row, position]} (outside [{low}, {high}])"
    return None


def pretraining_dataset(files: list[str], batch_size: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                        num_shards: int = 1, shard_id: int = 0, skip_batches: int = 0, drop_remainder: bool = True,
                        num_parallel_workers: int = 1, metadata: dict[str, Any] | None = None):
    """One epoch of pretraining batches as a `mindspore.dataset.Dataset`.

    Args:
      files: from `list_shards` (MindRecord shards of one directory, or TFRecord files).
      batch_size: rows per batch (per rank).
      epoch, seed: the row order is `permutation(seed, epoch)`; dynamic masks depend on
        (seed, epoch, row index). Same arguments, same batches.
      shuffle: False reads rows in file order.
      num_shards, shard_id: data parallelism; each rank reads a disjoint slice of equal length.
      skip_batches: start this many batches into the epoch (resume); MindRecord rows skipped are
        never read. (TFRecords are sequential: their skipped rows are read and dropped.)
      drop_remainder: drop a last, smaller batch.
      num_parallel_workers: reader / masking workers.
      metadata: `read_metadata` of the shards' directory (read here if None; TFRecords have none).
    Columns: input_ids, input_mask, segment_ids int32 [B, S]; masked_lm_positions, masked_lm_ids
    int32 [B, P]; masked_lm_weights float32 [B, P]; next_sentence_labels int32 [B, 1].
    """
    import mindspore.dataset as ds

    if batch_size < 1:
        raise SmallBertError(f"batch_size={batch_size}: must be at least 1")
    if files and all(".tfrecord" in os.path.basename(f) for f in files):
        data = _tfrecord_dataset(files, epoch=epoch, seed=seed, shuffle=shuffle, num_shards=num_shards,
                                 shard_id=shard_id, num_parallel_workers=num_parallel_workers)
        return data.skip(skip_batches * batch_size).batch(batch_size, drop_remainder=drop_remainder)

    metadata = metadata or read_metadata(files[0])
    rows = _rank_rows(files, metadata, epoch=epoch, seed=seed, shuffle=shuffle, num_shards=num_shards,
                      shard_id=shard_id)[skip_batches * batch_size:]
    if len(rows) < (batch_size if drop_remainder else 1):
        raise SmallBertError(f"skip_batches={skip_batches}: the epoch has only "
                             f"{(len(rows) + skip_batches * batch_size) // batch_size} batches of {batch_size} "
                             "for this rank")
    data = ds.MindDataset(files, columns_list=list(COLUMNS), sampler=ds.SubsetSampler(rows.tolist()),
                          num_parallel_workers=num_parallel_workers)
    if not metadata["dynamic_masking"]:
        return data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=num_parallel_workers)
    masker = _DynamicMasker(metadata, rows, batch_size, seed=seed, epoch=epoch)
    masked_columns = ["input_ids", "input_mask", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"]
    data = data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=num_parallel_workers,
                      per_batch_map=masker, input_columns=masked_columns, output_columns=masked_columns)
    return data.project(list(COLUMNS))  # per_batch_map moves its columns first
