"""Training checkpoints: atomic save, keep-newest-K, verification and exact-resume state.

Layout of a run directory (`--output_dir`):

    RUN/checkpoints/step_<N>/      one per save, N = optimizer steps taken
        config.json, model.ckpt    the model as `save_pretrained` writes it: any checkpoint is a model directory
        [vocab.txt]                that `from_pretrained` / `--init_checkpoint` / fine-tuning load directly
        training_state.ckpt        optimizer moments, its global_step (the learning-rate position), loss scale
        trainer_state.json         step, data position (epoch, sequences into it), RNG state, flags, and the size and
                                   SHA-256 of every file above; written last, so its presence marks completeness
    RUN/final/                     the model after the last step (no training state)
    RUN/metrics.jsonl              see `smallbert.pretrain`

A checkpoint is staged in `checkpoints/.tmp-*` and renamed into place, so a crash never leaves a directory named
`step_<N>` that is incomplete; a file corrupted later (disk, copy) is caught by its hash when resuming.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Sequence

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor

from .data.records import sha256_file
from .errors import SmallBertError
from .weights import CKPT_NAME, assign

logger = logging.getLogger("smallbert")

CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
STATE_NAME = "training_state.ckpt"
TRAINER_STATE_NAME = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(output_dir: str, step: int, model, state_parameters: Sequence[Parameter],
                    trainer_state: dict[str, Any], keep_max: int = 0, vocab_file: str | None = None) -> str:
    """Writes `output_dir/checkpoints/step_<step>/` atomically and prunes to the newest `keep_max` (0 = keep all).

    model: a BertPreTrainedModel (saved with `save_pretrained`); state_parameters: `TrainStep.state_parameters()`;
    trainer_state: JSON-serialisable loop state (step, data position, ...). Returns the checkpoint directory.
    """
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):  # left by a save that was killed; one writer (rank 0) saves at a time
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    final = os.path.join(root, f"step_{step}")
    try:
        model.save_pretrained(staging, vocab_file=vocab_file)
        ms.save_checkpoint([{"name": p.name, "data": Tensor(p.asnumpy().copy())} for p in state_parameters],
                           os.path.join(staging, STATE_NAME))
        files = {name: {"bytes": os.path.getsize(os.path.join(staging, name)),
                        "sha256": sha256_file(os.path.join(staging, name))} for name in sorted(os.listdir(staging))}
        with open(os.path.join(staging, TRAINER_STATE_NAME), "w", encoding="utf-8") as f:
            json.dump({**trainer_state, "step": step, "files": files}, f, indent=2, sort_keys=True)
        if os.path.exists(final):  # a re-save of the same step (e.g. after resuming from it)
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if keep_max > 0:
        for _, old in list_checkpoints(output_dir)[:-keep_max]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every `step_<N>` directory under `output_dir/checkpoints`, oldest first."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
             if (m := _STEP_DIR.match(name)) and os.path.isdir(os.path.join(root, name))]
    return sorted(found)


def read_trainer_state(path: str) -> dict[str, Any]:
    """The trainer state of the checkpoint directory `path`, unverified (see `verify_checkpoint`); SmallBertError
    if it is missing or unreadable."""
    state_file = os.path.join(path, TRAINER_STATE_NAME)
    if not os.path.isdir(path):
        raise SmallBertError(f"{path}: no such checkpoint directory")
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
        state["files"]  # every trainer state lists its files
    except FileNotFoundError:
        raise SmallBertError(f"{path}: incomplete checkpoint ({TRAINER_STATE_NAME} missing)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SmallBertError(f"{state_file}: unreadable trainer state ({err})") from None
    return state


def verify_checkpoint(path: str) -> dict[str, Any]:
    """Returns the trainer state of the checkpoint directory `path`; SmallBertError if it is missing or corrupt."""
    state = read_trainer_state(path)
    files = state["files"]
    for name in (CKPT_NAME, STATE_NAME):
        if name not in files:
            raise SmallBertError(f"{path}: trainer state lists no {name}")
    for name, expected in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise SmallBertError(f"{file}: missing")
        if os.path.getsize(file) != expected["bytes"] or sha256_file(file) != expected["sha256"]:
            raise SmallBertError(f"{file}: corrupt (size or SHA-256 differs from {TRAINER_STATE_NAME})")
    return state


def find_resume_checkpoint(resume: str, output_dir: str) -> str | None:
    """The checkpoint directory `--resume` names, verified.

    resume == "auto": the newest valid checkpoint in `output_dir`, or None when there is none (a fresh start);
    a corrupt newer one is reported and skipped. Otherwise `resume` is a checkpoint directory (must be valid) or
    a run directory (searched like "auto", but finding nothing is an error).
    """
    if resume != "auto" and os.path.isfile(os.path.join(resume, TRAINER_STATE_NAME)):
        verify_checkpoint(resume)
        return resume
    run_dir = output_dir if resume == "auto" else resume
    if resume != "auto" and not os.path.isdir(resume):
        raise SmallBertError(f"--resume: {resume}: no such checkpoint or run directory")
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path
        except SmallBertError as err:
            logger.warning("skipping checkpoint of step %d: %s", step, err)
    if resume != "auto":
        raise SmallBertError(f"--resume: {resume}: no valid checkpoint found")
    return None


# Flags a resumed run must share with its checkpoint, because they define the learning-rate schedule, the batches or
# the update: a change would silently continue a different run. The others (--save_steps, --log_steps, eval,
# verification, paths) may change freely.
RESUME_FLAGS = ("lr", "end_lr", "warmup_steps", "train_steps", "epochs", "optimizer", "weight_decay", "adam_epsilon",
                "max_grad_norm", "amp", "amp_dtype", "train_batch_size", "accumulation_steps", "seed")


def _show(value: Any) -> str:
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def resume_changes(state: dict[str, Any], args: dict[str, Any], world_size: int,
                   config: dict[str, Any], saved_config: dict[str, Any]) -> list[str]:
    """How this run differs from the one that wrote a checkpoint, one `--flag old -> new` per change.

    state: the checkpoint's trainer state (its "args" and "world_size"); args: this run's flags (RESUME_FLAGS are
    compared); config / saved_config: the model configs as dicts (every field is compared). Returns [] for none.
    """
    saved_args = state.get("args", {})
    changes = [f"--{flag} {_show(saved_args[flag])} -> {_show(args[flag])}" for flag in RESUME_FLAGS
               if flag in saved_args and saved_args[flag] != args[flag]]
    changes += [f"--config {key} {_show(saved_config.get(key))} -> {_show(value)}" for key, value in config.items()
                if saved_config.get(key) != value]
    if state.get("world_size", world_size) != world_size:
        changes.append(f"world size {state['world_size']} -> {world_size}")
    return changes


def _assign_all(parameters: Sequence[Parameter], values: dict[str, np.ndarray], source: str) -> None:
    """Writes `values` into `parameters` by name (see weights.assign). Every parameter must be present with its
    shape."""
    for p in parameters:
        if p.name not in values:
            raise SmallBertError(f"{source}: no value for {p.name}")
        value = values[p.name]
        if tuple(value.shape) != tuple(p.shape):
            raise SmallBertError(f"{source}: {p.name} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
        assign(p, value)


def restore_checkpoint(path: str, model, state_parameters: Sequence[Parameter]) -> dict[str, Any]:
    """Loads a verified checkpoint into `model` and the training-state parameters; returns its trainer state."""
    state = verify_checkpoint(path)
    for file, parameters in ((CKPT_NAME, model.weights()), (STATE_NAME, state_parameters)):
        file = os.path.join(path, file)
        values = {name: tensor.asnumpy() for name, tensor in ms.load_checkpoint(file).items()}
        _assign_all(list(parameters), values, file)
    return state
