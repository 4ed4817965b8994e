"""Reading and writing model weights: our MindSpore `.ckpt`, Hugging Face safetensors and `pytorch_model.bin`.

A model directory holds `config.json` (Google or Hugging Face keys), one weights file and optionally `vocab.txt`.
Our parameter names already are Hugging Face's, so loading is: read a name → array dict, normalise the few
spelling differences (a missing `bert.` prefix, old `gamma`/`beta`, tied decoder weights), check shapes, assign.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .config import BertConfig
from .errors import SmallBertError

if TYPE_CHECKING:
    from .model import BertPreTrainedModel

logger = logging.getLogger("smallbert")

CKPT_NAME = "model.ckpt"
CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.txt"
WEIGHT_FILES = (CKPT_NAME, "model.safetensors", "pytorch_model.bin")
# Buffers and tied copies that Hugging Face files may hold and our models do not.
IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight")


@dataclass
class LoadReport:
    """What `load_weights` did: names it left at their initial values and names it did not use."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def find_weights_file(path: str) -> str:
    """Returns the weights file for a directory or file path; raises SmallBertError if there is none."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise SmallBertError(f"{path}: no such checkpoint file or directory")
    for name in WEIGHT_FILES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise SmallBertError(f"{path}: no weights file found (looked for {', '.join(WEIGHT_FILES)})")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a `.ckpt`, `.safetensors` or PyTorch `.bin` file into {name: float32/int array}, without torch."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        if path.endswith(".bin") or path.endswith(".pt"):
            return read_torch_zip(path)
        import mindspore as ms

        return {name: value.asnumpy() for name, value in ms.load_checkpoint(path).items()}
    except SmallBertError:
        raise
    except Exception as err:  # the readers raise many types; the user needs the file and the reason
        raise SmallBertError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch zip checkpoint's `data.pkl` into numpy arrays, reading storages from the archive."""

    DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": np.uint16,
              "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32,
              "ShortStorage": np.int16, "ByteStorage": np.uint8, "BoolStorage": np.bool_}

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self.rebuild_tensor
        if module == "torch" and name in self.DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a weights file")

    def persistent_load(self, pid):
        _, storage_type, key, _, _ = pid
        dtype = self.DTYPES[storage_type]
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        array = np.frombuffer(raw, dtype=dtype)
        if storage_type == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array

    @staticmethod
    def rebuild_tensor(storage, offset, size, stride, *_):
        itemsize = storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def read_torch_zip(path: str) -> dict[str, np.ndarray]:
    """Reads a `torch.save` zip archive of a state dict (the `pytorch_model.bin` format) with numpy only."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise SmallBertError(f"{path}: not a PyTorch zip checkpoint (legacy pre-1.6 format is not supported)")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as f:
            state = _TorchUnpickler(f, archive, prefix).load()
    return dict(state)


def normalise_names(state: dict[str, np.ndarray], expected: set[str]) -> dict[str, np.ndarray]:
    """Maps Hugging Face / older spellings onto our parameter names.

    Handles: `LayerNorm.gamma/beta`, a checkpoint of a bare `BertModel` (no `bert.` prefix) loaded into a model
    with heads and the reverse, and `cls.predictions.decoder.bias` (tied to `cls.predictions.bias`).
    """
    out: dict[str, np.ndarray] = {}
    wants_prefix = any(name.startswith("bert.") for name in expected)
    for name, value in state.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name == "cls.predictions.decoder.bias":
            name = "cls.predictions.bias"
        has_prefix = name.startswith("bert.")
        is_body = name.split(".")[0] in ("embeddings", "encoder", "pooler")
        if wants_prefix and is_body:
            name = "bert." + name
        elif not wants_prefix and has_prefix:
            name = name[len("bert."):]
        if name in out and name == "cls.predictions.bias":
            continue
        out[name] = value
    return out


def load_weights(model: "BertPreTrainedModel", path: str) -> LoadReport:
    """Loads the weights file at `path` (file or directory) into `model`, checking every shape.

    Returns a LoadReport; missing parameters keep their fresh initialisation and are logged as such.
    Raises SmallBertError naming the file and parameter when a shape does not match the config.
    """
    weights_file = find_weights_file(path)
    return load_state_dict(model, read_state_dict(weights_file), weights_file)


def assign(param, value: np.ndarray) -> None:
    """Writes `value` into `param` with ops.assign: unlike set_data it also reaches graphs that have already run."""
    import mindspore as ms

    ms.ops.assign(param, ms.Tensor(np.asarray(value)).astype(param.dtype))


def load_state_dict(model: "BertPreTrainedModel", state: dict[str, np.ndarray], source: str) -> LoadReport:
    """Assigns {name: array} (our or Hugging Face spellings) to `model`'s parameters, checking every shape.

    `source` names where the arrays came from in errors and warnings. Returns a LoadReport.
    """
    params = {p.name: p for p in model.weights()}
    state = normalise_names(state, set(params))
    report = LoadReport()
    for name, value in state.items():
        if name in params:
            param = params[name]
            if tuple(value.shape) != tuple(param.shape):
                raise SmallBertError(f"{source}: {name} has shape {tuple(value.shape)} but the config "
                                     f"needs {tuple(param.shape)}")
            assign(param, value)
        elif not any(name.endswith(suffix) for suffix in IGNORED) and not name.startswith("_"):
            report.unexpected.append(name)
    report.missing = [name for name in params if name not in state]
    if report.missing:
        logger.warning("%s: %d parameter(s) not in the checkpoint, freshly initialised: %s", source,
                       len(report.missing), summarise(report.missing))
    if report.unexpected:
        logger.warning("%s: %d weight(s) not used by %s: %s", source, len(report.unexpected),
                       type(model).__name__, summarise(report.unexpected))
    return report


def summarise(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def from_pretrained(cls, path: str, config: BertConfig | None = None, **model_kwargs):
    """Builds `cls(config, **model_kwargs)` from `path/config.json` and loads the weights in `path`.

    `path` is a directory with config.json and one of WEIGHT_FILES. Returns the model, in eval mode, with
    `model.vocab_file` set when the directory holds a vocab.txt and `model.load_report` describing the load.
    """
    path = os.fspath(path)
    if config is None:
        config = BertConfig.from_json_file(os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path)
    model = cls(config, **model_kwargs)
    model.load_report = load_weights(model, path)
    vocab = os.path.join(path, VOCAB_NAME)
    if os.path.isfile(vocab):
        model.vocab_file = vocab
    model.set_train(False)
    return model


@contextlib.contextmanager
def staged_directory(directory: str) -> Iterator[str]:
    """Yields an empty temporary directory beside `directory`; on success its files are moved into `directory`,
    so a reader never sees a half-written checkpoint. On failure nothing of it is left behind."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        yield staging
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_pretrained(model: "BertPreTrainedModel", directory: str, vocab_file: str | None = None) -> None:
    """Writes config.json, model.ckpt and vocab.txt (if `vocab_file` or `model.vocab_file` is set) to `directory`."""
    import mindspore as ms

    vocab_file = vocab_file or model.vocab_file
    with staged_directory(os.fspath(directory)) as staging:
        model.config.to_json_file(os.path.join(staging, CONFIG_NAME))
        ms.save_checkpoint(model.weights(), os.path.join(staging, CKPT_NAME))
        if vocab_file:
            shutil.copyfile(vocab_file, os.path.join(staging, VOCAB_NAME))
