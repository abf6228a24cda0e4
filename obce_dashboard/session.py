"""What the dashboard keeps between runs of a page: the loaded models, the texts, the scores.

Models live in ``st.cache_resource`` (one copy for every session, used by all of them at once:
never modify ``LoadedModel.model`` in place, work on a copy). Scored runs live in a process-wide
store (``ScoredRun``, also shared and read-only) on top of obce_core's on-disk score cache;
``current_scored()`` gives the session's latest run, or, after a reload, a run another session
made with the same settings, or, on a restarted server, the scores of those settings from the disk
cache (a shared link keeps working). A model source from the URL or a text box goes through
``obce_dashboard.paths.check_model_source`` before anything is read from disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import streamlit as st

from obce_core import NeuronScores, load_model, score_model
from obce_core import glue
from obce_core.anatomy import ModelAnatomy, model_anatomy
from obce_core.forward import text_label
from obce_core.scoring import TextsError, cached_scores, demo_sentences, resolve_texts, subsample, texts_fingerprint
from obce_dashboard.paths import check_model_source

__all__ = [
    "LoadedModel",
    "load_model_cached",
    "glue_tasks_available",
    "current_texts",
    "ScoredRun",
    "score_texts",
    "set_current_scored",
    "current_scored",
    "settings_signature",
    "changed_settings",
    "sample_labels",
]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model shared by every session (never modify ``model`` in place; ``copy.deepcopy`` it)."""

    source: str
    model: Any
    tokenizer: Any
    anatomy: ModelAnatomy


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


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_model(source: str, stamp: str) -> LoadedModel:  # noqa: ARG001  (stamp is part of the cache key)
    model, tokenizer = load_model(source)
    return LoadedModel(source=source, model=model, tokenizer=tokenizer, anatomy=model_anatomy(model))


def load_model_cached(source: str | None) -> LoadedModel:
    """The model for ``source`` ('default', an allowed local directory or a hub id), loaded once
    per process. Raises ``ValueError`` (``ModelLoadError``, or the refusal of a path outside the
    folders this server offers) whose message says how to fix it."""
    source = check_model_source(source)
    return _load_model(source, _source_stamp(source))


# ---------------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------------


def glue_tasks_available() -> tuple[list[str], str]:
    """(GLUE task names the page can offer, where they come from).

    A local GLUE copy (``OBCE_GLUE_DIR``) first; else every task from the hub unless it is
    switched off (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``); else none.
    """
    local = glue.available_local_tasks()
    if local:
        return local, f"local GLUE copy at {glue.default_glue_dir()}"
    if glue.hub_offline():
        return [], "no local GLUE copy (set OBCE_GLUE_DIR) and the hub is switched off (HF_HUB_OFFLINE)"
    return list(glue.TASKS), f"the Hugging Face hub ({glue.HUB_DATASET}; needs network)"


@st.cache_data(show_spinner="Reading the texts…", max_entries=32)
def _builtin_texts(data: str, task: str, n: int, seed: int) -> tuple[list, str]:
    if data == "glue":
        split = glue.get_task(task).splits[1]  # the (first) validation split
        return resolve_texts(task=task, split=split, n=n, seed=seed)
    texts, label = resolve_texts(n=n, seed=seed)
    return texts, f"{label} ({len(texts)} of {len(demo_sentences())} sentences, seed {seed})"


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
            raise TextsError(
                "No file uploaded yet: upload a .txt (one text per line) or a .csv/.tsv with a "
                "'text' or 'sentence' column, or choose the demo corpus."
            )
        name, texts = uploaded
        chosen = subsample(list(texts), n, seed)
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


_SCORING_KEYS = ("model", "data", "task", "n", "seed", "token", "max_length")


def settings_signature() -> str | None:
    """The current scoring settings as one string (None for an uploaded file, which a new
    session cannot see): how a reloaded page finds the run it showed before."""
    ss = st.session_state
    if ss.get("data") == "upload":
        return None
    try:
        model = check_model_source(ss.get("model"))
    except ValueError:  # a refused path: nothing of it is read, and no run matches it
        return None
    keys = {k: ss.get(k) for k in _SCORING_KEYS[1:]}
    if keys["data"] != "glue":
        keys.pop("task")
    return json.dumps({"model": model, "stamp": _source_stamp(model), **keys}, sort_keys=True, default=str)


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


def _as_tuple(texts: Sequence) -> tuple:
    return tuple(tuple(t) if isinstance(t, (list, tuple)) else t for t in texts)


def _run_key(loaded: LoadedModel, texts: tuple, token: str, max_length: int) -> str:
    key_data = {"model": loaded.anatomy.fingerprint, "texts": texts_fingerprint(list(texts)), "token": token,
                "max_length": max_length}
    return hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]


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
    texts = _as_tuple(texts)
    key = _run_key(loaded, texts, token, max_length)
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
                run = ScoredRun(scores=scores, texts=texts, model_source=loaded.source, data_label=data_label,
                                settings=settings, seconds=time.perf_counter() - start, key=key)
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
    if run is None and signature:
        run = _restore_from_disk(signature)
    if run is not None:
        ss["scored"] = run
    return run


def _restore_from_disk(signature: str) -> ScoredRun | None:
    """The run of the current settings from obce_core's disk score cache, computing nothing: how a
    link opened on a restarted server shows the scores it was made with. Tried once per session
    and settings; None when they are not cached (the page then asks to score)."""
    ss = st.session_state
    tried = ss.setdefault("_restore_tried", set())
    if signature in tried:
        return None
    tried.add(signature)
    try:
        loaded = load_model_cached(ss.get("model"))
        texts, label = current_texts()
        texts = _as_tuple(texts)
        token, max_length = ss["token"], int(ss["max_length"])
        scores = cached_scores(loaded.model, list(texts), token=token, max_length=max_length)
    except (ValueError, OSError, KeyError):  # the page that scores shows these errors with their fix
        return None
    if scores is None:
        return None
    run = ScoredRun(scores=scores, texts=texts, model_source=loaded.source, data_label=label,
                    settings=_current_settings(), seconds=0.0, key=_run_key(loaded, texts, token, max_length))
    _score_store().put(run, signature)
    return run


def sample_labels(run: ScoredRun, width: int = 90) -> list[str]:
    """Hover text per sample: the (start of the) text each sample came from."""
    out = []
    cache: dict[int, str] = {}
    sample_text = run.scores.sample_text
    if sample_text is None:
        return [f"sample {k}" for k in range(run.scores.n_samples)]
    for t in sample_text.tolist():
        if t not in cache:
            cache[t] = text_label(run.texts[t], width)
        out.append(f"#{t}: {cache[t]}")
    return out
