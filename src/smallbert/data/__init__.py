"""Pretraining data: dump → sentences (`extract`) → Google's instances (`instances`) → MindRecord
shards and the training reader (`records`), streamed by `pipeline`."""
from smallbert.data.records import list_shards, pretraining_dataset, read_metadata, validate_for_model

__all__ = ["list_shards", "pretraining_dataset", "read_metadata", "validate_for_model"]
