"""Learn: 0-D persistence on a small point cloud, and how it turns into "this neuron matters"."""

import numpy as np
import pandas as pd
import streamlit as st

from obce_core import merge_events, persistence_diagram, plots, rf
from obce_dashboard import settings, ui

# Balls of radius r touch when their centres are 2r apart; the scores on the other pages use the
# edge length (gudhi's convention), which is twice this radius.
CONVENTION = "radius"
DIMS = {1: "1-D (one neuron's outputs)", 2: "2-D (two neurons together)"}


def make_cloud(dim: int, n: int, seed: int) -> pd.DataFrame:
    """A seeded cloud of ``n`` points in two (1-D) or three (2-D) loose clusters, rounded for editing."""
    rng = np.random.default_rng(seed)
    k = 2 if dim == 1 else 3
    centres = rng.uniform(0.0, 6.0, size=(k, dim))
    which = np.arange(n) % k
    pts = centres[which] + rng.normal(0.0, 0.45, size=(n, dim))
    return pd.DataFrame(np.round(pts, 2), columns=["x", "y"][:dim])


def cloud_ui() -> np.ndarray:
    a, b, c = st.columns([2, 2, 1])
    with a:
        dim = st.radio("Cloud", list(DIMS), format_func=DIMS.get, horizontal=True, key="learn_dim", persist_state="session")
    with b:
        n = st.slider("Points", min_value=3, max_value=30, value=8, key="learn_n", persist_state="session")
    with c:
        seed = st.number_input("Seed", min_value=0, max_value=10_000, value=0, key="learn_seed", persist_state="session")
    with st.expander("Edit the points (add, change or delete rows)"):
        edited = st.data_editor(
            make_cloud(dim, n, int(seed)), key=f"learn_points_{dim}_{n}_{seed}", num_rows="dynamic",
            column_config={c: st.column_config.NumberColumn(format="%.2f", step=0.01) for c in ("x", "y")},
        )
    pts = edited.dropna().to_numpy(dtype=float)
    return pts[:, 0] if dim == 1 else pts


def radius_ui(rf_value: float) -> float:
    top = float(max(np.ceil(rf_value * 1.3 * 100) / 100, 0.1))
    st.session_state.setdefault("learn_radius", round(min(rf_value * 0.35, top), 3))
    # Bound through settings.widget: the radius survives new points, a new range and page switches.
    return settings.widget(st.slider, "Radius r", "learn_radius", min_value=0.0, max_value=top, step=top / 200, format="%.3f",
                        help="Grow a ball of radius r around every point; touching balls join into one component.")


def explain_ui() -> None:
    st.subheader("From a cloud to “this neuron matters”")
    st.markdown(
        "Each neuron gives one number per text, so a dataset turns it into a 1-D cloud like the one above. "
        "Its **rf** is the filtration value at which the last two pieces join: the largest gap between neighbouring "
        "outputs. A neuron whose outputs barely spread merges at a tiny radius: **low rf**, it tells no texts apart, "
        "it carries little information, and it is **pruned first**; a neuron whose outputs fall into well-separated "
        "groups keeps a long bar and is kept. The paper prunes query, key, value and FFN neurons this way and keeps "
        "the outputs that feed a LayerNorm (attention output and FFN output) whole."
    )
    st.markdown(
        "**The method in one minute**\n"
        "1. Feed a few hundred sentences through BERT and record every neuron's output at [CLS].\n"
        "2. For each neuron, compute the 0-D persistent homology of its outputs: sort them, the gaps are the deaths.\n"
        "3. rf = the largest gap = the value at which all components have merged.\n"
        "4. In every layer and component, remove the lowest-rf neurons (say 30 %), then (optionally) fine-tune."
    )
    st.caption("Here balls of radius r touch when their centres are 2r apart, so the radius at the last merge is half "
               "the gap; the other pages report the gap itself (the edge-length convention of gudhi).")


def main() -> None:
    st.title("Learn: persistence in one picture")
    st.markdown("Grow a ball around every point. Each point starts as its own component; components **merge** when "
                "their balls touch. The radius of each merge is a *death* in the persistence diagram.")
    pts = cloud_ui()
    if len(pts) < 2:
        st.warning("Keep at least two points in the table: persistence measures how points merge.")
        return
    events = merge_events(pts, convention=CONVENTION)
    diagram = persistence_diagram(pts, convention=CONVENTION)
    rf_value = rf(pts, convention=CONVENTION)
    r = radius_ui(rf_value)
    merged = sum(1 for _, _, v in events if v <= r)
    m = st.columns(4)
    m[0].metric("Points", len(pts))
    m[1].metric("Components at r", len(pts) - merged)
    m[2].metric("Merges so far", f"{merged} of {len(events)}")
    m[3].metric("rf (last merge)", f"{rf_value:.3g}", delta="reached" if r >= rf_value else None, delta_color="off")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(plots.learn_figure(pts, r, convention=CONVENTION))
    with right:
        st.plotly_chart(plots.barcode_figure(diagram, radius=r, rf=rf_value, title="barcode up to r", height=260))
        st.plotly_chart(plots.diagram_figure(diagram, radius=r, rf=rf_value, title="diagram up to r", height=300))
    with st.expander("Merge events (the minimum spanning tree, in order)"):
        st.dataframe(
            pd.DataFrame([{"merge": k + 1, "points": f"{i} + {j}", "at radius": v, "happened": v <= r}
                          for k, (i, j, v) in enumerate(events)]),
            hide_index=True, column_config={"at radius": st.column_config.NumberColumn(format="%.3f")},
        )
    explain_ui()


ui.run_page(main)
