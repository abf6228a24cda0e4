"""A page's form kept in the address: one query parameter holds the values of the widgets whose keys
start with a prefix, so a refreshed (or shared) page opens with the form it had.

``field(key, default, options=..., low=..., high=...)`` gives a widget key its value once per
session (from the address when it fits the widget, else ``default``) and returns the key; the
widget then takes its value from the session (pass no ``value``/``index``/``default``).
``remember(param, prefix)`` writes the current values back to the address.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import streamlit as st

from obce_core.io import JsonInputError, load_json

__all__ = ["field", "remember"]

_LOADED = "_form_link_loaded"


def _from_link(param: str) -> dict:
    ss = st.session_state
    if _LOADED not in ss:
        try:
            data = load_json(st.query_params.get(param) or "{}", f"the link's {param}")  # depth-limited
        except JsonInputError:  # a link that is not a form's JSON restores nothing
            data = {}
        ss[_LOADED] = data if isinstance(data, dict) else {}
    return ss[_LOADED]


def _fits(value: Any, default: Any, options: Sequence | None, low, high) -> bool:
    if options is not None:
        values = value if isinstance(default, list) else [value]
        return isinstance(values, list) and all(v in options for v in values)
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return type(value) is type(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(default, int) and not float(value).is_integer():
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def field(key: str, default: Any, *, param: str, options: Sequence | None = None, low=None, high=None) -> str:
    """Give widget ``key`` a value this session if it has none (the address's when it fits); return ``key``."""
    ss = st.session_state
    if key not in ss or not _fits(ss[key], default, options, low, high):
        linked = _from_link(param).get(key, default)
        value = linked if _fits(linked, default, options, low, high) else default
        ss[key] = type(default)(value) if isinstance(default, (int, float)) and not isinstance(default, bool) else value
    return key


def remember(param: str, prefix: str) -> None:
    """Write every session value whose key starts with ``prefix`` to the query parameter ``param``."""
    ss = st.session_state
    form = {k: ss[k] for k in sorted(ss) if isinstance(k, str) and k.startswith(prefix)
            and isinstance(ss[k], (str, int, float, bool, list))}
    text = json.dumps(form, sort_keys=True, separators=(",", ":"))
    if st.query_params.get(param) != text:
        st.query_params[param] = text
