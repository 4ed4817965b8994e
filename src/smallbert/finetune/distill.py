"""Distillation of a fine-tuned teacher into a compact student (Hinton et al. 2015; Turc et al. 2019).

`run_distill(DistillConfig)` checks every input before anything is compiled or written, then:
  1. builds the transfer set: the task's train sentences (labelled) and the sentences of every --transfer_file
     (unlabelled; Google's one-sentence-per-line text with blank lines between documents, .gz/.bz2, or a
     Wikipedia `.xml.bz2` dump through `smallbert.data.extract`);
  2. computes the teacher's logits on the transfer set and dev once, in eval mode, with the teacher's own
     tokenizer, cached on disk (`teacher.py`), and reports the teacher's own dev accuracy;
  3. per seed, trains the student through fine-tuning's per-seed loop (`loop.train_seed`: the same TrainStep,
     AMP, bucketing, dev evaluation each epoch, best/ kept in save_pretrained format) with `DistillationLoss`;
  4. writes eval_results.json (as run_classify.py's, plus `teacher`) and test_predictions.tsv.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import Counter

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..data.extract import read_documents
from ..errors import SmallBertError
from ..tokenization import FullTokenizer
from .encode import SPECIAL_TOKENS, encode_split
from .loop import Data, FinetuneConfig, load_data, resolve_inputs, train_seeds
from .metrics import classification_metrics
from .tasks import NUM_LABELS, Split
from .teacher import cache_key, default_cache_path, load_teacher, teacher_logits

logger = logging.getLogger("smallbert")

UNLABELLED = -1  # the label of a transfer-file sentence


@dataclasses.dataclass
class DistillConfig(FinetuneConfig):
    """A fine-tuning config plus the teacher, the unlabelled transfer text and the loss's T and alpha.

    `logits_cache` None means `<cache_dir>/teacher-<split>-<key>.npz`, one file per teacher, text and max_length;
    an explicit path is checked against its key and refused when it was written for other inputs.
    """

    teacher: str = ""
    transfer_files: tuple[str, ...] = ()
    temperature: float = 2.0
    alpha: float = 0.0
    logits_cache: str | None = None
    lr: float = 1e-4

    def validate(self) -> None:
        super().validate()
        if not self.teacher:
            raise SmallBertError("--teacher: required (a fine-tuned classifier directory)")
        if not self.temperature > 0:
            raise SmallBertError(f"--temperature: must be positive, got {self.temperature}")
        if not self.alpha >= 0:
            raise SmallBertError(f"--alpha: must be >= 0, got {self.alpha}")
        if not self.do_train:
            raise SmallBertError("--do_train false: nothing to distil; evaluate with run_classify.py")


# ---------------------------------------------------------------------------------------------------------------
# Loss


def distillation_loss(logits, teacher_logits, labels, temperature: float, alpha: float):
    """T² × soft cross-entropy to softmax(teacher_logits / T), plus alpha × cross-entropy on the labelled rows.

    logits, teacher_logits float32 [B, C]; labels int32 [B], UNLABELLED (-1) for rows without a label.
    Both terms are means: the soft one over all B rows, the hard one over the labelled rows (0 when none).
    The T² keeps the soft term's gradient scale independent of T (Hinton et al. 2015). Returns float32 [].
    """
    log_student = ops.log_softmax(logits / temperature, axis=-1)
    soft_targets = ops.softmax(teacher_logits / temperature, axis=-1)
    soft = -(soft_targets * log_student).sum(axis=-1).mean() * (temperature * temperature)
    labelled = (labels >= 0).astype(ms.float32)
    log_probs = ops.log_softmax(logits, axis=-1)
    picked = ops.gather_elements(log_probs, 1, ops.maximum(labels, 0).reshape(-1, 1)).reshape(-1)
    hard = -(picked * labelled).sum() / ops.maximum(labelled.sum(), 1.0)
    return soft + alpha * hard


class DistillationLoss(nn.Cell):
    """The student with `distillation_loss`, as `TrainStep` wants it.

    (input_ids, token_type_ids, attention_mask int32 [B,S], labels int32 [B], teacher_logits float32 [B,C]) →
    (loss float32 [], logits float32 [B,C]).
    """

    def __init__(self, model: nn.Cell, temperature: float, alpha: float):
        super().__init__(auto_prefix=False)  # keep the model's Hugging Face parameter names
        self.model = model
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def construct(self, input_ids, token_type_ids, attention_mask, labels, teacher_logits):
        logits = self.model(input_ids, token_type_ids, attention_mask)
        return distillation_loss(logits, teacher_logits, labels, self.temperature, self.alpha), logits


# ---------------------------------------------------------------------------------------------------------------
# Transfer set


def read_transfer_file(path: str) -> tuple[list[str], str]:
    """The sentences of one unlabelled text file and the SHA-1 of its bytes.

    Raises SmallBertError naming the file when it cannot be read or holds no sentence.
    """
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sentences = [s for document in read_documents([path], Counter()) for s in document]
    except OSError as err:
        raise SmallBertError(f"--transfer_file: {path}: cannot read ({err.strerror or err})") from None
    if not sentences:
        raise SmallBertError(f"--transfer_file: {path}: no sentences (empty or blank lines only)")
    return sentences, digest.hexdigest()


def transfer_split(train: Split, files: tuple[str, ...]) -> Split:
    """train's sentences and labels, then every file's sentences labelled UNLABELLED; digest covers all sources."""
    sentences, labels, digests = list(train.sentences), [train.labels], [train.digest]
    for path in files:
        file_sentences, digest = read_transfer_file(path)
        logger.info("%s: %d unlabelled sentences", path, len(file_sentences))
        sentences += file_sentences
        labels.append(np.full(len(file_sentences), UNLABELLED, np.int32))
        digests.append(digest)
    return Split(name="transfer", path=" + ".join((train.path,) + tuple(files)), sentences=sentences,
                 labels=np.concatenate(labels), index=None, digest=hashlib.sha1("|".join(digests).encode())
                 .hexdigest())


def check_student_vocab(cfg: DistillConfig, vocab_file: str, do_lower_case: bool, vocab_size: int) -> None:
    """A student built from --bert_config_file alone must have exactly its vocab's size (no checkpoint to trust)."""
    if cfg.init_checkpoint is not None:
        return  # loop.check_vocab covers a checkpoint's vocab
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    num_ids = max(tokenizer.vocab.values()) + 1
    if num_ids != vocab_size:
        raise SmallBertError(f"--bert_config_file: {cfg.bert_config_file} has vocab_size {vocab_size} but "
                             f"--vocab_file {vocab_file} has {num_ids} ids")
    if any(t not in tokenizer.vocab for t in SPECIAL_TOKENS):
        raise SmallBertError(f"--vocab_file: {vocab_file} lacks one of {', '.join(SPECIAL_TOKENS)}")


# ---------------------------------------------------------------------------------------------------------------
# The run


def run_distill(cfg: DistillConfig) -> dict:
    """Distils `cfg.teacher` into the student as `cfg` says; returns what eval_results.json holds.

    All inputs are checked (and the teacher loaded) before output_dir is created. One seed writes into output_dir;
    several write output_dir/seed_<s>/ each, the mean ± std at the top, and the best seed's test predictions.
    """
    cfg.validate()
    checkpoint, config, vocab_file, do_lower_case = resolve_inputs(cfg)
    check_student_vocab(cfg, vocab_file, do_lower_case, config.vocab_size)
    data = load_data(cfg, vocab_file, do_lower_case, config, checkpoint)
    transfer = transfer_split(data.train, cfg.transfer_files)
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    cache_dir = cfg.cache_dir or os.path.join(cfg.data_dir, "cache")
    transfer_ids = encode_split(transfer, tokenizer, vocab_file, cfg.max_length, cache_dir)
    if cfg.logits_cache and os.path.isdir(cfg.logits_cache):
        raise SmallBertError(f"--logits_cache: {cfg.logits_cache} is a directory; give a file path")
    ms.set_device(cfg.device_target)
    teacher = load_teacher(cfg.teacher, NUM_LABELS)

    def logits_for(split: Split, explicit: str | None) -> np.ndarray:
        key = cache_key(teacher, split.digest, len(split.sentences), min(cfg.max_length, teacher.max_positions))
        path = explicit or default_cache_path(cache_dir, split.name, key)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return teacher_logits(teacher, split.sentences, split.digest, cfg.max_length, cfg.eval_batch_size, path)

    soft_targets = logits_for(transfer, cfg.logits_cache)
    teacher_dev = classification_metrics(logits_for(data.dev, None), data.dev.labels)
    logger.info("teacher %s: dev accuracy %.4f", cfg.teacher, teacher_dev["accuracy"])
    del teacher  # its weights are not needed while the student trains

    data = Data(transfer, transfer_ids, data.dev, data.dev_ids, data.test, data.test_ids)
    os.makedirs(cfg.output_dir, exist_ok=True)
    hparams = {**dataclasses.asdict(cfg), "seeds": list(cfg.seeds), "transfer_files": list(cfg.transfer_files),
               "checkpoint": checkpoint, "vocab_file": vocab_file, "do_lower_case": do_lower_case,
               "bert_config": config.to_dict(), "num_train_examples": len(transfer.sentences),
               "num_labelled_examples": int(np.sum(transfer.labels >= 0)),
               "steps_per_epoch": len(transfer.sentences) // cfg.train_batch_size}
    teacher_info = {"path": cfg.teacher, "dev_accuracy": teacher_dev["accuracy"], "dev_loss": teacher_dev["loss"]}

    def net_with_loss(model):
        return DistillationLoss(model, cfg.temperature, cfg.alpha)

    def train_columns(rows):
        return transfer.labels[rows], soft_targets[rows]

    results = train_seeds(cfg, checkpoint, config, data, vocab_file, do_lower_case,
                          {"hparams": hparams, "teacher": teacher_info,
                           "teacher_dev_accuracy": teacher_dev["accuracy"]},
                          net_with_loss=net_with_loss, train_columns=train_columns)
    logger.info("student best dev accuracy over %d seed(s): %.4f ± %.4f; teacher %.4f", results["num_seeds"],
                results["best_dev_accuracy_mean"], results["best_dev_accuracy_std"], teacher_dev["accuracy"])
    return results
