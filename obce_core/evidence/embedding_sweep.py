"""Label-free curves: the sentence output of a pruned model against the percentile, per group and scorer.

``EmbeddingProbe`` embeds held-out texts (and labelled pairs, ``evidence.pairs``) with the ORIGINAL
model once; ``embedding_plan_evidence`` is one plan's row (prune, then the pruned model's
embeddings against those); ``embedding_sweep`` runs it for every (group, percentile, scorer, seed)
through the task sweep's point runner (``sweep.sweep_points``, ``sweep.run_sweep_points``: rows
cached in JSON lines as they finish, so a cancelled sweep resumes). ``sweep_encoder`` does it all
from a model source: texts split into scoring and held-out ones (``label_free_texts``), scores,
calibration, probe, sweep; what the CLI's ``sweep`` runs for a model without a task head.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from obce_core.choices import EMBEDDING_SCORERS  # defined without torch for the CLI's parser
from obce_core.evidence.embedding import (DEFAULT_K, DEFAULT_MAX_LENGTH, SentencePooling, compare_embeddings,
                                          heldout_texts, resolve_max_length, sentence_embeddings, sentence_pooling)
from obce_core.evidence.pairs import PairsReference, SentencePairs, pairs_name
from obce_core.evidence.task_sweep import CALIBRATED_COMPENSATIONS
from obce_core.evidence.sweep import (DEFAULT_PERCENTILES, SWEEP_GROUPS, default_sweep_dir, run_sweep_points,
                                      sweep_plan, sweep_points)
from obce_core.layout import GROUPS
from obce_core.loading import load_model, model_fingerprint
from obce_core.pruning import PruningPlan, capture_calibration, prune
from obce_core.scoring import demo_sentences, read_texts, score_model, subsample
from obce_core.training import PhaseEvent, StepEvent, parameter_counts
from obce_core.validation import check_int

__all__ = ["EMBEDDING_SCORERS", "EmbeddingProbe", "EncoderSweep", "LABEL_FREE_COLUMNS", "embedding_plan_evidence",
           "embedding_summary", "embedding_sweep", "heldout_or_demo", "metric_columns", "embedding_sweep_path",
           "label_free_texts", "sentences_of", "sweep_encoder"]

# Without labels there is no fisher; magnitude is left out of the default only to keep sweeps short.
LABEL_FREE_COLUMNS = ("mean_cosine", "min_cosine", "similarity_spearman", "knn_overlap")
CACHE_FORMAT = 1


@dataclass
class EmbeddingProbe:
    """Held-out texts (and optional labelled pairs) with the ORIGINAL model's embeddings, measured once.

    ``measure(pruned)`` returns the columns of ``compare_embeddings`` plus, per pairs set,
    ``pairs_spearman_<name>`` (x100, the pruned model) and ``pairs_original_<name>``.
    ``texts_source`` says where the held-out texts came from; ``key()`` decides cache rows.
    """

    tokenizer: object
    texts: list[str]
    pooling: SentencePooling
    original: np.ndarray
    texts_source: str = ""
    k: int = DEFAULT_K
    max_length: int = DEFAULT_MAX_LENGTH
    pairs: dict[str, PairsReference] = field(default_factory=dict)

    @classmethod
    def build(cls, model, tokenizer, texts, pooling: SentencePooling, *, texts_source: str = "", k: int = DEFAULT_K,
              max_length: int | None = None, pairs: list[SentencePairs] | tuple = ()) -> "EmbeddingProbe":
        """Embed ``texts`` (distinct, at least 3) and each pairs set with the original ``model``
        (``max_length`` default: the model's own, as ``sentence_embeddings``)."""
        check_int(k, "k", "EmbeddingProbe", low=1)
        max_length = resolve_max_length(pooling, max_length)
        texts = heldout_texts(texts)
        original = sentence_embeddings(model, tokenizer, texts, pooling, max_length=max_length)
        refs: dict[str, PairsReference] = {}
        for p in pairs:
            name = pairs_name(p)
            while name in refs:
                name += "_"
            refs[name] = PairsReference.build(model, tokenizer, p, pooling, max_length=max_length)
        return cls(tokenizer=tokenizer, texts=texts, pooling=pooling, original=original, texts_source=texts_source,
                   k=k, max_length=max_length, pairs=refs)

    def measure(self, pruned) -> dict:
        now = sentence_embeddings(pruned, self.tokenizer, self.texts, self.pooling, max_length=self.max_length)
        row = compare_embeddings(self.original, now, k=self.k)
        for name, ref in self.pairs.items():
            row[f"pairs_spearman_{name}"] = ref.spearman(pruned, self.tokenizer, self.pooling, self.max_length)
            row[f"pairs_original_{name}"] = ref.original_spearman
        return row

    def key(self) -> list:
        texts = hashlib.sha256(json.dumps(self.texts, ensure_ascii=False).encode()).hexdigest()[:16]
        return [texts, self.pooling.to_dict(), self.k, self.max_length,
                sorted((name, ref.pairs.fingerprint()) for name, ref in self.pairs.items())]


def embedding_plan_evidence(model, scores, plan: PruningPlan, probe: EmbeddingProbe, *, calibration=None) -> dict:
    """One row: ``probe.measure(prune(model, scores, plan))``, the pruned sizes and the time taken."""
    start = time.perf_counter()
    removes_nothing = all(getattr(plan, g) == 0 for g in GROUPS) and not plan.layers
    pruned = model if removes_nothing else prune(model, scores, plan, calibration=calibration)[0]
    row = probe.measure(pruned)
    sizes = parameter_counts(pruned)
    return {**row, "params_total": sizes["total"], "params_encoder": sizes["encoder"],
            "eval_s": round(time.perf_counter() - start, 3)}


def embedding_sweep_path(model, scores, probe: EmbeddingProbe, *, skip_layers: int = 0,
                         compensation: str | None = None, calibration=None,
                         cache_dir: str | os.PathLike | None = None) -> Path:
    """The JSON-lines file where ``embedding_sweep`` keeps the rows of these settings."""
    data = {"format": CACHE_FORMAT, "kind": "embedding", "model": model_fingerprint(model),
            "scores": [scores.model_fingerprint, scores.texts_fingerprint, scores.settings.to_dict()],
            "probe": probe.key(), "skip_layers": skip_layers, "compensation": compensation,
            "calibration": None if calibration is None else [calibration.model_fingerprint, calibration.n_texts,
                                                              calibration.n_train]}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir or default_sweep_dir()) / f"embedding-{key}.jsonl"


def embedding_sweep(model, scores, probe: EmbeddingProbe, *, groups=SWEEP_GROUPS, percentiles=DEFAULT_PERCENTILES,
                    scorers=EMBEDDING_SCORERS, seeds=(0, 1, 2), skip_layers: int = 0, compensation: str | None = None,
                    calibration=None, cache_dir: str | os.PathLike | None = None,
                    progress: Callable[[int, int, dict], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """Label-free columns of ``prune(model, scores, plan)`` for every (group, percentile, scorer, seed).

    Like ``threshold_sweep`` without labels: one row per point with ``group, percentile, scorer,
    seed``, the ``LABEL_FREE_COLUMNS``, ``k``, ``n_texts``, the pairs columns of ``probe``,
    ``params_total``, ``params_encoder``, ``eval_s`` and ``cached``. ``progress(done, total, row)``
    after each point; ``should_stop()`` ends early, keeping the finished rows.
    """
    owner = "embedding_sweep"
    check_int(skip_layers, "skip_layers", owner, low=0)
    if "fisher" in scorers:
        raise ValueError("The 'scorers' parameter of embedding_sweep cannot hold 'fisher': it sums gradients of a "
                         "task's loss, and label-free evidence has no labels. Use rf, std, magnitude, flap or random.")
    points = sweep_points(groups, percentiles, scorers, seeds, owner)
    path = embedding_sweep_path(model, scores, probe, skip_layers=skip_layers, compensation=compensation,
                                calibration=calibration, cache_dir=cache_dir)

    def measure(group: str, p: float, scorer: str, seed: int) -> dict:
        plan = sweep_plan(group, p, scorer, seed, skip_layers=skip_layers, compensation=compensation)
        return embedding_plan_evidence(model, scores, plan, probe, calibration=calibration)

    return run_sweep_points(points, path, measure, progress=progress, should_stop=should_stop)


def sentences_of(texts) -> list[str]:
    """The distinct sentences of ``texts``, in order. A sentence encoder embeds single sentences:
    the two sides of a pair are two texts."""
    out = []
    for t in texts:
        out.extend(t if isinstance(t, (tuple, list)) else [t])
    return list(dict.fromkeys(out))


def heldout_or_demo(candidates, scored, where: str, *, n: int, seed: int = 0) -> tuple[list[str], str]:
    """(``n`` held-out sentences of ``candidates`` that were not ``scored``, where they come from);
    when fewer than ``n / 2`` are left, the demo corpus minus the scored sentences, and the answer says so."""
    scored = sentences_of(scored)
    unused = [t for t in sentences_of(candidates) if t not in set(scored)]
    if len(unused) < n // 2:
        candidates = demo_sentences()
        where = "the obce demo corpus, minus the scored sentences" + (f" ({where} were too few)" if where else "")
    return heldout_texts(candidates, scored, n=n, seed=seed), where


def label_free_texts(*, texts_path: str | os.PathLike | None = None, task: str | None = None,
                     glue_dir: str | os.PathLike | None = None, score_n: int = 512, eval_n: int = 256,
                     seed: int = 0) -> tuple[list[str], list[str], str]:
    """(scoring texts, held-out texts, where the held-out texts come from), never overlapping.

    A GLUE task: scores on ``score_n`` training sentences, held out ``eval_n`` of its dev
    sentences (both sides of a pair are sentences). A file or, by default, the demo corpus: a
    seeded half for scoring, the other half held out.
    """
    owner = "label_free_texts"
    check_int(score_n, "score_n", owner, low=2)
    check_int(eval_n, "eval_n", owner, low=3)
    if task:
        from obce_core import glue  # GLUE loading pulls in `datasets`; only when a task is asked for

        spec = glue.get_task(task)
        # score_n examples of a pair task give up to 2 x score_n sentences: keep score_n of them
        scoring = subsample(sentences_of(glue.dataset_texts(glue.load_task(spec, "train", glue_dir, n=score_n, seed=seed),
                                                          spec)), score_n, seed)
        dev = next(s for s in spec.splits if s.startswith("validation"))
        held = sentences_of(glue.dataset_texts(glue.load_task(spec, dev, glue_dir), spec))
        return scoring, heldout_texts(held, scoring, n=eval_n, seed=seed), f"GLUE {spec.name} {dev} sentences"
    texts = read_texts(texts_path) if texts_path else demo_sentences()
    name = f"file {texts_path}" if texts_path else "the obce demo corpus"
    distinct = list(dict.fromkeys(texts))
    order = np.random.default_rng(seed).permutation(len(distinct))
    half = len(distinct) // 2
    scoring = subsample([distinct[i] for i in sorted(order[:half])], score_n, seed)
    held = heldout_texts([distinct[i] for i in sorted(order[half:])], scoring, n=eval_n, seed=seed)
    return scoring, held, f"the held-out half of {name} (seed {seed})"


@dataclass
class EncoderSweep:
    """What ``sweep_encoder`` made: the rows, the probe (texts, pooling, pairs' original values) and the cache file."""

    table: pd.DataFrame
    probe: EmbeddingProbe
    path: Path
    score_source: str


def sweep_encoder(model_source: str, *, texts_path=None, task: str | None = None, glue_dir=None,
                  pairs: list[SentencePairs] | tuple = (), groups=SWEEP_GROUPS, percentiles=DEFAULT_PERCENTILES,
                  scorers=EMBEDDING_SCORERS, seeds=(0, 1, 2), skip_layers: int = 0, compensation: str | None = None,
                  eval_size: int = 256, score_texts: int = 512, seed: int = 0, k: int = DEFAULT_K,
                  max_length: int | None = None, device: str | None = None, cache_dir=None, progress=None,
                  should_stop: Callable[[], bool] | None = None) -> EncoderSweep:
    """The label-free sweep of the model in ``model_source`` (any BERT, head or not; see the module docstring).

    ``progress`` receives ``PhaseEvent`` per phase and ``StepEvent(done, total)`` per point.
    """
    say = progress or (lambda event: None)
    scoring, held, where = label_free_texts(texts_path=texts_path, task=task, glue_dir=glue_dir, score_n=score_texts,
                                            eval_n=eval_size, seed=seed)
    say(PhaseEvent(f"loading {model_source}"))
    model, tokenizer = load_model(model_source, device=device)
    pooling = sentence_pooling(model)
    say(PhaseEvent(f"scoring {len(scoring)} texts at [CLS]"))
    score_length = max_length or DEFAULT_MAX_LENGTH  # the scores' own setting; the probe uses the model's
    scores = score_model(model, tokenizer, scoring, token="cls", max_length=score_length)
    calibration = None
    if PruningPlan(**({} if compensation is None else {"compensation": compensation})).compensation in CALIBRATED_COMPENSATIONS:
        say(PhaseEvent("capturing calibration on the scoring texts"))
        calibration = capture_calibration(model, tokenizer, scoring, max_length=score_length)
    say(PhaseEvent(f"embedding {len(held)} held-out texts and {len(pairs)} pairs set(s) with the original "
                   f"({pooling.describe()})"))
    probe = EmbeddingProbe.build(model, tokenizer, held, pooling, texts_source=where, k=k, max_length=max_length,
                                 pairs=pairs)
    path = embedding_sweep_path(model, scores, probe, skip_layers=skip_layers, compensation=compensation,
                                calibration=calibration, cache_dir=cache_dir)
    say(PhaseEvent(f"sweeping on {len(probe.texts)} texts from {where}"))
    table = embedding_sweep(model, scores, probe, groups=groups, percentiles=percentiles, scorers=scorers, seeds=seeds,
                            skip_layers=skip_layers, compensation=compensation, calibration=calibration,
                            cache_dir=cache_dir, progress=lambda done, total, row: say(StepEvent(done, total)),
                            should_stop=should_stop)
    return EncoderSweep(table=table, probe=probe, path=path, score_source=f"{len(scoring)} texts")


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The label-free and pairs columns of a sweep table (``pairs_original_*`` excluded: constants)."""
    return [c for c in (*LABEL_FREE_COLUMNS, *sorted(c for c in table.columns if c.startswith("pairs_spearman_")))
            if c in table.columns]


def embedding_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per group, percentile, metric and scorer: ``mean`` and ``std`` (population, over seeds; 0 for
    one seed) and ``seeds``, in the sweep's order (long format)."""
    columns = metric_columns(table)
    if table.empty or not columns:
        return pd.DataFrame(columns=["group", "percentile", "metric", "scorer", "mean", "std", "seeds"])
    long = table.melt(id_vars=["group", "percentile", "scorer", "seed"], value_vars=columns, var_name="metric")
    grouped = long.groupby(["group", "percentile", "metric", "scorer"], sort=False)["value"]
    return grouped.agg(mean="mean", std=lambda s: float(s.std(ddof=0)), seeds="count").reset_index()
