"""The residual stream seen on the scoring texts: what ranks hidden dims and fits their LayerNorms.

Every BERT sub-layer reads the stream and writes it back through a LayerNorm: the embeddings'
LayerNorm, then per layer ``attention.output.LayerNorm`` and ``output.LayerNorm``
(:func:`stream_norms`). ``capture_stream`` runs the texts once with a hook on each of them and
keeps two things:

* ``stream``: each LayerNorm's OUTPUT at the sample position (``cls``: the [CLS] token, as
  scoring does; ``mean``: the mean of the real tokens), ``(samples, norms, hidden)``. A stream
  coordinate has one value per sample at every norm, so it gets a score at every norm;
  :meth:`HiddenStream.dim_scores` averages them after dividing each norm's scores by their mean
  over the coordinates. Why that: the LayerNorm gains differ from norm to norm, and without the
  division the norms with the largest gains would decide alone; with it every read of the stream
  counts the same. The statistics (``HIDDEN_SCORERS``): ``rf`` (the 0-D persistence of the
  coordinate's outputs, as for units), ``std``, ``magnitude`` (root mean square: BERT's stream
  has a few coordinates of large, nearly constant value that a spread statistic would rank low,
  and the RMS keeps them) and ``random`` (seeded, the control).
* ``norm_inputs``: each LayerNorm's INPUT on up to ``max_tokens`` real tokens, what the
  alternative normalisations of a narrowed stream are fitted on (``obce_core.pruning.hidden``).

``HIDDEN_NORMS``: how a LayerNorm normalises once dims are gone. ``kept``: mean and variance over
the kept dims (LayerNorm of the narrower model, nothing fitted). ``std-ratio``: the kept dims'
variance is a biased estimate of the full width's; the output is rescaled by the mean ratio
std(kept) / std(full) measured on the calibration tokens. ``fitted``: a scale and a per-dim
shift fitted by least squares so that the narrowed LayerNorm reproduces the original's outputs at
the kept dims on the calibration tokens. Both corrections fold into the LayerNorm's weight and
bias, so the saved model is a plain ``ObceBert*`` model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from obce_core.choices import HIDDEN_NORMS  # defined without torch for the CLI's parser
from obce_core.forward import Text, length_sorted_batches, locked_eval, pool, tokenize_texts
from obce_core.layout import base_model, encoder_layers
from obce_core.loading import model_fingerprint
from obce_core.persistence import rf_mean_std_batch
from obce_core.validation import check_choice, check_int

__all__ = ["DEFAULT_STREAM_TOKENS", "HIDDEN_NORMS", "HIDDEN_SCORERS", "STREAM_TOKENS", "HiddenStream",
           "capture_stream", "stream_norms"]

HIDDEN_SCORERS = ("rf", "std", "magnitude", "random")
STREAM_TOKENS = ("cls", "mean")
DEFAULT_STREAM_TOKENS = 4096
_OWNER = "capture_stream"


def stream_norms(model) -> dict[str, torch.nn.LayerNorm]:
    """The LayerNorms that write the residual stream, in forward order, by path in the bare encoder."""
    bert = base_model(model)
    norms = {"embeddings.LayerNorm": bert.embeddings.LayerNorm}
    for i, layer in enumerate(encoder_layers(model)):
        norms[f"encoder.layer.{i}.attention.output.LayerNorm"] = layer.attention.output.LayerNorm
        norms[f"encoder.layer.{i}.output.LayerNorm"] = layer.output.LayerNorm
    return norms


@dataclass
class HiddenStream:
    """The stream of one model on one set of texts; see the module docstring.

    ``stream``: float32 ``(samples, norms, hidden)``; ``norm_inputs``: float32 ``(tokens, norms,
    hidden)``; ``norm_names``: the LayerNorm paths of axis 1 (``stream_norms``).
    """

    stream: np.ndarray = field(repr=False)
    norm_inputs: np.ndarray = field(repr=False)
    norm_names: list[str]
    model_fingerprint: str
    token: str
    n_texts: int

    @property
    def hidden_size(self) -> int:
        return int(self.stream.shape[2])

    def dim_scores(self, scorer: str, seed: int = 0) -> np.ndarray:
        """One score per stream coordinate (float64, ``hidden``): higher = kept longer."""
        check_choice(scorer, "scorer", "HiddenStream.dim_scores", HIDDEN_SCORERS,
                     fix="rf/std: spread of the coordinate's outputs; magnitude: their RMS; random: control.")
        return dim_scores(self.stream, scorer, seed)


def dim_scores(stream: np.ndarray, scorer: str, seed: int = 0) -> np.ndarray:
    """``HiddenStream.dim_scores`` on a ``(samples, norms, hidden)`` array."""
    n, norms, hidden = stream.shape
    if scorer == "random":
        return np.random.default_rng([seed, hidden]).random(hidden)
    flat = torch.from_numpy(np.ascontiguousarray(stream.reshape(n, norms * hidden)))
    if scorer == "magnitude":
        per_norm = np.sqrt((flat.double() ** 2).mean(dim=0).numpy())
    else:
        rf, _, std = rf_mean_std_batch(flat)
        per_norm = (rf if scorer == "rf" else std).numpy()
    per_norm = per_norm.reshape(norms, hidden)
    scale = per_norm.mean(axis=1, keepdims=True)
    # A norm whose outputs never move (all zero) says nothing; it must not divide by zero.
    relative = np.divide(per_norm, scale, out=np.zeros_like(per_norm), where=scale > 0)
    return relative.mean(axis=0)


def capture_stream(model, tokenizer, texts: Sequence[Text], *, token: str = "cls", max_length: int = 128,
                   batch_size: int = 32, max_tokens: int = DEFAULT_STREAM_TOKENS,
                   progress: Callable[[int, int], None] | None = None) -> HiddenStream:
    """Run ``texts`` through ``model`` once and keep its stream (see the module docstring).

    ``max_tokens``: how many real tokens' LayerNorm inputs are kept for fitting (the first ones in
    the order the batches run, which is by length; 0 keeps none and allows only ``kept``).
    """
    check_choice(token, "token", _OWNER, STREAM_TOKENS, fix="'cls' is the paper's sample; 'mean' averages the tokens.")
    check_int(max_length, "max_length", _OWNER, low=2)
    check_int(batch_size, "batch_size", _OWNER, low=1)
    check_int(max_tokens, "max_tokens", _OWNER, low=0, fix="It caps the calibration tokens kept, e.g. 4096.")
    if len(texts) < 2:
        raise ValueError(f"capture_stream needs at least 2 texts to measure a spread; got {len(texts)}.")
    encoded = tokenize_texts(tokenizer, texts, max_length)
    norms = stream_norms(model)
    hidden = int(model.config.hidden_size)
    stream = np.full((len(encoded), len(norms), hidden), np.nan, dtype=np.float32)
    total_tokens = sum(len(e["input_ids"]) for e in encoded)
    inputs = np.empty((min(max_tokens, total_tokens), len(norms), hidden), dtype=np.float32)
    state: dict = {"rows": None, "mask": None, "token_start": 0, "take": 0}

    def make_hook(k: int):
        def hook(_module, args, output):
            mask = state["mask"]
            stream[state["rows"], k] = pool(output, mask, token).float().cpu().numpy()
            if state["take"]:
                real = args[0][mask.bool()][: state["take"]]
                start = state["token_start"]
                inputs[start:start + len(real), k] = real.float().cpu().numpy()
        return hook

    hooks = []
    with locked_eval(model) as device:
        try:
            hooks = [m.register_forward_hook(make_hook(k)) for k, m in enumerate(norms.values())]
            done = 0
            for idx, batch in length_sorted_batches(tokenizer, encoded, batch_size, device):
                state["rows"], state["mask"] = idx, batch["attention_mask"]
                state["take"] = min(int(batch["attention_mask"].sum()), len(inputs) - state["token_start"])
                model(**batch)
                state["token_start"] += state["take"]
                done += len(idx)
                if progress is not None:
                    progress(done, len(encoded))
        finally:
            for h in hooks:
                h.remove()
    if not np.isfinite(stream).all() or not np.isfinite(inputs).all():
        raise ValueError("The residual stream has NaN or infinite values (or a LayerNorm was not run once per "
                         "batch): the model's weights are broken. Reload the model.")
    return HiddenStream(stream=stream, norm_inputs=inputs, norm_names=list(norms), model_fingerprint=model_fingerprint(model),
                        token=token, n_texts=len(encoded))
