"""BERT models whose layers have their own sizes: what ``obce_core.pruning.prune`` returns.

Pruning removes query/key dims, value dims and FFN units, and each layer loses a different number
of them. Stock ``BertConfig`` has one ``intermediate_size`` and one head size for all layers, so a
pruned model needs its own config type to be saved and reloaded. ``ObceBertConfig``
(``model_type = "obce_bert"``) adds per-layer lists:

* ``qk_head_sizes[i]``: query/key dims per head in layer ``i`` (the two stay equal: they meet in
  a dot product);
* ``v_head_sizes[i]``: value dims per head in layer ``i`` (may differ from the Q/K size);
* ``intermediate_sizes[i]``: FFN units in layer ``i``;
* ``attention_scale_head_size``: the ORIGINAL head size. Attention logits keep the scaling
  ``1/sqrt(attention_scale_head_size)`` the model was trained with; rescaling by the pruned Q/K
  size would sharpen every softmax and change the model for no reason.

``None`` for a list means "every layer has the original size", so ``ObceBertConfig(**bert_config)``
builds a model that computes exactly what the ``BertModel`` does. ``hidden_size``,
``num_attention_heads`` and ``intermediate_size`` keep their original values (the residual stream
and the head count are never pruned).

Importing this module registers the classes with ``AutoConfig``, ``AutoModel`` and
``AutoModelForSequenceClassification``, so ``transformers.AutoModel.from_pretrained(dir)`` loads a
saved pruned model once ``obce_core`` is imported. Only encoder (non-decoder) BERT is supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    BertForSequenceClassification,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertEmbeddings,
    BertEncoder,
    BertIntermediate,
    BertLayer,
    BertOutput,
    BertPooler,
    BertPreTrainedModel,
    BertSelfAttention,
    BertSelfOutput,
    eager_attention_forward,
)
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

__all__ = [
    "ObceBertConfig",
    "ObceBertModel",
    "ObceBertForSequenceClassification",
    "ObceBertSelfAttention",
    "ObceBertLayer",
    "layer_sizes",
]

_SIZE_LISTS = ("qk_head_sizes", "v_head_sizes", "intermediate_sizes")


@strict
class ObceBertConfig(BertConfig):
    """``BertConfig`` plus per-layer sizes; see the module docstring for each field."""

    model_type = "obce_bert"

    qk_head_sizes: list[int] | None = None
    v_head_sizes: list[int] | None = None
    intermediate_sizes: list[int] | None = None
    attention_scale_head_size: int | None = None

    def __post_init__(self, **kwargs):
        # A BertConfig's to_dict() carries model_type="bert"; it must not shadow ours.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        if self.is_decoder or self.add_cross_attention:
            raise ValueError(
                f"ObceBertConfig got is_decoder={self.is_decoder}, add_cross_attention="
                f"{self.add_cross_attention}; obce prunes encoder BERT models only. Set both to False."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}); these are the ORIGINAL sizes and must describe a valid BERT."
            )
        if self.attention_scale_head_size is None:
            self.attention_scale_head_size = self.hidden_size // self.num_attention_heads
        if isinstance(self.attention_scale_head_size, bool) or not isinstance(self.attention_scale_head_size, int) \
                or self.attention_scale_head_size < 1:
            raise ValueError(
                f"attention_scale_head_size must be a positive integer (the original head size, e.g. 32 for "
                f"all-MiniLM-L6-v2, 64 for BERT-base); got {self.attention_scale_head_size!r}."
            )
        for name in _SIZE_LISTS:
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) != self.num_hidden_layers:
                raise ValueError(
                    f"{name} has {len(sizes)} entries but the model has num_hidden_layers="
                    f"{self.num_hidden_layers}; give one size per layer, or None for the original sizes."
                )
            bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s < 1]
            if bad:
                raise ValueError(
                    f"{name} must hold positive integers (every head keeps at least one dim, every FFN at "
                    f"least one unit); got {sizes!r}."
                )

    def layer_sizes(self, layer: int) -> tuple[int, int, int]:
        """``(qk_head_size, v_head_size, intermediate_size)`` of encoder layer ``layer``."""
        return layer_sizes(self, layer)


def layer_sizes(config, layer: int) -> tuple[int, int, int]:
    """``(qk_head_size, v_head_size, intermediate_size)`` of one layer, for a BERT or obce config.

    A stock ``BertConfig`` (no per-layer lists) gives the uniform sizes.
    """
    head = config.hidden_size // config.num_attention_heads
    qk = getattr(config, "qk_head_sizes", None)
    v = getattr(config, "v_head_sizes", None)
    ffn = getattr(config, "intermediate_sizes", None)
    return (
        int(qk[layer]) if qk is not None else head,
        int(v[layer]) if v is not None else head,
        int(ffn[layer]) if ffn is not None else int(config.intermediate_size),
    )


class ObceBertSelfAttention(BertSelfAttention):
    """Self-attention whose Q/K head size and V head size are set per layer.

    Q and K are viewed with ``qk_head_size``, V with ``v_head_size``; the output has
    ``num_attention_heads * v_head_size`` features. Logits are scaled by
    ``attention_scale_head_size ** -0.5`` (the original head size), not by the pruned size. Both the
    eager path and torch SDPA accept a value dim that differs from the query/key dim.
    """

    def __init__(self, config, layer_idx: int, is_causal: bool = False):
        # BertSelfAttention.__init__ would build full-size Linear layers only to throw them away.
        nn.Module.__init__(self)
        qk, v, _ = layer_sizes(config, layer_idx)
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.qk_head_size = qk
        self.v_head_size = v
        # Kept for code written against BertSelfAttention (it means the Q/K size there too).
        self.attention_head_size = qk
        self.all_head_size = self.num_attention_heads * qk
        self.all_value_size = self.num_attention_heads * v
        scale_size = getattr(config, "attention_scale_head_size", None) or config.hidden_size // config.num_attention_heads
        self.scaling = scale_size**-0.5

        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_value_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_decoder = config.is_decoder
        self.is_causal = is_causal
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, cache=None, **kwargs):
        if cache is not None:
            raise ValueError("ObceBertSelfAttention is encoder-only; got a cache. Call the model without cache.")
        input_shape = hidden_states.shape[:-1]
        query_layer = self.query(hidden_states).view(*input_shape, -1, self.qk_head_size).transpose(1, 2)
        key_layer = self.key(hidden_states).view(*input_shape, -1, self.qk_head_size).transpose(1, 2)
        value_layer = self.value(hidden_states).view(*input_shape, -1, self.v_head_size).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_layer,
            key_layer,
            value_layer,
            attention_mask,
            dropout=0.0 if not self.training else self.dropout.p,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return attn_output, attn_weights


class ObceBertSelfOutput(BertSelfOutput):
    """``attention.output``: its dense layer reads ``heads * v_head_size`` features."""

    def __init__(self, config, in_features: int):
        nn.Module.__init__(self)
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class ObceBertAttention(BertAttention):
    def __init__(self, config, layer_idx: int):
        nn.Module.__init__(self)
        self.is_cross_attention = False
        self.self = ObceBertSelfAttention(config, layer_idx=layer_idx, is_causal=False)
        self.output = ObceBertSelfOutput(config, self.self.all_value_size)


class ObceBertIntermediate(BertIntermediate):
    def __init__(self, config, size: int):
        nn.Module.__init__(self)
        self.dense = nn.Linear(config.hidden_size, size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act


class ObceBertOutput(BertOutput):
    def __init__(self, config, size: int):
        nn.Module.__init__(self)
        self.dense = nn.Linear(size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class ObceBertLayer(BertLayer):
    """A ``BertLayer`` built with the sizes of layer ``layer_idx`` (forward is BertLayer's)."""

    def __init__(self, config, layer_idx: int):
        GradientCheckpointingLayer.__init__(self)
        _, _, ffn = layer_sizes(config, layer_idx)
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.seq_len_dim = 1
        self.attention = ObceBertAttention(config, layer_idx=layer_idx)
        self.is_decoder = False
        self.add_cross_attention = False
        self.intermediate = ObceBertIntermediate(config, ffn)
        self.output = ObceBertOutput(config, ffn)


class ObceBertEncoder(BertEncoder):
    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.layer = nn.ModuleList([ObceBertLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])


class ObceBertModel(BertModel):
    """``BertModel`` with per-layer sizes from an ``ObceBertConfig`` (forward is BertModel's)."""

    config_class = ObceBertConfig
    _no_split_modules = ["BertEmbeddings", "ObceBertLayer"]

    def __init__(self, config: ObceBertConfig, add_pooling_layer: bool = True):
        # Same body as BertModel.__init__, with the per-layer encoder.
        BertPreTrainedModel.__init__(self, config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = ObceBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()


class ObceBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` on an ``ObceBertModel`` (forward is the stock one)."""

    config_class = ObceBertConfig

    def __init__(self, config: ObceBertConfig):
        BertPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.config = config
        self.bert = ObceBertModel(config)
        classifier_dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


# exist_ok: re-importing (importlib.reload, notebooks) must not fail on our own earlier registration.
AutoConfig.register(ObceBertConfig.model_type, ObceBertConfig, exist_ok=True)
AutoModel.register(ObceBertConfig, ObceBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(ObceBertConfig, ObceBertForSequenceClassification, exist_ok=True)
