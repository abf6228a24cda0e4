"""``ObceBertConfig``: a ``BertConfig`` whose layers have their own sizes, and how it pools.

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
builds a model that computes exactly what the ``BertModel`` does. ``num_attention_heads`` and
``intermediate_size`` keep their original values (the head count is never pruned).

``hidden_size`` is the width of the residual stream. Hidden-dim pruning
(``obce_core.pruning.hidden``) narrows it; the head sizes do not follow it (Q/K/V project the
stream onto heads of their own size), so a narrowed config must give ``qk_head_sizes``,
``v_head_sizes`` and ``attention_scale_head_size`` explicitly, and then ``hidden_size`` need not
be a multiple of the head count. ``pooler_size`` is the width of BERT's pooler output (what a
"cls" classifier reads); ``None`` means ``hidden_size``. Hidden-dim pruning keeps the original
pooler width: the pooler's outputs are not the stream. ``hidden_dims`` lists, in order, which dims
of the unnarrowed stream the narrowed one kept (``None``: not narrowed), so layer-wise distillation
compares each kept dim with the same dim of the teacher.

``classifier_pooling`` says what the sequence classifier reads: ``"cls"`` (BERT's pooler, a dense
layer + tanh on the [CLS] state) or ``"mean"`` (the mean of the last hidden states over the real
tokens, with no pooler layer). Sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained
mean-pooled and ship no pooler weights, so "cls" would put a random layer in front of the head.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from obce_core.choices import CLASSIFIER_POOLINGS  # defined without transformers for the CLI's parser
from obce_core.validation import check_choice, check_int, invalid

__all__ = ["CLASSIFIER_POOLINGS", "ObceBertConfig", "layer_sizes"]

_SIZE_LISTS = ("qk_head_sizes", "v_head_sizes", "intermediate_sizes")


@strict
class ObceBertConfig(BertConfig):
    """``BertConfig`` plus per-layer sizes and the classifier pooling; see the module docstring."""

    model_type = "obce_bert"

    qk_head_sizes: list[int] | None = None
    v_head_sizes: list[int] | None = None
    intermediate_sizes: list[int] | None = None
    attention_scale_head_size: int | None = None
    pooler_size: int | None = None
    classifier_pooling: str = "cls"
    hidden_dims: list[int] | None = None

    def __post_init__(self, **kwargs):
        # A BertConfig's to_dict() carries model_type="bert"; it must not shadow ours.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        owner = "ObceBertConfig"
        if self.is_decoder or self.add_cross_attention:
            raise ValueError(
                f"ObceBertConfig got is_decoder={self.is_decoder}, add_cross_attention="
                f"{self.add_cross_attention}; obce prunes encoder BERT models only. Set both to False."
            )
        explicit_heads = None not in (self.qk_head_sizes, self.v_head_sizes, self.attention_scale_head_size)
        if not explicit_heads and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}), and the head sizes are not all given: give qk_head_sizes, "
                "v_head_sizes and attention_scale_head_size (a narrowed residual stream), or sizes of a valid BERT."
            )
        check_int(self.pooler_size, "pooler_size", owner, low=1, allow_none=True,
                  fix="It is the pooler's output width; None means hidden_size.")
        if self.attention_scale_head_size is None:
            self.attention_scale_head_size = self.hidden_size // self.num_attention_heads
        dims = self.hidden_dims
        if dims is not None and (len(dims) != self.hidden_size or len(set(dims)) != len(dims) or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims)):
            raise invalid("hidden_dims", owner, f"{self.hidden_size} distinct dims >= 0 (one per kept stream dim)",
                          dims, "It lists which dims of the teacher's stream a narrowed stream kept; None if none "
                                "were removed.")
        check_int(self.attention_scale_head_size, "attention_scale_head_size", owner, low=1,
                  fix="It is the original head size, e.g. 32 for all-MiniLM-L6-v2, 64 for BERT-base.")
        check_choice(self.classifier_pooling, "classifier_pooling", owner, CLASSIFIER_POOLINGS,
                     fix="'cls' uses BERT's pooler on [CLS]; 'mean' averages the real tokens' last hidden states.")
        for name in _SIZE_LISTS:
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) != self.num_hidden_layers:
                raise invalid(name, owner, f"a list of {self.num_hidden_layers} sizes (one per layer)", sizes,
                              "Give one size per layer, or None for the original sizes.")
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise invalid(name, owner, "a list of positive integers", sizes,
                              "Every head keeps at least one dim and every FFN at least one unit.")

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
