"""smallbert: Wikipedia dump to fine-tuned compact BERT, in MindSpore."""
from .config import BertConfig
from .errors import SmallBertError

__version__ = "0.1.0"
__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertForSequenceClassification", "SmallBertError"]


def __getattr__(name: str):
    # The models import MindSpore (~3 s, ~400 MB); loading them on first use keeps the tokenizer and
    # the data pipeline's worker processes light.
    if name in ("BertModel", "BertForPreTraining", "BertForSequenceClassification"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'smallbert' has no attribute {name!r}")
