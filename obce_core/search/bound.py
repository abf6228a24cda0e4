"""How much a pruned model loses, with a confidence bound: the paired bootstrap over examples.

The original and the pruned model are scored on the SAME examples, so what varies from one sample
of examples to another is their per-example difference, not two independent scores: resampling
the examples once and scoring both models on each resample keeps that pairing. On the SST-2 task
model's 25.8 % plan the two models disagree on 47 of 872 dev sentences; the drop's standard error
is 0.79 points paired against 1.57 computed as two independent accuracies.

``PairedBootstrap(task, labels, reference)`` draws ``resamples`` index sets
``numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))`` once and scores the
reference (the unpruned model's predictions) on each; ``drop(predictions)`` scores another model's
predictions on the same resamples and returns a ``PairedDrop``: the point drop (original minus
pruned, in points = main score x 100), the upper one-sided bound at ``confidence`` (the
``confidence`` quantile of the resampled drops) and the two-sided 95 % percentile interval.
Accuracy, F1 of the positive class and Matthews' correlation are computed from per-resample counts
(a matrix product, so a search can bound every plan it evaluates); correlations (STS-B) fall back
to ``glue.compute_metrics`` per resample. Every bound is an ESTIMATE, labelled as such.

``promised_interval``: what a search may promise about the plan it KEPT. Its drop and interval on
the search examples are optimistic: the search compared many plans on those examples and kept the
best, and a later measurement (the dev split) has noise of its own. The promise is a prediction
interval for the drop measured on ``n_target`` fresh examples, at 95 % over all ``compared`` plans
(Bonferroni): half-width ``z(1 - 0.025 / compared) * se * sqrt(1 + n_search / n_target)``. Measured
on 24 searches (benchmarks/RESULTS.md): the search's own interval held the dev drop for 8 of 12
MRPC plans; this one for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import math
from statistics import NormalDist

import numpy as np

from obce_core.choices import DEFAULT_CONFIDENCE  # defined without numpy for the CLI's parser
from obce_core import glue
from obce_core.io import JsonDataclass
from obce_core.validation import check_int, check_number

__all__ = ["DEFAULT_CONFIDENCE", "PairedBootstrap", "PairedDrop", "check_confidence", "predictions_of",
           "promised_interval"]

REPORT_LEVEL = 95.0  # percent: the two-sided interval a report shows


def check_confidence(value, owner: str) -> float:
    """``value`` (percent) inside (50, 100), else one clear error naming the fix."""
    return float(check_number(value, "confidence", owner, low=50, high=100, low_open=True, high_open=True,
                              fix="It is the one-sided level (percent) of the bound on a plan's drop, e.g. 90; "
                                  "at 50 or below the bound would be under the point estimate."))


def predictions_of(task: str, logits: np.ndarray) -> np.ndarray:
    """What the metrics read of ``logits``: class ids (argmax), or the scores of a regression task."""
    spec = glue.get_task(task)
    logits = np.asarray(logits)
    if spec.is_regression:
        return logits.reshape(-1).astype(np.float64)
    return logits.argmax(axis=1).astype(np.int64)


@dataclass(frozen=True)
class PairedDrop(JsonDataclass):
    """A model's drop against the reference on the same examples, in points (main score x 100;
    positive: the model scores lower). ``upper``: the one-sided bound at ``confidence`` percent;
    ``low``/``high``: the two-sided ``REPORT_LEVEL`` interval; ``se``: the resampled drops' standard
    deviation; ``disagree``: examples where the two models' predictions differ. Estimates."""

    _json_name = "paired drop"

    drop: float
    upper: float
    low: float
    high: float
    confidence: float
    se: float
    n: int
    resamples: int
    disagree: int

    def describe(self) -> str:
        return (f"{self.drop:+.2f} points (95 % interval {self.low:+.2f} to {self.high:+.2f}; at most "
                f"{self.upper:+.2f} at {self.confidence:g} % confidence; {self.n} examples, estimates)")


def _count_scores(spec, weights: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The main score on each resample, from per-example counts ``weights`` (resamples x n)."""
    n = weights.shape[1]
    metrics = {}
    k = spec.num_labels
    # per resample, how often each (true, predicted) pair occurs: the confusion matrix
    cells = {(t, p): weights @ ((labels == t) & (predictions == p)).astype(np.float64)
             for t in range(k) for p in range(k)}
    for metric in spec.metrics:
        if metric == "accuracy":
            metrics[metric] = sum(cells[(c, c)] for c in range(k)) / n
        elif metric == "f1":  # of the positive class (id 1), 0 when it is never predicted nor true (sklearn)
            tp, fp, fn = cells[(1, 1)], cells[(0, 1)], cells[(1, 0)]
            denominator = 2 * tp + fp + fn
            metrics[metric] = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        elif metric == "matthews_correlation":  # sklearn's multiclass formula; 0 when undefined
            correct = sum(cells[(c, c)] for c in range(k))
            true_k = [sum(cells[(t, p)] for p in range(k)) for t in range(k)]
            pred_k = [sum(cells[(t, p)] for t in range(k)) for p in range(k)]
            s = float(n)
            cov_ytyp = correct * s - sum(tk * pk for tk, pk in zip(true_k, pred_k))
            cov_ypyp = s * s - sum(pk * pk for pk in pred_k)
            cov_ytyt = s * s - sum(tk * tk for tk in true_k)
            denominator = np.sqrt(cov_ytyt * cov_ypyp)
            metrics[metric] = np.divide(cov_ytyp, denominator, out=np.zeros_like(cov_ytyp), where=denominator > 0)
        else:  # pragma: no cover - classification tasks only have the three above
            raise ValueError(f"No count formula for metric {metric!r}.")
    if spec.main_metric == glue.COMBINED:  # glue.main_score's rule, on arrays
        return np.mean([metrics[m] for m in spec.metrics], axis=0)
    return metrics[spec.main_metric]


class PairedBootstrap:
    """The paired bootstrap of one split (see the module docstring): resamples drawn once, the
    reference scored once, then any number of models' drops against it."""

    def __init__(self, task: str, labels, reference, *, resamples: int = 2000, seed: int = 0):
        owner = "PairedBootstrap"
        check_int(resamples, "resamples", owner, low=10)
        check_int(seed, "seed", owner, low=0)
        self.spec = glue.get_task(task)
        self.labels = np.asarray(labels)
        self.reference = np.asarray(reference)
        if self.labels.ndim != 1 or self.reference.shape != self.labels.shape or len(self.labels) < 2:
            raise ValueError(f"PairedBootstrap needs one reference prediction per label (at least 2); got "
                             f"{self.reference.shape} predictions for {self.labels.shape} labels.")
        self.n, self.resamples, self.seed = len(self.labels), int(resamples), int(seed)
        self.indices = np.random.default_rng(self.seed).integers(0, self.n, size=(self.resamples, self.n))
        if self.spec.is_regression:
            self.weights = None
        else:
            # how often each example is drawn in each resample
            flat = (self.indices + self.n * np.arange(self.resamples)[:, None]).ravel()
            self.weights = np.bincount(flat, minlength=self.resamples * self.n).reshape(self.resamples, self.n)
            self.weights = self.weights.astype(np.float64)
        self.reference_score = self.score(self.reference)
        self.reference_scores = self._resampled(self.reference)

    def score(self, predictions) -> float:
        """The main score of ``predictions`` on all the examples (``glue.compute_metrics``)."""
        return glue.main_score(self.spec, glue.compute_metrics(self.spec, np.asarray(predictions), self.labels))

    def _resampled(self, predictions: np.ndarray) -> np.ndarray:
        if self.weights is not None:
            return _count_scores(self.spec, self.weights, np.asarray(predictions), self.labels)
        return np.array([glue.main_score(self.spec, glue.compute_metrics(self.spec, predictions[i], self.labels[i]))
                         for i in self.indices])

    def drop(self, predictions, confidence: float = DEFAULT_CONFIDENCE) -> PairedDrop:
        """The paired drop of ``predictions`` against the reference (``PairedDrop``)."""
        confidence = check_confidence(confidence, "PairedBootstrap.drop")
        predictions = np.asarray(predictions)
        if predictions.shape != self.labels.shape:
            raise ValueError(f"predictions of shape {predictions.shape} do not pair with the {self.n} examples of "
                             "this bootstrap: score the same examples, in the same order.")
        drops = 100.0 * (self.reference_scores - self._resampled(predictions))
        tail = (100.0 - REPORT_LEVEL) / 2
        low, high = np.percentile(drops, [tail, 100.0 - tail])
        return PairedDrop(drop=100.0 * (self.reference_score - self.score(predictions)),
                          upper=float(np.percentile(drops, confidence)), low=float(low), high=float(high),
                          confidence=confidence, se=float(drops.std(ddof=1)), n=self.n, resamples=self.resamples,
                          disagree=int(np.sum(predictions != self.reference)))


def promised_interval(drop: dict, compared: int, n_target: int, level: float = REPORT_LEVEL) -> dict:
    """Where the kept plan's drop should fall when measured on ``n_target`` fresh examples (points).

    ``drop``: its paired drop on the ``drop["n"]`` search examples (``drop``, and the two-sided
    ``REPORT_LEVEL`` interval ``low``/``high``, whose width gives the standard error); ``compared``:
    the plans the search judged on those examples. See the module docstring; an ESTIMATE."""
    owner = "promised_interval"
    check_int(compared, "compared", owner, low=1)
    check_int(n_target, "n_target", owner, low=1)
    normal = NormalDist()
    se = (drop["high"] - drop["low"]) / (2 * normal.inv_cdf(0.5 + REPORT_LEVEL / 200))
    z = normal.inv_cdf(1 - (1 - level / 100) / (2 * compared))
    half = z * se * math.sqrt(1 + drop["n"] / n_target)
    return {"drop": drop["drop"], "low": drop["drop"] - half, "high": drop["drop"] + half, "level": level,
            "compared": int(compared), "n_search": int(drop["n"]), "n_target": int(n_target)}
