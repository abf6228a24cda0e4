"""The smallest plan within a tolerance: a budgeted search over per-layer, per-group percentiles.

A uniform percentile spends the budget where it hurts: obce's sweeps show FFN units of all-MiniLM
bear far less pruning than value dims. ``search_plan`` chooses a percentile per (layer, group)
that removes the most cost while the task's main score on a SEARCH split (examples the model never
trained on: ``search.splits``) stays within ``tolerance`` points of the unpruned model's, judged
by a paired confidence bound: a plan is within the tolerance when the upper one-sided bound
(``confidence`` percent, ``search.bound.PairedBootstrap``) of its drop against the unpruned model
on the same examples is, not merely its point estimate. Every candidate is really pruned and
evaluated (``measure_plan``); the scorer only decides WHICH units of a (layer, group) go, the
search HOW MANY.

Phases (every evaluated plan is a row of the trail; the best feasible row so far is the answer):

1. ``uniform``: bisection over one percentile for every group and layer: a first useful plan in a
   few evaluations.
2. ``sensitivity``: each (layer, group) alone at ``sensitivity_levels``, on a smaller part of the
   training split: the rise of the task loss (cross-entropy; squared error for regression).
3. ``path``: a greedy order of single steps (one (layer, group) one level up), cheapest predicted
   loss per unit of cost saved first, with the loss predicted as the sum of the sensitivities
   (linear between measured levels, made non-decreasing). Bisection finds the longest feasible
   prefix of that order.
4. ``refine``: the rest of the order, one step at a time; a step that breaks the tolerance is
   undone and its (layer, group) is frozen. Stops at the time budget (``time_budget_s``).

With a grid of at most ``exhaustive_limit`` plans, every plan is evaluated instead (``exhaustive``),
which is exact. Rows are cached on disk by plan, so a cancelled search keeps what it evaluated and
a rerun with the same model, scores, splits and compensation resumes without re-evaluating.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from obce_core.choices import DEFAULT_LEVELS  # defined without torch for the CLI's parser
from obce_core.evidence.evaluation import EncodedSplit
from obce_core.io import JsonDataclass, append_json_line, read_json_lines
from obce_core.layout import GROUPS
from obce_core.pruning.compensation import COMPENSATIONS
from obce_core.pruning.importance import IMPORTANCES
from obce_core.pruning.plan import PruningPlan, n_removed
from obce_core.search.bound import DEFAULT_CONFIDENCE, PairedBootstrap, check_confidence
from obce_core.search.cost import COSTS, PlanCost
from obce_core.search.splits import SEARCH_SPLITS
from obce_core.search.measure import measure_plan
from obce_core.validation import check_choice, check_int, check_number, invalid

__all__ = ["DEFAULT_LEVELS", "SearchResult", "SearchSettings", "best_row", "search_plan"]

Coord = tuple[int, str]
_CHUNK = 8  # independent plans handed to the evaluator at once (one per worker, when there are workers)


@dataclass
class SearchSettings(JsonDataclass):
    """What the search looks for. ``tolerance``: points (main score x 100) the plan may lose on the
    search split, at ``confidence`` percent (the upper one-sided paired bound of the drop, in
    (50, 100)); ``cost``: what it minimises (``search.cost.COSTS``); ``levels``: the percentiles a
    (layer, group) may take; ``skip_layers``: first layers left whole. ``split`` and
    ``search_data``: which examples it judges on (``search.splits``: "auto", "held-out",
    "dev-halves", or a labelled file), read by ``search_task_model``."""

    _json_name = "search settings"

    tolerance: float = 1.0
    cost: str = "flops"
    scorer: str = "rf"
    seed: int = 0
    compensation: str = "auto"
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    levels: list[float] = field(default_factory=lambda: list(DEFAULT_LEVELS))
    sensitivity_levels: list[float] = field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0])
    skip_layers: int = 0
    time_budget_s: float = 600.0
    exhaustive_limit: int = 64
    confidence: float = DEFAULT_CONFIDENCE
    split: str = "auto"
    search_data: str | None = None

    def __post_init__(self):
        o = "SearchSettings"
        check_number(self.tolerance, "tolerance", o, low=0, high=100,
                     fix="It is how many points (main score x 100) the plan may lose, e.g. 1.")
        check_choice(self.cost, "cost", o, COSTS,
                     fix="flops: encoder multiply-adds per token; params: encoder parameters; latency: measured.")
        check_choice(self.scorer, "scorer", o, tuple(IMPORTANCES))
        check_int(self.seed, "seed", o, low=0)
        check_choice(self.compensation, "compensation", o, COMPENSATIONS)
        if not isinstance(self.groups, (list, tuple)) or not self.groups:
            raise invalid("groups", o, f"a non-empty list among {', '.join(GROUPS)}", self.groups)
        self.groups = [check_choice(g, "groups", o, GROUPS) for g in dict.fromkeys(self.groups)]
        for name in ("levels", "sensitivity_levels"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not values:
                raise invalid(name, o, "a non-empty list of percentiles in [0, 100)", values)
            for p in values:
                check_number(p, name, o, low=0, high=100, high_open=True)
            setattr(self, name, sorted({float(p) for p in values}))
        if 0.0 not in self.levels:
            self.levels = [0.0, *self.levels]
        self.sensitivity_levels = [p for p in self.sensitivity_levels if p > 0]
        check_int(self.skip_layers, "skip_layers", o, low=0)
        check_number(self.time_budget_s, "time_budget_s", o, low=0, low_open=True,
                     fix="Seconds the refinement may take, e.g. 600.")
        check_int(self.exhaustive_limit, "exhaustive_limit", o, low=0)
        self.confidence = check_confidence(self.confidence, o)
        check_choice(self.split, "split", o, SEARCH_SPLITS,
                     fix="auto: the held-out part of the training split where it predicts dev, else dev halves.")
        if self.search_data is not None and (not isinstance(self.search_data, str) or not self.search_data.strip()):
            raise invalid("search_data", o, "None or the path of a labelled .tsv/.csv file", self.search_data)
        self.tolerance, self.time_budget_s = float(self.tolerance), float(self.time_budget_s)


@dataclass
class SearchResult:
    """The best plan found, its row, the unpruned row and every row this search evaluated."""

    plan: PruningPlan
    best: dict
    original: dict
    rows: list[dict]
    settings: SearchSettings
    seconds: float
    stopped: str | None = None  # None: finished; "cancelled"; "time budget"

    @property
    def front(self) -> list[dict]:
        """The feasible rows no other feasible row beats on both cost and score (cost ascending)."""
        front, best_score = [], -math.inf
        for row in sorted((r for r in self.rows if r["feasible"]), key=lambda r: (r["cost"], -r["main_score"])):
            if row["main_score"] > best_score:
                front.append(row)
                best_score = row["main_score"]
        return front


def best_row(rows: list[dict]) -> dict | None:
    """The answer among a search's rows: the feasible one that removes the most cost (then the
    higher score); None when none is feasible."""
    feasible = [r for r in rows if r["feasible"]]
    return max(feasible, key=lambda r: (r["cost_removed"], r["main_score"])) if feasible else None


def _plan(assignment: dict[Coord, float], settings: SearchSettings) -> PruningPlan:
    layers: dict[int, dict[str, float]] = {}
    for (layer, group), p in sorted(assignment.items()):
        if p > 0:
            layers.setdefault(layer, {})[group] = float(p)
    return PruningPlan(scorer=settings.scorer, seed=settings.seed, compensation=settings.compensation, layers=layers)


def _plan_key(plan: PruningPlan) -> str:
    return json.dumps({"scorer": plan.scorer, "seed": plan.seed if plan.scorer == "random" else 0,
                       "compensation": plan.compensation, "layers": plan.to_dict()["layers"]}, sort_keys=True)


class _Trail:
    """Evaluations of one search: looked up in the row cache first, appended to it when new."""

    def __init__(self, model, scores, calibration, settings, cost: PlanCost, cache_path, on_row, measure):
        self.model, self.scores, self.calibration, self.settings, self.cost = model, scores, calibration, settings, cost
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.on_row, self.measure = on_row, measure
        self.cached = _read_cache(self.cache_path)
        self.rows: list[dict] = []
        self.base_cost = cost.unpruned()
        self.bootstraps: dict[str, PairedBootstrap] = {}  # per encoded split: the unpruned model's predictions

    def evaluate(self, assignments: list[dict[Coord, float]], encoded: EncodedSplit, phase: str) -> list[dict]:
        plans = [_plan(a, self.settings) for a in assignments]
        keys = [f"{encoded.split}:{encoded.eval_size}:{encoded.seed}:{_plan_key(p)}" for p in plans]
        # a row cached before rows kept their predictions cannot be paired: evaluated again
        todo = [i for i, k in enumerate(keys) if "predictions" not in self.cached.get(k, {})]
        if todo:
            fresh = self.measure([plans[i] for i in todo], encoded)
            for i, row in zip(todo, fresh):
                self.cached[keys[i]] = row
                if self.cache_path is not None:
                    _append(self.cache_path, {"key": keys[i], **row})
        out = []
        split_key = f"{encoded.split}:{encoded.eval_size}:{encoded.seed}"
        for plan, key in zip(plans, keys):
            measured = {k: v for k, v in self.cached[key].items() if k not in ("key", "predictions")}
            cost = self.cost.of(plan)
            row = {**measured, "phase": phase, "split": encoded.split, "n_eval": encoded.n, "plan": plan.to_dict(),
                   "cost": cost, "cost_removed": 1.0 - cost / self.base_cost}
            if phase == "original":  # the reference every later plan of this split is paired with
                self.bootstraps[split_key] = PairedBootstrap(encoded.task, encoded.labels,
                                                             self.cached[key]["predictions"], seed=encoded.seed)
            if phase != "sensitivity":  # the probes read the loss only
                drop = self.bootstraps[split_key].drop(self.cached[key]["predictions"], self.settings.confidence)
                row.update(drop=drop.drop, drop_upper=drop.upper, drop_low=drop.low, drop_high=drop.high)
                # The original is within its own tolerance by definition; a plan, when its BOUND is.
                row["feasible"] = phase == "original" or bool(drop.upper <= self.settings.tolerance + 1e-9)
            else:
                row["feasible"] = False
            out.append(row)
            if phase != "sensitivity":
                self.rows.append(row)
                if self.on_row is not None:
                    self.on_row(row)
        return out


def _read_cache(path: Path | None) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path is None or not path.is_file():
        return rows
    for row in read_json_lines(path):  # a line cut short by a crash is skipped: evaluated again
        if isinstance(row.get("key"), str):
            rows[row["key"]] = row
    return rows


def _append(path: Path, row: dict) -> None:
    append_json_line(path, row, sort_keys=False)  # a torn line before it loses only itself


def _effective_levels(coords: list[Coord], shapes, levels: list[float]) -> dict[Coord, list[float]]:
    """Per (layer, group), the levels that remove more units than the level before (a head of 32
    dims loses the same 3 dims at 10 % as at 12 %: only one of them is a step)."""
    out = {}
    for layer, group in coords:
        n = shapes[layer][group]
        kept, last = [0.0], 0
        for p in levels[1:]:
            removed = n_removed(p, n)
            if removed > last:
                kept.append(p)
                last = removed
        out[(layer, group)] = kept
    return out


def _predicted(levels: list[float], measured: dict[float, float]) -> np.ndarray:
    """Loss rise at each of ``levels``: linear between measured levels (0 at 0), extended with the
    last slope, made non-decreasing (a unit removed never makes the prediction better)."""
    xs = np.array([0.0, *sorted(measured)])
    ys = np.array([0.0, *[max(measured[x], 0.0) for x in sorted(measured)]])
    out = np.interp(levels, xs, ys)
    if len(xs) >= 2 and xs[-1] > xs[-2]:
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
        beyond = np.asarray(levels) > xs[-1]
        out[beyond] = ys[-1] + slope * (np.asarray(levels)[beyond] - xs[-1])
    return np.maximum.accumulate(np.maximum(out, 0.0))


def _greedy_path(coords, eff, predicted, saved) -> list[tuple[Coord, float]]:
    """Single steps, cheapest predicted loss per cost saved first, until every coordinate is at its top."""
    at = {c: 0 for c in coords}
    steps = []
    while True:
        best, best_key = None, None
        for order, c in enumerate(coords):
            k = at[c]
            if k + 1 >= len(eff[c]):
                continue
            gain = saved[c][k + 1] - saved[c][k]
            rise = predicted[c][k + 1] - predicted[c][k]
            key = (rise / gain if gain > 0 else math.inf, -gain, order)
            if best_key is None or key < best_key:
                best, best_key = c, key
        if best is None:
            return steps
        at[best] += 1
        steps.append((best, eff[best][at[best]]))


def search_plan(model, scores, search: EncodedSplit, settings: SearchSettings, *, sensitivity: EncodedSplit | None = None,
                calibration=None, cost: PlanCost | None = None, cache_path=None,
                progress: Callable[[int, int, str], None] | None = None, should_stop: Callable[[], bool] | None = None,
                on_row: Callable[[dict], None] | None = None,
                measure: Callable[[list, EncodedSplit], list[dict]] | None = None) -> SearchResult:
    """Search the plan (see the module docstring). ``search``: the encoded examples the tolerance is
    judged on (never a split named "validation...": ``search.splits`` cuts dev halves under their own
    name); ``sensitivity``: those the probes read (default ``search``); ``cost``: default ``PlanCost.for_model(
    model, settings.cost)``; ``cache_path``: the row cache (JSON lines) that makes a rerun resume;
    ``progress(done, total_estimate, phase)`` after each evaluation; ``should_stop()`` ends early
    with the best plan so far; ``on_row(row)`` gets every row of the trail as it is made;
    ``measure(plans, encoded)``: how plans are evaluated (default ``measure_plan`` here, one after
    another; ``search.task_search`` passes a ``PlanPool``'s for several devices)."""
    start = time.perf_counter()
    if search.split.startswith("validation") or (sensitivity is not None and sensitivity.split.startswith("validation")):
        raise ValueError("The search must not read the dev split it is reported on: search on examples the model never "
                         "trained on that the report does not use (search.splits.choose_search_data: the held-out "
                         "part of the training split, a labelled file, or one half of dev).")
    if cost is None:
        if settings.cost == "latency":
            raise ValueError("cost='latency' needs measured latencies: pass cost=PlanCost.for_model(model, 'latency', "
                             "latency_table=measure_latency_table(...)).")
        cost = PlanCost.for_model(model, settings.cost)
    sensitivity = sensitivity or search
    shapes = cost.shapes
    if settings.skip_layers >= len(shapes):
        raise invalid("skip_layers", "search_plan", f"fewer than the model's {len(shapes)} layers", settings.skip_layers)
    if measure is None:
        def measure(plans, encoded):
            return [measure_plan(model, scores, p, encoded, calibration=calibration) for p in plans]
    trail = _Trail(model, scores, calibration, settings, cost, cache_path, on_row, measure)
    coords = [(i, g) for i in range(settings.skip_layers, len(shapes)) for g in settings.groups]
    eff = _effective_levels(coords, shapes, settings.levels)
    grid = math.prod(len(v) for v in eff.values())
    exhaustive = grid <= settings.exhaustive_limit
    total = [1 + (grid if exhaustive else 6 + 1 + len(coords) * len(settings.sensitivity_levels) + 9 + len(coords) * 4)]
    done = [0]

    def run(assignments, encoded, phase):
        rows = trail.evaluate(assignments, encoded, phase)
        done[0] += len(assignments)
        total[0] = max(total[0], done[0])
        if progress is not None:
            progress(done[0], total[0], phase)
        return rows

    def stop() -> str | None:
        """Why the search must end now: the caller cancelled, or the time budget is spent."""
        if should_stop is not None and should_stop():
            return "cancelled"
        if time.perf_counter() - start > settings.time_budget_s:
            return "time budget"
        return None

    original = run([{}], search, "original")[0]

    def finish(stopped: str | None) -> SearchResult:
        best = best_row(trail.rows)
        return SearchResult(plan=PruningPlan.from_dict(best["plan"]), best=best, original=original, rows=trail.rows,
                            settings=settings, seconds=time.perf_counter() - start, stopped=stopped)

    def feasible(assignment, phase) -> bool:
        return run([assignment], search, phase)[0]["feasible"]

    if exhaustive:
        everything = [dict(zip(coords, combo)) for combo in itertools.product(*(eff[c] for c in coords))]
        for i in range(1, len(everything), _CHUNK):  # the first is the original, evaluated above
            if why := stop():
                return finish(why)
            run(everything[i:i + _CHUNK], search, "exhaustive")
        return finish(None)

    # 1. uniform: the largest common percentile within tolerance, by bisection
    lo, hi = 0, len(settings.levels)
    while hi - lo > 1:
        if why := stop():
            return finish(why)
        mid = (lo + hi) // 2
        if feasible({c: settings.levels[mid] for c in coords}, "uniform"):
            lo = mid
        else:
            hi = mid

    # 2. sensitivity of each (layer, group) alone
    base_loss = run([{}], sensitivity, "sensitivity")[0]["loss"]
    measured: dict[Coord, dict[float, float]] = {}
    for c in coords:
        if why := stop():
            return finish(why)
        rows = run([{c: p} for p in settings.sensitivity_levels], sensitivity, "sensitivity")
        measured[c] = {p: r["loss"] - base_loss for p, r in zip(settings.sensitivity_levels, rows)}
    predicted = {c: _predicted(eff[c], measured[c]) for c in coords}
    base_cost = cost.unpruned()
    saved = {c: [base_cost - cost.of(_plan({c: p}, settings)) for p in eff[c]] for c in coords}
    steps = _greedy_path(coords, eff, predicted, saved)

    def prefix(k: int) -> dict[Coord, float]:
        assignment: dict[Coord, float] = {}
        for c, p in steps[:k]:
            assignment[c] = p
        return assignment

    # 3. the longest feasible prefix of the greedy order, by bisection
    lo, hi = 0, len(steps) + 1
    while hi - lo > 1:
        if why := stop():
            return finish(why)
        mid = (lo + hi) // 2
        if feasible(prefix(mid), "path"):
            lo = mid
        else:
            hi = mid

    # 4. the rest of the order, one verified step at a time, within the time budget
    current, frozen = prefix(lo), set()
    for c, p in steps[lo:]:
        if c in frozen or current.get(c, 0.0) >= p:
            continue
        if why := stop():
            return finish(why)
        if time.perf_counter() - start > settings.time_budget_s:
            return finish("time budget")
        candidate = {**current, c: p}
        if feasible(candidate, "refine"):
            current = candidate
        else:
            frozen.add(c)
    return finish(None)
