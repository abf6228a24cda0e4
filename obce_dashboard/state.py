"""What the dashboard pages share: settings, the cached model and scores, and error display.

A page defines ``main()`` and ends with ``state.run_page(main)``, which calls ``init_state()``
first, shows any error raised by ``main`` (see below) and calls ``sync_query_params()`` last.
None of the helpers does heavy work until asked.

Settings (``SETTINGS``) live in ``st.session_state`` under their own names, are initialised once
per session (from the URL's query parameters when present, else the default) and are written back
to the URL by ``sync_query_params()`` (defaults are left out, so a plain URL stays plain). Bind a
widget to a setting with ``widget(st.selectbox, "Label", "setting", options=...)``: the value
survives page switches (Streamlit forgets a widget's own key when its page is not shown).

Sharing between sessions: ``load_model_cached(source)`` keeps models in ``st.cache_resource`` (one
copy for every session: never modify ``LoadedModel.model`` in place, work on a copy), and
``score_texts`` keeps scored runs in a process-wide store (``ScoredRun``, also shared and
read-only) on top of obce_core's on-disk score cache. ``current_scored()`` gives the session's
latest run, or, after a reload, a run another session made with the same settings.

Errors: ``with errors("Could not load the model") as outcome: ...`` shows any ``ValueError``,
``OSError`` or ``KeyError`` (obce's user errors; their messages say how to fix them) as
``st.error``, anything else as ``st.error`` plus a collapsed "Details" expander; never a bare
traceback. ``outcome.ok`` says whether the block finished. ``run_page(main)`` wraps a whole page.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import streamlit as st

from obce_core import COMPONENTS, TOKEN_MODES, NeuronScores, load_model, score_model
from obce_core import corpus, glue
from obce_core.models import encoder_layers, model_fingerprint
from obce_core.scoring import texts_fingerprint

__all__ = [
    "DATA_SOURCES",
    "MAX_TEXTS",
    "PAGE_MODEL",
    "PAGE_PERSISTENCE",
    "PAGE_LEARN",
    "PAGE_PRUNE",
    "PAGE_COMPARE",
    "Setting",
    "SETTINGS",
    "register_setting",
    "init_state",
    "sync_query_params",
    "widget",
    "LoadedModel",
    "load_model_cached",
    "glue_tasks_available",
    "default_data_source",
    "current_texts",
    "ScoredRun",
    "score_texts",
    "set_current_scored",
    "current_scored",
    "settings_signature",
    "changed_settings",
    "sample_labels",
    "Outcome",
    "errors",
    "run_page",
    "no_scores_ui",
]

PAGE_MODEL = "pages/1_Model_and_data.py"
PAGE_PERSISTENCE = "pages/2_Persistence.py"
PAGE_PRUNE = "pages/3_Prune.py"
PAGE_COMPARE = "pages/4_Compare.py"
PAGE_LEARN = "pages/5_Learn.py"

DATA_SOURCES = ("demo", "glue", "upload")
MAX_TEXTS = 20_000


# ---------------------------------------------------------------------------------------------
# Settings: session state + URL
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One shared setting: its default (a value, or a no-argument function) and how to read it
    from a query-string value (``parse`` raises ``ValueError`` on junk)."""

    default: Any
    parse: Callable[[str], Any]
    in_url: bool = True

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _text(raw: str) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("expected a non-empty text")
    return value


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {list(options)}")
        return raw

    return parse


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}]")
        return value

    return parse


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"expected a number in [{lo:g}, {hi:g}]")
        return value

    return parse


def glue_tasks_available() -> tuple[list[str], str]:
    """(GLUE task names the page can offer, where they come from).

    A local GLUE copy (``OBCE_GLUE_DIR``) first; else every task from the hub unless
    ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` says there is no network; else none.
    """
    local = glue.available_local_tasks()
    if local:
        return local, f"local GLUE copy at {glue.default_glue_dir()}"
    offline = any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        return [], "no local GLUE copy (set OBCE_GLUE_DIR) and the hub is switched off (HF_HUB_OFFLINE)"
    return list(glue.TASKS), f"the Hugging Face hub ({glue.HUB_DATASET}; needs network)"


def default_data_source() -> str:
    """'glue' when a local GLUE copy is there, else the shipped demo corpus."""
    return "glue" if glue.available_local_tasks() else "demo"


def _default_task() -> str:
    local = glue.available_local_tasks()
    if "sst2" in local or not local:
        return "sst2"
    return local[0]


SETTINGS: dict[str, Setting] = {
    "model": Setting("default", _text),
    "data": Setting(default_data_source, _choice(DATA_SOURCES)),
    "task": Setting(_default_task, _choice(tuple(glue.TASKS))),
    "n": Setting(128, _int_in(2, MAX_TEXTS)),
    "seed": Setting(0, _int_in(0, 2**31 - 1)),
    "token": Setting("cls", _choice(TOKEN_MODES)),
    "max_length": Setting(128, _int_in(8, 512)),
    "percentile": Setting(30.0, _float_in(0.0, 99.0)),
    "layer": Setting(0, _int_in(0, 1000)),
    "component": Setting("intermediate", _choice(COMPONENTS)),
    "neuron": Setting(0, _int_in(0, 1_000_000)),
}


def register_setting(name: str, default: Any, parse: Callable[[str], Any], *, in_url: bool = True) -> None:
    """Add a setting (e.g. a page's own percentile) before calling ``init_state()``."""
    if name.startswith("_"):
        raise ValueError(f"Setting names must not start with '_' (reserved for widget keys); got {name!r}.")
    SETTINGS.setdefault(name, Setting(default, parse, in_url))


def init_state() -> None:
    """Give every setting a value in this session if it has none: from the URL, else the default.

    A query parameter that does not parse is ignored; the page shows one warning about it.
    """
    ss = st.session_state
    params = st.query_params
    warnings = []
    for name, setting in SETTINGS.items():
        if name in ss:
            continue
        value = setting.default_value()
        if setting.in_url and name in params:
            raw = params.get(name)
            try:
                value = setting.parse(raw)
            except (TypeError, ValueError) as exc:
                warnings.append(f"`{name}={raw}` ({exc})")
        ss[name] = value
    if warnings:
        st.warning("Ignored URL parameter(s) " + ", ".join(warnings) + "; using the defaults instead.")


def _as_query(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sync_query_params() -> None:
    """Write the URL settings that differ from their defaults to the address bar (drop the rest)."""
    qp = st.query_params
    for name, setting in SETTINGS.items():
        if not setting.in_url:
            continue
        value = st.session_state.get(name)
        want = None if value is None or value == setting.default_value() else _as_query(value)
        if want is None:
            if name in qp:
                del qp[name]
        elif qp.get(name) != want:
            qp[name] = want


def widget(fn: Callable[..., Any], label: str, name: str, **kwargs: Any) -> Any:
    """Render ``fn`` (``st.selectbox``, ``st.slider``, ...) bound to the setting ``name``.

    The widget gets the key ``_w_<name>``; its value is copied to ``st.session_state[name]`` on
    change, and loaded from it on every run, so the setting outlives page switches. A stored
    value outside the widget's ``options`` or ``min_value``/``max_value`` is moved inside first.
    Do not pass ``value``/``index``/``key``: the setting is the value.
    """
    for bad in ("value", "index", "key"):
        if bad in kwargs:
            raise TypeError(f"widget() sets {bad!r} itself from the setting {name!r}; drop that argument.")
    ss = st.session_state
    if name not in ss:
        init_state()
        ss.setdefault(name, None)
    value = ss[name]
    options = kwargs.get("options")
    if options is not None:
        opts = list(options)
        if value not in opts and opts:
            value = opts[0]
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            value = lo
        if hi is not None and value > hi:
            value = hi
        if isinstance(lo, float) or isinstance(hi, float):
            value = float(value)
    ss[name] = value
    wkey = f"_w_{name}"
    ss[wkey] = value
    user_callback = kwargs.pop("on_change", None)

    def _store() -> None:
        ss[name] = ss[wkey]
        if user_callback is not None:
            user_callback()

    return fn(label, key=wkey, on_change=_store, **kwargs)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model shared by every session (never modify ``model`` in place; ``copy.deepcopy`` it)."""

    source: str
    model: Any
    tokenizer: Any
    facts: dict


def _source_stamp(source: str) -> str:
    """Sizes and modification times of a local model directory's files ('' for hub ids), so a
    directory that was rewritten (a re-pruned model saved to the same place) loads afresh."""
    if source == "default":
        return ""
    path = Path(source).expanduser()
    if not path.is_dir():
        return ""
    try:
        return "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(path.iterdir()) if f.is_file())
    except OSError:
        return ""


def _facts(model) -> dict:
    cfg = model.config
    layers = encoder_layers(model)
    ffn = [int(layer.intermediate.dense.out_features) for layer in layers]
    qk = [int(layer.attention.self.query.out_features) for layer in layers]
    v = [int(layer.attention.self.value.out_features) for layer in layers]

    def compact(xs: list[int]) -> str:
        return str(xs[0]) if len(set(xs)) == 1 else ", ".join(map(str, xs))

    return {
        "architecture": type(model).__name__,
        "model_type": cfg.model_type,
        "pruned": cfg.model_type != "bert",
        "layers": len(layers),
        "hidden": int(cfg.hidden_size),
        "heads": int(cfg.num_attention_heads),
        "ffn": compact(ffn),
        "query_key_width": compact(qk),
        "value_width": compact(v),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "fingerprint": model_fingerprint(model),
        "device": str(next(model.parameters()).device),
    }


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_model(source: str, stamp: str) -> LoadedModel:  # noqa: ARG001  (stamp is part of the cache key)
    model, tokenizer = load_model(None if source == "default" else source)
    return LoadedModel(source=source, model=model, tokenizer=tokenizer, facts=_facts(model))


def load_model_cached(source: str | None) -> LoadedModel:
    """The model for ``source`` ('default', a local directory or a hub id), loaded once per process.

    Raises ``obce_core.ModelLoadError`` (a ``ValueError`` whose message says how to fix it).
    """
    source = (source or "").strip() or "default"
    return _load_model(source, _source_stamp(source))


# ---------------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Reading the texts…", max_entries=32)
def _builtin_texts(data: str, task: str, n: int, seed: int) -> tuple[list, str]:
    from obce_core.cli import resolve_texts

    if data == "glue":
        split = glue.get_task(task).splits[1]  # the (first) validation split
        return resolve_texts(task=task, split=split, n=n, seed=seed)
    texts, label = resolve_texts(n=n, seed=seed)
    return texts, f"{label} ({len(texts)} of {len(corpus.demo_sentences())} sentences, seed {seed})"


def current_texts() -> tuple[list, str]:
    """(texts, a description of where they come from) for the current settings.

    An uploaded file's texts live in ``st.session_state["uploaded"]`` as ``(file name, texts)``.
    Raises ``ValueError`` (``TextsError``/``GlueDataError``) with the fix when they cannot be had.
    """
    ss = st.session_state
    data, n, seed = ss["data"], int(ss["n"]), int(ss["seed"])
    if data == "upload":
        uploaded = ss.get("uploaded")
        if not uploaded:
            raise corpus.TextsError(
                "No file uploaded yet: upload a .txt (one text per line) or a .csv/.tsv with a "
                "'text' or 'sentence' column, or choose the demo corpus."
            )
        name, texts = uploaded
        chosen = corpus.subsample(list(texts), n, seed)
        return chosen, f"uploaded file {name} ({len(chosen)} of {len(texts)} texts, seed {seed})"
    texts, label = _builtin_texts(data, ss["task"], n, seed)
    if data == "glue":
        label = f"{label} ({len(texts)} examples, seed {seed})"
    return texts, label


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredRun:
    """One scoring of one model on one set of texts (shared by sessions: read-only)."""

    scores: NeuronScores
    texts: tuple
    model_source: str
    data_label: str
    settings: dict
    facts: dict
    seconds: float
    key: str = field(default="", repr=False)


class _ScoreStore:
    """Scored runs of every session, newest last; evicts the oldest beyond a memory budget."""

    def __init__(self, max_entries: int = 8, max_bytes: float = 1.5e9):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, ScoredRun] = OrderedDict()
        self._by_signature: dict[str, str] = {}
        self._busy: dict[str, threading.Lock] = {}

    def get(self, key: str) -> ScoredRun | None:
        with self._lock:
            run = self._runs.get(key)
            if run is not None:
                self._runs.move_to_end(key)
            return run

    def by_signature(self, signature: str) -> ScoredRun | None:
        with self._lock:
            key = self._by_signature.get(signature)
        return self.get(key) if key else None

    def put(self, run: ScoredRun, signature: str | None) -> None:
        with self._lock:
            self._runs[run.key] = run
            self._runs.move_to_end(run.key)
            if signature:
                self._by_signature[signature] = run.key

            def size(r: ScoredRun) -> int:
                acts = r.scores.activations
                return int(acts.nbytes) if acts is not None else 0

            while len(self._runs) > 1 and (
                len(self._runs) > self.max_entries or sum(size(r) for r in self._runs.values()) > self.max_bytes
            ):
                old, _ = self._runs.popitem(last=False)
                self._by_signature = {s: k for s, k in self._by_signature.items() if k != old}

    def key_lock(self, key: str) -> threading.Lock:
        """One lock per key: two sessions asking for the same scores compute them once."""
        with self._lock:
            return self._busy.setdefault(key, threading.Lock())


@st.cache_resource(show_spinner=False)
def _score_store() -> _ScoreStore:
    return _ScoreStore()


def settings_signature() -> str | None:
    """The current scoring settings as one string (None for an uploaded file, which a new
    session cannot see): how a reloaded page finds the run it showed before."""
    ss = st.session_state
    if ss.get("data") == "upload":
        return None
    model = (ss.get("model") or "default").strip() or "default"
    keys = {k: ss.get(k) for k in ("data", "n", "seed", "token", "max_length")}
    if keys["data"] == "glue":
        keys["task"] = ss.get("task")
    return json.dumps({"model": model, "stamp": _source_stamp(model), **keys}, sort_keys=True, default=str)


_SCORING_KEYS = ("model", "data", "task", "n", "seed", "token", "max_length")


def _current_settings() -> dict:
    ss = st.session_state
    settings = {k: ss.get(k) for k in _SCORING_KEYS}
    if settings["data"] != "glue":
        settings.pop("task")
    if settings["data"] == "upload":
        settings["upload"] = ss.get("uploaded_id")
    return settings


def changed_settings(run: ScoredRun) -> list[str]:
    """Names of the scoring settings that differ between ``run`` and the current session."""
    now = _current_settings()
    names = [k for k in dict.fromkeys([*run.settings, *now]) if run.settings.get(k) != now.get(k)]
    return ["uploaded file" if k == "upload" else k for k in names]


def score_texts(
    loaded: LoadedModel,
    texts: Sequence,
    *,
    data_label: str,
    token: str = "cls",
    max_length: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> ScoredRun:
    """Score ``loaded`` on ``texts`` once per process (then obce_core's disk cache; then compute).

    ``progress(done, total)`` is called after every batch of a fresh computation. The returned
    run is shared with other sessions: read it, do not modify it. Raises ``ValueError`` for
    unusable settings (e.g. ``MemoryBudgetError`` for too many tokens).
    """
    texts = tuple(tuple(t) if isinstance(t, (list, tuple)) else t for t in texts)
    key_data = {"model": loaded.facts["fingerprint"], "texts": texts_fingerprint(list(texts)), "token": token, "max_length": max_length}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    store = _score_store()
    settings = _current_settings()
    signature = settings_signature()
    run = store.get(key)
    if run is None:
        with store.key_lock(key):
            run = store.get(key)
            if run is None:
                start = time.perf_counter()
                scores = score_model(
                    loaded.model, loaded.tokenizer, list(texts), token=token, max_length=max_length, progress=progress
                )
                run = ScoredRun(
                    scores=scores, texts=texts, model_source=loaded.source, data_label=data_label, settings=settings,
                    facts=loaded.facts, seconds=time.perf_counter() - start, key=key,
                )
    run = replace(run, data_label=data_label, settings=settings, model_source=loaded.source)
    store.put(run, signature)
    return run


def set_current_scored(run: ScoredRun) -> None:
    """Make ``run`` the scores every page of this session shows."""
    st.session_state["scored"] = run


def current_scored() -> ScoredRun | None:
    """This session's scored run; after a reload, one any session made with the same settings."""
    ss = st.session_state
    run = ss.get("scored")
    if run is not None:
        return run
    signature = settings_signature()
    run = _score_store().by_signature(signature) if signature else None
    if run is not None:
        ss["scored"] = run
    return run


def sample_labels(run: ScoredRun, width: int = 90) -> list[str]:
    """Hover text per sample: the (start of the) text each sample came from."""
    out = []
    cache: dict[int, str] = {}
    sample_text = run.scores.sample_text
    if sample_text is None:
        return [f"sample {k}" for k in range(run.scores.n_samples)]
    for k, t in enumerate(sample_text.tolist()):
        if t not in cache:
            text = run.texts[t]
            text = " [SEP] ".join(text) if isinstance(text, tuple) else str(text)
            cache[t] = (text[: width - 1] + "…") if len(text) > width else text
        out.append(f"#{t}: {cache[t]}")
    return out


# ---------------------------------------------------------------------------------------------
# Errors and page scaffolding
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What ``errors()`` saw: ``ok`` is False when the block raised (and an error was shown)."""

    ok: bool = True
    error: BaseException | None = None


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


@contextmanager
def errors(what: str, *, hint: str | None = None) -> Iterator[Outcome]:
    """Show an exception from the block as ``st.error`` instead of a traceback.

    ``ValueError``/``KeyError`` (obce's input errors, whose messages name the fix) and ``OSError``
    are shown as one message; anything else as a message plus a collapsed "Details" expander.
    Streamlit's own control flow (``st.stop``, ``st.rerun``) passes through.
    """
    outcome = Outcome()
    try:
        yield outcome
    except (ValueError, KeyError) as exc:
        outcome.ok, outcome.error = False, exc
        st.error(f"**{what}.** {_message(exc)}" + (f"\n\n{hint}" if hint else ""), icon=":material/error:")
    except OSError as exc:
        outcome.ok, outcome.error = False, exc
        st.error(
            f"**{what}.** {_message(exc)}. Check that the path exists and is readable and that the disk "
            "has room" + (f"; {hint}" if hint else "."),
            icon=":material/error:",
        )
    except Exception as exc:  # noqa: BLE001 - the last resort: a page must never show a bare traceback
        outcome.ok, outcome.error = False, exc
        st.error(
            f"**{what}.** Unexpected {type(exc).__name__}: {_message(exc)}. This is probably a bug in obce; "
            "please report it with the details below.",
            icon=":material/bug_report:",
        )
        with st.expander("Details"):
            st.code("".join(traceback.format_exception(exc)), language="text")


def run_page(main: Callable[[], None]) -> None:
    """Run a page: ``init_state()``, ``main()`` under ``errors()`` as the last resort, then
    ``sync_query_params()`` so the address bar shows the settings the page ended with."""
    init_state()
    try:
        with errors("This page stopped"):
            main()
    finally:
        sync_query_params()


def no_scores_ui(what: str = "This page") -> None:
    """The notice a results page shows before anything is scored, with a link to page 1."""
    st.info(
        f"Nothing is scored yet. {what} needs scores: choose a model and texts on **Model & data** and "
        "press **Score**."
    )
    st.page_link(PAGE_MODEL, label="Go to Model & data", icon=":material/tune:")
