"""The fine-tuning run: checkpoint resolution, per-seed training, evaluation, prediction and outputs.

`run(FinetuneConfig)` checks every input before anything is compiled, then:
  1. reads GLUE's splits as distributed: train.tsv and dev.tsv (`sentence\\tlabel`), test.tsv (`index\\tsentence`);
  2. tokenizes each sentence with the checkpoint's vocab into `[CLS] sentence [SEP]` ids, truncated to
     `max_length` and cached as .npz;
  3. per seed: builds `BertForSequenceClassification` from the checkpoint (a missing classifier head is initialised
     fresh), trains with AdamWeightDecay, linear warmup and linear decay through `smallbert.train.TrainStep`,
     evaluates dev after each epoch and keeps the best epoch's weights (`save_pretrained` format) and its test
     predictions;
  4. writes `test_predictions.tsv` (GLUE's `index\\tprediction`) and `eval_results.json` (per-epoch dev accuracy
     and loss, the best, the seed, every hyper-parameter; mean ± std over seeds).

Batches are bucketed by length: each batch is padded to the smallest of 16, 32, 64, ... (up to `max_length`) that
holds its longest sentence, so the typical short SST-2 sentence costs a quarter of a 64-token one. Each bucket is
one more compiled graph; `pad_to_max_length` turns bucketing off.
"""
from __future__ import annotations

import dataclasses
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

from ..checkpoint import FINAL_DIR, list_checkpoints
from ..config import BertConfig
from ..errors import SmallBertError
from ..model import BertForSequenceClassification
from ..optim import WarmupPolynomialDecay, build_optimizer
from ..tokenization import FullTokenizer
from ..train import DynamicLossScale, TrainStep
from ..weights import CONFIG_NAME, VOCAB_NAME, find_weights_file
from .encode import SPECIAL_TOKENS, Encoded, batch_rows, bucket_lengths, encode_split, make_batch
from .metrics import classification_metrics
from .tasks import NUM_LABELS, Split, read_split

logger = logging.getLogger("smallbert")

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"  # Hugging Face's file; we write it too, for `do_lower_case`
AMP_DTYPES = {"O0": mstype.float32, "O2": mstype.float16}


@dataclasses.dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; written verbatim into eval_results.json.

    `do_lower_case` None means: as the checkpoint's tokenizer_config.json says, else True (Google's default).
    `vocab_file` / `bert_config_file` None mean: the checkpoint directory's vocab.txt / config.json.
    `init_checkpoint` None means from scratch: a seeded random initialisation of `bert_config_file`'s model
    (both `bert_config_file` and `vocab_file` are then required).
    `cache_dir` None means `<data_dir>/cache`.
    """

    data_dir: str
    init_checkpoint: str | None
    output_dir: str
    vocab_file: str | None = None
    bert_config_file: str | None = None
    do_lower_case: bool | None = None
    max_length: int = 64
    train_batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 2e-5
    epochs: int = 3
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seeds: tuple[int, ...] = (1,)
    do_train: bool = True
    do_predict: bool = True
    amp: str = "O0"
    pad_to_max_length: bool = False
    cache_dir: str | None = None
    device_target: str = "CPU"

    def validate(self) -> None:
        """Raises SmallBertError naming the flag whose value cannot work."""
        positive = {"--max_length": self.max_length, "--train_batch_size": self.train_batch_size,
                    "--eval_batch_size": self.eval_batch_size, "--epochs": self.epochs}
        for flag, value in positive.items():
            if value <= 0:
                raise SmallBertError(f"{flag}: must be a positive integer, got {value}")
        if self.max_length < 3:
            raise SmallBertError(f"--max_length: must hold [CLS], a token and [SEP], got {self.max_length}")
        if not self.lr > 0:
            raise SmallBertError(f"--lr: must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_proportion <= 1.0:
            raise SmallBertError(f"--warmup_proportion: must be in [0, 1], got {self.warmup_proportion}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SmallBertError(f"--seeds: need one or more distinct integers, got {list(self.seeds)}")
        if self.amp not in AMP_DTYPES:
            raise SmallBertError(f"--amp: {self.amp!r} is not one of {', '.join(AMP_DTYPES)}")


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
# Model, metrics, evaluation


class ClassifierWithLoss(nn.Cell):
    """The classifier with its loss, as `TrainStep` wants it.

    (input_ids, token_type_ids, attention_mask int32 [B,S], labels int32 [B]) → (mean cross-entropy float32 [],
    logits float32 [B,2]).
    """

    def __init__(self, model: BertForSequenceClassification):
        super().__init__(auto_prefix=False)  # keep the model's Hugging Face parameter names
        self.model = model

    def construct(self, input_ids, token_type_ids, attention_mask, labels):
        logits = self.model(input_ids, token_type_ids, attention_mask)
        return ops.cross_entropy(logits, labels), logits


def load_classifier(checkpoint: str | None, config: BertConfig, amp: str) -> BertForSequenceClassification:
    """BertForSequenceClassification with the checkpoint's weights; a head it lacks is initialised fresh.

    `checkpoint` None: every weight is freshly initialised (from scratch), as `ms.set_seed` fixes it.
    """
    if checkpoint is None:
        logger.info("no --init_checkpoint: training from a random initialisation")
        return BertForSequenceClassification(config, num_labels=NUM_LABELS, compute_dtype=AMP_DTYPES[amp])
    model = BertForSequenceClassification.from_pretrained(checkpoint, config=config, num_labels=NUM_LABELS,
                                                          compute_dtype=AMP_DTYPES[amp])
    if any(name.startswith("classifier.") for name in model.load_report.missing):
        logger.info("%s has no classifier head: initialised fresh", checkpoint)
    return model


def predict_logits(forward, encoded: Encoded, batch_size: int, buckets: tuple[int, ...], desc: str) -> np.ndarray:
    """Runs `forward` (the model in eval mode) over a split; returns float32 logits [N, 2] in row order."""
    logits = np.empty((len(encoded.lengths), NUM_LABELS), np.float32)
    for rows in tqdm(batch_rows(encoded.lengths, batch_size, buckets), desc=desc, unit="batch", leave=False):
        batch = make_batch(encoded, rows, buckets, batch_size)
        logits[rows] = forward(*(Tensor(x) for x in batch)).asnumpy()[:len(rows)]
    return logits



# ---------------------------------------------------------------------------------------------------------------
# Outputs


def write_json(path: str, value) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_predictions(path: str, index: np.ndarray, logits: np.ndarray) -> None:
    """GLUE's submission format: a header `index\\tprediction`, then one `<index>\\t<0|1>` per test row."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        f.writelines(f"{i}\t{p}\n" for i, p in zip(index.tolist(), logits.argmax(axis=1).tolist()))
    os.replace(tmp, path)


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


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class Data:
    """The encoded splits of a run and their labels/index (train None when not training, test when not predicting)."""

    train: Split | None
    train_ids: Encoded | None
    dev: Split
    dev_ids: Encoded
    test: Split | None
    test_ids: Encoded | None


def train_seed(seed: int, cfg: FinetuneConfig, checkpoint: str | None, config: BertConfig, data: Data, out_dir: str,
               vocab_file: str, do_lower_case: bool, net_with_loss=None, train_columns=None) -> dict:
    """Fine-tunes from `checkpoint` (None: from scratch) with `seed`; writes out_dir/best/, test_predictions.tsv.

    The seed fixes the classifier head's initialisation, dropout and the batch order. Returns this seed's results:
    per-epoch train loss, dev accuracy/loss and seconds, and the best epoch. `net_with_loss(model)` (default
    ClassifierWithLoss) is the Cell trained; `train_columns(rows)` (default: the rows' labels) the batch columns it
    takes after input_ids, token_type_ids and attention_mask (distillation adds the teacher's logits).
    """
    ms.set_seed(seed)
    rng = np.random.default_rng(seed)
    model = load_classifier(checkpoint, config, cfg.amp)
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    steps_per_epoch = len(data.train.sentences) // cfg.train_batch_size
    total_steps = steps_per_epoch * cfg.epochs
    schedule = WarmupPolynomialDecay(cfg.lr, int(total_steps * cfg.warmup_proportion), total_steps)
    optimizer = build_optimizer("adamw", model.trainable_params(), schedule, weight_decay=cfg.weight_decay)
    loss_scale = DynamicLossScale() if cfg.amp == "O2" else None
    step = TrainStep((net_with_loss or ClassifierWithLoss)(model), optimizer, max_grad_norm=cfg.max_grad_norm, loss_scale=loss_scale)
    forward = ms.jit(model.construct)
    best_dir = os.path.join(out_dir, "best")
    epochs, best = [], None
    for epoch in range(1, cfg.epochs + 1):
        model.set_train(True)
        start, losses, skipped = time.perf_counter(), [], 0
        bar = tqdm(batch_rows(data.train_ids.lengths, cfg.train_batch_size, buckets, rng),
                   desc=f"seed {seed} epoch {epoch}/{cfg.epochs}", unit="batch")
        for rows in bar:
            batch = make_batch(data.train_ids, rows, buckets, cfg.train_batch_size)
            out = step.step(*batch, *(train_columns(rows) if train_columns else (data.train.labels[rows],)))
            losses.append(out.loss)
            skipped += out.overflow
            bar.set_postfix(loss=f"{out.loss:.4f}")
        bar.close()
        seconds = time.perf_counter() - start
        model.set_train(False)
        dev = classification_metrics(predict_logits(forward, data.dev_ids, cfg.eval_batch_size, buckets, "dev"),
                                     data.dev.labels)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_accuracy": dev["accuracy"],
                  "dev_loss": dev["loss"], "train_seconds": round(seconds, 2), "skipped_steps": skipped}
        epochs.append(record)
        logger.info("seed %d epoch %d/%d: train loss %.4f, dev accuracy %.4f, dev loss %.4f (%.0f s)", seed, epoch,
                    cfg.epochs, record["train_loss"], dev["accuracy"], dev["loss"], seconds)
        if best is None or dev["accuracy"] > best["dev_accuracy"]:
            best = record
            save_best(model, best_dir, vocab_file, do_lower_case)
            # Predict test now, with the weights just saved: reloading them later by `set_data` would not reach
            # the graphs already compiled.
            if data.test is not None:
                test_logits = predict_logits(forward, data.test_ids, cfg.eval_batch_size, buckets, "test")
    result = {"seed": seed, "epochs": epochs, "best_epoch": best["epoch"], "best_dev_accuracy": best["dev_accuracy"],
              "best_dev_loss": best["dev_loss"], "best_checkpoint": best_dir}
    if data.test is not None:
        result["test_predictions"] = os.path.join(out_dir, "test_predictions.tsv")
        write_predictions(result["test_predictions"], data.test.index, test_logits)
    return result


def summarize(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of the seeds' best dev accuracies."""
    accuracies = np.array([r["best_dev_accuracy"] for r in runs])
    best = runs[int(np.argmax(accuracies))]
    return {"best_dev_accuracy_mean": float(accuracies.mean()),
            "best_dev_accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else 0.0,
            "num_seeds": len(runs), "best_seed": best["seed"], "best_checkpoint": best["best_checkpoint"],
            "seeds": runs}


def evaluate_only(cfg: FinetuneConfig, checkpoint: str, config: BertConfig, data: Data) -> dict:
    """`--do_train false`: dev accuracy/loss of a fine-tuned classifier and, with test.tsv, its predictions."""
    model = load_classifier(checkpoint, config, cfg.amp)
    if any(name.startswith("classifier.") for name in model.load_report.missing):
        raise SmallBertError(f"--init_checkpoint: {checkpoint} has no classifier head; --do_train false needs a "
                             f"fine-tuned classifier (e.g. the best/ directory of a fine-tuning run)")
    buckets = bucket_lengths(cfg.max_length, cfg.pad_to_max_length)
    forward = ms.jit(model.construct)
    dev = classification_metrics(predict_logits(forward, data.dev_ids, cfg.eval_batch_size, buckets, "dev"),
                                 data.dev.labels)
    logger.info("%s: dev accuracy %.4f, dev loss %.4f", checkpoint, dev["accuracy"], dev["loss"])
    result = {"dev_accuracy": dev["accuracy"], "dev_loss": dev["loss"]}
    if data.test is not None:
        logits = predict_logits(forward, data.test_ids, cfg.eval_batch_size, buckets, "test")
        result["test_predictions"] = os.path.join(cfg.output_dir, "test_predictions.tsv")
        write_predictions(result["test_predictions"], data.test.index, logits)
    return result


def load_data(cfg: FinetuneConfig, vocab_file: str, do_lower_case: bool, config: BertConfig,
              checkpoint: str | None) -> Data:
    """Reads, checks and encodes the splits the run needs; all user-input errors surface here."""
    train = read_split(cfg.data_dir, "train") if cfg.do_train else None
    dev = read_split(cfg.data_dir, "dev")
    test = read_split(cfg.data_dir, "test") if cfg.do_predict else None
    if train is not None and len(train.sentences) < cfg.train_batch_size:
        raise SmallBertError(f"--train_batch_size: {cfg.train_batch_size} exceeds the {len(train.sentences)} "
                             f"examples of {train.path}")
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    check_vocab(tokenizer, vocab_file, config, checkpoint)
    cache_dir = cfg.cache_dir or os.path.join(cfg.data_dir, "cache")

    def encode(split: Split | None) -> Encoded | None:
        return encode_split(split, tokenizer, vocab_file, cfg.max_length, cache_dir) if split else None

    return Data(train, encode(train), dev, encode(dev), test, encode(test))


def train_seeds(cfg: FinetuneConfig, checkpoint: str, config: BertConfig, data: Data, vocab_file: str,
                do_lower_case: bool, header: dict, **train_kwargs) -> dict:
    """`train_seed` for every seed in cfg.seeds; returns `header` + `summarize` of the runs, also written to
    output_dir/eval_results.json. Several seeds write output_dir/seed_<s>/ each (with its own eval_results.json)
    and copy the best seed's test predictions to output_dir. `train_kwargs` go to `train_seed`."""
    runs = []
    for seed in cfg.seeds:
        out_dir = cfg.output_dir if len(cfg.seeds) == 1 else os.path.join(cfg.output_dir, f"seed_{seed}")
        os.makedirs(out_dir, exist_ok=True)
        runs.append(train_seed(seed, cfg, checkpoint, config, data, out_dir, vocab_file, do_lower_case,
                               **train_kwargs))
        if len(cfg.seeds) > 1:
            write_json(os.path.join(out_dir, "eval_results.json"), {**header, **summarize(runs[-1:])})
    results = {**header, **summarize(runs)}
    write_json(os.path.join(cfg.output_dir, "eval_results.json"), results)
    best_predictions = next(r.get("test_predictions") for r in runs if r["seed"] == results["best_seed"])
    if len(cfg.seeds) > 1 and best_predictions:
        target = os.path.join(cfg.output_dir, "test_predictions.tsv")
        shutil.copyfile(best_predictions, f"{target}.tmp-{os.getpid()}")
        os.replace(f"{target}.tmp-{os.getpid()}", target)
    return results


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tunes (or with do_train False, evaluates) as `cfg` says; returns what eval_results.json holds.

    One seed writes into output_dir; several write output_dir/seed_<s>/ each, plus output_dir/eval_results.json
    with the mean ± std across seeds and output_dir/test_predictions.tsv from the seed with the best dev accuracy.
    """
    cfg.validate()
    checkpoint, config, vocab_file, do_lower_case = resolve_inputs(cfg)
    data = load_data(cfg, vocab_file, do_lower_case, config, checkpoint)
    os.makedirs(cfg.output_dir, exist_ok=True)
    ms.set_device(cfg.device_target)
    hparams = {**dataclasses.asdict(cfg), "seeds": list(cfg.seeds), "checkpoint": checkpoint,
               "vocab_file": vocab_file, "do_lower_case": do_lower_case, "bert_config": config.to_dict(),
               "buckets": list(bucket_lengths(cfg.max_length, cfg.pad_to_max_length))}
    if not cfg.do_train:
        results = {"hparams": hparams, **evaluate_only(cfg, checkpoint, config, data)}
        write_json(os.path.join(cfg.output_dir, "eval_results.json"), results)
        return results
    hparams.update(num_train_examples=len(data.train.sentences),
                   steps_per_epoch=len(data.train.sentences) // cfg.train_batch_size)
    results = train_seeds(cfg, checkpoint, config, data, vocab_file, do_lower_case, {"hparams": hparams})
    logger.info("best dev accuracy over %d seed(s): %.4f ± %.4f (best seed %d)", results["num_seeds"],
                results["best_dev_accuracy_mean"], results["best_dev_accuracy_std"], results["best_seed"])
    return results
