"""The dashboard's shared settings: one declarative table, kept in the session and in the URL.

``SETTINGS`` lists every setting a link carries: its default (a value, or a no-argument function
read when a session starts) and how a query-string value is parsed (``parse(name, raw)`` raises
``ValueError`` with the one message template of ``obce_core.validation``). Nothing registers
settings at import time; a page that needs a setting finds it here.

``init_state()`` gives every setting a value once per session: from the URL when it parses, else
the default (one warning lists the values it ignored). ``widget(st.slider, "Label", "ffn", ...)``
binds a widget to a setting so the value survives page switches; a value from the URL that lies
outside the widget's range or options is replaced with a warning naming the valid range, never
clamped silently. ``sync_query_params()`` writes the settings that decide the scores (always) and
the others that differ from their defaults back to the address bar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from obce_core import COMPONENTS, TOKEN_MODES, PruningPlan
from obce_core.glue import TASKS, available_local_tasks
from obce_core.io import JsonInputError, load_json
from obce_core.validation import check_choice, check_int, check_number, invalid, is_number

__all__ = [
    "DATA_SOURCES",
    "MAX_TEXTS",
    "MAX_PERCENT",
    "Setting",
    "SETTINGS",
    "parse_overrides",
    "init_state",
    "sync_query_params",
    "widget",
]

DATA_SOURCES = ("demo", "glue", "upload")
MAX_TEXTS = 20_000
MAX_PERCENT = 95.0
_OWNER = "the page address"
_URL_GIVEN = "_url_given"  # names whose value came from the URL and no widget has checked yet


@dataclass(frozen=True)
class Setting:
    """One shared setting: its default (a value or a no-argument function) and its URL parser."""

    default: Any
    parse: Callable[[str, str], Any]
    # Decides the scores: always written to the URL, default or not, so a link opens the same
    # scores on any server (a default such as the data source depends on the server's setup).
    always_in_link: bool = False

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _text(name: str, raw: str) -> str:
    value = str(raw).strip()
    if not value:
        raise invalid(name, _OWNER, "a non-empty text", raw)
    return value


def _choice(options: Sequence[str]) -> Callable[[str, str], str]:
    return lambda name, raw: check_choice(raw, name, _OWNER, options)


def _int(low: int, high: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = raw  # not a number: check_int names the range in its message
        return check_int(value, name, _OWNER, low=low, high=high)

    return parse


def _float(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            value = raw
        return check_number(value, name, _OWNER, low=low, high=high)

    return parse


def _plan_field(field: str) -> Callable[[str, str], str]:
    """A plan field as ``PruningPlan`` reads it: its own check and message, and its aliases (an
    old link's ``compensation=mean`` is today's ``cls-mean``)."""
    return lambda name, raw: getattr(PruningPlan(**{field: str(raw).strip()}), field)


def parse_overrides(name: str, raw: str) -> str:
    """Per-layer overrides ``{"3": {"ffn": 70}}`` as canonical JSON text; percentages must lie in
    [0, MAX_PERCENT] like the sliders'. Raises ``ValueError`` naming the fix."""
    try:
        data = load_json(raw, f"the link's {name}") if str(raw).strip() else {}  # depth-limited
    except JsonInputError as exc:
        shown = raw if len(str(raw)) <= 80 else f"{str(raw)[:60]}... ({len(str(raw))} characters)"
        raise invalid(name, _OWNER, 'JSON such as {"3": {"ffn": 70}}', shown, f"({exc})") from None
    for layer, groups in (data.items() if isinstance(data, dict) else ()):
        for group, value in (groups.items() if isinstance(groups, dict) else ()):
            if is_number(value):  # the sliders' range, before the plan's wider [0, 100)
                check_number(value, f"{name}[{layer}][{group}]", "the Prune page", low=0.0, high=MAX_PERCENT,
                             fix=f"Use a percentage from 0 to {MAX_PERCENT:g}, as the sliders allow.")
    plan = PruningPlan(layers=data)  # checks layer indices, group names and that percentages are numbers
    return json.dumps({str(k): {g: float(v) for g, v in sorted(o.items())} for k, o in sorted(plan.layers.items())},
                      sort_keys=True, separators=(",", ":"))


def _default_data_source() -> str:
    """'glue' when a local GLUE copy is there, else the shipped demo corpus."""
    return "glue" if available_local_tasks() else "demo"


def _default_task() -> str:
    local = available_local_tasks()
    return "sst2" if "sst2" in local or not local else local[0]


SETTINGS: dict[str, Setting] = {
    # what is scored (Model & data)
    "model": Setting("default", _text, always_in_link=True),
    "data": Setting(_default_data_source, _choice(DATA_SOURCES), always_in_link=True),
    "task": Setting(_default_task, _choice(tuple(TASKS)), always_in_link=True),
    "n": Setting(128, _int(2, MAX_TEXTS), always_in_link=True),
    "seed": Setting(0, _int(0, 2**31 - 1), always_in_link=True),
    "token": Setting("cls", _choice(TOKEN_MODES), always_in_link=True),
    "max_length": Setting(128, _int(8, 512), always_in_link=True),
    # the neuron shown (Persistence); None: the page opens on an informative one
    "layer": Setting(None, _int(0)),
    "component": Setting("intermediate", _choice(COMPONENTS)),
    "neuron": Setting(None, _int(0)),
    # the plan in force (Prune; Persistence and Compare read it). Defaults: 30 % of every group,
    # layer 0 left whole (at [CLS] its query/key/value rf are all 0 and cannot rank them), the
    # core's default compensation ('auto': per layer, what reconstructs the output best).
    "qk": Setting(30.0, _float(0.0, MAX_PERCENT)),
    "v": Setting(30.0, _float(0.0, MAX_PERCENT)),
    "ffn": Setting(30.0, _float(0.0, MAX_PERCENT)),
    "skip_layers": Setting(1, _int(0)),
    "compensation": Setting(lambda: PruningPlan().compensation, _plan_field("compensation")),
    "scorer": Setting("rf", _plan_field("scorer")),
    "prune_seed": Setting(0, _int(0, 2**31 - 1)),
    "overrides": Setting("{}", parse_overrides),
}


def value(name: str) -> Any:
    """This session's value of setting ``name``, or its default where the session has none yet."""
    ss = st.session_state
    return ss[name] if name in ss else SETTINGS[name].default_value()


def init_state() -> None:
    """Give every setting a value in this session if it has none: from the URL, else the default.

    A query parameter that does not parse is ignored; the page shows one warning about it.
    """
    ss = st.session_state
    params = st.query_params
    given = ss.setdefault(_URL_GIVEN, {})
    warnings = []
    for name, setting in SETTINGS.items():
        if name in ss:
            continue
        value = setting.default_value()
        if name in params:
            raw = params.get(name)
            try:
                value = setting.parse(name, raw)
                given[name] = raw
            except (TypeError, ValueError) as exc:
                shown = raw if len(str(raw)) <= 80 else f"{str(raw)[:60]}... ({len(str(raw))} characters)"
                warnings.append(f"`{name}={shown}`: {exc}")
        ss[name] = value
    if warnings:
        st.warning("Ignored in the address, using the defaults instead:\n\n" + "\n\n".join(warnings))


def _as_query(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _in_link(name: str, setting: Setting, value: Any) -> bool:
    if value is None:
        return False
    if name == "task" and st.session_state.get("data") != "glue":
        return False  # the task only matters for GLUE texts
    return setting.always_in_link or value != setting.default_value()


def sync_query_params() -> None:
    """Write the settings that decide the scores, and the others that differ from their defaults,
    to the address bar (drop the rest)."""
    qp = st.query_params
    for name, setting in SETTINGS.items():
        value = st.session_state.get(name)
        want = _as_query(value) if _in_link(name, setting, value) else None
        if want is None:
            if name in qp:
                del qp[name]
        elif qp.get(name) != want:
            qp[name] = want


def _fit(name: str, value: Any, kwargs: dict) -> tuple[Any, str | None]:
    """``value`` moved inside the widget's options or range, and what the valid values are when it
    had to move (None when it fitted)."""
    options = kwargs.get("options")
    if options is not None:
        opts = list(options)
        if value in opts or not opts:
            return value, None
        default = SETTINGS[name].default_value() if name in SETTINGS else None
        fallback = default if default in opts else opts[0]
        return fallback, "one of " + ", ".join(map(str, opts))
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value, None
    if isinstance(lo, float) or isinstance(hi, float):
        value = float(value)
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return value, None
    default = SETTINGS[name].default_value() if name in SETTINGS else None
    inside = isinstance(default, (int, float)) and (lo is None or default >= lo) and (hi is None or default <= hi)
    fallback = default if inside else min(max(value, lo if lo is not None else value), hi if hi is not None else value)
    return fallback, f"from {lo:g} to {hi:g}" if lo is not None and hi is not None else f"within [{lo}, {hi}]"


def widget(fn: Callable[..., Any], label: str, name: str, **kwargs: Any) -> Any:
    """Render ``fn`` (``st.selectbox``, ``st.slider``, ...) bound to the setting ``name``.

    The widget gets the key ``_w_<name>``; its value is copied to ``st.session_state[name]`` on
    change, and loaded from it on every run, so the setting outlives page switches. A stored value
    outside the widget's ``options`` or ``min_value``/``max_value`` is replaced (the default when
    that fits); when it came from the URL the page says so and names the valid values.
    Do not pass ``value``/``index``/``key``: the setting is the value.
    """
    for bad in ("value", "index", "key"):
        if bad in kwargs:
            raise TypeError(f"widget() sets {bad!r} itself from the setting {name!r}; drop that argument.")
    ss = st.session_state
    if name not in ss:
        init_state()
        ss.setdefault(name, None)
    value, valid = _fit(name, ss[name], kwargs)
    raw = ss.get(_URL_GIVEN, {}).pop(name, None)
    if valid is not None and raw is not None:
        st.warning(f"`{name}={raw}` in the address is out of range here: {label.lower()} must be {valid}. "
                   f"Using {_as_query(value)} instead.", icon=":material/warning:")
    ss[name] = value
    wkey = f"_w_{name}"
    ss[wkey] = value
    user_callback = kwargs.pop("on_change", None)

    def _store() -> None:
        ss[name] = ss[wkey]
        if user_callback is not None:
            user_callback()

    return fn(label, key=wkey, on_change=_store, **kwargs)
