"""obce dashboard entry point: page navigation only (run with ``streamlit run app.py``).

The pages live in ``pages/``; what they share lives in ``obce_dashboard/state.py``. The Prune and
Compare pages are listed when their files exist.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent


def _page(path: str, title: str, icon: str, *, default: bool = False) -> st.Page | None:
    return st.Page(path, title=title, icon=icon, default=default) if (HERE / path).is_file() else None


st.set_page_config(page_title="obce", layout="wide")

sections = {
    "Explain": [
        _page("pages/1_Model_and_data.py", "Model & data", ":material/tune:", default=True),
        _page("pages/2_Persistence.py", "Persistence", ":material/scatter_plot:"),
    ],
    "Compress": [
        _page("pages/3_Prune.py", "Prune", ":material/content_cut:"),
        _page("pages/4_Compare.py", "Compare", ":material/compare_arrows:"),
    ],
    "Learn": [
        _page("pages/5_Learn.py", "Learn the method", ":material/school:"),
    ],
}
st.navigation({name: [p for p in pages if p] for name, pages in sections.items() if any(pages)}).run()
