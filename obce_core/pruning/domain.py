"""Another domain: does a ranking scored on one kind of text hold on another?

``domain_shift(model, tokenizer, texts_a, texts_b)`` scores one model on texts from two sources
and compares, per layer, group and scorer, what each would prune (``stability.compare_rankings``:
Spearman of the unit scores, overlap of the removed sets at a percentile). A difference between
sources means nothing on its own: two samples of ONE source differ too. So every split draws
three disjoint-or-independent sets of the same size ``n``:

* ``A1``, ``A2``: two disjoint halves of source A (``stability.split_halves``, as the noise panel
  draws them): ``half_spearman``/``half_overlap`` are sampling noise alone;
* ``B1``: ``n`` texts of source B: ``cross_spearman``/``cross_overlap`` compare ``A1`` with it,
  sampling noise plus the change of domain.

Same sizes on both sides, so the gap ``half - cross`` is the domain's share. With ``splits > 1``
the columns are the mean over splits, ``_min``/``_max`` the range (an interval over resamples of
the texts, not over models).

``text_source(spec)`` reads a source written as ``demo``, ``glue:TASK[:split]`` or a file path;
two sources holding the same texts are refused before anything is scored.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from obce_core.pruning.importance import IMPORTANCES
from obce_core.pruning.stability import compare_rankings, rows_at_plan, split_halves
from obce_core.scoring.scores import score_model
from obce_core.scoring.texts import resolve_texts
from obce_core.validation import check_choice, check_int, check_number

__all__ = ["DOMAIN_MEASURES", "check_distinct_sources", "domain_at_plan", "domain_shift", "domain_summary", "text_source"]

_OWNER = "domain_shift"
DOMAIN_MEASURES = ("half_spearman", "cross_spearman", "half_overlap", "cross_overlap")


def text_source(spec: str, *, n: int | None = None, seed: int = 0, glue_dir=None) -> tuple[list, str]:
    """``(texts, description)`` of a source: ``demo`` (the shipped corpus), ``glue:TASK[:split]``
    (a GLUE task's sentences, default split validation) or the path of a .txt/.csv/.tsv file."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"A text source must be 'demo', 'glue:TASK[:split]' or a file path; got {spec!r}.")
    spec = spec.strip()
    if spec == "demo":
        return resolve_texts(n=n, seed=seed)
    if spec.lower().startswith("glue:"):
        _, task, *rest = spec.split(":")
        if not task or len(rest) > 1:
            raise ValueError(f"Text source {spec!r}: write glue:TASK or glue:TASK:split, e.g. glue:sst2 or glue:mrpc:train.")
        return resolve_texts(task=task, split=rest[0] if rest else "validation", glue_dir=glue_dir, n=n, seed=seed)
    return resolve_texts(texts_path=spec, n=n, seed=seed)


def check_distinct_sources(texts_a: Sequence, texts_b: Sequence, name_a: str = "A", name_b: str = "B") -> None:
    """Refuse two sources holding the same set of texts: the comparison would be split-half noise twice."""
    key = [tuple(t) if isinstance(t, (list, tuple)) else t for t in texts_a]
    other = [tuple(t) if isinstance(t, (list, tuple)) else t for t in texts_b]
    if set(key) == set(other):
        raise ValueError(
            f"Text sources {name_a} and {name_b} hold the same {len(set(key))} texts; a cross-domain comparison "
            "needs texts of another kind. Pick another source for B (demo, glue:TASK or a file)."
        )


def domain_shift(
    model,
    tokenizer,
    texts_a: Sequence,
    texts_b: Sequence,
    *,
    scorers: Sequence[str] = ("rf", "std", "flap"),
    percents: float | Sequence[float] = 50.0,
    splits: int = 1,
    seed: int = 0,
    n: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **score_options,
) -> pd.DataFrame:
    """Per layer x group x scorer x percent: split-half vs cross-source Spearman and overlap.

    ``n``: texts per scored set (default and most ``min(len(texts_a) // 2, len(texts_b))``).
    ``score_options`` go to ``score_model``. ``progress(done, total)`` counts scored sets.
    Columns: layer, group, scorer, percent, the ``DOMAIN_MEASURES`` (mean over splits) with their
    ``_min``/``_max``, chance_overlap, removed, units, n, splits.
    """
    for scorer in scorers:
        check_choice(scorer, "scorers", _OWNER, IMPORTANCES)
    percents = [percents] if isinstance(percents, (int, float)) else list(percents)
    for p in percents:
        check_number(p, "percents", _OWNER, low=0, high=100, low_open=True, high_open=True,
                     fix="They are the percentiles whose removed sets are compared, e.g. 50.")
    check_int(splits, "splits", _OWNER, low=1)
    check_int(seed, "seed", _OWNER, low=0)
    texts_a, texts_b = list(texts_a), list(texts_b)
    check_distinct_sources(texts_a, texts_b)
    most = min(len(texts_a) // 2, len(texts_b))
    check_int(n, "n", _OWNER, low=2, high=max(most, 2), allow_none=True,
              fix=f"Each set holds n texts: two disjoint halves of A ({len(texts_a)}) and n of B ({len(texts_b)}).")
    size = most if n is None else n
    if size < 2:
        raise ValueError(f"domain_shift needs at least 4 texts in A and 2 in B; got {len(texts_a)} and {len(texts_b)}.")
    frames, done = [], 0
    for s, (a1, a2) in enumerate(split_halves(texts_a, splits, seed, size=size)):
        pick = np.sort(np.random.default_rng([seed, s, 1]).choice(len(texts_b), size=size, replace=False))
        b1 = [texts_b[i] for i in pick]
        scored = []
        for texts in (a1, a2, b1):
            scored.append(score_model(model, tokenizer, texts, **score_options))
            done += 1
            if progress is not None:
                progress(done, 3 * splits)
        for p in percents:
            half = compare_rankings(model, scored[0], scored[1], scorers=scorers, percent=p)
            cross = compare_rankings(model, scored[0], scored[2], scorers=scorers, percent=p)
            frames.append(half.rename(columns={"spearman": "half_spearman", "overlap": "half_overlap"}).assign(
                cross_spearman=cross["spearman"].to_numpy(), cross_overlap=cross["overlap"].to_numpy(),
                percent=float(p), split=s))
    every = pd.concat(frames, ignore_index=True)
    keys = ["layer", "group", "scorer", "percent"]
    agg = {m: (m, "mean") for m in DOMAIN_MEASURES}
    agg.update({f"{m}_min": (m, "min") for m in DOMAIN_MEASURES})
    agg.update({f"{m}_max": (m, "max") for m in DOMAIN_MEASURES})
    agg.update(chance_overlap=("chance_overlap", "first"), removed=("removed", "first"), units=("units", "first"),
               splits=("split", "nunique"))
    out = every.groupby(keys, sort=False).agg(**agg).reset_index()
    return out.assign(n=size)


def domain_summary(shift: pd.DataFrame) -> pd.DataFrame:
    """Per scorer and percent, the median of each measure over the attention groups (``qkv``) and
    over FFN units (``ffn``), and the domain's share of the Spearman drop (``half - cross``).

    NaN Spearmans (a set scoring every unit alike) are left out.
    """
    rows = []
    for (scorer, percent), rows_of in shift.groupby(["scorer", "percent"], sort=False):
        for part, mask in (("qkv", rows_of["group"] != "ffn"), ("ffn", rows_of["group"] == "ffn")):
            sel = rows_of[mask]
            row = {"scorer": scorer, "percent": percent, "part": part}
            for m in DOMAIN_MEASURES:
                values = sel[m].dropna()
                row[m] = float(np.median(values)) if len(values) else float("nan")
            row["chance_overlap"] = float(sel["chance_overlap"].median())
            row["spearman_drop"] = row["half_spearman"] - row["cross_spearman"]
            rows.append(row)
    return pd.DataFrame(rows)


def domain_at_plan(shift: pd.DataFrame, percents: dict[tuple[int, str], float], scorers: Sequence[str]) -> pd.DataFrame:
    """One row per layer x group of ``percents`` (``stability.plan_percents``): its percentile ``p``,
    ``n``, the ``chance overlap`` and, per scorer, the split-half and cross Spearman and overlap read
    at ``p``. A missing row raises ``ValueError`` naming the layer, group and percentile."""
    rows = []
    for (layer, group, p), at in rows_at_plan(shift, percents, scorers, "domain_shift"):
        row = {"layer": layer, "group": group, "p": p, "chance overlap": float(at["chance_overlap"].iloc[0])}
        for scorer in scorers:
            for side, label in (("half", "split-half"), ("cross", "cross")):
                row[f"{scorer} {label} Spearman"] = float(at.loc[scorer, f"{side}_spearman"])
                row[f"{scorer} {label} overlap"] = float(at.loc[scorer, f"{side}_overlap"])
        rows.append(row)
    return pd.DataFrame(rows)
