"""Learn: 0-D persistence on a small point cloud, and how it turns into "this neuron matters"."""

import numpy as np
import pandas as pd
import streamlit as st

from obce_core import merge_events, persistence_diagram, plots, rf
from obce_dashboard import settings, ui

# The app's convention everywhere (gudhi's): a filtration value is an edge LENGTH, and rf is the
# length of the last merge. Here balls of radius r grow around the points; two touch when their
# centres are 2r apart, so the slider's radius r is the filtration value (length) 2r.
CONVENTION = "length"
DIMS = {1: "1-D (one neuron's outputs)", 2: "2-D (two neurons together)"}
PLAY_STEPS = 40  # frames from radius 0 to the top of the range
PLAY_EVERY_S = 0.5


def make_cloud(dim: int, n: int, seed: int) -> pd.DataFrame:
    """A seeded cloud of ``n`` points in two (1-D) or three (2-D) loose clusters, rounded for editing;
    the index is the point's number, as the chart labels it."""
    rng = np.random.default_rng(seed)
    k = 2 if dim == 1 else 3
    centres = rng.uniform(0.0, 6.0, size=(k, dim))
    which = np.arange(n) % k
    pts = centres[which] + rng.normal(0.0, 0.45, size=(n, dim))
    return pd.DataFrame(np.round(pts, 2), columns=["x", "y"][:dim], index=pd.RangeIndex(n, name="point"))


def point_numbers(edited: pd.DataFrame) -> list[str]:
    """The number of each remaining point as the editor shows it; rows added in the editor (no
    number yet) get the next free numbers, so the table and the chart always agree."""
    index = list(edited.index)
    taken = {int(v) for v in index if isinstance(v, (int, np.integer))}
    fresh = iter(k for k in range(len(index) + max(taken, default=-1) + 2) if k not in taken)
    return [str(int(v)) if isinstance(v, (int, np.integer)) else str(next(fresh)) for v in index]


def cloud_ui() -> tuple[np.ndarray, list[str]]:
    a, b, c = st.columns([2, 2, 1])
    with a:
        dim = st.radio("Cloud", list(DIMS), format_func=DIMS.get, horizontal=True, key="learn_dim", persist_state="session")
    with b:
        n = st.slider("Points", min_value=3, max_value=30, value=8, key="learn_n", persist_state="session")
    with c:
        seed = st.number_input("Seed", min_value=0, max_value=10_000, value=0, key="learn_seed", persist_state="session")
    with st.expander("Edit the points (add, change or delete rows; the point numbers are the chart's labels)"):
        edited = st.data_editor(
            make_cloud(dim, n, int(seed)), key=f"learn_points_{dim}_{n}_{seed}", num_rows="dynamic", hide_index=False,
            column_config={"point": st.column_config.NumberColumn("point", disabled=True),
                           **{c: st.column_config.NumberColumn(format="%.2f", step=0.01) for c in ("x", "y")}},
        )
    edited = edited.dropna()
    names = point_numbers(edited)
    pts = edited.to_numpy(dtype=float)
    return (pts[:, 0] if dim == 1 else pts), names


def radius_range(rf_length: float) -> float:
    """The slider's top: a little past the radius of the last merge (rf / 2)."""
    return float(max(np.ceil(rf_length / 2 * 1.3 * 100) / 100, 0.1))


def follow_range(top: float) -> None:
    """When the points move and the range changes, keep the radius at the same place in the range
    (a third of the way stays a third of the way), instead of at a value that now means nothing."""
    ss = st.session_state
    old = ss.get("_learn_top")
    if old and old != top and ss.get("learn_radius") is not None:
        ss["learn_radius"] = round(min(float(ss["learn_radius"]) * top / old, top), 4)
    ss["_learn_top"] = top


def radius_ui(top: float, rf_length: float) -> float:
    st.session_state.setdefault("learn_radius", round(min(rf_length / 2 * 0.35, top), 3))
    # Bound through settings.widget: the radius survives page switches.
    return settings.widget(st.slider, "Radius r", "learn_radius", min_value=0.0, max_value=top, step=top / 200,
                           format="%.3f", help="Grow a ball of radius r around every point; balls touch (and their "
                                               "components join) when their centres are 2r apart.")


def _toggle_play() -> None:
    ss = st.session_state
    ss["learn_playing"] = not ss.get("learn_playing", False)
    if ss["learn_playing"] and ss.get("learn_radius", 0.0) >= ss.get("_learn_top", 0.0):
        ss["learn_radius"] = 0.0  # play again from the start


def _advance(top: float) -> None:
    """One frame of the sweep: the radius grows by a step; at the top of the range it stops."""
    ss = st.session_state
    r = min(float(ss.get("learn_radius") or 0.0) + top / PLAY_STEPS, top)
    ss["learn_radius"] = round(r, 4)
    if r >= top:
        ss["learn_playing"] = False


def view(pts: np.ndarray, names: list[str], top: float) -> None:
    """Everything that depends on the radius (a fragment: a frame of the sweep redraws only this)."""
    playing = st.session_state.get("learn_playing", False)
    if playing:
        _advance(top)
    events = merge_events(pts, convention=CONVENTION)
    diagram = persistence_diagram(pts, convention=CONVENTION)
    rf_length = rf(pts, convention=CONVENTION)
    r = radius_ui(top, rf_length)
    length = 2 * r
    merged = sum(1 for _, _, v in events if v <= length)
    m = st.columns(4)
    m[0].metric("Points", len(pts))
    m[1].metric("Components at r", len(pts) - merged)
    m[2].metric("Merges so far", f"{merged} of {len(events)}")
    m[3].metric("rf (last merge)", f"{rf_length:.3f}", delta="reached" if length >= rf_length else None, delta_color="off",
                help="rf as on every other page: the length (gap) at which the last two components join.")
    st.caption(f"rf = **{rf_length:.3f}** as a length (the gap, as on the other pages) = 2 x the radius of the last "
               f"merge, **{rf_length / 2:.3f}**. Now: radius r = {r:.3f}, length 2r = {length:.3f}.")
    left, right = st.columns([3, 2])
    n_comp = len(pts) - merged
    title = f"r = {r:.3f}: {n_comp} component{'s' if n_comp != 1 else ''} (radius r; length 2r = {length:.3f})"
    with left:
        st.plotly_chart(plots.learn_figure(pts, length, convention=CONVENTION, labels=names, title=title), key="learn_cloud")
    with right:
        st.plotly_chart(plots.barcode_figure(diagram, radius=length, rf=rf_length, title="barcode up to 2r (lengths)",
                                             height=260), key="learn_barcode")
        st.plotly_chart(plots.diagram_figure(diagram, radius=length, radius_label=f"2r = {length:.3f}", rf=rf_length,
                                             title="diagram up to 2r (lengths)", height=300), key="learn_diagram")
    with st.expander("Merge events (the minimum spanning tree, in order)"):
        st.dataframe(
            pd.DataFrame([{"merge": k + 1, "points": f"{names[i]} + {names[j]}", "at length": v, "at radius": v / 2,
                           "happened": v <= length} for k, (i, j, v) in enumerate(events)]),
            hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("at length", "at radius")},
        )
    if playing and not st.session_state.get("learn_playing"):
        st.rerun(scope="app")  # the sweep reached the top: stop the timer


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
    st.caption("Every page reports filtration values as lengths (gudhi's convention): rf is the gap itself. Balls of "
               "radius r touch when their centres are 2r apart, so the radius at the last merge is rf / 2.")


def main() -> None:
    st.title("Learn: persistence in one picture")
    st.markdown("Grow a ball around every point. Each point starts as its own component; components **merge** when "
                "their balls touch. The length 2r at each merge is a *death* in the persistence diagram.")
    pts, names = cloud_ui()
    if len(pts) < 2:
        st.warning("Keep at least two points in the table: persistence measures how points merge.")
        return
    top = radius_range(rf(pts, convention=CONVENTION))
    follow_range(top)
    playing = st.session_state.get("learn_playing", False)
    st.button("Stop" if playing else "Play: grow the radius", icon=":material/stop:" if playing else ":material/play_arrow:",
              key="learn_play", on_click=_toggle_play,
              help="Sweeps the radius from 0 to the end of the range, one step every half second.")
    st.fragment(view, run_every=PLAY_EVERY_S if playing else None)(pts, names, top)
    explain_ui()


ui.run_page(main)
