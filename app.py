"""obce dashboard entry point: page navigation only (run with ``streamlit run app.py``).

The pages live in ``pages/``; what they share lives in ``obce_dashboard/``.
"""

import streamlit as st

st.set_page_config(page_title="obce", layout="wide")
st.navigation(
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
).run()
