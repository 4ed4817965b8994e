"""Distillation of a fine-tuned teacher into a compact student (Hinton et al. 2015; Turc et al. 2019).

`run_distill(DistillConfig)` checks every input before anything is compiled or written, then:
  1. builds the transfer set: the task's train examples (labelled; single sentences or pairs), with --augment their
     perturbed copies (unlabelled; `augment.py`) and, for a single-sentence task, the sentences of every
     --transfer_file (unlabelled; Google's one-sentence-per-line text with blank lines between documents,
     .gz/.bz2, or a Wikipedia `.xml.bz2` dump through `smallbert.data.extract`);
  2. computes the teacher's logits on the transfer set and the dev splits once, in eval mode, with the teacher's
     own tokenizer, cached on disk (`teacher.py`), and reports the teacher's own dev metrics;
  3. per seed, with --intermediate_loss, first distils the teacher's hidden states and attention scores layer by
     layer, the teacher running live (`layers.py`; teacher and student must then tokenize identically); then
     trains the student through fine-tuning's per-seed loop (`loop.train_seed`: the same TrainStep,
     AMP, bucketing, dev evaluation each epoch, best/ kept in save_pretrained format) with `DistillationLoss`:
     soft cross-entropy to the teacher for classification, squared error to the teacher's output for regression;
  4. writes eval_results.json (as run_classify.py's, plus `teacher`) and test_predictions.tsv.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from collections import Counter

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from .. import compile_cache
from ..data.extract import read_documents
from ..errors import SmallBertError, output_directory
from ..tokenization import FullTokenizer
from .augment import Augmentation, augment
from .config import DistillConfig
from .encode import SPECIAL_TOKENS, default_cache_dir, encode_split
from .layers import check_same_tokenizer, train_layers
from .loop import (check_output_dir, compile_setup, format_metrics, hparams_of, load_data, num_outputs,
                   resolve_inputs, train_seeds, with_labels)
from .metrics import task_metrics
from .tasks import Split
from .teacher import cache_key, default_cache_path, load_teacher, teacher_logits

logger = logging.getLogger("smallbert")

UNLABELLED = -1  # the label id of a transfer-file sentence; a regression target is NaN instead

__all__ = ["DistillConfig", "DistillationLoss", "distillation_loss", "regression_distillation_loss", "run_distill"]


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


def regression_distillation_loss(outputs, teacher_outputs, targets, alpha: float):
    """Mean squared error to the teacher's output, plus alpha × mean squared error to the labelled targets.

    outputs, teacher_outputs float32 [B, 1]; targets float32 [B], NaN for rows without a label (the hard term
    is a mean over the labelled rows, 0 when none). Returns float32 [].
    """
    scores = outputs[:, 0]
    soft = ((scores - teacher_outputs[:, 0]) ** 2).mean()
    labelled = ops.logical_not(ops.isnan(targets))
    errors = ops.where(labelled, (scores - ops.where(labelled, targets, ops.zeros_like(targets))) ** 2,
                       ops.zeros_like(targets))
    hard = errors.sum() / ops.maximum(labelled.astype(ms.float32).sum(), 1.0)
    return soft + alpha * hard


class DistillationLoss(nn.Cell):
    """The student with `distillation_loss` (or, for regression, `regression_distillation_loss`), as `TrainStep`
    wants it.

    (input_ids, token_type_ids, attention_mask int32 [B,S], labels int32 [B] (regression: float32 [B]),
    teacher_logits float32 [B,C]) → (loss float32 [], logits float32 [B,C]).
    """

    def __init__(self, model: nn.Cell, temperature: float, alpha: float, regression: bool = False):
        super().__init__(auto_prefix=False)  # keep the model's Hugging Face parameter names
        self.model = model
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.regression = regression

    def construct(self, input_ids, token_type_ids, attention_mask, labels, teacher_logits):
        logits = self.model(input_ids, token_type_ids, attention_mask)
        if self.regression:
            return regression_distillation_loss(logits, teacher_logits, labels, self.alpha), logits
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


def transfer_split(train: Split, files: tuple[str, ...], augmentation: Augmentation | None = None) -> Split:
    """train's examples and labels, then `augmentation`'s copies of them and every file's sentences, unlabelled
    (UNLABELLED, or NaN for regression targets); the digest covers all sources. Sentence files only extend a
    single-sentence task; copies extend pairs too."""
    if files and train.text_b is not None:
        raise SmallBertError(f"--transfer_file: {files[0]}: a pair task's transfer set is its train pairs; "
                             f"one-sentence-per-line text cannot extend it")
    sentences, labels, digests, sources = list(train.text_a), [train.labels], [train.digest], [train.path]
    text_b = None if train.text_b is None else list(train.text_b)
    unlabelled = np.nan if train.labels.dtype == np.float32 else UNLABELLED

    def add_unlabelled(texts: list[str], digest: str, source: str) -> None:
        sentences.extend(texts)
        labels.append(np.full(len(texts), unlabelled, train.labels.dtype))
        digests.append(digest)
        sources.append(source)

    if augmentation is not None:
        copies_a, copies_b = augment(train.text_a, train.text_b, augmentation)
        logger.info("%s: %d perturbed copies of its %d examples (--augment %d)", train.path, len(copies_a),
                    len(train), augmentation.copies)
        add_unlabelled(copies_a, augmentation.digest(train.digest), f"its copies (--augment {augmentation.copies})")
        text_b = None if text_b is None else text_b + copies_b
    for path in files:
        file_sentences, digest = read_transfer_file(path)
        logger.info("%s: %d unlabelled sentences", path, len(file_sentences))
        add_unlabelled(file_sentences, digest, path)
    return Split(name="transfer", path=" + ".join(sources), text_a=sentences,
                 text_b=text_b, raw_labels=None, lines=[], index=None,
                 digest=hashlib.sha1("|".join(digests).encode()).hexdigest(), labels=np.concatenate(labels))


def is_labelled(labels: np.ndarray) -> np.ndarray:
    """bool [N]: the rows of a transfer set that have a label (not UNLABELLED, not NaN)."""
    return ~np.isnan(labels) if labels.dtype == np.float32 else labels >= 0


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

    All inputs are checked (and the teacher loaded) before output_dir is touched. One seed writes into output_dir;
    several write output_dir/seed_<s>/ each, the mean ± std at the top, and the best seed's test predictions.
    """
    cfg.validate()
    checkpoint, config, vocab_file, do_lower_case = resolve_inputs(cfg)
    check_student_vocab(cfg, vocab_file, do_lower_case, config.vocab_size)
    clear = check_output_dir(cfg, [cfg.init_checkpoint, cfg.data_dir, cfg.vocab_file, cfg.bert_config_file,
                                   cfg.teacher, cfg.logits_cache, *cfg.transfer_files])
    data = load_data(cfg, vocab_file, do_lower_case, config, checkpoint, train_batches=False)
    config = with_labels(config, data)
    transfer = transfer_split(data.train, cfg.transfer_files, Augmentation(cfg.augment) if cfg.augment else None)
    if len(transfer) < cfg.train_batch_size:  # the labelled rows alone may be fewer: the unlabelled text fills up
        raise SmallBertError(f"--train_batch_size: {cfg.train_batch_size} exceeds the {len(transfer)} examples "
                             f"of the transfer set ({transfer.path})")
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    cache_dir = cfg.cache_dir or default_cache_dir()
    transfer_ids = encode_split(transfer, tokenizer, vocab_file, cfg.max_length, cache_dir)
    if cfg.logits_cache and os.path.isdir(cfg.logits_cache):
        raise SmallBertError(f"--logits_cache: {cfg.logits_cache} is a directory; give a file path")
    ms.set_device(cfg.device_target)
    teacher = load_teacher(cfg.teacher, num_outputs(config), data.label_names)
    if cfg.intermediate_loss:
        check_same_tokenizer(teacher.tokenizer, tokenizer, cfg.teacher, vocab_file)
        if cfg.max_length > teacher.max_positions:
            raise SmallBertError(f"--max_length: {cfg.max_length} exceeds the teacher's max_position_embeddings "
                                 f"{teacher.max_positions}; --intermediate_loss runs it on the student's batches")

    def logits_for(split: Split, explicit: str | None) -> np.ndarray:
        key = cache_key(teacher, split.digest, len(split), min(cfg.max_length, teacher.max_positions))
        path = explicit or default_cache_path(cache_dir, split.name, key)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return teacher_logits(teacher, split.text_a, split.digest, cfg.max_length, cfg.eval_batch_size, path,
                              text_b=split.text_b)

    soft_targets = logits_for(transfer, cfg.logits_cache)
    teacher_dev = {f"{split.name}_{metric}": value for split, _ in data.devs for metric, value in
                   task_metrics(data.task.metrics, logits_for(split, None), split.labels,
                                data.task.is_regression).items()}
    logger.info("teacher %s: %s", cfg.teacher, format_metrics(teacher_dev))
    teacher_model = teacher.model if cfg.intermediate_loss else None  # the layer stage runs the teacher live
    # The teacher's logit graphs are compiled above, or not at all when its logits were cached: outside the
    # session, whose graphs MindSpore numbers from its start. The live teacher's graphs are compiled inside it.
    teacher_key = {"digest": teacher.digest, "config": teacher.model.config.to_dict()} if teacher_model else None
    teacher = None  # the logit stage needs only its cached logits

    def layer_stage(model, seed):
        return train_layers(model, teacher_model, cfg, transfer_ids, seed)

    data = dataclasses.replace(data, train=transfer, train_ids=transfer_ids)
    if clear:
        shutil.rmtree(cfg.output_dir)
    hparams = {**hparams_of(cfg), "checkpoint": checkpoint, "vocab_file": vocab_file,
               "do_lower_case": do_lower_case, "bert_config": config.to_dict(),
               "num_train_examples": len(transfer), "num_labelled_examples": int(np.sum(is_labelled(transfer.labels))),
               "steps_per_epoch": len(transfer) // cfg.train_batch_size}
    teacher_info = {"path": cfg.teacher, **teacher_dev}

    def net_with_loss(model):
        return DistillationLoss(model, cfg.temperature, cfg.alpha, data.task.is_regression)

    def train_columns(rows):
        return transfer.labels[rows], soft_targets[rows]

    setup = {**compile_setup(cfg, config, data), "teacher": teacher_key} \
        if cfg.compile_cache and not cfg.resume else None
    with compile_cache.session(setup), output_directory(cfg.output_dir):
        results = train_seeds(cfg, checkpoint, config, data, vocab_file, do_lower_case,
                              {"hparams": hparams, "teacher": teacher_info,
                               **{f"teacher_{key}": value for key, value in teacher_dev.items()}},
                              net_with_loss=net_with_loss, train_columns=train_columns,
                              first_stage=layer_stage if cfg.intermediate_loss else None)
    key = results["metric_for_best"]
    logger.info("student best %s over %d seed(s): %.4f ± %.4f; teacher %.4f", key, results["num_seeds"],
                results[f"best_{key}_mean"], results[f"best_{key}_std"], teacher_dev[key])
    return results
