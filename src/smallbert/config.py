"""The configs: `BertConfig`, the model's hyper-parameters read from Google's or Hugging Face's JSON, and
`PretrainConfig`, a pretraining run's. Importable without MindSpore: the entry scripts' flags are built from them."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .errors import SmallBertError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh")
PROBLEM_TYPES = (None, "single_label_classification", "regression")


@dataclasses.dataclass
class BertConfig:
    """Hyper-parameters of a BERT, field names as in Google's `bert_config.json`.

    `layer_norm_eps` is Hugging Face's name; Google hard-codes 1e-12, the default here. A fine-tuned classifier also
    carries Hugging Face's `id2label` ({"0": name, ...}) and `problem_type` ("single_label_classification" or
    "regression"), so its label names travel with the checkpoint into evaluation, prediction and HF export.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    id2label: dict[str, str] | None = None
    problem_type: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "config") -> None:
        """Raises SmallBertError naming `source` if the values cannot build a model."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SmallBertError(f"{source}: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise SmallBertError(
                f"{source}: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise SmallBertError(f"{source}: hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise SmallBertError(f"{source}: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.id2label is not None and (not isinstance(self.id2label, dict)
                                          or set(self.id2label) != {str(i) for i in range(len(self.id2label))}):
            raise SmallBertError(f"{source}: id2label must map the ids 0..n-1 to names, got {self.id2label!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise SmallBertError(f"{source}: problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES[1:]}")

    @staticmethod
    def placeholder_labels(count: int) -> tuple[str, ...]:
        """transformers' default names for `count` labels, LABEL_0 ... LABEL_<count-1>: no real names."""
        return tuple(f"LABEL_{i}" for i in range(count))

    @property
    def named_labels(self) -> tuple[str, ...] | None:
        """`label_names`, or None when there are none or they are only transformers' placeholders."""
        names = self.label_names
        return None if names is None or names == self.placeholder_labels(len(names)) else names

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """The names in id2label, in id order (None when the config has no labels)."""
        return None if self.id2label is None else tuple(self.id2label[str(i)] for i in range(len(self.id2label)))

    @staticmethod
    def label_keys(names: tuple[str, ...]) -> dict[str, dict]:
        """Hugging Face's `id2label` and `label2id` for label names in id order."""
        return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "BertConfig":
        """Builds a config from a Google or Hugging Face dict; keys of neither are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
                   if k not in values]
        if missing:
            raise SmallBertError(f"{source}: missing required key(s) {', '.join(missing)}")
        kwargs = {k: v for k, v in values.items() if k in known}
        if isinstance(kwargs.get("id2label"), dict):  # JSON keys are strings; a dict built in Python may use ints
            kwargs["id2label"] = {str(k): str(v) for k, v in kwargs["id2label"].items()}
        kwargs.setdefault("intermediate_size", 4 * int(values["hidden_size"]))
        try:
            config = cls.__new__(cls)
            for f in dataclasses.fields(cls):
                default = f.default
                setattr(config, f.name, kwargs.get(f.name, default))
            config.validate(source)
        except (TypeError, ValueError) as err:
            raise SmallBertError(f"{source}: {err}") from None
        return config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Reads `bert_config.json` (Google) or `config.json` (Hugging Face)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except FileNotFoundError:
            raise SmallBertError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise SmallBertError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(values, dict):
            raise SmallBertError(f"{path}: expected a JSON object")
        return cls.from_dict(values, source=path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hf_dict(self) -> dict[str, Any]:
        """The same values with the keys Hugging Face's BertConfig expects."""
        values = {k: v for k, v in self.to_dict().items() if v is not None}
        if self.id2label is not None:
            values.update(self.label_keys(self.label_names))
        return {"architectures": ["BertForPreTraining"], "model_type": "bert", **values,
                "pad_token_id": 0, "position_embedding_type": "absolute"}

    def to_json_file(self, path: str | os.PathLike, hf: bool = True) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict() if hf else self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    def num_parameters(self, with_heads: bool = False) -> int:
        """Parameter count by formula: encoder + pooler (+ MLM transform, output bias and NSP)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        embeddings = (v + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
        pooler = h * h + h
        total = embeddings + self.num_hidden_layers * layer + pooler
        if with_heads:
            total += (h * h + h) + 2 * h + v + (2 * h + 2)
        return total


DEVICES = ("CPU", "GPU", "Ascend")
AMP_LEVELS = ("O0", "O1", "O2")
PRECISIONS = ("float16", "bfloat16")  # --amp_dtype
OPTIMIZERS = ("adamw", "lamb")


@dataclasses.dataclass
class PretrainConfig:
    """Everything a pretraining run depends on; `run_pretrain.py` flags map one to one (see its --help).

    train_batch_size is per device and per optimizer step; with accumulation_steps K it is processed as K
    micro-batches of train_batch_size / K. The global batch is train_batch_size × data-parallel ranks.
    Exactly one of train_steps and epochs is set. With eval_data_dir, a fresh run is evaluated before its first
    step, then every eval_steps (0 = only at the end); save_steps 0 = save only at the end; keep_checkpoint_max
    0 = keep all. A resume must keep the flags `checkpoint.RESUME_FLAGS`, the model config and the world size
    unless resume_force (see `check_resume_flags`).
    """

    data_dir: str
    bert_config_file: str
    output_dir: str
    device_target: str = "CPU"
    device_id: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-4
    end_lr: float = 0.0
    warmup_steps: int = 10000
    train_steps: int | None = None
    epochs: int | None = None
    train_batch_size: int = 32
    accumulation_steps: int = 1
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6  # Google's; the eps of both optimizers' update denominators
    max_grad_norm: float = 1.0
    amp: str = "O0"
    amp_dtype: str = "float16"
    init_loss_scale: float = 2.0 ** 16
    save_steps: int = 1000
    keep_checkpoint_max: int = 5
    resume: str | None = None
    resume_force: bool = False
    init_checkpoint: str | None = None
    eval_data_dir: str | None = None
    eval_steps: int = 0
    eval_batches: int = 100
    log_steps: int = 100
    jit: bool = True
    compile_cache: bool = True
    seed: int = 12345
    vocab_file: str | None = None
    verify_data: str = "full"
    mlm_only: bool = False
