"""The distillation teacher: a fine-tuned classifier, and its logits over a sentence set, computed once and cached.

A teacher is a directory with config.json, weights and vocab.txt: the `best/` of a run_classify.py run, or a
Hugging Face sequence-classification model (its `classifier.*` weights; `num_labels` / `id2label` checked against
them). It tokenizes with its own vocab and casing, so teacher and student vocabularies may differ.

The logits cache is `<name>.npz` holding `logits` float32 [N, num_labels] and `key`, the JSON of what the logits
depend on: the teacher's weights (SHA-1), its vocab and casing, the sentences (SHA-1 of their source files) and
max_length. While computing, rows go into `<name>.npz.partial/` in chunks (each written to a temporary name and
renamed), so an interrupted computation resumes at the first missing chunk; the finished file is renamed into
place last.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from ..config import BertConfig
from ..errors import SmallBertError
from ..fileio import write_json
from ..model import BertForSequenceClassification
from ..tokenization import FullTokenizer
from ..weights import CONFIG_NAME, VOCAB_NAME, find_weights_file, load_state_dict, read_state_dict
from .encode import batch_rows, bucket_lengths, encode_sentences, file_digest, make_batch
from .loop import read_do_lower_case

logger = logging.getLogger("smallbert")

CACHE_VERSION = 1
CHUNK_ROWS = 8192


@dataclasses.dataclass
class Teacher:
    """A loaded teacher: the model (eval mode), its tokenizer and what identifies it in cache keys."""

    path: str
    model: BertForSequenceClassification
    tokenizer: FullTokenizer
    max_positions: int
    digest: str  # SHA-1 of the weights file, its vocab and do_lower_case

    @property
    def num_labels(self) -> int:
        return self.model.num_labels


def load_teacher(path: str, num_labels: int, label_names: tuple[str, ...] | None = None) -> Teacher:
    """Loads the classifier in directory `path`; raises SmallBertError naming --teacher when it cannot teach a task
    of `num_labels` outputs (no classifier head, another label count, other label names than `label_names` in its
    id2label, no vocab)."""
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        raise SmallBertError(f"--teacher: {path} is not a model directory (no {CONFIG_NAME})")
    config = BertConfig.from_json_file(path)
    vocab_file = os.path.join(path, VOCAB_NAME)
    if not os.path.isfile(vocab_file):
        raise SmallBertError(f"--teacher: {path} has no {VOCAB_NAME} (the teacher tokenizes with its own vocab)")
    weights_file = find_weights_file(path)
    state = read_state_dict(weights_file)
    head = state.get("classifier.weight")
    if head is None:
        raise SmallBertError(f"--teacher: {weights_file} has no classifier head (classifier.weight); the teacher "
                             f"must be a fine-tuned classifier, e.g. run_classify.py's best/")
    teacher_labels = int(head.shape[0])
    with open(os.path.join(path, CONFIG_NAME), encoding="utf-8") as f:
        declared = json.load(f)
    declared = declared.get("num_labels", len(declared.get("id2label", {})) or teacher_labels)
    if declared != teacher_labels:
        raise SmallBertError(f"--teacher: {path}/{CONFIG_NAME} declares {declared} labels but its classifier head "
                             f"has {teacher_labels}")
    if teacher_labels != num_labels:
        raise SmallBertError(f"--teacher: {path} has {teacher_labels} output(s) but the task needs {num_labels}")
    names = config.named_labels
    if label_names and names and names != label_names:
        raise SmallBertError(f"--teacher: {path}'s labels ({', '.join(names)}) are not the task's "
                             f"({', '.join(label_names)}) in the same order")
    model = BertForSequenceClassification(config, num_labels=teacher_labels)
    report = load_state_dict(model, state, weights_file)
    if report.missing:
        raise SmallBertError(f"--teacher: {weights_file} lacks {len(report.missing)} weight(s) the model needs, "
                             f"e.g. {report.missing[0]}")
    model.set_train(False)
    do_lower_case = read_do_lower_case(path)
    digest = hashlib.sha1(f"{file_digest(weights_file)}|{file_digest(vocab_file)}|{do_lower_case}".encode())
    return Teacher(path=path, model=model, tokenizer=FullTokenizer(vocab_file, do_lower_case=do_lower_case),
                   max_positions=config.max_position_embeddings, digest=digest.hexdigest())


def cache_key(teacher: Teacher, sentences_digest: str, num_rows: int, max_length: int) -> dict:
    return {"version": CACHE_VERSION, "teacher": teacher.digest, "teacher_path": os.path.abspath(teacher.path),
            "sentences": sentences_digest, "rows": num_rows, "max_length": max_length}


def default_cache_path(cache_dir: str, name: str, key: dict) -> str:
    """`cache_dir/teacher-<name>-<hash of key>.npz`: another teacher, text or max_length is another file."""
    identity = {k: v for k, v in key.items() if k != "teacher_path"}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"teacher-{name}-{digest}.npz")


def check_key(found: dict, wanted: dict, path: str) -> None:
    """Raises SmallBertError naming `path` and what differs when a cache was written for other inputs."""
    for field, what in (("teacher", "another teacher"), ("sentences", "other transfer text"),
                        ("rows", "other transfer text"), ("max_length", "another --max_length"),
                        ("version", "another smallbert version")):
        if found.get(field) != wanted[field]:
            where = f" ({found.get('teacher_path')})" if field == "teacher" else ""
            raise SmallBertError(f"--logits_cache: {path} was written for {what}{where}; delete it or choose "
                                 f"another path")


def read_cache(path: str) -> tuple[dict, np.ndarray]:
    try:
        with np.load(path) as cached:
            return json.loads(str(cached["key"])), cached["logits"]
    except (OSError, ValueError, KeyError) as err:
        raise SmallBertError(f"--logits_cache: {path}: not a teacher-logits cache ({err})") from None


def teacher_logits(teacher: Teacher, sentences: list[str], sentences_digest: str, max_length: int,
                   batch_size: int, cache_path: str, chunk_rows: int = CHUNK_ROWS,
                   text_b: list[str] | None = None) -> np.ndarray:
    """The teacher's logits float32 [N, num_labels] for `sentences` (paired with `text_b` for a pair task), from
    `cache_path` when it matches (`sentences_digest` must identify both sides).

    A cache at `cache_path` written for other inputs raises SmallBertError (no silent overwrite); so does a partial
    one. Otherwise computes in eval mode, in chunks of `chunk_rows` (resuming from `<cache_path>.partial/`), with a
    progress bar, and writes the cache atomically.
    """
    max_length = min(max_length, teacher.max_positions)
    key = cache_key(teacher, sentences_digest, len(sentences), max_length)
    if os.path.isfile(cache_path):
        found, logits = read_cache(cache_path)
        check_key(found, key, cache_path)
        logger.info("teacher logits for %d sentences from cache %s", len(sentences), cache_path)
        return logits
    partial = f"{cache_path}.partial"
    key_file = os.path.join(partial, "key.json")
    if os.path.isdir(partial):
        with open(key_file, encoding="utf-8") as f:
            check_key(json.load(f), key, partial)
    else:
        os.makedirs(partial)
        write_json(key_file, key)
    starts = range(0, len(sentences), chunk_rows)
    chunk_files = [os.path.join(partial, f"rows_{start:010d}.npy") for start in starts]
    done = sum(min(chunk_rows, len(sentences) - s) for s, f in zip(starts, chunk_files) if os.path.isfile(f))
    if done:
        logger.info("resuming the teacher's logits at %d of %d sentences (%s)", done, len(sentences), partial)
    forward = ms.jit(teacher.model.construct)
    buckets = bucket_lengths(max_length, False)
    with tqdm(total=len(sentences), initial=done, desc="teacher logits", unit="sentence") as bar:
        for start, chunk_file in zip(starts, chunk_files):
            if os.path.isfile(chunk_file):
                continue
            encoded = encode_sentences(sentences[start:start + chunk_rows],
                                       text_b[start:start + chunk_rows] if text_b is not None else None,
                                       teacher.tokenizer, max_length)
            logits = np.empty((len(encoded.lengths), teacher.num_labels), np.float32)
            for rows in batch_rows(encoded.lengths, batch_size, buckets):
                batch = make_batch(encoded, rows, buckets, batch_size)
                logits[rows] = forward(*(Tensor(x) for x in batch)).asnumpy()[:len(rows)]
                bar.update(len(rows))
            np.save(f"{chunk_file}.tmp.npy", logits)
            os.replace(f"{chunk_file}.tmp.npy", chunk_file)
    logits = np.concatenate([np.load(f) for f in chunk_files]) if chunk_files else \
        np.empty((0, teacher.num_labels), np.float32)
    tmp = f"{cache_path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, logits=logits, key=np.array(json.dumps(key)))
    os.replace(tmp, cache_path)
    shutil.rmtree(partial, ignore_errors=True)
    return logits
