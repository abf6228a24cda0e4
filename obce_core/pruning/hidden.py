"""Hidden-dim surgery: narrowing the residual stream that every layer reads and writes.

A plan's ``hidden`` percentile removes the same stream coordinates everywhere
(``plan_hidden_cut``, checked before any work; ``narrow_stream`` does the slicing):

* embeddings: the word, position and token-type tables lose those columns, the embeddings'
  LayerNorm those entries;
* every layer: query/key/value and ``intermediate.dense`` lose those INPUT columns,
  ``attention.output.dense`` and ``output.dense`` those OUTPUT rows (weights and biases), both
  LayerNorms those entries;
* the pooler loses those input columns (its output width stays: ``config.pooler_size``); a
  "mean" classifier, which reads the stream itself, loses those input columns; a "cls" classifier
  reads the pooler and is unchanged.

Head sizes are not touched: Q/K/V project the narrower stream onto heads of their own sizes,
which the config records per layer, so no head can be left empty. What can be left empty is a
LayerNorm, and ``PruningPlan.check_hidden`` refuses that. Each narrowed LayerNorm normalises over
the kept dims, corrected as ``plan.hidden_norm`` says (``hidden_stream.HIDDEN_NORMS``): the
correction is a scale (and, for ``fitted``, a shift) folded into its weight and bias, so the
saved model is an ordinary ``ObceBert*`` model that ``load_model`` and ``AutoModel`` reload.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import BertForSequenceClassification

from obce_core.layout import base_model, encoder_layers, layer_shapes
from obce_core.obce_bert import ObceBertConfig, ObceBertForSequenceClassification, ObceBertModel
from obce_core.obce_bert.modeling_obce_bert import pooler_width
from obce_core.pruning.cache import cached_fingerprint
from obce_core.pruning.hidden_stream import HiddenStream, stream_norms
from obce_core.pruning.plan import PruningPlan
from obce_core.pruning.rebuild import rebuild

__all__ = ["HiddenCut", "narrow_stream", "norm_correction", "plan_hidden_cut"]


@dataclass
class HiddenCut:
    """The stream dims a plan keeps (sorted) and each stream LayerNorm's new ``(weight, bias)``."""

    kept: np.ndarray
    norms: dict[str, tuple[torch.Tensor, torch.Tensor]]
    method: str


def plan_hidden_cut(plan: PruningPlan, model, stream: HiddenStream | None) -> HiddenCut | None:
    """What ``plan.hidden`` removes from ``model``'s stream, or None when it removes nothing.

    Checked before any work: the percentile must leave a LayerNorm of at least two dims; ranking
    by anything but ``random`` and normalising by anything but ``kept`` need ``stream``
    (``capture_stream`` on this model), whose fingerprint must be this model's.
    """
    if not plan.hidden:
        return None
    hidden = int(model.config.hidden_size)
    n_kept = plan.check_hidden(hidden)
    needs_stream = plan.scorer != "random" or plan.hidden_norm != "kept"
    if stream is None:
        if needs_stream:
            raise ValueError(
                f"hidden={plan.hidden:g} with scorer '{plan.scorer}' and hidden_norm '{plan.hidden_norm}' needs the "
                "model's residual stream on the scoring texts; nothing was pruned. Capture it with "
                "obce_core.pruning.capture_stream(model, tokenizer, texts) and pass hidden_stream=..., or use "
                "scorer 'random' with hidden_norm 'kept'."
            )
        scores = np.random.default_rng([plan.seed, hidden]).random(hidden)
    else:
        if stream.model_fingerprint != cached_fingerprint(model) or stream.hidden_size != hidden:
            raise ValueError(
                f"The hidden stream was captured on a model with fingerprint {stream.model_fingerprint} (width "
                f"{stream.hidden_size}), not on this {type(model).__name__} ({cached_fingerprint(model)}, width "
                f"{hidden}); nothing was pruned. Capture it on this model: capture_stream(model, tokenizer, texts)."
            )
        if plan.hidden_norm != "kept" and len(stream.norm_inputs) == 0:
            raise ValueError(f"hidden_norm '{plan.hidden_norm}' is fitted on calibration tokens, and this stream kept "
                             "none (max_tokens=0); nothing was pruned. Capture with max_tokens > 0 or use 'kept'.")
        scores = stream.dim_scores(plan.scorer, seed=plan.seed)
    if not np.isfinite(scores).all():
        raise ValueError("The hidden-dim scores are NaN or infinite; nothing was pruned. Recapture the stream.")
    # Lowest score goes first; ties by index, as select_units breaks them.
    order = np.lexsort((np.arange(hidden), scores))
    kept = np.sort(order[hidden - n_kept:])
    norms = {}
    for k, (name, norm) in enumerate(stream_norms(model).items()):
        inputs = None if stream is None else stream.norm_inputs[:, k]
        norms[name] = norm_correction(norm, kept, plan.hidden_norm, inputs)
    return HiddenCut(kept=kept, norms=norms, method=plan.hidden_norm)


def norm_correction(norm: torch.nn.LayerNorm, kept: np.ndarray, method: str, inputs: np.ndarray | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of ``norm`` narrowed to ``kept`` with the correction ``method``.

    ``inputs``: the LayerNorm's inputs on calibration tokens ``(tokens, hidden)`` (not read by
    ``kept``). The original output at the kept dims is ``y = g_K * (x_K - mu) / s + b_K`` with the
    full width's ``mu``, ``s``; the narrowed one computes ``z = (x_K - mu_K) / s_K``.
    ``std-ratio`` multiplies the weight by ``mean(s_K / s)``; ``fitted`` fits ``c * g_K * z + d``
    to ``y`` by least squares (one scale ``c``, one shift ``d`` per kept dim).
    """
    weight, bias = norm.weight.detach(), norm.bias.detach()
    idx = torch.as_tensor(kept, dtype=torch.long, device=weight.device)
    w_k, b_k = weight.index_select(0, idx), bias.index_select(0, idx)
    if method == "kept":
        return w_k, b_k
    x = torch.as_tensor(inputs, dtype=torch.float64)
    eps = float(norm.eps)
    mu, s = x.mean(dim=1, keepdim=True), torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + eps)
    x_k = x[:, torch.as_tensor(kept, dtype=torch.long)]
    mu_k, s_k = x_k.mean(dim=1, keepdim=True), torch.sqrt(x_k.var(dim=1, unbiased=False, keepdim=True) + eps)
    g, b = w_k.double().cpu(), b_k.double().cpu()
    if method == "std-ratio":
        scale, shift = float((s_k / s).mean()), torch.zeros_like(b)
    elif method == "fitted":
        u = g * (x_k - mu_k) / s_k  # what the narrowed LayerNorm outputs, less its bias
        target = g * (x_k - mu) / s  # what the original output at the kept dims, less its bias
        u_c, t_c = u - u.mean(dim=0), target - target.mean(dim=0)
        denominator = float((u_c * u_c).sum())
        scale = float((u_c * t_c).sum()) / denominator if denominator > 0 else 1.0
        shift = target.mean(dim=0) - scale * u.mean(dim=0)
    else:
        raise ValueError(f"Unknown hidden_norm {method!r}; expected kept, std-ratio or fitted.")
    return ((g * scale).to(weight.dtype).to(weight.device), (b + shift).to(bias.dtype).to(bias.device))


def narrow_stream(model, cut: HiddenCut):
    """A new ``ObceBert*`` model with the stream narrowed to ``cut.kept``; ``model`` is untouched.

    ``cut`` comes from ``plan_hidden_cut`` on the model the plan was scored on; ``model`` may be
    that model after unit surgery (which leaves the stream and its LayerNorms as they were).
    """
    if isinstance(model, BertForSequenceClassification):
        cls, prefix = ObceBertForSequenceClassification, "bert."
    else:
        cls, prefix = ObceBertModel, ""
    idx = torch.as_tensor(cut.kept, dtype=torch.long)
    source = {name: t.detach() for name, t in model.state_dict().items()}
    state = dict(source)

    def take(name: str, dim: int) -> None:
        t = source[prefix + name]
        state[prefix + name] = t.index_select(dim, idx.to(t.device))

    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        take(f"embeddings.{table}.weight", 1)
    for i in range(len(encoder_layers(model))):
        p = f"encoder.layer.{i}."
        for reads in ("attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense"):
            take(p + reads + ".weight", 1)
        for writes in ("attention.output.dense", "output.dense"):
            take(p + writes + ".weight", 0)
            take(p + writes + ".bias", 0)
    for name, (weight, bias) in cut.norms.items():
        state[prefix + name + ".weight"], state[prefix + name + ".bias"] = weight, bias
    has_pooler = getattr(base_model(model), "pooler", None) is not None
    if has_pooler:
        take("pooler.dense.weight", 1)
    pooling = getattr(model.config, "classifier_pooling", "cls")
    if cls is ObceBertForSequenceClassification and pooling == "mean":
        state["classifier.weight"] = source["classifier.weight"].index_select(1, idx.to(source["classifier.weight"].device))

    cfg = model.config.to_dict()
    earlier = getattr(model.config, "hidden_dims", None)  # narrowed before: indices into the first stream
    kept_dims = [int(d) for d in cut.kept] if earlier is None else [int(earlier[d]) for d in cut.kept]
    for key in ("model_type", "architectures", "transformers_version", "qk_head_sizes", "v_head_sizes",
                "intermediate_sizes", "attention_scale_head_size", "pooler_size", "hidden_size", "hidden_dims"):
        cfg.pop(key, None)
    shapes = layer_shapes(model)
    config = ObceBertConfig(
        **cfg,
        hidden_size=len(cut.kept),
        hidden_dims=kept_dims,
        qk_head_sizes=[s["qk"] for s in shapes],
        v_head_sizes=[s["v"] for s in shapes],
        intermediate_sizes=[s["ffn"] for s in shapes],
        attention_scale_head_size=int(getattr(model.config, "attention_scale_head_size", None)
                                      or model.config.hidden_size // model.config.num_attention_heads),
        pooler_size=pooler_width(model.config),
        architectures=[cls.__name__],
        attn_implementation=model.config._attn_implementation,
    )
    state = {name: t.clone() if t is source.get(name) else t for name, t in state.items()}
    if cls is ObceBertForSequenceClassification:
        return rebuild(cls, config, state, model)
    return rebuild(cls, config, state, model, add_pooling_layer=has_pooler)
