"""tools/create_pretraining_data.py end to end: statistics, determinism across processes and machines,
the MindRecord reader (order, ranks, resume, dynamic masking), dumps and bad inputs."""
from __future__ import annotations

import bz2
import dataclasses
import filecmp
import importlib.util
import json
import logging
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from smallbert.data import list_shards, pretraining_dataset, read_metadata, validate_for_model
from smallbert.data.instances import InstanceConfig
from smallbert.data.pipeline import PipelineConfig, create_pretraining_data
from smallbert.data.records import (COLUMNS, checked_batches, masked_crc32c, schema, verify_shards,
                                    verify_tfrecords, write_mindrecord)
from smallbert.errors import SmallBertError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, PRED = 64, 10


def write_corpus(path: str, num_documents: int, vocab: list[str], seed: int = 0) -> str:
    """Google-format text: documents of 4-25 sentences of 4-14 words (some made-up compounds)."""
    rng = random.Random(seed)
    words = vocab + [a + b for a, b in zip(vocab[::5], vocab[2::5])]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(num_documents):
            for _ in range(rng.randint(4, 25)):
                f.write(" ".join(rng.choices(words, k=rng.randint(4, 14))).capitalize() + ".\n")
            f.write("\n")
    return path


@pytest.fixture(scope="module")
def vocab_file(minilm_dir) -> str:
    return os.path.join(minilm_dir, "vocab.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, vocab_file) -> str:
    with open(vocab_file, encoding="utf-8") as f:
        words = [w for w in f.read().split("\n")[2000:5000] if w.isalpha()]
    return write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"), 240, words)


def make_config(corpus, out, vocab_file, **changes) -> PipelineConfig:
    instances = InstanceConfig(max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=2,
                               **changes.pop("instances", {}))
    changes.setdefault("documents_per_chunk", 100)
    return PipelineConfig(input_files=(corpus,), output_dir=str(out), vocab_file=vocab_file, instances=instances,
                          **changes)


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, corpus, vocab_file):
    out = tmp_path_factory.mktemp("static") / "out"
    return str(out), create_pretraining_data(make_config(corpus, out, vocab_file))


@pytest.fixture(scope="module")
def dynamic_run(tmp_path_factory, corpus, vocab_file):
    out = tmp_path_factory.mktemp("dynamic") / "out"
    config = make_config(corpus, out, vocab_file, instances={"dynamic_masking": True, "do_whole_word_mask": True})
    return str(out), create_pretraining_data(config)


def read_all(files, **kwargs) -> dict[str, np.ndarray]:
    data = pretraining_dataset(files, 16, shuffle=False, drop_remainder=False, **kwargs)
    assert data.get_col_names() == list(COLUMNS)
    batches = list(data.create_tuple_iterator(output_numpy=True))
    return {name: np.concatenate([b[i] for b in batches]) for i, name in enumerate(COLUMNS)}


def test_statistics_and_row_layout(static_run):
    out, metadata = static_run
    stats = metadata["statistics"]
    assert metadata["files"] == ["part-000000.mindrecord", "part-000001.mindrecord", "part-000002.mindrecord"]
    assert stats["documents"] == 240 and stats["instances"] == sum(metadata["rows_per_file"]) > 1000
    assert abs(stats["masked_fraction"] - 0.15) < 0.01
    assert abs(stats["mask_replacement_fraction"] - 0.8) < 0.03
    assert abs(stats["random_replacement_fraction"] - 0.1) < 0.03
    assert abs(stats["kept_replacement_fraction"] - 0.1) < 0.03
    # Half of the pairs get a random B, plus (as in Google's script) every pair built from a single
    # sentence, which cannot be split into A and an actual next B.
    assert 0.5 <= stats["next_sentence_random_fraction"] < 0.6

    rows = read_all(list_shards(out))
    assert {k: (v.dtype.name, v.shape[1:]) for k, v in rows.items()} == {
        "input_ids": ("int32", (SEQ,)), "input_mask": ("int32", (SEQ,)), "segment_ids": ("int32", (SEQ,)),
        "masked_lm_positions": ("int32", (PRED,)), "masked_lm_ids": ("int32", (PRED,)),
        "masked_lm_weights": ("float32", (PRED,)), "next_sentence_labels": ("int32", (1,))}
    assert len(rows["input_ids"]) == stats["instances"]
    special = metadata["special_token_ids"]
    for r in range(len(rows["input_ids"])):
        ids, mask, seg = rows["input_ids"][r], rows["input_mask"][r], rows["segment_ids"][r]
        n = int(mask.sum())
        assert mask.tolist() == [1] * n + [0] * (SEQ - n) and not ids[n:].any() and not seg[n:].any()
        seps = [i for i in range(n) if ids[i] == special["[SEP]"] and i not in rows["masked_lm_positions"][r]]
        b_start = seps[0] + 1 if seps[-1] == n - 1 else None
        assert ids[0] == special["[CLS]"] and b_start is not None
        assert seg[:n].tolist() == [0] * b_start + [1] * (n - b_start)
        k = int(rows["masked_lm_weights"][r].sum())
        assert k == min(PRED, max(1, round(n * 0.15)))
        positions = rows["masked_lm_positions"][r]
        assert sorted(positions[:k]) == positions[:k].tolist() and 0 < positions[0] and positions[k - 1] < n - 1
        assert not positions[k:].any() and not rows["masked_lm_ids"][r][k:].any()


def test_processes_and_machines_give_identical_shards(tmp_path, static_run, corpus, vocab_file):
    out, metadata = static_run
    two = create_pretraining_data(make_config(corpus, tmp_path / "two", vocab_file, processes=2))
    for k in (0, 1):  # the same work split over two "machines" into one directory
        create_pretraining_data(make_config(corpus, tmp_path / "machines", vocab_file, num_shards=2, shard_index=k))
    merged = read_metadata(str(tmp_path / "machines"))
    assert two["files"] == merged["files"] == metadata["files"]
    assert merged["counts"] == two["counts"] == metadata["counts"]
    for name in metadata["files"]:
        for suffix in ("", ".db"):
            assert filecmp.cmp(os.path.join(out, name + suffix), tmp_path / "two" / (name + suffix), shallow=False)
            assert filecmp.cmp(os.path.join(out, name + suffix), tmp_path / "machines" / (name + suffix),
                               shallow=False)
    assert not [n for n in os.listdir(tmp_path / "two") if n.startswith(".")]  # temp dirs cleaned
    os.remove(tmp_path / "machines" / "metadata-00001-of-00002.json")
    with pytest.raises(SmallBertError, match=r"has shards \[0\] of 2"):
        read_metadata(str(tmp_path / "machines"))


def test_reader_order_ranks_and_resume(static_run):
    out, metadata = static_run
    files = list_shards(out)

    def epoch(**kwargs):
        data = pretraining_dataset(files, 8, seed=3, **kwargs)
        return [b[0] for b in data.create_tuple_iterator(output_numpy=True)]

    first = epoch(epoch=0)
    assert len(first) == metadata["statistics"]["instances"] // 8
    assert all((a == b).all() for a, b in zip(first, epoch(epoch=0)))  # pure function of (seed, epoch)
    assert not all((a == b).all() for a, b in zip(first, epoch(epoch=1)))
    resumed = epoch(epoch=0, skip_batches=5)
    assert len(resumed) == len(first) - 5 and all((a == b).all() for a, b in zip(first[5:], resumed))
    ranks = [np.concatenate(epoch(epoch=0, num_shards=2, shard_id=k)) for k in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    every = {r.tobytes() for r in read_all(files)["input_ids"]}
    seen = [{r.tobytes() for r in rank} for rank in ranks]
    assert seen[0] <= every and seen[1] <= every and len(seen[0] & seen[1]) < 5  # disjoint up to duplicate rows
    with pytest.raises(SmallBertError, match="skip_batches=100000"):
        pretraining_dataset(files, 8, skip_batches=100000)


def test_dynamic_masking(dynamic_run):
    out, metadata = dynamic_run
    assert metadata["dynamic_masking"] and metadata["statistics"]["masked_tokens"] == 0
    files = list_shards(out)

    def epoch(e, skip=0):
        data = pretraining_dataset(files, 8, seed=1, epoch=e, skip_batches=skip)
        return [dict(zip(COLUMNS, b)) for b in data.create_tuple_iterator(output_numpy=True)]

    zero, again, one, resumed = epoch(0), epoch(0), epoch(1), epoch(0, skip=3)
    for a, b in zip(zero, again):
        assert all((a[c] == b[c]).all() for c in COLUMNS)
    for a, b in zip(zero[3:], resumed):
        assert all((a[c] == b[c]).all() for c in COLUMNS)
    assert not all((a["masked_lm_positions"] == b["masked_lm_positions"]).all() for a, b in zip(zero, one))
    weights = np.concatenate([b["masked_lm_weights"] for b in zero])
    tokens = np.concatenate([b["input_mask"] for b in zero]).sum()
    assert abs(weights.sum() / tokens - 0.15) < 0.01
    mask_id = metadata["special_token_ids"]["[MASK]"]
    at = np.concatenate([np.take_along_axis(b["input_ids"], b["masked_lm_positions"], 1) for b in zero])
    assert abs(((at == mask_id) & (weights > 0)).sum() / weights.sum() - 0.8) < 0.04


def test_validate_for_model(static_run):
    out, _ = static_run
    assert validate_for_model(out, vocab_size=30522, max_position_embeddings=512)["max_seq_length"] == SEQ
    with pytest.raises(SmallBertError, match="model's vocab_size is 128"):
        validate_for_model(out, vocab_size=128, max_position_embeddings=512)
    with pytest.raises(SmallBertError, match="max_position_embeddings 32"):
        validate_for_model(out, vocab_size=30522, max_position_embeddings=32)


@pytest.mark.parametrize("rows, seq, writer", [
    (37, 16, "native"),  # one blob page; values of every compressed width
    (7000, 512, "native"),  # blob rows over several 8 MB pages
    (37, 16, "mindspore"),  # no C++ compiler: MindSpore's own C++ writer
])
def test_fast_writer_matches_filewriter(tmp_path, monkeypatch, rows, seq, writer):
    import sqlite3

    from mindspore.mindrecord import FileWriter

    import smallbert.data.records as records

    if writer == "mindspore":
        monkeypatch.setattr(records, "_rows_library", lambda: None)
    rng = np.random.default_rng(0)
    arrays = {c: rng.integers(-70000, 70000, (rows, 1 if c == "next_sentence_labels" else 8 if "lm" in c else seq))
              .astype(np.float32 if c == "masked_lm_weights" else np.int32) for c in COLUMNS}
    (tmp_path / "fast").mkdir()
    (tmp_path / "slow").mkdir()
    write_mindrecord(str(tmp_path / "fast" / "x.mindrecord"), arrays)
    reference = FileWriter(str(tmp_path / "slow" / "x.mindrecord"), shard_num=1, overwrite=True)
    reference.set_header_size(1 << 20)
    reference.set_page_size(8 << 20)
    reference.add_schema(schema(seq, 8), "bert_pretraining")
    reference.write_raw_data([{c: arrays[c][i] for c in COLUMNS} for i in range(rows)])
    reference.commit()
    assert filecmp.cmp(tmp_path / "fast" / "x.mindrecord", tmp_path / "slow" / "x.mindrecord", shallow=False)

    def index(directory):  # the index's tables and rows (the files differ in SQLite's own version fields)
        with sqlite3.connect(tmp_path / directory / "x.mindrecord.db") as db:
            return (db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
                    db.execute("SELECT * FROM INDEXES").fetchall(), db.execute("SELECT * FROM SHARD_NAME").fetchall())

    fast, slow = index("fast"), index("slow")
    assert fast == slow and len(fast[1]) == rows
    if rows > 1000:
        assert len({row[5] for row in fast[1]}) > 1  # rows on several blob pages


WIKI_PAGE = """  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{id}</id>{redirect}
    <revision>
      <id>{rev}</id>
      <text bytes="1" xml:space="preserve">{text}</text>
    </revision>
  </page>
"""


def write_dump(path: str) -> str:
    pages = [("Alpha", 0, "", "'''Alpha''' is the first [[letter]] of the [[Greek alphabet|Greek]] alphabet. "
              "Dr. Smith wrote about it in 1990. It is used in &lt;math&gt;x^2&lt;/math&gt; formulas.\n\n"
              "== History ==\nIt came from the letter aleph (; born 1900). AT&amp;amp;T uses it.\n"
              "[[Category:Letters]]"),
             ("Beta", 0, '\n    <redirect title="Gamma" />', "#REDIRECT [[Gamma]]"),
             ("Template:Nothing", 10, "", "nothing"),
             ("Gamma", 0, "", "'''Gamma''' is the third letter. It follows beta! Does it? Yes.")]
    body = "".join(WIKI_PAGE.format(title=t, ns=ns, id=i + 1, rev=i + 11, redirect=r, text=x)
                   for i, (t, ns, r, x) in enumerate(pages))
    xml = ('<mediawiki xml:lang="en">\n  <siteinfo>\n    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n'
           '    <namespaces>\n      <namespace key="0" />\n      <namespace key="10">Template</namespace>\n'
           f'    </namespaces>\n  </siteinfo>\n{body}</mediawiki>\n')
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write(xml)
    return path


def test_wikipedia_dump(tmp_path, vocab_file):
    dump = write_dump(str(tmp_path / "dump.xml.bz2"))
    result = create_pretraining_data(make_config(dump, tmp_path / "text", vocab_file, extract_only=True))
    with open(result["corpus"], encoding="utf-8") as f:
        assert f.read() == (
            "Alpha is the first letter of the Greek alphabet.\nDr. Smith wrote about it in 1990.\n"
            "It is used in formulas.\nHistory.\nIt came from the letter aleph (born 1900).\nAT&T uses it.\n\n"
            "Gamma is the third letter.\nIt follows beta!\nDoes it?\nYes.\n\n")
    # Wikimedia's split dumps end in .xml-p<first>p<last>.bz2: known by their text, not read as text themselves
    split = tmp_path / "enwiki-latest-pages-articles1.xml-p1p41242.bz2"
    os.link(dump, split)
    again = create_pretraining_data(make_config(str(split), tmp_path / "split", vocab_file, extract_only=True))
    with open(again["corpus"], encoding="utf-8") as f, open(result["corpus"], encoding="utf-8") as g:
        assert f.read() == g.read()
    metadata = create_pretraining_data(make_config(dump, tmp_path / "out", vocab_file, documents_per_chunk=1))
    assert metadata["statistics"]["documents"] == 2 and len(metadata["files"]) == 2
    with bz2.open(dump) as f:
        (tmp_path / "latin1.xml").write_bytes(f.read().replace(b"third", "th\xefrd".encode("latin-1")))
    with pytest.raises(SmallBertError, match="latin1.xml: wikiextractor failed: UnicodeDecodeError"):
        create_pretraining_data(make_config(str(tmp_path / "latin1.xml"), tmp_path / "bad", vocab_file))


def test_bad_inputs(tmp_path, vocab_file, corpus, caplog):
    (tmp_path / "bad.txt").write_bytes("First sentence here.\nBroken \xff\xfe bytes.\n\n".encode("latin-1")
                                       + ("Lonely " + "x" * 10_000 + " sentence.\n").encode())
    (tmp_path / "empty.txt").write_bytes(b"")
    config = PipelineConfig(
        input_files=(str(tmp_path / "bad.txt"), str(tmp_path / "empty.txt")), output_dir=str(tmp_path / "out"),
        vocab_file=vocab_file, instances=InstanceConfig(max_seq_length=16, max_predictions_per_seq=2))
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        metadata = create_pretraining_data(config)
    assert caplog.messages == [f"1 input line(s) were not valid utf-8; their bad bytes were dropped (first: "
                               f"{tmp_path / 'bad.txt'}:2). Give the right --encoding, or --encoding_errors strict "
                               "to stop at such lines"]
    with pytest.raises(SmallBertError, match=rf"^{tmp_path / 'bad.txt'}:2: not valid utf-8 \(invalid start byte"):
        create_pretraining_data(dataclasses.replace(config, output_dir=str(tmp_path / "strict"),
                                                    encoding_errors="strict"))
    assert not (tmp_path / "strict").exists()
    latin = create_pretraining_data(dataclasses.replace(config, output_dir=str(tmp_path / "latin"),
                                                        encoding="latin-1", encoding_errors="strict"))
    assert "undecodable_lines" not in latin["input_counts"]
    with pytest.raises(SmallBertError, match="--encoding=klingon: unknown encoding"):
        create_pretraining_data(dataclasses.replace(config, encoding="klingon"))
    counts = metadata["counts"]
    assert metadata["input_counts"]["undecodable_lines"] == 1 and metadata["input_counts"]["empty_input_files"] == 1
    assert counts["documents"] == 2 and counts["single_sentence_documents"] == 1
    rows = read_all(list_shards(str(tmp_path / "out")))
    assert (rows["input_ids"] == metadata["special_token_ids"]["[UNK]"]).any() or \
           (rows["masked_lm_ids"] == metadata["special_token_ids"]["[UNK]"]).any()  # the 10,000-char word

    def fails(match, **changes):
        out = changes.pop("out", tmp_path / "new")
        with pytest.raises(SmallBertError, match=match):
            create_pretraining_data(dataclasses.replace(make_config(corpus, out, vocab_file), **changes))

    fails("no instances", input_files=(str(tmp_path / "empty.txt"),))
    fails("no such input file", input_files=(str(tmp_path / "missing*.txt"),))
    fails(r"--max_seq_length=4", instances=InstanceConfig(max_seq_length=4))
    fails(r"--output_dir=.*not empty", out=tmp_path / "out")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    fails(r"vocab.txt: vocab lacks \[MASK\]", vocab_file=str(tmp_path / "vocab.txt"))


def test_interrupted_run_leaves_no_readable_shard(tmp_path, monkeypatch, corpus, vocab_file):
    import smallbert.data.pipeline as pipeline

    def crash(path, arrays):
        with open(path, "wb") as f:
            f.write(b"half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "write_mindrecord", crash)
    with pytest.raises(KeyboardInterrupt):
        create_pretraining_data(make_config(corpus, tmp_path / "out", vocab_file))
    with pytest.raises(SmallBertError, match="no pretraining shards"):
        list_shards(str(tmp_path / "out"))
    with pytest.raises(SmallBertError, match="no metadata.json"):
        read_metadata(str(tmp_path / "out"))


def test_cli_reports_one_line(tmp_path, vocab_file):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "create_pretraining_data.py"),
                           "--input_file", str(tmp_path / "nothing.txt"), "--output_dir", str(tmp_path / "o"),
                           "--vocab_file", vocab_file], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --input_file: {tmp_path / 'nothing.txt'}: no such input file"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_tfrecord(path, rows: list[dict[str, np.ndarray]]) -> None:
    """Google's format without TensorFlow: tf.train.Example protos in TFRecord framing."""
    with open(path, "wb") as f:
        for row in rows:
            features = b""
            for key, values in row.items():
                if values.dtype.kind == "f":  # Feature.float_list = 2 { value = 1 (packed) }
                    feature = _field(2, _field(1, values.astype("<f4").tobytes()))
                else:  # Feature.int64_list = 3
                    feature = _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))
                features += _field(1, _field(1, key.encode()) + _field(2, feature))
            data = _field(1, features)  # Example.features = 1 { map feature = 1 }
            length = len(data).to_bytes(8, "little")
            f.write(length + masked_crc32c(length).to_bytes(4, "little") + data
                    + masked_crc32c(data).to_bytes(4, "little"))


def test_google_tfrecords(tmp_path):
    rows = [{"input_ids": np.arange(8) + i, "input_mask": np.ones(8, np.int64), "segment_ids": np.zeros(8, np.int64),
             "masked_lm_positions": np.array([1, 2]), "masked_lm_ids": np.array([5, i]),
             "masked_lm_weights": np.array([1.0, 0.0]), "next_sentence_labels": np.array([i % 2])} for i in range(10)]
    write_tfrecord(tmp_path / "a.tfrecord", rows[:6])
    write_tfrecord(tmp_path / "b.tfrecord", rows[6:])
    files = list_shards(str(tmp_path / "*.tfrecord"))
    got = read_all(files)
    assert got["input_ids"].dtype == np.int32 and got["masked_lm_weights"].dtype == np.float32
    for column in COLUMNS:
        assert got[column].tolist() == [r[column].tolist() for r in rows]
    ranks = [read_all(files, num_shards=2, shard_id=k)["input_ids"][:, 0].tolist() for k in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10)) and len(ranks[0]) == 5


def test_tfrecords_truncated_or_corrupt_framing(tmp_path):
    rows = [{"input_ids": np.arange(8), "masked_lm_weights": np.array([1.0, 0.0])} for _ in range(3)]
    write_tfrecord(tmp_path / "a.tfrecord", rows)
    data = (tmp_path / "a.tfrecord").read_bytes()
    verify_tfrecords([str(tmp_path / "a.tfrecord")])
    (tmp_path / "a.tfrecord").write_bytes(data[:-5])
    with pytest.raises(SmallBertError, match=r"a\.tfrecord: truncated"):
        verify_tfrecords([str(tmp_path / "a.tfrecord")])
    (tmp_path / "a.tfrecord").write_bytes(data[:3] + b"\x7f" + data[4:])
    with pytest.raises(SmallBertError, match=r"a\.tfrecord: corrupt TFRecord framing at byte 0"):
        verify_tfrecords([str(tmp_path / "a.tfrecord")])


# --- what run_pretrain.py checks before the first step: vocabulary and shard integrity -------------------------

_spec = importlib.util.spec_from_file_location("run_pretrain", os.path.join(REPO, "run_pretrain.py"))
run_pretrain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_pretrain)


class Built(Exception):
    """Raised where the first graph would be built: every check before it passed."""


@pytest.fixture
def pretrain_cli(tmp_path, static_run, vocab_file, monkeypatch, capsys):
    """Runs run_pretrain.py's main on a fresh copy of the static shards → (exit code or "built", stderr)."""
    from smallbert.train import TrainStep

    def built(*args, **kwargs):
        raise Built

    monkeypatch.setattr(TrainStep, "__init__", built)
    data = tmp_path / "data"
    shutil.copytree(static_run[0], data)
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "intermediate_size": 64,
                                  "max_position_embeddings": 64}))

    def run(*extra: str, vocab: str | None = vocab_file):
        argv = ["--data_dir", str(data), "--config", str(config), "--output_dir", str(tmp_path / "run"),
                "--train_steps", "2", "--train_batch_size", "4", *(["--vocab_file", vocab] if vocab else []), *extra]
        try:
            code = run_pretrain.main(argv)
        except Built:
            code = "built"
        return code, capsys.readouterr().err.strip()

    run.data, run.output_dir = data, tmp_path / "run"
    return run


def other_vocab(tmp_path, vocab_file, name="vocab.txt"):
    """The same vocabulary with two ordinary tokens swapped: same size, other ids."""
    lines = open(vocab_file, encoding="utf-8").read().split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def test_pretraining_checks_the_vocabulary(tmp_path, pretrain_cli, vocab_file):
    assert pretrain_cli()[0] == "built"
    other = other_vocab(tmp_path, vocab_file, "other.txt")
    code, err = pretrain_cli(vocab=other)
    assert code == 2 and err == (f"error: --vocab_file: {other} is not the vocab {pretrain_cli.data} was made with "
                                 f"({vocab_file}, per its metadata.json): their sha256 differ; the token ids would "
                                 "mean other words")
    # Without --vocab_file the checkpoint's vocab is the run's, so it must be the data's; with one that differs
    # from the checkpoint's, the checkpoint's rows are adapted to it instead (test_vocab.py).
    checkpoint = other_vocab(tmp_path / "init", vocab_file)
    code, err = pretrain_cli("--init_checkpoint", str(tmp_path / "init"), vocab=None)
    assert code == 2 and err.startswith(f"error: --init_checkpoint: {checkpoint} is not the vocab ")
    assert vocab_file in err


def corrupt(data, kind: str) -> str:
    """Damages a shard set written by the data tool; returns the file an error must name."""
    shard = data / "part-000001.mindrecord"
    if kind == "truncated":
        shard.write_bytes(shard.read_bytes()[:-1000])
        return str(shard)
    if kind in ("flipped", "flipped index"):
        target = shard if kind == "flipped" else data / "part-000001.mindrecord.db"
        body = bytearray(target.read_bytes())
        middle = len(body) // 2 if kind == "flipped index" else 1 << 20  # first data page of the shard
        body[middle:middle + 256] = bytes(b ^ 0x5A for b in body[middle:middle + 256])
        target.write_bytes(bytes(body))
        return str(target)
    if kind == "unlisted":
        for suffix in ("", ".db"):
            shutil.copy(str(shard) + suffix, data / ("part-000007.mindrecord" + suffix))
        return str(data / "part-000007.mindrecord")
    if kind == "deleted":
        shard.unlink()
        return str(shard)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "flipped", "flipped index", "unlisted", "deleted"])
def test_corrupt_shards_stop_before_any_step(pretrain_cli, kind):
    name = corrupt(pretrain_cli.data, kind)
    code, err = pretrain_cli()
    assert code == 2 and err.startswith(f"error: {name}: ") and "\n" not in err, err
    assert not pretrain_cli.output_dir.exists()


def test_wrong_config_init_checkpoint_leaves_no_output_dir(pretrain_cli, minilm_dir):
    code, err = pretrain_cli("--init_checkpoint", minilm_dir)  # H384, the config is H32
    assert code == 2 and "has shape" in err and "config needs" in err, err
    assert not pretrain_cli.output_dir.exists()


def test_fast_verify_and_old_metadata(pretrain_cli, caplog):
    assert pretrain_cli("--verify_data", "fast")[0] == "built"
    meta = pretrain_cli.data / "metadata.json"
    metadata = json.loads(meta.read_text())
    del metadata["file_checks"]  # as written before sizes and hashes were recorded
    meta.write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING, logger="smallbert"):
        assert pretrain_cli()[0] == "built"
    assert "no shard sizes or hashes" in caplog.text
    name = corrupt(pretrain_cli.data, "truncated")  # the header still tells the size
    code, err = pretrain_cli()
    assert code == 2 and err.startswith(f"error: {name}: ") and "its header describes" in err


def test_corrupt_row_stops_with_the_shard_named(tmp_path, static_run):
    data = tmp_path / "data"
    shutil.copytree(static_run[0], data)
    files = list_shards(str(data))
    rows = read_all([files[1]])
    rows["input_ids"][5, 3] = 40000
    write_mindrecord(files[1], rows)
    metadata = read_metadata(str(data))
    with pytest.raises(SmallBertError, match="content differs"):
        verify_shards(files, metadata, "full")
    with pytest.raises(SmallBertError, match=rf"^{files[1]}: row 5 holds input_ids 40000 \(outside \[0, 30521\]\)"):
        for _ in checked_batches(files, 8, vocab_size=30522, seed=3, metadata=metadata):
            pass


def test_ctrl_c_removes_partial_output(tmp_path, vocab_file):
    """SIGINT to the tool's process group (as a terminal's Ctrl-C): one line, exit 130, nothing left behind."""
    import signal
    import time

    with open(vocab_file, encoding="utf-8") as f:
        words = [w for w in f.read().split("\n")[2000:5000] if w.isalpha()]
    corpus = write_corpus(str(tmp_path / "big.txt"), 3000, words, seed=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "create_pretraining_data.py"),
                             "--input_file", corpus, "--output_dir", str(out), "--vocab_file", vocab_file,
                             "--max_seq_length", "32", "--max_predictions_per_seq", "4", "--dupe_factor", "1",
                             "--documents_per_chunk", "30", "--processes", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as from a terminal: under `cmd &` in a script SIGINT is ignored and would be inherited
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out.is_dir() and any(n.startswith("part-") for n in os.listdir(out))):
        assert proc.poll() is None and time.time() < deadline, "no shard was written"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].split("\r")[-1] == f"interrupted: removed the partial output in {out}"
    assert not out.exists()  # this run made it: nothing of it is left


def test_overwrite_replaces_an_earlier_run(tmp_path, static_run, corpus, vocab_file):
    out = tmp_path / "out"
    shutil.copytree(static_run[0], out)
    (out / ".incomplete-00000").mkdir()  # as an older, killed run leaves it
    with pytest.raises(SmallBertError, match=r"not empty \(found \.incomplete-00000\); use a new directory, "
                                             r"or --overwrite to replace that run's output"):
        create_pretraining_data(make_config(corpus, out, vocab_file))
    config = make_config(corpus, out, vocab_file, documents_per_chunk=240)
    metadata = create_pretraining_data(dataclasses.replace(config, overwrite=True))
    assert sorted(os.listdir(out)) == ["metadata.json", "part-000000.mindrecord", "part-000000.mindrecord.db"]
    assert metadata["files"] == ["part-000000.mindrecord"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SmallBertError, match=r"not empty \(found notes.txt\); use a new directory$"):
        create_pretraining_data(dataclasses.replace(config, overwrite=True))


def test_failed_run_leaves_no_empty_directory(tmp_path, vocab_file):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SmallBertError, match="no instances"):
        create_pretraining_data(make_config(str(tmp_path / "empty.txt"), tmp_path / "new" / "out", vocab_file))
    assert not (tmp_path / "new" / "out").exists()
