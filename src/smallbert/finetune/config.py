"""The fine-tuning and distillation run configs: plain dataclasses, importable without MindSpore (the CLIs take
their defaults from here, so `--help` is fast)."""
from __future__ import annotations

import dataclasses

from ..errors import SmallBertError

AMP_LEVELS = ("O0", "O2")


@dataclasses.dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; written verbatim into eval_results.json.

    `task_name`: a GLUE task or "tsv" (columns by header name: `text_a_column`, `text_b_column` (None: single
    sentences), `label_column`; `task_type` classification or regression). `labels`: the label names in id order
    (None: the task's own, else train's in first-seen order). `metric_for_best`: a metric (`f1`) or
    `<dev split>_<metric>` (`dev_mismatched_accuracy`); None means the task's main one.
    `do_lower_case` None means: as the checkpoint's tokenizer_config.json says, else True (Google's default).
    `vocab_file` / `bert_config_file` None mean: the checkpoint directory's vocab.txt / config.json.
    `adapt_vocab`: a `vocab_file` other than the checkpoint's own is allowed; the checkpoint's embedding rows are
    carried over to it token by token (`vocab_adapter`). Without it such a vocab is refused.
    `init_checkpoint` None means from scratch: a seeded random initialisation of `bert_config_file`'s model
    (both `bert_config_file` and `vocab_file` are then required).
    `cache_dir` None means `encode.default_cache_dir()` (~/.cache/smallbert/finetune, or under $SMALLBERT_CACHE_DIR).
    `overwrite`: clear a non-empty `output_dir` first instead of refusing it.
    `resume`: continue from the newest epoch checkpoint in `output_dir` (per seed with several seeds), if any.
    `compile_cache`: a fresh training run keeps its graphs in `smallbert.compile_cache` (resumed runs compile as
    before).
    """

    data_dir: str
    init_checkpoint: str | None
    output_dir: str
    task_name: str = "sst-2"
    text_a_column: str = "text_a"
    text_b_column: str | None = None
    label_column: str = "label"
    task_type: str | None = None
    labels: tuple[str, ...] | None = None
    metric_for_best: str | None = None
    vocab_file: str | None = None
    adapt_vocab: bool = False
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
    overwrite: bool = False
    resume: bool = False
    compile_cache: bool = True

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
        if self.amp not in AMP_LEVELS:
            raise SmallBertError(f"--amp: {self.amp!r} is not one of {', '.join(AMP_LEVELS)}")
        if self.labels is not None and (len(set(self.labels)) != len(self.labels) or "" in self.labels
                                        or len(self.labels) < 2):
            raise SmallBertError(f"--labels: need two or more distinct non-empty names, got {list(self.labels)}")
        if self.task_name != "tsv":
            for flag, value, default in (("--text_a_column", self.text_a_column, "text_a"),
                                         ("--text_b_column", self.text_b_column, None),
                                         ("--label_column", self.label_column, "label")):
                if value != default:
                    raise SmallBertError(f"{flag}: only for --task_name tsv; {self.task_name} knows its columns")


@dataclasses.dataclass
class DistillConfig(FinetuneConfig):
    """A fine-tuning config plus the teacher, the unlabelled transfer text and the loss's T and alpha.

    `logits_cache` None means `<cache_dir>/teacher-<split>-<key>.npz`, one file per teacher, text and max_length;
    an explicit path is checked against its key and refused when it was written for other inputs.
    `intermediate_loss`: first `intermediate_epochs` epochs of layer distillation against the live teacher
    (`layers.py`), then `epochs` of the logit stage.
    `augment`: perturbed copies of each train example added to the transfer set, unlabelled (`augment.py`).
    """

    teacher: str = ""
    transfer_files: tuple[str, ...] = ()
    temperature: float = 2.0
    alpha: float = 0.0
    logits_cache: str | None = None
    lr: float = 1e-4
    intermediate_loss: bool = False
    intermediate_epochs: int = 1
    augment: int = 0

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
        if self.intermediate_epochs <= 0:
            raise SmallBertError(f"--intermediate_epochs: must be a positive integer, got {self.intermediate_epochs}")
        if self.augment < 0:
            raise SmallBertError(f"--augment: must be >= 0, got {self.augment}")
