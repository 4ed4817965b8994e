"""Fine-tuning: GLUE-format task files → token ids → train / evaluate / predict.

  tasks.py    which columns each split has; reading and checking the TSVs
  encode.py   token ids with an on-disk cache, length buckets, batches
  metrics.py  the tasks' metrics from logits
  loop.py     the run: checkpoint resolution, per-seed training, evaluation, outputs
"""
from .encode import Encoded, batch_rows, bucket_lengths, encode_sentences, encode_split, make_batch
from .loop import FinetuneConfig, load_classifier, load_data, resolve_checkpoint, resolve_inputs, run
from .metrics import classification_metrics
from .tasks import Split, read_split

__all__ = ["Encoded", "FinetuneConfig", "Split", "batch_rows", "bucket_lengths", "classification_metrics",
           "encode_sentences", "encode_split", "load_classifier", "load_data", "make_batch", "read_split",
           "resolve_checkpoint", "resolve_inputs", "run"]
