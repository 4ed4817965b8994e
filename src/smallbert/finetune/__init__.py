"""Fine-tuning: task files → token ids → train / evaluate / predict, and distillation.

  config.py   the run configs (no MindSpore: the CLIs' --help reads their defaults)
  flags.py    the command-line flags run_classify.py and run_distill.py share
  tasks.py    which columns each task's splits have; reading and checking the TSVs
  encode.py   token ids (single sentences, pairs) with an on-disk cache, length buckets, batches
  metrics.py  the tasks' metrics: accuracy, F1, MCC, Pearson, Spearman
  loop.py     the run: checkpoint resolution, per-seed training, evaluation, outputs
  distill.py, teacher.py  distillation from a fine-tuned teacher
  layers.py   its optional first stage: TinyBERT-style layer distillation against the live teacher
"""
from .config import DistillConfig, FinetuneConfig
from .tasks import Split, assign_labels, get_task, read_split

__all__ = ["DistillConfig", "Encoded", "FinetuneConfig", "Split", "assign_labels", "batch_rows", "bucket_lengths",
           "encode_sentences", "encode_split", "get_task", "load_classifier", "load_data", "make_batch",
           "read_split", "resolve_checkpoint", "resolve_inputs", "run"]

_LAZY = {"Encoded": "encode", "batch_rows": "encode", "bucket_lengths": "encode", "encode_sentences": "encode",
         "encode_split": "encode", "make_batch": "encode", "load_classifier": "loop", "load_data": "loop",
         "resolve_checkpoint": "loop", "resolve_inputs": "loop", "run": "loop"}


def __getattr__(name: str):
    # loop.py imports MindSpore (~3 s); loading it on first use keeps `--help` and the data-only helpers fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
