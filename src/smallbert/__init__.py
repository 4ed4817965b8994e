"""smallbert: Wikipedia dump to fine-tuned compact BERT, in MindSpore."""
from .config import BertConfig
from .errors import SmallBertError
from .model import BertForPreTraining, BertForSequenceClassification, BertModel

__version__ = "0.1.0"
__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertForSequenceClassification", "SmallBertError"]
