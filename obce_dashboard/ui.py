"""Page scaffolding: page paths, error display and the notice before anything is scored.

A page defines ``main()`` and ends with ``run_page(main)``, which gives every setting its value
(``settings.init_state()``), shows any error raised by ``main`` and writes the settings back to
the URL last.

``with errors("Could not load the model") as outcome: ...`` shows any ``ValueError``,
``OSError`` or ``KeyError`` (obce's user errors; their messages say how to fix them) as
``st.error``, anything else as ``st.error`` plus a collapsed "Details" expander; never a bare
traceback. ``outcome.ok`` says whether the block finished.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from obce_dashboard.navigation import ensure_app_navigation
from obce_dashboard.settings import init_state, sync_query_params

__all__ = ["PAGE_MODEL", "PAGE_PERSISTENCE", "PAGE_PRUNE", "PAGE_COMPARE", "Outcome", "errors", "run_page",
           "no_scores_ui"]

PAGE_MODEL = "pages/1_Model_and_data.py"
PAGE_PERSISTENCE = "pages/2_Persistence.py"
PAGE_PRUNE = "pages/3_Prune.py"
PAGE_COMPARE = "pages/4_Compare.py"


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
    ``sync_query_params()`` so the address bar shows the settings the page ended with. A page that
    Streamlit ran without ``app.py`` (a deep link first after a restart) reruns through it first."""
    ensure_app_navigation()
    init_state()
    try:
        with errors("This page stopped"):
            main()
    finally:
        sync_query_params()


def no_scores_ui(what: str = "This page") -> None:
    """The notice a results page shows before anything is scored, with a link to page 1. A link
    that names an uploaded file (``data=upload``) is told why it cannot be restored and what to do."""
    if st.session_state.get("data") == "upload" and not st.session_state.get("uploaded"):
        st.warning(
            "This link asks for **an uploaded file** (`data=upload`). Uploads stay in the browser session "
            "that made them and are not stored on the server, so a link cannot bring them back. Upload the same "
            "file again on **Model & data** (the link's `n` and `seed` then pick the same texts) and press "
            "**Score**; or share a link made with the demo corpus or a GLUE task, which any server can restore.",
            icon=":material/link_off:",
        )
        st.page_link(PAGE_MODEL, label="Go to Model & data", icon=":material/upload_file:")
        return
    st.info(
        f"Nothing is scored yet. {what} needs scores: choose a model and texts on **Model & data** and "
        "press **Score**."
    )
    st.page_link(PAGE_MODEL, label="Go to Model & data", icon=":material/tune:")
