"""obce_bert: the BERT variant whose layers have their own sizes (what pruning produces).

Laid out as ``transformers`` lays out a model: ``configuration_obce_bert`` holds
``ObceBertConfig`` (per-layer sizes, original attention scaling, classifier pooling) and
``modeling_obce_bert`` the modules and ``PreTrainedModel`` classes. Importing this package
registers them with ``AutoConfig``, ``AutoModel`` and ``AutoModelForSequenceClassification``
(key ``obce_bert`` == ``model_type``), so a saved pruned model reloads with ``from_pretrained``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from obce_core.obce_bert.configuration_obce_bert import CLASSIFIER_POOLINGS, ObceBertConfig, layer_sizes
from obce_core.obce_bert.modeling_obce_bert import (
    ObceBertForSequenceClassification,
    ObceBertLayer,
    ObceBertModel,
    ObceBertSelfAttention,
)

__all__ = [
    "CLASSIFIER_POOLINGS",
    "ObceBertConfig",
    "ObceBertForSequenceClassification",
    "ObceBertLayer",
    "ObceBertModel",
    "ObceBertSelfAttention",
    "layer_sizes",
]

# exist_ok: re-importing (importlib.reload, notebooks) must not fail on our own earlier registration.
AutoConfig.register(ObceBertConfig.model_type, ObceBertConfig, exist_ok=True)
AutoModel.register(ObceBertConfig, ObceBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(ObceBertConfig, ObceBertForSequenceClassification, exist_ok=True)
