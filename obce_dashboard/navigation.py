"""The app's navigation (its sections and pages), and the bootstrap that keeps it on a deep link.

Why the bootstrap: Streamlit still supports its first multipage layout, where every file in a
``pages/`` folder next to the main script becomes a page. Until some session has run
``st.navigation`` in this server process, it treats ``app.py`` + ``pages/`` that way: a visitor
whose first request after a (re)start is a deep link (``/Prune?...``) gets that page file run alone,
with Streamlit's automatic navigation (an "app" entry, no sections) and without ``app.py``'s wide
layout, for the whole session. ``ui.run_page`` (and Model & data, before its title) calls
:func:`ensure_app_navigation` first: when Streamlit ran the page without ``app.py``, it runs
``app.py``'s layout and navigation there and then (which switches that automatic mode off for the
process), and they run the same page. (Streamlit's AppTest resets that mode before every run, so
under AppTest this happens on every rerun.)
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

__all__ = ["app_navigation", "ensure_app_navigation", "run_app"]

# Labels wrap instead of ending in "…": in a column a quarter of the page wide, Streamlit cut metric
# labels ("Parameters after (whole m…") and headings at 1280 px.
WRAP_LABELS_CSS = """<style>
[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
[data-testid="stMetricLabel"] { height: auto !important; min-height: 1.5rem; }
h1, h2, h3, h4 { overflow-wrap: anywhere; }
</style>"""


def app_navigation():
    """``st.navigation`` with the app's sections; returns the page to run."""
    return st.navigation(
        {
            "Explain": [
                st.Page("pages/1_Model_and_data.py", title="Model & data", icon=":material/tune:", default=True),
                st.Page("pages/2_Persistence.py", title="Persistence", icon=":material/scatter_plot:"),
                st.Page("pages/6_Layer_topology.py", title="Layer topology", icon=":material/hub:"),
            ],
            "Compress": [
                st.Page("pages/3_Prune.py", title="Prune", icon=":material/content_cut:"),
                st.Page("pages/4_Compare.py", title="Compare", icon=":material/compare_arrows:"),
            ],
            "Learn": [
                st.Page("pages/5_Learn.py", title="Learn the method", icon=":material/school:"),
            ],
        }
    )


def run_app() -> None:
    """What ``app.py`` does: the wide layout, the navigation, and the chosen page."""
    st.set_page_config(page_title="obce", layout="wide")
    st.html(WRAP_LABELS_CSS)  # style only: Streamlit adds it to the page without taking room
    app_navigation().run()


def ensure_app_navigation() -> None:
    """Called by every page before anything else: a page file that Streamlit ran without
    ``app.py`` (see the module docstring) reruns through it."""
    # Streamlit's own switch (a class attribute, not a documented API): True until some session
    # has called st.navigation in this process. app.py calls it before any page of ours runs, so a
    # page that finds it True was run without app.py. A Streamlit without it never does this.
    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    # In place, not by a rerun (which would drop a button's click): app.py's layout and navigation
    # (which ends Streamlit's automatic pages/ mode) run this same page inside them; this outer run
    # of the page then has nothing left to do.
    run_app()
    st.stop()
