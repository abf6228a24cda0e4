"""What a plan search reports: ``SearchReport`` (``search_report.json`` in the search's output
folder), read back with ``read_search_report``, and ``bound_note``: the sentence that says when the
confidence bound eats the tolerance.

A report carries every number the page and the CLI show: the found plan's scores on the search
examples and on the whole dev split (and, when the search judged on one half of dev, on the other
half), each drop with its paired 95 % interval (``search.bound.PairedDrop`` as a dict), the cost
before and after, and every evaluated plan (``rows``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from obce_core.choices import SEARCH_REPORT_FILE  # defined without torch for the CLI's parser
from obce_core.io import JsonDataclass
from obce_core.search.algorithm import SearchSettings
from obce_core.search.bound import promised_interval

__all__ = ["SEARCH_REPORT_FILE", "SearchReport", "bound_note", "compared_plans", "promise_of", "read_search_report"]


@dataclass
class SearchReport(JsonDataclass):
    """What a search found and how. ``search_*``: scores on the search examples, which ``search_split``
    names in words (``search_kind``: "held-out", "file", "dev-halves"; "training sample" in reports
    of searches before the tolerance was judged on unseen examples); ``dev_*``: the task's whole dev
    split, read after the search (with dev halves, half of it was the search's); ``check_*``: the
    dev half the search never read (dev halves only). ``*_drop``: ``PairedDrop`` dicts (points;
    ``search_drop`` at the search's confidence, ``dev_drop``/``check_drop`` with their 95 %
    intervals); ``bound_note``: ``bound_note``'s sentence, or ''. ``promise``: where the plan's drop
    on fresh examples should fall (``promise_of``; ``bound.promised_interval``'s dict). ``rows``:
    every plan the search evaluated (phase, plan, metrics, paired drop, cost), in order."""

    _json_name = "search report"

    task: str
    model: str
    num_layers: int
    settings: SearchSettings
    search_split: str
    sensitivity_split: str
    cost_label: str
    cost_before: float
    cost_after: float
    cost_removed: float
    params_before: int
    params_after: int
    search_original: dict
    search_found: dict
    dev_original: dict
    dev_found: dict
    seconds_search: float
    seconds_total: float
    stopped: str | None
    plan: dict
    rows: list = field(default_factory=list)
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    created_at: str = ""
    search_kind: str = "training sample"
    search_drop: dict | None = None
    dev_drop: dict | None = None
    check_split: str | None = None
    check_original: dict | None = None
    check_found: dict | None = None
    check_drop: dict | None = None
    bound_note: str = ""
    promise: dict | None = None

    def __post_init__(self):
        if isinstance(self.settings, dict):
            self.settings = SearchSettings.from_dict(self.settings)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["settings"] = self.settings.to_dict()
        return data

    def summary(self) -> str:
        points = 100 * (self.dev_original["main_score"] - self.dev_found["main_score"])
        interval = ""
        if self.dev_drop is not None:
            interval = f", 95 % interval {self.dev_drop['low']:+.2f} to {self.dev_drop['high']:+.2f}"
        bound = ""
        if self.search_drop is not None:
            bound = (f" (drop {self.search_drop['drop']:+.2f}, at most {self.search_drop['upper']:+.2f} at "
                     f"{self.search_drop['confidence']:g} % confidence)")
        check = ""
        if self.check_found is not None and self.check_drop is not None:
            check = (f"; the dev half the search never read {100 * self.check_found['main_score']:.2f} vs "
                     f"{100 * self.check_original['main_score']:.2f} (drop {self.check_drop['drop']:+.2f})")
        promise = ""
        if self.promise is not None:
            promise = (f"; promised beforehand: {self.promise['low']:+.2f} to {self.promise['high']:+.2f} on "
                       f"{self.promise['n_target']:,} fresh examples")
        return (f"{self.task}: {100 * self.cost_removed:.1f} % of {self.cost_label} removed; search split "
                f"{100 * self.search_found['main_score']:.2f} vs {100 * self.search_original['main_score']:.2f}{bound}, "
                f"dev {100 * self.dev_found['main_score']:.2f} vs {100 * self.dev_original['main_score']:.2f} (drop "
                f"{points:+.2f} points{interval}){promise}{check}; {len(self.rows)} plans evaluated in "
                f"{self.seconds_search:.0f} s")

    def what_was_searched(self) -> str:
        """In words: the examples the tolerance was judged on, and those that report the plan."""
        if self.search_kind == "training sample":
            return (f"The tolerance was judged on {self.search_split}: training examples the model had seen (a "
                    "search from before obce judged on unseen examples).")
        reported = "the whole dev split"
        if self.check_split:
            reported = f"{self.check_split} and on the whole dev split (half of which the search read)"
        checked = self.check_split or "the dev split"
        words = (f"The tolerance was judged on {self.search_split}, at {self.settings.confidence:g} % confidence; "
                 f"the plan is reported on {reported}. The bound holds for one plan fixed in advance: the search "
                 f"compared {compared_plans(self.rows)} plans on the same examples and kept the best, so the drop it "
                 f"measured there is optimistic; {checked} is the honest check.")
        if self.promise is not None:
            p = self.promise
            words += (f" Allowing for that choice and for the noise of {p['n_target']:,} fresh examples, their drop "
                      f"should lie between {p['low']:+.2f} and {p['high']:+.2f} points ({p['level']:g} %, an estimate).")
        return words


def compared_plans(rows: list[dict]) -> int:
    """How many plans a search judged on its examples (its sensitivity probes and the original aside)."""
    return max(1, sum(1 for r in rows if r.get("phase") not in ("original", "sensitivity")))


def promise_of(search_drop: dict, rows: list[dict], n_target: int) -> dict:
    """The search's promise for the kept plan on ``n_target`` fresh examples (``bound.promised_interval``)."""
    return promised_interval(search_drop, compared_plans(rows), n_target)


def bound_note(rows: list[dict], tolerance: float, confidence: float, n: int) -> str:
    """A sentence when the paired bound takes at least half the tolerance, else ''.

    The bound's margin (upper bound minus point drop) is read from the best feasible row that
    removes something, else from the plan that came closest to the tolerance."""
    candidates = [r for r in rows if r.get("phase") not in ("original", "sensitivity") and "drop_upper" in r]
    if not candidates or tolerance <= 0:
        return ""
    feasible = [r for r in candidates if r["feasible"]]
    row = (max(feasible, key=lambda r: r["cost_removed"]) if feasible
           else min(candidates, key=lambda r: r["drop_upper"]))
    margin = row["drop_upper"] - row["drop"]
    if margin < tolerance / 2:
        return ""
    room = tolerance - margin
    return (f"The confidence bound eats {min(100.0, 100 * margin / tolerance):.0f} % of the tolerance: at "
            f"{confidence:g} % confidence on {n:,} examples it adds about {margin:.2f} points to a plan's measured "
            f"drop, so a plan within {tolerance:g} point(s) may lose only about {max(room, 0.0):.2f} as measured. "
            "More search examples narrow the bound; tuning the kept weights or recovery training must carry the rest.")


def read_search_report(directory: str | os.PathLike) -> SearchReport:
    """The ``SearchReport`` saved in a search's output folder."""
    path = Path(directory).expanduser() / SEARCH_REPORT_FILE
    if not path.is_file():
        raise ValueError(f"No {SEARCH_REPORT_FILE} in {str(directory)!r}: expected the output folder of "
                         "`python -m obce_core search`.")
    return SearchReport.from_json(path)
