"""Pretraining: the MLM + NSP loss and eval metrics, and `pretrain`, the loop behind `run_pretrain.py`.

`pretrain` runs `BertPreTrainingWithLoss` through `smallbert.train.TrainStep` and handles data, logging, eval,
checkpoints and exact resume.

Run directory (`output_dir`): `checkpoints/step_<N>/` and `final/` (see `smallbert.checkpoint`), and
`metrics.jsonl`, one JSON object per line —
    train rows: step, epoch, loss, mlm_loss, nsp_loss, lr, loss_scale, seq_per_s, skipped_steps, overflow_steps
    eval rows:  step, eval_loss, eval_mlm_loss, eval_nsp_loss, eval_mlm_accuracy, eval_nsp_accuracy,
                eval_perplexity
`step` counts optimizer updates: a step skipped because its gradients overflowed is not one (see `pretrain`).
Losses in train rows are means over the updates since the previous row, on rank 0's data; skipped_steps counts
the steps skipped since the previous row, overflow_steps all skipped so far. With `mlm_only` (no NSP head, loss =
mlm_loss) the nsp keys are left out.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype

from . import compile_cache, cpu_kernels, device
from .checkpoint import (CHECKPOINTS_DIR, FINAL_DIR, TRAINER_STATE_NAME, find_resume_checkpoint, list_checkpoints,
                         read_trainer_state, restore_checkpoint, resume_changes, save_checkpoint, verify_checkpoint)
from .config import AMP_LEVELS, DEVICES, PRECISIONS, BertConfig, PretrainConfig
from .data.records import (check_vocab, checked_batches, list_shards, pretraining_dataset, read_metadata,
                           shard_rows, validate_for_model, verify_shards, verify_tfrecords)
from .errors import SmallBertError, output_directory
from .model import BertForPreTraining
from .optim import WarmupPolynomialDecay, build_optimizer
from .train import (DynamicLossScale, StepOutput, TrainStep, _data_parallel_world_size, init_data_parallel, run_steps,
                    split_batch, sum_over_ranks)
from .vocab_adapter import config_for_vocab, load_weights_for_vocab
from .weights import find_weights_file

logger = logging.getLogger("smallbert")

# Google's column order in the pretraining records; `BertPreTrainingWithLoss` takes its inputs in this order.
PRETRAINING_COLUMNS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                       "masked_lm_weights", "next_sentence_labels")


def token_nll(logits: Tensor, ids: Tensor, softmax_nll: nn.Cell | None = None, bias: Tensor | None = None) -> Tensor:
    """-log softmax(logits + bias)[id] per row: logits float32 [N,V], ids int32 [N], bias float32 [V] or None
    (logits that include it) → [N].

    `softmax_nll`, a `cpu_kernels.FusedSoftmaxNll`, computes it if given (bias required). Otherwise log_softmax
    + gather rather than `ops.cross_entropy(reduction="none")`: on CPU the latter's graph holds ~19
    vocabulary-sized buffers (1.5 GB at N=640, V=30522, measured) where this holds ~3.
    """
    if softmax_nll is not None:
        return softmax_nll(logits.astype(mstype.float32), bias, ids)[0]
    if bias is not None:
        logits = logits + bias
    return -ops.gather_elements(ops.log_softmax(logits, -1), 1, ids.reshape(-1, 1)).reshape(-1)


def masked_lm_loss(mlm_logits: Tensor, masked_lm_ids: Tensor, masked_lm_weights: Tensor,
                   denominator: Tensor | None = None, softmax_nll: nn.Cell | None = None,
                   output_bias: Tensor | None = None) -> Tensor:
    """Google's masked-LM loss: sum(w · nll) / (sum(w) + 1e-5) over the prediction slots.

    mlm_logits float32 [B,P,V]; masked_lm_ids int32 [B,P]; masked_lm_weights float32 [B,P], 1.0 for a real
    prediction and 0.0 for padding, so padded slots (whatever their ids) contribute nothing. `denominator`, a
    float32 scalar, replaces sum(w) + 1e-5 (see `BertPreTrainingWithLoss.split_batch`). `softmax_nll` and
    `output_bias` (float32 [V], when mlm_logits leave it out): see `token_nll`. Returns a scalar.
    """
    nll = token_nll(mlm_logits.reshape(-1, mlm_logits.shape[-1]), masked_lm_ids.reshape(-1), softmax_nll,
                    output_bias)
    weights = masked_lm_weights.reshape(-1)
    if denominator is None:
        denominator = weights.sum() + 1e-5
    return (weights * nll).sum() / denominator


class BertPreTrainingWithLoss(nn.Cell):
    """BertForPreTraining + MLM and NSP losses: (batch columns in PRETRAINING_COLUMNS order) → losses.

    Returns (loss, mlm_loss, nsp_loss), float32 scalars, loss = mlm_loss + nsp_loss; the NSP loss is the mean
    cross-entropy of `next_sentence_labels` int32 [B,1] (1 = B is a random sentence). With `mlm_only` the NSP
    head is not run: loss = mlm_loss and nsp_loss is 0.
    """

    def __init__(self, model: nn.Cell, mlm_only: bool = False):
        super().__init__(auto_prefix=False)  # keep the model's Hugging Face parameter names
        self.model = model
        self.mlm_only = mlm_only
        # sums the ranks' shares of the MLM denominator (see split_batch)
        self.rank_sum = ops.AllReduce() if _data_parallel_world_size() > 1 else None
        # on CPU the losses' softmax, with the output biases: MindSpore's is biased (see FusedSoftmaxNll)
        self.softmax_nll = cpu_kernels.FusedSoftmaxNll() if cpu_kernels.enabled() else None

    def construct(self, input_ids, input_mask, segment_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights,
                  next_sentence_labels, mlm_denominator=None):
        if mlm_denominator is not None and self.rank_sum is not None:
            mlm_denominator = ops.stop_gradient(self.rank_sum(mlm_denominator))
        fused = self.softmax_nll is not None  # the fused loss adds the output biases itself
        heads = self.model.cls
        mlm_bias = heads.predictions.bias if fused else None
        if self.mlm_only:
            mlm_logits = self.model.masked_lm_only(input_ids, segment_ids, input_mask, masked_lm_positions, not fused)
            mlm_loss = masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights, mlm_denominator,
                                      self.softmax_nll, mlm_bias)
            return mlm_loss, mlm_loss, ops.zeros_like(mlm_loss)
        mlm_logits, nsp_logits = self.model(input_ids, segment_ids, input_mask, masked_lm_positions, not fused)
        mlm_loss = masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights, mlm_denominator, self.softmax_nll,
                                  mlm_bias)
        nsp_labels = next_sentence_labels.reshape(-1)
        if fused:
            nsp_loss = token_nll(nsp_logits, nsp_labels, self.softmax_nll, heads.seq_relationship.bias).mean()
        else:
            nsp_loss = ops.cross_entropy(nsp_logits, nsp_labels)
        return mlm_loss + nsp_loss, mlm_loss, nsp_loss

    @staticmethod
    def split_batch(batch: Sequence[Tensor], k: int) -> list[tuple[Tensor, ...]]:
        """k micro-batches, each with `mlm_denominator` = (sum(w) + 1e-5) / (k · ranks), sum(w) over the WHOLE
        batch of all data-parallel ranks.

        Micro-batches and ranks rarely hold the same number of real predictions; normalising each by its own
        would weight a prediction by the size of its slice. With the shared denominator, averaging gradients over
        k micro-batches and N ranks gives exactly the gradient of one process on the N·k micro-batches' union,
        whose MLM loss is Google's sum(w · nll) / (sum(w) + 1e-5). (Google's TPU code normalises per core.)
        Each rank passes its own share, (sum of its w + 1e-5 / N) / (k · N), and `construct` sums the shares
        over the ranks in the graph: a host-side all-reduce here would wait for the previous step every step."""
        weights = batch[PRETRAINING_COLUMNS.index("masked_lm_weights")]
        ranks = _data_parallel_world_size()
        share = Tensor((float(weights.sum()) + 1e-5 / ranks) / (k * ranks), mstype.float32)
        return [micro + (share,) for micro in split_batch(batch, k)]


class BertPreTrainingMetrics(nn.Cell):
    """Eval sums for one batch (PRETRAINING_COLUMNS order), as a float32 vector [6]:
    (weighted MLM nll, weighted MLM correct, MLM weight, NSP nll, NSP correct, examples); the NSP sums are 0
    with `mlm_only`."""

    def __init__(self, model: nn.Cell, mlm_only: bool = False):
        super().__init__(auto_prefix=False)
        self.model = model
        self.mlm_only = mlm_only

    def construct(self, input_ids, input_mask, segment_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights,
                  next_sentence_labels):
        labels = next_sentence_labels.reshape(-1)
        if self.mlm_only:
            mlm_logits = self.model.masked_lm_only(input_ids, segment_ids, input_mask, masked_lm_positions)
            nsp_nll = ops.zeros((), mstype.float32)
            nsp_correct = ops.zeros((), mstype.float32)
        else:
            mlm_logits, nsp_logits = self.model(input_ids, segment_ids, input_mask, masked_lm_positions)
            nsp_nll = ops.cross_entropy(nsp_logits, labels, reduction="sum")
            nsp_correct = (nsp_logits.argmax(-1).astype(mstype.int32) == labels).astype(mstype.float32).sum()
        ids = masked_lm_ids.reshape(-1)
        weights = masked_lm_weights.reshape(-1)
        mlm_logits = mlm_logits.reshape(ids.shape[0], -1)
        nll = token_nll(mlm_logits, ids)
        correct = (mlm_logits.argmax(-1).astype(mstype.int32) == ids).astype(mstype.float32)
        examples = ops.ones_like(nsp_nll) * labels.shape[0]
        return ops.stack([(weights * nll).sum(), (weights * correct).sum(), weights.sum(), nsp_nll, nsp_correct,
                          examples])


def pretraining_parameters(net: BertPreTrainingWithLoss) -> list[Parameter]:
    """What the optimizer updates: every trainable parameter, except with `mlm_only` the pooler and the NSP head,
    which the MLM loss does not reach; left out, they are saved as loaded instead of shrunk by weight decay."""
    if not net.mlm_only:
        return net.trainable_params()
    return [p for p in net.trainable_params() if not p.name.startswith(("bert.pooler.", "cls.seq_relationship."))]


def evaluate(metrics_fn, batches, mlm_only: bool = False) -> dict[str, float]:
    """Runs `metrics_fn` (a BertPreTrainingMetrics, possibly jitted) over `batches`; sums over data-parallel ranks.

    Returns eval_mlm_loss (mean nll over real, i.e. weighted, predictions), eval_nsp_loss, eval_loss (their sum),
    eval_mlm_accuracy, eval_nsp_accuracy and eval_perplexity (exp of eval_mlm_loss); with `mlm_only` no NSP keys,
    and eval_loss = eval_mlm_loss.
    """
    totals = np.zeros(6, np.float64)
    for batch in batches:
        totals += metrics_fn(*(Tensor(x) for x in batch)).asnumpy()
    totals = sum_over_ranks(totals)
    mlm_nll, mlm_correct, mlm_weight, nsp_nll, nsp_correct, examples = totals
    mlm_loss, nsp_loss = mlm_nll / max(mlm_weight, 1e-5), nsp_nll / max(examples, 1.0)
    result = {"eval_loss": float(mlm_loss + nsp_loss), "eval_mlm_loss": float(mlm_loss),
              "eval_nsp_loss": float(nsp_loss), "eval_mlm_accuracy": float(mlm_correct / max(mlm_weight, 1e-5)),
              "eval_nsp_accuracy": float(nsp_correct / max(examples, 1.0)),
              "eval_perplexity": float(math.exp(min(mlm_loss, 700.0)))}
    if mlm_only:
        del result["eval_nsp_loss"], result["eval_nsp_accuracy"]
    return result


AMP_DTYPES = {name: getattr(mstype, name) for name in PRECISIONS}
METRICS_NAME = "metrics.jsonl"


class _Shards:
    """Pretraining shards (`list_shards`) with their metadata (None for Google TFRecords) and sequence length."""

    def __init__(self, data_dir: str, bert_config: BertConfig, flag: str, verify: str = "full"):
        self.vocab_size = bert_config.vocab_size
        try:
            self.files = list_shards(data_dir)
        except SmallBertError as err:
            raise SmallBertError(f"{flag}: {err}") from None
        if all(".tfrecord" in os.path.basename(f) for f in self.files):
            verify_tfrecords(self.files, verify)
            self.metadata = None  # Google's files carry no statistics: the ids cannot be checked without a scan
            try:
                first = next(pretraining_dataset(self.files, 1, shuffle=False).create_tuple_iterator(
                    num_epochs=1, output_numpy=True))
            except (RuntimeError, StopIteration) as err:
                raise SmallBertError(f"{flag}: {data_dir}: cannot read a TFRecord example ({err})") from None
            self.seq_length = int(first[0].shape[1])
            self.shapes = [list(column.shape[1:]) for column in first]
            if self.seq_length > bert_config.max_position_embeddings:
                raise SmallBertError(f"{flag}: {data_dir}: sequences of {self.seq_length} tokens exceed the "
                                     f"config's max_position_embeddings {bert_config.max_position_embeddings}")
        else:
            try:
                self.metadata = validate_for_model(read_metadata(data_dir), vocab_size=bert_config.vocab_size,
                                                   max_position_embeddings=bert_config.max_position_embeddings,
                                                   where=data_dir)
            except SmallBertError as err:
                raise SmallBertError(f"{flag}: {err}") from None
            verify_shards(self.files, self.metadata, verify)
            self.seq_length = int(self.metadata["max_seq_length"])
            self.shapes = [self.seq_length, self.metadata.get("max_predictions_per_seq"), self.metadata.get("mlm_only")]

    def batches(self, batch_size: int, *, epoch: int, seed: int, shuffle: bool, rank: int, world_size: int,
                skip_batches: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
        """One epoch of this rank's batches (after `skip_batches`), numpy tuples in PRETRAINING_COLUMNS order."""
        for row in checked_batches(self.files, batch_size, vocab_size=self.vocab_size, epoch=epoch, seed=seed,
                                   shuffle=shuffle, num_shards=world_size, shard_id=rank,
                                   skip_batches=skip_batches, metadata=self.metadata):
            yield tuple(row[c] for c in PRETRAINING_COLUMNS)

    @property
    def rows(self) -> int:
        """Sequences in all the shards (for TFRecords, counted by a pass over the files)."""
        if self.metadata is not None:
            return sum(shard_rows(self.files, self.metadata))
        return pretraining_dataset(self.files, 1, shuffle=False).get_dataset_size()

    def batches_per_epoch(self, batch_size: int, world_size: int) -> int:
        if self.metadata is not None:
            return sum(shard_rows(self.files, self.metadata)) // world_size // batch_size
        return pretraining_dataset(self.files, batch_size, num_shards=world_size).get_dataset_size()


def check_layout(shards: _Shards, mlm_only: bool, flag: str, data_dir: str) -> None:
    """--mlm_only must match how the shards were made (their metadata's `mlm_only`; Google's TFRecords are NSP
    sentence pairs). Raises SmallBertError naming the flag and directory."""
    packed = bool(shards.metadata and shards.metadata.get("mlm_only", False))
    if mlm_only and not packed:
        raise SmallBertError(f"--mlm_only: {flag} {data_dir} holds NSP sentence pairs; make it with "
                             "create_pretraining_data.py --mlm_only, or train without --mlm_only")
    if packed and not mlm_only:
        raise SmallBertError(f"{flag}: {data_dir} holds single segments without NSP labels (made with "
                             "--mlm_only); pass --mlm_only to run_pretrain.py")


@dataclasses.dataclass
class _Inputs:
    """What `check_pretrain_inputs` found: the model config, the data and the checkpoint to resume from."""

    bert_config: BertConfig
    train: _Shards
    eval: _Shards | None
    resume_path: str | None


def check_pretrain_inputs(cfg: PretrainConfig, world_size: int = 1) -> _Inputs:
    """Validates every flag, file and the config against the data before anything is compiled.

    Raises SmallBertError naming the flag or file at fault.
    """
    if cfg.device_target not in DEVICES:
        raise SmallBertError(f"--device_target: {cfg.device_target!r} is not one of {', '.join(DEVICES)}")
    if cfg.amp not in AMP_LEVELS:
        raise SmallBertError(f"--amp: {cfg.amp!r} is not one of {', '.join(AMP_LEVELS)}")
    if cfg.amp_dtype not in AMP_DTYPES:
        raise SmallBertError(f"--amp_dtype: {cfg.amp_dtype!r} is not one of {', '.join(AMP_DTYPES)}")
    if cfg.amp != "O0" and cfg.amp_dtype == "bfloat16" and cfg.device_target == "CPU":
        raise SmallBertError("--amp_dtype bfloat16: MindSpore has no bfloat16 kernels on CPU; use GPU or Ascend")
    if (cfg.train_steps is None) == (cfg.epochs is None):
        raise SmallBertError("--train_steps / --epochs: give exactly one of them")
    for flag in ("train_steps", "epochs", "train_batch_size", "accumulation_steps", "log_steps", "eval_batches"):
        value = getattr(cfg, flag)
        if value is not None and value <= 0:
            raise SmallBertError(f"--{flag}: must be a positive integer, got {value}")
    for flag in ("warmup_steps", "save_steps", "keep_checkpoint_max", "eval_steps"):
        if getattr(cfg, flag) < 0:
            raise SmallBertError(f"--{flag}: must be >= 0, got {getattr(cfg, flag)}")
    if cfg.adam_epsilon <= 0:
        raise SmallBertError(f"--adam_epsilon: must be > 0, got {cfg.adam_epsilon}")
    if cfg.lr <= 0 or cfg.end_lr < 0 or cfg.end_lr > cfg.lr:
        raise SmallBertError(f"--lr / --end_lr: need 0 <= end_lr <= lr and lr > 0, got {cfg.lr} / {cfg.end_lr}")
    if cfg.train_batch_size % cfg.accumulation_steps:
        raise SmallBertError(f"--accumulation_steps: {cfg.accumulation_steps} does not divide --train_batch_size "
                             f"{cfg.train_batch_size} into equal micro-batches")
    if cfg.vocab_file and not os.path.isfile(cfg.vocab_file):
        raise SmallBertError(f"--vocab_file: {cfg.vocab_file}: no such file")
    bert_config = BertConfig.from_json_file(cfg.bert_config_file)
    if cfg.vocab_file:  # a vocab other than the checkpoint's: its rows are adapted, vocab_size follows it
        bert_config = config_for_vocab(bert_config, cfg.init_checkpoint, cfg.vocab_file)
    train = _Shards(cfg.data_dir, bert_config, "--data_dir", cfg.verify_data)
    check_layout(train, cfg.mlm_only, "--data_dir", cfg.data_dir)
    # The shards must be in --vocab_file's ids; the checkpoint's own vocab may differ from it (then it is adapted).
    check_vocab(train.metadata, cfg.data_dir, cfg.vocab_file, None if cfg.vocab_file else cfg.init_checkpoint)
    if train.batches_per_epoch(cfg.train_batch_size, world_size) == 0:
        raise SmallBertError(f"--data_dir: {cfg.data_dir}: fewer instances than one batch of "
                             f"{cfg.train_batch_size} per rank ({world_size} ranks)")
    evaluation = None
    if cfg.eval_data_dir:
        evaluation = _Shards(cfg.eval_data_dir, bert_config, "--eval_data_dir", cfg.verify_data)
        check_layout(evaluation, cfg.mlm_only, "--eval_data_dir", cfg.eval_data_dir)
        if evaluation.seq_length != train.seq_length:
            raise SmallBertError(f"--eval_data_dir: {cfg.eval_data_dir}: sequences of {evaluation.seq_length} "
                                 f"tokens, the training data's are {train.seq_length}")
    if cfg.init_checkpoint:
        find_weights_file(cfg.init_checkpoint)
    resume_path = find_resume_checkpoint(cfg.resume, cfg.output_dir) if cfg.resume else None
    if resume_path is None and list_checkpoints(cfg.output_dir):
        raise SmallBertError(f"--output_dir: {cfg.output_dir} already holds checkpoints; pass --resume auto to "
                             f"continue that run, or choose a new --output_dir")
    return _Inputs(bert_config, train, evaluation, resume_path)


def check_resume(cfg: PretrainConfig, inputs: _Inputs, world_size: int) -> None:
    """Refuses to resume `inputs.resume_path` (the checkpoint every rank agreed on) with other data or flags.

    Runs after `agree_on_resume`, so every rank checks the same step and all fail together rather than one rank
    stopping while the others wait for it. The checkpoint's files were verified when it was chosen.
    """
    if inputs.resume_path is None:
        return
    state = read_trainer_state(inputs.resume_path)
    if state.get("seq_length") != inputs.train.seq_length:
        raise SmallBertError(f"--resume: {inputs.resume_path} was trained on sequences of "
                             f"{state.get('seq_length')} tokens, --data_dir has {inputs.train.seq_length}")
    check_resume_flags(cfg, state, inputs.resume_path, inputs.bert_config, inputs.train, world_size)


def total_updates(train_steps: int | None, epochs: int | None, train: _Shards, batch_size: int,
                  world_size: int) -> int:
    """The run's length in optimizer updates: train_steps, or epochs × this many ranks' batches per epoch."""
    return train_steps or epochs * train.batches_per_epoch(batch_size, world_size)


def check_resume_flags(cfg: PretrainConfig, state: dict[str, Any], resume_path: str, bert_config: BertConfig,
                       train: _Shards, world_size: int) -> None:
    """Refuses, in one line, to resume the checkpoint `resume_path` (trainer `state`) with flags, model config or
    world size other than its own (`checkpoint.resume_changes`). With cfg.resume_force it warns with the same list
    instead and, when the learning-rate schedule changes (new peak, warmup, end or length, e.g. --epochs on
    another world size), with both schedules and the lr the next update takes under each."""
    changes = resume_changes(state, dataclasses.asdict(cfg), world_size, bert_config.to_dict(),
                             BertConfig.from_json_file(resume_path).to_dict())
    if not changes:
        return
    if not cfg.resume_force:
        raise SmallBertError(f"--resume: {resume_path} was trained with other settings: {', '.join(changes)}; "
                             f"pass --resume_force to continue with the new ones")
    logger.warning("--resume_force: continuing %s with changed settings: %s", resume_path, ", ".join(changes))
    saved = state.get("args", {})
    try:
        old = (saved["lr"], saved["warmup_steps"], saved["end_lr"],
               total_updates(saved["train_steps"], saved["epochs"], train, saved["train_batch_size"],
                             state["world_size"]))
    except KeyError:  # a checkpoint that records no flags
        return
    new = (cfg.lr, cfg.warmup_steps, cfg.end_lr,
           total_updates(cfg.train_steps, cfg.epochs, train, cfg.train_batch_size, world_size))
    if old != new:
        step = state["step"]
        lrs = [WarmupPolynomialDecay(lr, warmup, total, end).value(step) for lr, warmup, end, total in (old, new)]
        logger.warning("learning-rate schedule changes at update %d: lr %.3e -> %.3e (peak %g, warmup %d, end %g "
                       "at update %d -> peak %g, warmup %d, end %g at update %d)", step, *lrs, *old, *new)


class _MetricsLog:
    """Averages step outputs between log points; writes a console line and a `metrics.jsonl` row (rank 0 only).

    Losses are averaged over the updates only: a skipped step's loss may be inf or nan. Throughput counts every
    batch the step consumed.

    Opening the log drops rows newer than `start_step`, so a resumed run's file has no duplicates.
    """

    def __init__(self, output_dir: str, start_step: int, total_steps: int, enabled: bool, mlm_only: bool = False):
        self.path = os.path.join(output_dir, METRICS_NAME)
        self.mlm_only = mlm_only
        self.total_steps = total_steps
        self.enabled = enabled
        self.sums = np.zeros(3)
        self.count = 0
        self.skipped = 0
        self.started = time.perf_counter()
        if enabled and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= start_step]
            with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(self.path + ".tmp", self.path)

    def add(self, out: StepOutput) -> None:
        if out.overflow:
            self.skipped += 1
            return
        self.sums += (out.loss, *out.aux)
        self.count += 1

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def flush(self, step: int, epoch: int, lr: float, loss_scale: float, overflow_steps: int,
              global_batch_size: int) -> dict[str, Any]:
        """Writes the averages since the last flush; returns the row."""
        elapsed = time.perf_counter() - self.started
        loss, mlm_loss, nsp_loss = self.sums / max(self.count, 1)
        seq_per_s = (self.count + self.skipped) * global_batch_size / elapsed
        eta = (self.total_steps - step) * elapsed / max(self.count, 1)
        row = {"step": step, "epoch": epoch, "loss": loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss, "lr": lr,
               "loss_scale": loss_scale, "seq_per_s": seq_per_s, "skipped_steps": self.skipped,
               "overflow_steps": overflow_steps}
        if self.mlm_only:
            del row["nsp_loss"]
        self.write(row)
        if self.enabled:
            parts = f"mlm {mlm_loss:.4f}" + ("" if self.mlm_only else f", nsp {nsp_loss:.4f}")
            skipped = f" | skipped {self.skipped} (overflow)" if self.skipped else ""
            tqdm.write(f"step {step}/{self.total_steps} | loss {loss:.4f} ({parts}) "
                       f"| lr {lr:.3e} | scale {loss_scale:g} | {seq_per_s:.1f} seq/s{skipped} "
                       f"| eta {time.strftime('%H:%M:%S', time.gmtime(eta))}")
        self.sums[:] = 0
        self.count = 0
        self.skipped = 0
        self.started = time.perf_counter()
        return row


MAX_SKIPPED_IN_A_ROW = 100  # dynamic loss scaling recovers in log2(scale) skips: 16 from the default 2^16


def check_not_diverged(skipped_in_a_row: int, step: int, loss_scale: float) -> None:
    """Stops a run whose gradients stay inf/nan: with skipped steps not counted it would otherwise never end.

    Raises SmallBertError after MAX_SKIPPED_IN_A_ROW skipped steps in a row; the checkpoints are kept."""
    if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
        raise SmallBertError(f"training diverged: the last {skipped_in_a_row} steps after update {step} all had "
                             f"inf/nan gradients (loss scale now {loss_scale:g}); resume from an earlier "
                             f"checkpoint with a lower --lr, or use --amp O0")


def run_summary(cfg: PretrainConfig, inputs: _Inputs, model: BertForPreTraining, world_size: int,
                total_steps: int, start_step: int) -> str:
    """What the run is about to do, as printed before the progress bar: model, data, length, batch, devices,
    precision, optimizer and learning-rate schedule."""
    c = inputs.bert_config
    parameters = sum(int(np.prod(p.shape)) for p in model.weights())
    length = f"{total_steps} updates" + (f" ({cfg.epochs} epochs of "
                                         f"{inputs.train.batches_per_epoch(cfg.train_batch_size, world_size)})"
                                         if cfg.epochs else "")
    if start_step:
        length += f", resuming after update {start_step}"
    precision = "float32 (O0)" if cfg.amp == "O0" else f"{cfg.amp_dtype} matmuls, float32 master weights ({cfg.amp})"
    if cfg.amp != "O0" and cfg.amp_dtype == "float16":
        precision += f", dynamic loss scale from {cfg.init_loss_scale:g}"
    micro = cfg.train_batch_size // cfg.accumulation_steps
    lines = [
        f"model:        BertForPreTraining L{c.num_hidden_layers}-H{c.hidden_size}-A{c.num_attention_heads}, "
        f"{parameters:,} parameters ({cfg.bert_config_file})",
        f"data:         {inputs.train.rows:,} sequences of {inputs.train.seq_length} tokens in "
        f"{len(inputs.train.files)} shards ({cfg.data_dir})",
        f"steps:        {length}; skipped (overflow) steps are not counted",
        f"global batch: {cfg.train_batch_size * world_size} = {micro} per micro-batch x {cfg.accumulation_steps} "
        f"accumulation x {world_size} devices",
        f"devices:      {world_size} x {cfg.device_target}",
        f"precision:    {precision}",
        f"optimizer:    {cfg.optimizer}, eps {cfg.adam_epsilon:g}, weight decay {cfg.weight_decay:g}, clip at global "
        f"norm {cfg.max_grad_norm:g}",
        f"lr schedule:  linear warmup to {cfg.lr:g} over {cfg.warmup_steps} updates, then linear decay to "
        f"{cfg.end_lr:g} at update {total_steps}",
    ]
    return "run summary:\n  " + "\n  ".join(lines)


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrains BERT on MLM + NSP (MLM alone with `mlm_only`) as `cfg` says; returns the last train-log row and
    eval results (and, when a fresh run was evaluated before its first step, `initial_eval_perplexity`).

    Checks all inputs first (`check_pretrain_inputs`), then builds the model, optimizer and `TrainStep`, restores
    a checkpoint when resuming, and trains until `train_steps` (or `epochs` × batches per epoch) optimizer
    updates, logging every `log_steps`, evaluating before the first update and every `eval_steps` and saving every
    `save_steps` updates; then saves a last checkpoint and the model to `output_dir/final/`. As in Google's and
    NVIDIA's scripts a step skipped on overflow is no update: it reads a batch but moves neither the count nor the
    learning rate, so the run still makes `train_steps` updates and ends at `end_lr`; skipped steps are counted
    apart. Under msrun every rank trains on its slice of each batch; rank 0 alone writes.
    """
    device.set_device(cfg.device_target, cfg.device_id)
    rank, world_size = init_data_parallel()
    inputs = on_every_rank(lambda: check_pretrain_inputs(cfg, world_size), rank, world_size)
    inputs.resume_path = agree_on_resume(cfg, inputs.resume_path, rank, world_size)
    on_every_rank(lambda: check_resume(cfg, inputs, world_size), rank, world_size)
    if cfg.amp != "O0" and cfg.amp_dtype == "bfloat16":
        device.check_bfloat16(inputs.bert_config, cfg.device_target)
    ms.set_seed(cfg.seed)  # after the probe's model: the run's initial weights do not depend on it
    setup = compile_setup(cfg, inputs, world_size) if cfg.compile_cache and cfg.jit else None
    # output_directory: removed again if this run made it and fails before writing to it
    with compile_cache.session(setup), output_directory(cfg.output_dir):
        return _pretrain(cfg, inputs, rank, world_size)


# Flags that cannot change which graphs a run compiles, or their order: paths and host-side bookkeeping.
GRAPH_NEUTRAL_FLAGS = ("data_dir", "eval_data_dir", "output_dir", "vocab_file", "init_checkpoint", "resume",
                       "resume_force", "device_id", "log_steps", "save_steps", "keep_checkpoint_max", "verify_data",
                       "compile_cache")


def compile_setup(cfg: PretrainConfig, inputs: _Inputs, world_size: int) -> dict[str, Any]:
    """What decides the graphs this run compiles and their order (`compile_cache`): every other flag, the model
    config, the data's shapes, the step it resumes from (a resumed run may skip the first evaluation) and the
    world size."""
    flags = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in GRAPH_NEUTRAL_FLAGS}
    return {"flags": flags, "bert_config": inputs.bert_config.to_dict(), "train": inputs.train.shapes,
            "eval": inputs.eval.shapes if inputs.eval else None, "world_size": world_size,
            "resume_step": read_trainer_state(inputs.resume_path)["step"] if inputs.resume_path else None}


def on_every_rank(check: Callable[[], Any], rank: int, world_size: int) -> Any:
    """`check()`'s result, or a SmallBertError on every rank when it raised one on any.

    A file one node lacks (`--init_checkpoint`, `--resume PATH`, a shard) fails the check there alone; the other
    ranks would wait forever in their next collective. Each rank's outcome is all-reduced (one vector of
    world_size flags), so all stop together and each says which ranks failed. Every rank must call it at the same
    point of the run; alone it just runs `check`.
    """
    if world_size == 1:
        return check()
    try:
        result, problem = check(), None
    except Exception as err:  # any failure: the other ranks must not wait for this one
        result, problem = None, err
    flags = np.zeros(world_size)
    flags[rank] = problem is not None
    failed = [r for r, flag in enumerate(sum_over_ranks(flags)) if flag > 0.5]
    if isinstance(problem, SmallBertError):
        raise SmallBertError(f"rank {rank} of {world_size}: {problem}") from None
    if problem is not None:
        raise problem
    if failed:
        raise SmallBertError(f"rank(s) {', '.join(map(str, failed))} of {world_size} failed their input checks "
                             f"(their logs say why); rank {rank} stops with them")
    return result


def agree_on_resume(cfg: PretrainConfig, local_path: str | None, rank: int, world_size: int) -> str | None:
    """The checkpoint every rank resumes from: the one rank 0 chose (`local_path` there), found on each rank's own
    disk by its step, so ranks never start from different steps.

    Only rank 0 writes checkpoints; without a shared filesystem another node's `--resume auto` finds none (or
    older ones). Rank 0's step is sent to all ranks (an all-reduce in which only rank 0 adds it; float32, exact to
    2^24 steps), each rank looks for `checkpoints/step_<N>` in its run directory and verifies it, and a second
    all-reduce counts the ranks that cannot: then every rank stops with a SmallBertError rather than one hanging.
    Returns the path to restore, or None for a fresh start on every rank.
    """
    if world_size == 1:
        return local_path
    own = -1 if local_path is None else int(read_trainer_state(local_path)["step"])
    step = int(round(sum_over_ranks(np.array([own + 1.0 if rank == 0 else 0.0]))[0])) - 1
    if step < 0:
        return None
    path, problem = local_path, None
    if own != step:
        run_dir = cfg.output_dir if cfg.resume == "auto" else cfg.resume
        if os.path.isfile(os.path.join(run_dir, TRAINER_STATE_NAME)):  # --resume named a checkpoint directory
            run_dir = os.path.dirname(os.path.dirname(os.path.abspath(run_dir)))
        path = os.path.join(run_dir, CHECKPOINTS_DIR, f"step_{step}")
        try:
            verify_checkpoint(path)
        except SmallBertError as err:
            problem = str(err)
    missing = int(round(sum_over_ranks(np.array([float(problem is not None)]))[0]))
    if missing:
        raise SmallBertError(f"--resume: rank 0 resumes from step {step}, but {missing} of {world_size} ranks "
                             f"cannot read that checkpoint" + (f" (this rank {rank}: {problem})" if problem else "")
                             + f"; without a shared filesystem copy {CHECKPOINTS_DIR}/step_{step} to every node")
    logger.info("rank %d resumes from %s (rank 0's step %d)", rank, path, step)
    return path


def next_event(step: int, total_steps: int, *every: int) -> int:
    """The first update after `step` at which the loop logs, evaluates or saves: the next multiple of any
    non-zero period in `every`, and at most `total_steps`."""
    return min([total_steps] + [(step // n + 1) * n for n in every if n > 0])


def _pretrain(cfg: PretrainConfig, inputs: _Inputs, rank: int, world_size: int) -> dict[str, Any]:
    """`pretrain` after its checks, in an existing `cfg.output_dir`."""
    compute_dtype = mstype.float32 if cfg.amp == "O0" else AMP_DTYPES[cfg.amp_dtype]
    model = BertForPreTraining(inputs.bert_config, compute_dtype)
    if cfg.init_checkpoint and inputs.resume_path is None:
        # Logs which weights (e.g. the heads) were freshly initialised, and the rows a vocab change adapted.
        load_weights_for_vocab(model, cfg.init_checkpoint, cfg.vocab_file, seed=cfg.seed)
    net = BertPreTrainingWithLoss(model, cfg.mlm_only)
    model.set_train(True)
    batches_per_epoch = inputs.train.batches_per_epoch(cfg.train_batch_size, world_size)
    total_steps = total_updates(cfg.train_steps, cfg.epochs, inputs.train, cfg.train_batch_size, world_size)
    schedule = WarmupPolynomialDecay(cfg.lr, cfg.warmup_steps, total_steps, cfg.end_lr)
    optimizer = build_optimizer(cfg.optimizer, pretraining_parameters(net), schedule, weight_decay=cfg.weight_decay,
                                eps=cfg.adam_epsilon)
    loss_scale = DynamicLossScale(cfg.init_loss_scale) if compute_dtype == mstype.float16 else None
    train_step = TrainStep(net, optimizer, accumulation_steps=cfg.accumulation_steps,
                           max_grad_norm=cfg.max_grad_norm, loss_scale=loss_scale, jit=cfg.jit)

    step, epoch, batches_done, overflow_steps = 0, 0, 0, 0
    if inputs.resume_path:
        state = restore_checkpoint(inputs.resume_path, model, train_step.state_parameters())
        step, epoch, overflow_steps = state["step"], state["epoch"], state["overflow_steps"]
        # The position is kept in sequences: every rank count reads the epoch's order in the same global prefix.
        batches_done, leftover = divmod(state["sequences_in_epoch"], cfg.train_batch_size * world_size)
        if leftover and rank == 0:
            logger.warning("resuming with another global batch size: %d sequences of epoch %d are skipped",
                           cfg.train_batch_size * world_size - leftover, epoch)
            batches_done += 1
        ms.set_rng_state(Tensor(np.asarray(state["rng_state"], np.uint8)))
        if rank == 0:
            logger.info("resuming from %s: step %d, epoch %d, %d batches into it", inputs.resume_path, step,
                        epoch, batches_done)
    log = _MetricsLog(cfg.output_dir, step, total_steps, enabled=rank == 0, mlm_only=cfg.mlm_only)
    if rank == 0:
        logger.info(run_summary(cfg, inputs, model, world_size, total_steps, step))

    metrics_fn = None
    if inputs.eval is not None:
        metrics_net = BertPreTrainingMetrics(model, cfg.mlm_only)
        metrics_fn = ms.jit(metrics_net.construct) if cfg.jit else metrics_net

    def run_eval() -> dict[str, float]:
        batches = inputs.eval.batches(cfg.train_batch_size // cfg.accumulation_steps, epoch=0, seed=cfg.seed,
                                      shuffle=False, rank=rank, world_size=world_size)
        model.set_train(False)
        result = evaluate(metrics_fn, (b for _, b in zip(range(cfg.eval_batches), batches)), cfg.mlm_only)
        model.set_train(True)
        log.write({"step": step, **result})
        if rank == 0:
            nsp = "" if cfg.mlm_only else f" | nsp accuracy {result['eval_nsp_accuracy']:.4f}"
            tqdm.write(f"eval at step {step} | loss {result['eval_loss']:.4f} | mlm accuracy "
                       f"{result['eval_mlm_accuracy']:.4f}{nsp} | perplexity {result['eval_perplexity']:.2f}")
        return result

    def save() -> None:
        if rank != 0:
            return
        trainer_state = {"epoch": epoch, "sequences_in_epoch": batches_done * cfg.train_batch_size * world_size,
                         "overflow_steps": overflow_steps,
                         "seq_length": inputs.train.seq_length, "world_size": world_size,
                         "rng_state": ms.get_rng_state().asnumpy().tolist(), "args": dataclasses.asdict(cfg)}
        save_checkpoint(cfg.output_dir, step, model, train_step.state_parameters(), trainer_state,
                        cfg.keep_checkpoint_max, vocab_file=cfg.vocab_file)

    results: dict[str, Any] = {}
    if metrics_fn is not None and step == 0:  # the starting point, e.g. an --init_checkpoint's domain gap
        results["initial_eval_perplexity"] = run_eval()["eval_perplexity"]
    def batch_stream() -> Iterator[tuple[np.ndarray, ...]]:
        """This rank's batches from the resume point on, epoch after epoch; `batches_done` counts those taken."""
        nonlocal epoch, batches_done
        while True:
            if batches_done >= batches_per_epoch:
                epoch, batches_done = epoch + 1, 0
            for batch in inputs.train.batches(cfg.train_batch_size, epoch=epoch, seed=cfg.seed, shuffle=True,
                                              rank=rank, world_size=world_size, skip_batches=batches_done):
                batches_done += 1
                yield batch

    # On an accelerator the steps up to the next update that logs, evaluates or saves are launched without
    # waiting and only then read back: MindSpore queues the graphs, so the device never waits for the host between
    # them. On CPU each step is read as it is launched (`device.queues_steps`). The bar counts launched steps and
    # is set back to the updates made (overflow-skipped steps do not count) at each read.
    queue = device.queues_steps(cfg.device_target)
    bar = tqdm(total=total_steps, initial=step, unit="step", disable=rank != 0, dynamic_ncols=True)
    stream = batch_stream()
    skipped_in_a_row = 0
    def counted(n: int) -> Iterator[tuple[np.ndarray, ...]]:
        for _ in range(n):
            yield next(stream)
            bar.update()

    while step < total_steps:
        target = next_event(step, total_steps, cfg.log_steps, cfg.eval_steps if metrics_fn else 0, cfg.save_steps)
        for out in run_steps(train_step, counted(target - step), queue, bar, skipped=overflow_steps):
            log.add(out)
            if out.overflow:
                overflow_steps += 1
                skipped_in_a_row += 1
                check_not_diverged(skipped_in_a_row, step, out.loss_scale)
            else:
                step += 1
                skipped_in_a_row = 0
        bar.n = step
        bar.set_postfix(skipped=overflow_steps, loss=f"{out.loss:.4f}")
        if step < target:  # overflow-skipped steps: launch the rest of the window
            continue
        if step % cfg.log_steps == 0 or step == total_steps:
            applied = int(optimizer.global_step.asnumpy()[0])
            results.update(log.flush(step, epoch, schedule.value(max(applied - 1, 0)), out.loss_scale,
                                     overflow_steps, cfg.train_batch_size * world_size))
        if metrics_fn is not None and (cfg.eval_steps and step % cfg.eval_steps == 0 or step == total_steps):
            results.update(run_eval())
        if cfg.save_steps and step % cfg.save_steps == 0 and step != total_steps:
            save()
    stream.close()
    bar.close()
    if rank == 0 and "initial_eval_perplexity" in results:
        tqdm.write(f"eval perplexity {results['initial_eval_perplexity']:.2f} at step 0 → "
                   f"{results['eval_perplexity']:.2f} at step {step}")
    save()
    if rank == 0:
        model.save_pretrained(os.path.join(cfg.output_dir, FINAL_DIR), vocab_file=cfg.vocab_file)
        logger.info("done: %d updates, %d steps skipped on overflow in total", step, overflow_steps)
    return results
