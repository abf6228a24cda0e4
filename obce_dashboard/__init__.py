"""The obce Streamlit dashboard's shared helpers (``obce_dashboard.state``); the pages live in ``pages/``.

Unlike ``obce_core`` this package imports streamlit. Run the dashboard with ``streamlit run app.py``.
"""

__all__: list[str] = []
