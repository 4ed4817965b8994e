"""The fine-tuning run: checkpoint resolution, per-seed training, evaluation, prediction and outputs.

`run(FinetuneConfig)` checks every input before anything is compiled or written, then:
  1. reads the task's splits as distributed (`tasks.py`: any GLUE task, or a TSV with named columns) and maps
     their labels to ids (the task's label set, --labels, or train's);
  2. tokenizes each example with the checkpoint's vocab into `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` ids,
     truncated to `max_length` and cached as .npz (`encode.py`);
  3. per seed: builds `BertForSequenceClassification` from the checkpoint (a missing classifier head, or one with
     another label count, is initialised fresh), trains with AdamWeightDecay, linear warmup and linear decay
     through `smallbert.train.TrainStep` (cross-entropy, or MSE for regression), evaluates every dev split after
     each epoch with the task's metrics and keeps the best epoch's weights (`save_pretrained` format, the label
     names in config.json's id2label) and its test predictions; checkpoints the run state after each epoch, from
     which `--resume` continues exactly;
  4. writes `<test split>_predictions.tsv` (GLUE's `index\tprediction`, with label names) and
     `eval_results.json` (per-epoch metrics, the best, the seed, every hyper-parameter; mean ± std over seeds).

Batches are bucketed by length: each batch is padded to the smallest of 16, 32, 64, ... (up to `max_length`) that
holds its longest example, so the typical short SST-2 sentence costs a quarter of a 64-token one. Each bucket is
one more compiled graph; `pad_to_max_length` turns bucketing off.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype
from tqdm import tqdm

from ..checkpoint import (FINAL_DIR, find_resume_checkpoint, list_checkpoints, read_trainer_state,
                          restore_checkpoint, save_checkpoint)
from .. import compile_cache, device
from ..config import BertConfig
from ..errors import SmallBertError, output_directory
from ..fileio import atomic_open, write_json
from ..model import BertForSequenceClassification
from ..optim import WarmupPolynomialDecay, build_optimizer
from ..tokenization import FullTokenizer
from ..train import DynamicLossScale, TrainStep, run_steps
from ..vocab_adapter import adapted_state, vocab_change
from ..weights import CONFIG_NAME, VOCAB_NAME, find_weights_file, load_state_dict
from .config import FinetuneConfig
from .encode import SPECIAL_TOKENS, Encoded, batch_rows, bucket_lengths, default_cache_dir, encode_split, make_batch
from .metrics import higher_is_better, task_metrics
from .tasks import Split, Task, assign_labels, get_task, label_names_from, read_split

logger = logging.getLogger("smallbert")

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"  # Hugging Face's file; we write it too, for `do_lower_case`
AMP_DTYPES = {"O0": mstype.float32, "O2": mstype.float16}


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint, vocab and config resolution


def resolve_checkpoint(path: str) -> str:
    """The weights file or model directory to load for `--init_checkpoint path`.

    A directory with config.json (ours, Hugging Face's, a fine-tuned `best/`) or a weights file is used as is.
    A `run_pretrain.py` output directory resolves to its `final/` model, else its newest `checkpoints/step_<N>/`.
    """
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, CONFIG_NAME)):
        find_weights_file(path)  # raises a SmallBertError if there are no weights
        return path
    final = os.path.join(path, FINAL_DIR)
    if os.path.isfile(os.path.join(final, CONFIG_NAME)):
        return final
    steps = [step for _, step in list_checkpoints(path) if os.path.isfile(os.path.join(step, CONFIG_NAME))]
    if steps:
        logger.info("%s has no %s/: using its newest checkpoint %s", path, FINAL_DIR, steps[-1])
        return steps[-1]
    raise SmallBertError(f"{path}: not a model directory (no {CONFIG_NAME}) nor a run_pretrain.py output "
                         f"(no final/ or checkpoints/step_<N>/)")


def checkpoint_dir(checkpoint: str) -> str:
    """The directory holding a checkpoint's config.json, vocab.txt and tokenizer_config.json."""
    return checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def resolve_inputs(cfg: FinetuneConfig) -> tuple[str | None, BertConfig, str, bool]:
    """(checkpoint, BertConfig, vocab_file, do_lower_case) for `cfg`, each from its flag or the checkpoint's dir.

    Without `init_checkpoint` (from scratch) the checkpoint is None and the config and vocab come from their flags.
    """
    if cfg.init_checkpoint is None:
        for flag, value in (("--bert_config_file", cfg.bert_config_file), ("--vocab_file", cfg.vocab_file)):
            if not value:
                raise SmallBertError(f"{flag}: required to train from scratch (no --init_checkpoint)")
        if not cfg.do_train:
            raise SmallBertError("--init_checkpoint: required with --do_train false (a fine-tuned classifier)")
        checkpoint, folder = None, None
    else:
        checkpoint = resolve_checkpoint(cfg.init_checkpoint)
        folder = checkpoint_dir(checkpoint)
    config_file = cfg.bert_config_file or os.path.join(folder, CONFIG_NAME)
    if not cfg.bert_config_file and not os.path.isfile(config_file):
        raise SmallBertError(f"--bert_config_file: required, {folder} has no {CONFIG_NAME}")
    config = BertConfig.from_json_file(config_file)
    vocab_file = cfg.vocab_file or os.path.join(folder, VOCAB_NAME)
    if not cfg.vocab_file and not os.path.isfile(vocab_file):
        raise SmallBertError(f"--vocab_file: required, {folder} has no {VOCAB_NAME}")
    if not os.path.isfile(vocab_file):
        raise SmallBertError(f"--vocab_file: {vocab_file}: no such file")
    if cfg.adapt_vocab and checkpoint is None:
        raise SmallBertError("--adapt_vocab: needs --init_checkpoint, the checkpoint whose embeddings to adapt")
    change = vocab_change(checkpoint, cfg.vocab_file) if checkpoint is not None else None
    if change is not None and not cfg.adapt_vocab:
        old_tokens, new_tokens = (set(tokens) for tokens in change)
        raise SmallBertError(
            f"--vocab_file: {vocab_file} is not {checkpoint}'s {VOCAB_NAME} ({len(new_tokens - old_tokens)} tokens "
            f"it lacks, {len(old_tokens - new_tokens)} of its tokens gone, {len(change[1])} vs {len(change[0])} "
            f"lines): pass --adapt_vocab to carry its embedding rows over to this vocab, or leave --vocab_file out")
    if change is not None:  # load_classifier rebuilds the vocabulary rows in the new vocab's order
        config = dataclasses.replace(config, vocab_size=len(change[1]))
    do_lower_case = cfg.do_lower_case
    if do_lower_case is None:
        do_lower_case = read_do_lower_case(folder) if folder else True
    if cfg.max_length > config.max_position_embeddings:
        raise SmallBertError(f"--max_length: {cfg.max_length} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}")
    return checkpoint, config, vocab_file, do_lower_case


def read_do_lower_case(folder: str) -> bool:
    """`do_lower_case` from a checkpoint directory's tokenizer_config.json; True (Google's default) without one."""
    path = os.path.join(folder, TOKENIZER_CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get("do_lower_case", True)
    except FileNotFoundError:
        logger.info("%s has no %s: lower-casing (pass --do_lower_case false for a cased model)", folder,
                    TOKENIZER_CONFIG_NAME)
        return True
    except (json.JSONDecodeError, AttributeError) as err:
        raise SmallBertError(f"{path}: not a JSON object ({err})") from None
    if not isinstance(value, bool):
        raise SmallBertError(f"{path}: do_lower_case must be true or false, got {value!r}")
    return value


def check_vocab(tokenizer: FullTokenizer, vocab_file: str, config: BertConfig, checkpoint: str | None) -> None:
    """Raises SmallBertError if the vocab cannot feed this checkpoint: ids past its embedding table, no [CLS]..."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.vocab]
    if missing:
        raise SmallBertError(f"{vocab_file}: vocab has no {', '.join(missing)} token(s)")
    num_ids = max(tokenizer.vocab.values()) + 1
    if num_ids > config.vocab_size:
        model = checkpoint or "the --bert_config_file model"
        raise SmallBertError(f"{vocab_file}: vocab has {num_ids} ids but {model} has vocab_size "
                             f"{config.vocab_size}: this vocab does not belong to this model")
    if num_ids < config.vocab_size:
        logger.warning("%s: %d ids for an embedding table of %d rows; check it is the checkpoint's vocab", vocab_file,
                       num_ids, config.vocab_size)



# ---------------------------------------------------------------------------------------------------------------
# Model and evaluation


class ClassifierWithLoss(nn.Cell):
    """The classifier with its loss, as `TrainStep` wants it.

    (input_ids, token_type_ids, attention_mask int32 [B,S], labels int32 [B] or, for regression, float32 [B]) →
    (mean cross-entropy, or mean squared error of the single output, float32 []; logits float32 [B,C]).
    """

    def __init__(self, model: BertForSequenceClassification, regression: bool = False):
        super().__init__(auto_prefix=False)  # keep the model's Hugging Face parameter names
        self.model = model
        self.regression = regression

    def construct(self, input_ids, token_type_ids, attention_mask, labels):
        logits = self.model(input_ids, token_type_ids, attention_mask)
        if self.regression:
            return ((logits[:, 0] - labels) ** 2).mean(), logits
        return ops.cross_entropy(logits, labels), logits


def num_outputs(config: BertConfig) -> int:
    """The classifier's width: one per label in config.id2label (1 for regression), else 2 (SST-2's)."""
    return len(config.id2label) if config.id2label else 2


def load_classifier(checkpoint: str | None, config: BertConfig, amp: str, adapt_to: str | None = None,
                    seed: int = 0) -> BertForSequenceClassification:
    """BertForSequenceClassification with `num_outputs(config)` outputs and the checkpoint's weights.

    A head the checkpoint lacks, or one with another number of labels (a classifier fine-tuned on another task),
    is initialised fresh, with a log line. `checkpoint` None: every weight is freshly initialised (from scratch),
    as `ms.set_seed` fixes it. `adapt_to`: the run's --vocab_file; when it is not the checkpoint's vocab.txt (which
    `resolve_inputs` allows only with --adapt_vocab, giving `config` its vocab_size), the embedding rows are
    rebuilt in its token order (`vocab_adapter`), new rows seeded by `seed`.
    """
    model = BertForSequenceClassification(config, num_labels=num_outputs(config), compute_dtype=AMP_DTYPES[amp])
    if checkpoint is None:
        logger.info("no --init_checkpoint: training from a random initialisation")
        return model
    weights_file, state, _ = adapted_state(model, checkpoint, adapt_to, seed)
    head = state.get("classifier.weight")
    if head is not None and head.shape[0] != model.num_labels:
        logger.warning("%s: its classifier head has %d outputs, this task needs %d: initialised fresh", checkpoint,
                       head.shape[0], model.num_labels)
        state = {name: value for name, value in state.items() if not name.startswith("classifier.")}
    model.load_report = load_state_dict(model, state, weights_file)
    if any(name.startswith("classifier.") for name in model.load_report.missing):
        logger.info("%s has no classifier head: initialised fresh", checkpoint)
    return model


def predict_logits(forward, encoded: Encoded, batch_size: int, buckets: tuple[int, ...], width: int,
                   desc: str) -> np.ndarray:
    """Runs `forward` (the model in eval mode) over a split; returns float32 logits [N, width] in row order."""
    logits = np.empty((len(encoded.lengths), width), np.float32)
    for rows in tqdm(batch_rows(encoded.lengths, batch_size, buckets), desc=desc, unit="batch", leave=False):
        batch = make_batch(encoded, rows, buckets, batch_size)
        logits[rows] = forward(*(Tensor(x) for x in batch)).asnumpy()[:len(rows)]
    return logits


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class Data:
    """A run's task, label set, and encoded splits (train None when not training, tests empty when not
    predicting). `devs` and `tests` hold (split, its token ids) in the task's order; MNLI has two of each."""

    task: Task
    label_names: tuple[str, ...] | None  # None for regression
    train: Split | None
    train_ids: Encoded | None
    devs: list[tuple[Split, Encoded]]
    tests: list[tuple[Split, Encoded]]

    @property
    def dev(self) -> Split:
        return self.devs[0][0]

    @property
    def dev_ids(self) -> Encoded:
        return self.devs[0][1]


def task_of(cfg: FinetuneConfig) -> Task:
    return get_task(cfg.task_name, cfg.task_type, cfg.text_a_column, cfg.text_b_column, cfg.label_column)


def best_metric_key(task: Task, name: str | None) -> str:
    """The `<dev split>_<metric>` that picks the best epoch: `name` as given, or prefixed by the first dev split."""
    keys = task.dev_metric_keys()
    name = name or task.metric_for_best
    key = name if name in keys else f"{next(iter(task.dev))}_{name}"
    if key not in keys:
        raise SmallBertError(f"--metric_for_best: {name!r} is not a metric of {task.name} "
                             f"({', '.join((*task.metrics, 'loss'))}, or one of {', '.join(keys)})")
    return key


def resolve_labels(cfg: FinetuneConfig, task: Task, train: Split | None, config: BertConfig,
                   checkpoint: str | None) -> tuple[tuple[str, ...] | None, str]:
    """The label names in id order and where they came from (for errors); None for a regression task.

    Training: --labels, else the task's own, else train's. Evaluating only: --labels, else the fine-tuned
    checkpoint's id2label (unless it is transformers' placeholder LABEL_<i>), else the task's own.
    """
    if task.is_regression:
        return None, task.name
    if cfg.labels:
        return tuple(cfg.labels), "--labels"
    if train is None:
        names = config.named_labels
        if names:
            return names, f"{checkpoint}'s id2label"
        if task.labels is None:
            raise SmallBertError(f"--labels: required with --do_train false, {checkpoint} has no id2label")
        return task.labels, task.name
    if task.labels is not None:
        return task.labels, task.name
    return label_names_from(train), train.path


def load_data(cfg: FinetuneConfig, vocab_file: str, do_lower_case: bool, config: BertConfig,
              checkpoint: str | None, train_batches: bool = True) -> Data:
    """Reads, checks, labels and encodes the splits the run needs; all user-input errors surface here.

    `train_batches` False: train.tsv need not fill one batch (distillation batches its larger transfer set)."""
    task = task_of(cfg)
    best_metric_key(task, cfg.metric_for_best)
    # File by file, each checked whole before the next is read: train's errors come first.
    train = read_split(task, cfg.data_dir, "train") if cfg.do_train else None
    names, source = resolve_labels(cfg, task, train, config, checkpoint)
    if train is not None:
        assign_labels(task, train, names, source)
    devs = []
    for name in task.dev:
        devs.append(read_split(task, cfg.data_dir, name))
        assign_labels(task, devs[-1], names, source)
    tests = [read_split(task, cfg.data_dir, name) for name in task.test] if cfg.do_predict else []
    if train_batches and train is not None and len(train) < cfg.train_batch_size:
        raise SmallBertError(f"--train_batch_size: {cfg.train_batch_size} exceeds the {len(train)} "
                             f"examples of {train.path}")
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    check_vocab(tokenizer, vocab_file, config, checkpoint)
    cache_dir = cfg.cache_dir or default_cache_dir()

    def encode(split: Split) -> Encoded:
        return encode_split(split, tokenizer, vocab_file, cfg.max_length, cache_dir)

    return Data(task, names, train, encode(train) if train else None, [(s, encode(s)) for s in devs],
                [(s, encode(s)) for s in tests])


def with_labels(config: BertConfig, data: Data) -> BertConfig:
    """`config` carrying the task's labels (Hugging Face's id2label, problem_type): saved into best/config.json."""
    if data.task.is_regression:
        return dataclasses.replace(config, id2label={"0": "LABEL_0"}, problem_type="regression")
    return dataclasses.replace(config, id2label={str(i): n for i, n in enumerate(data.label_names)},
                               problem_type="single_label_classification")


def evaluate(forward, data: Data, batch_size: int, buckets: tuple[int, ...], width: int) -> dict[str, float]:
    """{`<dev split>_<metric>`: value} over every dev split of the task, loss included."""
    results = {}
    for split, encoded in data.devs:
        outputs = predict_logits(forward, encoded, batch_size, buckets, width, split.name)
        for metric, value in task_metrics(data.task.metrics, outputs, split.labels, data.task.is_regression).items():
            results[f"{split.name}_{metric}"] = value
    return results


def format_metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.4f}" for key, value in values.items())


# ---------------------------------------------------------------------------------------------------------------
# Outputs


def predictions_name(split: str) -> str:
    """test → test_predictions.tsv; MNLI's test_matched → test_matched_predictions.tsv."""
    return f"{split}_predictions.tsv"


def write_predictions(path: str, index: np.ndarray, logits: np.ndarray, label_names: tuple[str, ...] | None) -> None:
    """GLUE's submission format: a header `index\\tprediction`, then one `<index>\\t<label name>` per test row (the
    regression output, for a regression task)."""
    if label_names is None:
        predictions = [f"{value:.4f}" for value in logits[:, 0].tolist()]
    else:
        predictions = [label_names[i] for i in logits.argmax(axis=1).tolist()]
    with atomic_open(path) as f:
        f.write("index\tprediction\n")
        f.writelines(f"{i}\t{p}\n" for i, p in zip(index.tolist(), predictions))


def save_best(model: BertForSequenceClassification, directory: str, vocab_file: str, do_lower_case: bool) -> None:
    """Writes the model to `directory` in save_pretrained format plus tokenizer_config.json, replacing it whole."""
    staging, old = f"{directory}.tmp", f"{directory}.old"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, vocab_file=vocab_file)
    write_json(os.path.join(staging, TOKENIZER_CONFIG_NAME), {"do_lower_case": do_lower_case})
    if os.path.isdir(directory):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def check_output_dir(cfg: FinetuneConfig, inputs: list[str | None]) -> bool:
    """Whether `cfg.output_dir` holds an earlier run's files that `--overwrite` will clear.

    Raises SmallBertError when it is not empty and `--overwrite` is not given, or when it holds one of `inputs`
    (the checkpoint, data, vocab or config of this very run), which clearing it would destroy. With `--resume`
    and an epoch checkpoint to continue from, it is kept as it is (and the checkpoints' flags checked).
    """
    out = cfg.output_dir
    if cfg.resume and any(resume_checkpoints(cfg).values()):
        return False
    if not os.path.isdir(out) or not os.listdir(out):
        if os.path.exists(out) and not os.path.isdir(out):
            raise SmallBertError(f"--output_dir: {out} is a file")
        return False
    if not cfg.overwrite:
        raise SmallBertError(f"--output_dir: {out} is not empty (found {sorted(os.listdir(out))[0]}); choose a "
                             f"new directory, or pass --overwrite to replace its contents")
    root = os.path.realpath(out) + os.sep
    for path in inputs:
        if path and (os.path.realpath(path) + os.sep).startswith(root):
            raise SmallBertError(f"--overwrite: {out} holds {path}, an input of this run; choose another "
                                 f"--output_dir")
    return True


def hparams_of(cfg: FinetuneConfig) -> dict:
    """The config as JSON gives it back (tuples as lists), so eval_results.json and the returned dict agree."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# ---------------------------------------------------------------------------------------------------------------
# The run


def train_seed(seed: int, cfg: FinetuneConfig, checkpoint: str | None, config: BertConfig, data: Data, out_dir: str,
               vocab_file: str, do_lower_case: bool, net_with_loss=None, train_columns=None, first_stage=None,
               resume_from: str | None = None) -> dict:
    """Fine-tunes from `checkpoint` (None: from scratch) with `seed`; writes out_dir/best/ and the predictions.

    The seed fixes the classifier head's initialisation, dropout and the batch order. Returns this seed's results:
    per-epoch train loss, dev metrics and seconds, the best epoch and its metrics. `net_with_loss(model)` (default
    ClassifierWithLoss) is the Cell trained; `train_columns(rows)` (default: the rows' labels) the batch columns it
    takes after input_ids, token_type_ids and attention_mask (distillation adds the teacher's logits).
    `first_stage(model, seed)`, when given, trains the model first (distillation's layer stage) and returns a
    record kept in the result under "first_stage".

    After each epoch the run state (weights, optimizer, loss scale, dropout counters, batch-order and MindSpore RNG
    states, the epochs so far, the best one's test outputs) goes to out_dir/checkpoints/step_<updates>/ (the
    newest kept). `resume_from`, such a checkpoint (see `resume_checkpoints`), continues after its epoch exactly
    as the uninterrupted run would have; `first_stage` is not run again.
    """
    ms.set_seed(seed)
    rng = np.random.default_rng(seed)
    model = load_classifier(checkpoint, config, cfg.amp, cfg.vocab_file, seed)
    first = first_stage(model, seed) if first_stage is not None and resume_from is None else None
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    total_steps = len(data.train) // cfg.train_batch_size * cfg.epochs
    schedule = WarmupPolynomialDecay(cfg.lr, int(total_steps * cfg.warmup_proportion), total_steps)
    optimizer = build_optimizer("adamw", model.trainable_params(), schedule, weight_decay=cfg.weight_decay)
    loss_scale = DynamicLossScale() if cfg.amp == "O2" else None
    net = net_with_loss(model) if net_with_loss else ClassifierWithLoss(model, data.task.is_regression)
    step = TrainStep(net, optimizer, max_grad_norm=cfg.max_grad_norm, loss_scale=loss_scale)
    forward = ms.jit(model.construct)
    best_key = best_metric_key(data.task, cfg.metric_for_best)
    better = (lambda a, b: a > b) if higher_is_better(best_key) else (lambda a, b: a < b)
    best_dir = os.path.join(out_dir, "best")
    epochs, best, test_logits = [], None, {}
    if resume_from is not None:
        state = restore_checkpoint(resume_from, model, step.state_parameters())
        rng.bit_generator.state = state["batch_order"]
        ms.set_rng_state(Tensor(np.asarray(state["rng_state"], np.uint8)))
        epochs, best, first = state["epochs"], state["best"], state["first_stage"]
        test_logits = {name: np.asarray(values, np.float32) for name, values in state["test_logits"].items()}
        logger.info("seed %d: resuming from %s after epoch %d of %d", seed, resume_from, len(epochs), cfg.epochs)
    for epoch in range(len(epochs) + 1, cfg.epochs + 1):
        model.set_train(True)
        start = time.perf_counter()
        bar = tqdm(batch_rows(data.train_ids.lengths, cfg.train_batch_size, buckets, rng),
                   desc=f"seed {seed} epoch {epoch}/{cfg.epochs}", unit="batch")
        outs = run_steps(step, ((*make_batch(data.train_ids, rows, buckets, cfg.train_batch_size),
                                 *(train_columns(rows) if train_columns else (data.train.labels[rows],)))
                                for rows in bar), device.queues_steps(cfg.device_target), bar)
        bar.close()
        losses, skipped = [out.loss for out in outs], sum(out.overflow for out in outs)
        seconds = time.perf_counter() - start
        model.set_train(False)
        dev = evaluate(forward, data, cfg.eval_batch_size, buckets, model.num_labels)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), **dev, "train_seconds": round(seconds, 2),
                  "skipped_steps": skipped}
        epochs.append(record)
        logger.info("seed %d epoch %d/%d: train loss %.4f, %s (%.0f s)", seed, epoch, cfg.epochs,
                    record["train_loss"], format_metrics(dev), seconds)
        if best is None or better(record[best_key], best[best_key]):
            best = record
            save_best(model, best_dir, vocab_file, do_lower_case)
            # Predict test now, with the weights just saved: reloading them later by `set_data` would not reach
            # the graphs already compiled.
            test_logits = {split.name: predict_logits(forward, encoded, cfg.eval_batch_size, buckets,
                                                      model.num_labels, split.name) for split, encoded in data.tests}
        trainer_state = {"epochs": epochs, "best": best, "first_stage": first, "args": resume_args(cfg),
                         "test_logits": {name: values.tolist() for name, values in test_logits.items()},
                         "batch_order": rng.bit_generator.state, "rng_state": ms.get_rng_state().asnumpy().tolist()}
        save_checkpoint(out_dir, int(optimizer.global_step.asnumpy()[0]), model, step.state_parameters(),
                        trainer_state, keep_max=1, vocab_file=vocab_file)
    metrics = [key for key in best if key not in ("epoch", "train_loss", "train_seconds", "skipped_steps")]
    result = {"seed": seed, "epochs": epochs, "best_epoch": best["epoch"],
              **{f"best_{key}": best[key] for key in metrics}, "best_checkpoint": best_dir, "predictions": {}}
    if first is not None:
        result["first_stage"] = first
    for split, _ in data.tests:
        result["predictions"][split.name] = os.path.join(out_dir, predictions_name(split.name))
        write_predictions(result["predictions"][split.name], split.index, test_logits[split.name], data.label_names)
    return result


# Flags a resumed run may change: where it writes and reads caches, evaluation batching, the device. Any other
# change would continue a different run.
FREE_ON_RESUME = ("output_dir", "overwrite", "resume", "eval_batch_size", "do_predict", "cache_dir", "device_target",
                  "logits_cache")


def resume_args(cfg: FinetuneConfig) -> dict:
    """The flags a checkpoint records and a resume must repeat: all but FREE_ON_RESUME."""
    return {k: v for k, v in hparams_of(cfg).items() if k not in FREE_ON_RESUME}


def seed_dir(cfg: FinetuneConfig, seed: int) -> str:
    """Where one seed's outputs go: output_dir itself for a single seed, output_dir/seed_<s>/ for several."""
    return cfg.output_dir if len(cfg.seeds) == 1 else os.path.join(cfg.output_dir, f"seed_{seed}")


def resume_checkpoints(cfg: FinetuneConfig) -> dict[int, str | None]:
    """{seed: the epoch checkpoint to resume it from, or None to start it afresh}; all None without cfg.resume.

    Raises SmallBertError naming --resume when a checkpoint was written with other flags (`resume_args`)."""
    found = {}
    for seed in cfg.seeds:
        path = find_resume_checkpoint("auto", seed_dir(cfg, seed)) if cfg.resume else None
        if path is not None:
            saved, wanted = read_trainer_state(path)["args"], resume_args(cfg)
            changes = [f"--{k} {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v]
            if changes:
                raise SmallBertError(f"--resume: {path} was trained with other settings: {', '.join(changes)}")
        found[seed] = path
    return found


def summarize(runs: list[dict], best_key: str) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of each best-epoch dev metric over the seeds;
    the best seed by `best_key`."""
    keys = [k for k, v in runs[0].items() if k.startswith("best_") and isinstance(v, float)]
    scores = np.array([r[f"best_{best_key}"] for r in runs])
    best = runs[int(np.argmax(scores) if higher_is_better(best_key) else np.argmin(scores))]
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in runs])
        summary[f"{key}_mean"] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(ddof=1)) if len(runs) > 1 else 0.0
    return {"metric_for_best": best_key, **summary, "num_seeds": len(runs), "best_seed": best["seed"],
            "best_checkpoint": best["best_checkpoint"], "seeds": runs}


def evaluate_only(cfg: FinetuneConfig, checkpoint: str, config: BertConfig, data: Data) -> dict:
    """`--do_train false`: the dev metrics of a fine-tuned classifier and, with test files, its predictions."""
    model = load_classifier(checkpoint, config, cfg.amp, cfg.vocab_file)
    if any(name.startswith("classifier.") for name in model.load_report.missing):
        raise SmallBertError(f"--init_checkpoint: {checkpoint} has no classifier head for this task's "
                             f"{model.num_labels} output(s); --do_train false needs a classifier fine-tuned on it "
                             f"(e.g. the best/ directory of a fine-tuning run)")
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    forward = ms.jit(model.construct)
    model.set_train(False)
    result = evaluate(forward, data, cfg.eval_batch_size, buckets, model.num_labels)
    logger.info("%s: %s", checkpoint, format_metrics(result))
    result["predictions"] = {}
    for split, encoded in data.tests:
        logits = predict_logits(forward, encoded, cfg.eval_batch_size, buckets, model.num_labels, split.name)
        result["predictions"][split.name] = os.path.join(cfg.output_dir, predictions_name(split.name))
        write_predictions(result["predictions"][split.name], split.index, logits, data.label_names)
    return result


def train_seeds(cfg: FinetuneConfig, checkpoint: str, config: BertConfig, data: Data, vocab_file: str,
                do_lower_case: bool, header: dict, **train_kwargs) -> dict:
    """`train_seed` for every seed in cfg.seeds; returns `header` + `summarize` of the runs, also written to
    output_dir/eval_results.json. Several seeds write output_dir/seed_<s>/ each (with its own eval_results.json)
    and copy the best seed's predictions to output_dir. `train_kwargs` go to `train_seed`."""
    best_key = best_metric_key(data.task, cfg.metric_for_best)
    runs = []
    for seed, resume_from in resume_checkpoints(cfg).items():
        out_dir = seed_dir(cfg, seed)
        os.makedirs(out_dir, exist_ok=True)
        runs.append(train_seed(seed, cfg, checkpoint, config, data, out_dir, vocab_file, do_lower_case,
                               resume_from=resume_from, **train_kwargs))
        if len(cfg.seeds) > 1:
            write_json(os.path.join(out_dir, "eval_results.json"), {**header, **summarize(runs[-1:], best_key)})
    results = {**header, **summarize(runs, best_key)}
    write_json(os.path.join(cfg.output_dir, "eval_results.json"), results)
    if len(cfg.seeds) > 1:
        best = next(r for r in runs if r["seed"] == results["best_seed"])
        for path in best["predictions"].values():
            target = os.path.join(cfg.output_dir, os.path.basename(path))
            shutil.copyfile(path, f"{target}.tmp-{os.getpid()}")
            os.replace(f"{target}.tmp-{os.getpid()}", target)
    return results


# Flags that cannot change which graphs a fine-tuning run compiles, or their order: paths and bookkeeping.
GRAPH_NEUTRAL_FLAGS = ("data_dir", "init_checkpoint", "output_dir", "vocab_file", "bert_config_file", "cache_dir",
                       "overwrite", "compile_cache", "teacher", "transfer_files", "logits_cache")  # the last: distillation's


def compile_setup(cfg: FinetuneConfig, config: BertConfig, data: Data) -> dict:
    """What decides the graphs a fresh training run compiles and their order (`compile_cache`): every other flag
    (the seeds among them), the model config with its label count, and every split's example lengths, which
    decide the length bucket of each train batch (in the seed's order) and of each eval and test batch."""
    flags = {k: v for k, v in hparams_of(cfg).items() if k not in GRAPH_NEUTRAL_FLAGS}
    splits = [("train", data.train_ids)] + [(split.name, ids) for split, ids in data.devs + data.tests]
    lengths = {name: hashlib.sha256(np.ascontiguousarray(ids.lengths, np.int32).tobytes()).hexdigest()
               for name, ids in splits}
    return {"flags": flags, "bert_config": config.to_dict(), "lengths": lengths}


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tunes (or with do_train False, evaluates) as `cfg` says; returns what eval_results.json holds.

    All inputs are checked before output_dir is touched: a non-empty output_dir is refused unless cfg.overwrite,
    which clears it. One seed writes into output_dir; several write output_dir/seed_<s>/ each, plus
    output_dir/eval_results.json with the mean ± std across seeds and the best seed's predictions.
    """
    cfg.validate()
    checkpoint, config, vocab_file, do_lower_case = resolve_inputs(cfg)
    clear = check_output_dir(cfg, [cfg.init_checkpoint, cfg.data_dir, cfg.vocab_file, cfg.bert_config_file])
    data = load_data(cfg, vocab_file, do_lower_case, config, checkpoint)
    config = with_labels(config, data)
    ms.set_device(cfg.device_target)
    if clear:
        shutil.rmtree(cfg.output_dir)
    hparams = {**hparams_of(cfg), "checkpoint": checkpoint, "vocab_file": vocab_file,
               "do_lower_case": do_lower_case, "bert_config": config.to_dict(),
               "buckets": list(bucket_lengths(cfg.max_length, cfg.pad_to_max_length))}
    setup = compile_setup(cfg, config, data) if cfg.do_train and cfg.compile_cache and not cfg.resume else None
    with compile_cache.session(setup), output_directory(cfg.output_dir):
        if not cfg.do_train:
            results = {"hparams": hparams, **evaluate_only(cfg, checkpoint, config, data)}
            write_json(os.path.join(cfg.output_dir, "eval_results.json"), results)
            return results
        hparams.update(num_train_examples=len(data.train), steps_per_epoch=len(data.train) // cfg.train_batch_size)
        results = train_seeds(cfg, checkpoint, config, data, vocab_file, do_lower_case, {"hparams": hparams})
    key = results["metric_for_best"]
    logger.info("best %s over %d seed(s): %.4f ± %.4f (best seed %d)", key, results["num_seeds"],
                results[f"best_{key}_mean"], results[f"best_{key}_std"], results["best_seed"])
    return results
