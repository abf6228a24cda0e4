"""The modules and ``PreTrainedModel`` classes of obce_bert: BERT with per-layer sizes.

What ``obce_core.pruning.prune`` returns. Each layer is built with the sizes its
``ObceBertConfig`` gives it (see ``configuration_obce_bert``); forward passes are BERT's own,
except the sequence classifier, which can also read a masked mean of the last hidden states
(``config.classifier_pooling == "mean"``) instead of the pooled [CLS] state. Only encoder
(non-decoder) BERT is supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import BertForSequenceClassification, BertModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils.generic import can_return_tuple
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

from obce_core.forward import pool
from obce_core.obce_bert.configuration_obce_bert import ObceBertConfig, layer_sizes

__all__ = [
    "ObceBertModel",
    "ObceBertForSequenceClassification",
    "ObceBertSelfAttention",
    "ObceBertLayer",
]

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


class ObceBertPooler(BertPooler):
    """BERT's pooler (dense + tanh on [CLS]) with an output width of its own (``config.pooler_size``).

    Hidden-dim pruning narrows the stream the pooler reads but not what it writes.
    """

    def __init__(self, config):
        nn.Module.__init__(self)
        self.dense = nn.Linear(config.hidden_size, pooler_width(config))
        self.activation = nn.Tanh()


def pooler_width(config) -> int:
    """The pooler's output width: ``config.pooler_size``, or ``hidden_size`` when unset."""
    return int(getattr(config, "pooler_size", None) or config.hidden_size)


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
        self.pooler = ObceBertPooler(config) if add_pooling_layer else None
        self.post_init()


class ObceBertForSequenceClassification(BertForSequenceClassification):
    """A sequence classifier on an ``ObceBertModel`` that reads [CLS] or the mean of the tokens.

    ``config.classifier_pooling == "cls"``: BERT's pooler on [CLS], exactly the stock forward.
    ``"mean"``: the masked mean of the last hidden states, then dropout and the linear classifier;
    the model has no pooler layer.
    """

    config_class = ObceBertConfig

    def __init__(self, config: ObceBertConfig):
        BertPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.config = config
        self.bert = ObceBertModel(config, add_pooling_layer=config.classifier_pooling == "cls")
        classifier_dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(classifier_dropout)
        # "cls" reads the pooler's output, "mean" the stream itself.
        width = pooler_width(config) if config.classifier_pooling == "cls" else config.hidden_size
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        if self.config.classifier_pooling == "cls":
            return super().forward(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels, **kwargs)
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        pooled = pool(outputs.last_hidden_state, attention_mask, "mean")
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # The problem-type rule of BertForSequenceClassification.forward, so both poolings train alike.
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return MSELoss()(logits.squeeze(), labels.squeeze())
            return MSELoss()(logits, labels)
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels)
