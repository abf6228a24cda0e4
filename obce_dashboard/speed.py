"""The Prune page's measured speed: the built model against the original, timed on this machine.

The page's speed-up figure is a FLOPs estimate; on a click, ``measured_speed_ui`` times both
models in the background (``obce_core.training.step_timing.compare_latency``: interleaved rounds,
medians) on a batch of the scoring texts, and shows the measured ratio with the machine's load
before and after, so a busy machine is visible in the figure it produced.
"""

from __future__ import annotations

import streamlit as st

from obce_core.training.step_timing import compare_latency
from obce_dashboard.background import background_section

__all__ = ["ROUNDS", "measured_speed_ui"]

ROUNDS = 7
BATCH = 32


def _show(result: dict, estimate: float) -> None:
    a, b, c = st.columns(3)
    a.metric("Measured speed-up (this machine)", f"{result['speedup']:.2f}x",
             delta=f"FLOPs estimate {estimate:.2f}x", delta_color="off", delta_arrow="off",
             help="Original latency / pruned latency, each the median of the rounds; the two models alternate, so "
                  "a change of the machine's load touches both alike.")
    b.metric("Original, median ms per batch", f"{result['original_ms']:.1f}")
    c.metric("Pruned, median ms per batch", f"{result['pruned_ms']:.1f}")
    before, after = result["load_before"], result["load_after"]
    st.caption(f"{result['rounds']} interleaved rounds of one forward pass over {result['batch']} scoring texts (up to "
               f"{result['max_length']} tokens), after one warm-up pass each. Machine {before.describe()} before, "
               f"{after.load:.1f} after" + (" (busy: other work shares the cores, so both timings are slower and "
                                            "noisier)" if max(before.load, after.load) > before.cores * 0.5 else "")
               + ". Attention's softmax, LayerNorm and the embeddings do not shrink, so the measured gain is below the "
                 "FLOPs estimate.")


def measured_speed_ui(applied, loaded, run) -> None:
    """A button that measures ``applied.model`` against ``loaded.model`` (see the module docstring)."""
    ss = st.session_state
    key = ("speed", loaded.anatomy.fingerprint, applied.plan.to_json(), id(applied.model), run.key)
    if st.button("Measure the speed-up on this machine", icon=":material/speed:", key="measure_speed",
                 help=f"Times the built and the original model alternately ({ROUNDS} rounds, median); takes a few "
                      "seconds, in the background."):
        ss["_speed_key"] = key
    if ss.get("_speed_key") != key:
        return
    texts = list(run.texts)
    max_length = int(run.scores.settings.max_length)
    estimate = 1 / applied.report.flops_ratio_estimate

    def compute(report) -> dict:
        return compare_latency(loaded.model, applied.model, loaded.tokenizer, texts, rounds=ROUNDS, batch_size=BATCH,
                               max_length=max_length)

    background_section("speed", key, compute, lambda result: _show(result, estimate),
                       label=f"Timing the original and the pruned model ({ROUNDS} interleaved rounds)", context=key,
                       error="Could not measure the speed-up")
