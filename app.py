"""obce dashboard entry point: page navigation only (run with ``streamlit run app.py``).

The pages live in ``pages/``; what they share lives in ``obce_dashboard/``; the navigation's
sections are in ``obce_dashboard/navigation.py``.
"""

from obce_dashboard.navigation import run_app

run_app()
