"""Dashboard responsiveness (issue 12 targets): server time of a Persistence interaction and a Prune
slider move, and the first page after `streamlit run`.

(a) Prune slider move (target <= 200 ms): the Prune page on the embedded all-MiniLM-L6-v2 (no task
    head, so no evaluation), scored on ``--n`` demo sentences, driven by Streamlit's AppTest in this
    process. One move = ``at.slider(key="_w_ffn").set_value(v).run()``: the whole page script
    (widgets, ``select_units``, ``build_report``, both figures, their serialisation into the page's
    messages). The core part (``select_units`` + ``build_report``) and the figure part (both figures
    built and turned into JSON, as ``st.plotly_chart`` does) are timed separately on the same plans.
    Medians over ``--moves`` moves; the first move after opening the page is not counted (it hashes
    the weights).
    Since issue 24 the label-free evidence of the plan is computed in the background: the move
    returns at once, and the time until the evidence is ready is printed beside it.
(b) Prune slider move on a task model (target <= 200 ms): the same move for a task model
    (``--task-model``, an SST-2 classifier folder; needs a GLUE copy, ``--glue``), whose page also
    shows the plan's task score, computed in the background after the move (time printed).
(c) Persistence interaction (target <= 1 s): the Persistence page on the scores of (a); one
    interaction = another neuron typed in (``_w_neuron``) or another layer chosen (``_w_layer``),
    the whole page rerun.
(d) First page (target <= 8 s on a quiet machine): ``streamlit run app.py`` in a fresh process,
    headless Chromium (Debian's /usr/bin/chromium through Playwright) opens the page; "usable" = the
    model's facts are shown and the Score button is enabled (the same definition as
    tests/test_browser.py). Repeated ``--starts`` times, each with a new server.

(e) Slider move in Chromium (target <= 1 s to a settled page): a fresh server, the Prune page of the
    embedded model, one key press on the FFN slider: until the new parameter count shows, and until
    no script run and no stale element is left.
(f) With ``--estimates``: ``benchmarks/bench_estimates.py``, durations estimated before work
    starts against the measured ones (target: within 1.5x on a quiet machine).

    python benchmarks/bench_dashboard.py                 # (a)-(e)
    python benchmarks/bench_dashboard.py --no-browser    # (a)-(c) only
    python benchmarks/bench_dashboard.py --estimates     # and (f)

Prints the figures and the load average before and after; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing obce
    sys.path.insert(0, str(ROOT))

SLIDER_TARGET_MS = 200.0
PERSISTENCE_TARGET_MS = 1000.0
FIRST_PAGE_TARGET_S = 8.0
CHROMIUM = Path("/usr/bin/chromium")
TASK_MODEL = ROOT / "artifacts" / "task_models" / "sst2"
GLUE = ROOT.parent / "shared" / "data" / "glue"


def _ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.1f} ms (min {min(xs):.1f}, max {max(xs):.1f}, n = {len(xs)})"


def _scored_app(n_texts: int, model: str = "default"):
    """AppTest of the app with ``n_texts`` demo sentences scored by ``model``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params = {"model": model, "data": "demo", "n": str(n_texts)}
    at.run()
    next(b for b in at.button if b.label == "Score neurons").click().run()
    return at


def _page(at, path: str):
    at.switch_page(path).run()
    if at.exception or at.error:
        raise SystemExit(f"{path} failed: {[e.value for e in [*at.exception, *at.error]]}")
    return at


def _timed(at, moves) -> list[float]:
    """Milliseconds of each ``move(at)`` followed by the page's rerun."""
    out = []
    for move in moves:
        start = time.perf_counter()
        move(at).run()
        out.append((time.perf_counter() - start) * 1000)
    assert not at.exception, [e.value for e in at.exception]
    return out


def _settled(at) -> float:
    """Seconds until the background work the page started is done (what the page then polls in)."""
    from obce_dashboard.background import background

    start = time.perf_counter()
    if not background().wait_idle(600):
        raise SystemExit("the background evidence did not finish within 600 s")
    return time.perf_counter() - start


def bench_slider(at, moves: int) -> dict:
    from obce_core import load_model, plots
    from obce_core.pruning import PruningPlan, build_report, select_units

    _page(at, "pages/3_Prune.py")
    _settled(at)
    values = [float(v) for v in range(31, 31 + moves + 1)]  # each move changes the plan
    page_ms, ready_s = [], []
    for k, v in enumerate(values):
        ms = _timed(at, [lambda a, v=v: a.slider(key="_w_ffn").set_value(v)])[0]
        ready = _settled(at)  # the label-free evidence of the new plan, in the background
        if k:  # the first move hashes the weights
            page_ms.append(ms)
            ready_s.append(ready)
    scores = at.session_state["scored"].scores

    model, _ = load_model(device="cpu")
    select_units(scores, PruningPlan(ffn=30), model)  # warm-up: hashes the weights once per model
    core_ms, figure_ms = [], []
    for v in values[1:]:
        plan = PruningPlan(ffn=v, qk=30, v=30, skip_layers=1)
        start = time.perf_counter()
        report = build_report(model, select_units(scores, plan, model))
        mid = time.perf_counter()
        plots.pruning_units_figure(report.units, heads=model.config.num_attention_heads).to_json()
        plots.kept_per_layer_figure(report.kept_frame()).to_json()
        end = time.perf_counter()
        core_ms.append((mid - start) * 1000)
        figure_ms.append((end - mid) * 1000)
    return {"page": page_ms, "core": core_ms, "figures": figure_ms, "neurons": len(scores.table), "ready": ready_s}


def bench_task_model_moves(task_model: Path, n_texts: int, values: int) -> dict:
    """Slider moves on a task model's Prune page: the server's answer, then (untimed by the move)
    the plan's task score in the background."""
    at = _page(_scored_app(n_texts, str(task_model)), "pages/3_Prune.py")
    _settled(at)
    plan_values = [float(v) for v in range(32, 32 + 2 * values, 2)]
    page_ms, ready_s = [], []
    for v in plan_values:
        page_ms += _timed(at, [lambda a, v=v: a.slider(key="_w_ffn").set_value(v)])
        ready_s.append(_settled(at))
    at.run()
    if not any("score of this plan" in m.label for m in at.metric):
        raise SystemExit(f"{task_model}: the Prune page shows no task score (is it a task model? is the GLUE copy set?)")
    return {"page": page_ms, "ready": ready_s, "neurons": len(at.session_state["scored"].scores.table)}


def bench_persistence(at, moves: int) -> dict:
    """Another neuron, then another layer, on the Persistence page (first rerun after opening not counted)."""
    _page(at, "pages/2_Persistence.py")
    layers = len(at.selectbox(key="_w_layer").options)  # shown as L0, L1...; the values are 0, 1...
    layer_moves = [lambda a, k=k: a.selectbox(key="_w_layer").set_value((k + 1) % layers) for k in range(moves + 1)]
    neuron_moves = [lambda a, k=k: a.number_input(key="_w_neuron").set_value(37 * k + 5) for k in range(moves + 1)]
    return {"neuron": _timed(at, neuron_moves)[1:], "layer": _timed(at, layer_moves)[1:]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_first_page(starts: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        for _ in range(starts):
            port = _free_port()
            tmp = Path(tempfile.mkdtemp(prefix="obce-bench-"))
            env = {**os.environ, "OBCE_CACHE_DIR": str(tmp / "cache"), "OBCE_WORKSPACE": str(tmp / "ws"),
                   "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
            env.pop("OBCE_GLUE_DIR", None)
            cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
                   "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                while True:
                    try:
                        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                            if r.status == 200:
                                break
                    except OSError:
                        time.sleep(0.05)
                    if time.perf_counter() - started > 120:
                        raise SystemExit("streamlit did not answer within 120 s")
                answered = time.perf_counter() - started
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.get_by_role("heading", name="Model & data").wait_for()
                drawn = time.perf_counter() - started
                page.get_by_text("Hidden size").wait_for()
                page.wait_for_function("() => [...document.querySelectorAll('button')]"
                                       ".some(b => b.innerText.includes('Score neurons') && !b.disabled)")
                usable = time.perf_counter() - started
                page.close()
                out.append({"answered": answered, "drawn": drawn, "usable": usable})
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        browser.close()
    return out


def _server(env_extra: dict | None = None):
    """A fresh ``streamlit run app.py`` (with its own cache and workspace): (process, url)."""
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="obce-bench-"))
    env = {**os.environ, "OBCE_CACHE_DIR": str(tmp / "cache"), "OBCE_WORKSPACE": str(tmp / "ws"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **(env_extra or {})}
    env.pop("OBCE_GLUE_DIR", None)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.05)
        if time.perf_counter() - started > 120:
            proc.kill()
            raise SystemExit("streamlit did not answer within 120 s")


_METRIC_JS = ("() => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
              ".find(e => e.innerText.includes('Parameters after (whole model)')); return m ? m.innerText : ''; }")
_IDLE_JS = ("() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')"
            " && !document.querySelector('[data-stale=\"true\"]')")


def bench_browser_slider(n_texts: int, moves: int) -> dict:
    """Chromium: on the Prune page of the embedded model (``n_texts`` demo texts scored), one key press
    on the FFN slider; 'numbers' = the parameter count shows the new plan, 'settled' = no script run and
    no stale element left (the background evidence may still be computing: it is polled in a fragment)."""
    from playwright.sync_api import sync_playwright

    proc, url = _server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(f"{url}/?data=demo&n={n_texts}")
            page.get_by_role("button", name="Score neurons").click()
            page.get_by_text("Neurons with rf = 0").wait_for()
            page.wait_for_function(_IDLE_JS)
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Prune").first.click()
            page.get_by_text("Mean cosine to the original").first.wait_for()  # the first evidence is in
            page.wait_for_function(_IDLE_JS)
            thumb = page.locator('[data-testid="stSlider"]', has_text="FFN units removed").get_by_role("slider")
            numbers, settled = [], []
            for k in range(moves + 1):
                before = page.evaluate(_METRIC_JS)
                start = time.perf_counter()
                thumb.press("ArrowRight")
                page.wait_for_function(f"() => ({_METRIC_JS})() !== {before!r}")
                shown = time.perf_counter() - start
                page.wait_for_function(_IDLE_JS)
                idle = time.perf_counter() - start
                if k:  # the first move hashes the weights
                    numbers.append(shown)
                    settled.append(idle)
                page.get_by_text("Stale:").first.wait_for(state="detached")  # the evidence caught up
                page.wait_for_function(_IDLE_JS)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"numbers": numbers, "settled": settled}


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def _s(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n = {len(xs)})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="demo sentences scored before the moves (default 64)")
    parser.add_argument("--moves", type=int, default=15, help="timed slider moves and Persistence interactions (default 15)")
    parser.add_argument("--task-model", type=Path, default=TASK_MODEL, help=f"SST-2 task model for (b) (default {TASK_MODEL})")
    parser.add_argument("--glue", type=Path, default=GLUE, help=f"GLUE copy for (b) (default {GLUE})")
    parser.add_argument("--starts", type=int, default=3, help="server starts for the first-page time (default 3)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurements (d), (e)")
    parser.add_argument("--estimates", action="store_true",
                        help="also (f): estimated against measured durations (benchmarks/bench_estimates.py; minutes)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.pop("OBCE_GLUE_DIR", None)
    tmp = Path(tempfile.mkdtemp(prefix="obce-bench-"))
    os.environ["OBCE_CACHE_DIR"] = str(tmp / "cache")
    os.environ["OBCE_WORKSPACE"] = str(tmp / "ws")

    import torch

    load = os.getloadavg()
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    at = _scored_app(args.n)
    r = bench_slider(at, args.moves)
    page = statistics.median(r["page"])
    print(f"\n(a) Prune slider move on all-MiniLM-L6-v2 ({r['neurons']:,} scored neurons, {args.n} texts):")
    print(f"  whole page rerun (AppTest):                 {_ms(r['page'])}")
    print(f"  core: select_units + build_report:          {_ms(r['core'])}")
    print(f"  figures: heatmap + bars built and to JSON:  {_ms(r['figures'])}")
    print(f"  label-free evidence of the new plan, in the background after the move: {_s(r['ready'])}")
    print(f"  target <= {SLIDER_TARGET_MS:g} ms per move: {_verdict(page, SLIDER_TARGET_MS)} ({page:.1f} ms)")

    if args.task_model.is_dir() and args.glue.is_dir():
        task_model = args.task_model.resolve()
        os.environ["OBCE_GLUE_DIR"] = str(args.glue)
        os.environ["OBCE_MODEL_DIRS"] = str(task_model.parent)
        c = bench_task_model_moves(task_model, args.n, max(args.moves // 2, 3))
        med = statistics.median(c["page"])
        print(f"\n(b) Prune slider move on the task model {args.task_model.name} ({c['neurons']:,} neurons):")
        print(f"  whole page rerun (AppTest):  {_ms(c['page'])}")
        print(f"  the plan's task score (256 dev examples), in the background after the move: {_s(c['ready'])}")
        print(f"  target <= {SLIDER_TARGET_MS:g} ms per move: {_verdict(med, SLIDER_TARGET_MS)} ({med:.1f} ms)")
        os.environ.pop("OBCE_GLUE_DIR")
    else:
        print(f"\n(b) skipped: needs the task model folder {args.task_model} and a GLUE copy at {args.glue}")

    p = bench_persistence(at, args.moves)
    worst = max(statistics.median(p["neuron"]), statistics.median(p["layer"]))
    print(f"\n(c) Persistence page interaction (whole page rerun, AppTest), {args.n} texts:")
    print(f"  another neuron typed in:  {_ms(p['neuron'])}")
    print(f"  another layer chosen:     {_ms(p['layer'])}")
    print(f"  target <= {PERSISTENCE_TARGET_MS:g} ms per interaction: {_verdict(worst, PERSISTENCE_TARGET_MS)} "
          f"(slower median {worst:.1f} ms)")

    if not args.no_browser and not CHROMIUM.is_file():
        print(f"\n(d), (e) skipped: {CHROMIUM} is missing (apt-get install -y chromium)")
    elif not args.no_browser:
        starts = bench_first_page(args.starts)
        usable = [s["usable"] for s in starts]
        print(f"\n(d) `streamlit run app.py` to a usable first page (facts shown, Score enabled), {len(starts)} fresh servers:")
        for k, s in enumerate(starts, 1):
            print(f"  start {k}: server answering {s['answered']:.1f} s, title drawn {s['drawn']:.1f} s, usable {s['usable']:.1f} s")
        med = statistics.median(usable)
        print(f"  median {med:.1f} s; target <= {FIRST_PAGE_TARGET_S:g} s on a quiet machine: {_verdict(med, FIRST_PAGE_TARGET_S)}")
        b = bench_browser_slider(args.n, max(args.moves // 3, 3))
        print(f"\n(e) Chromium, Prune page, one key press on the FFN slider ({args.n} texts scored):")
        print(f"  new parameter count shown: {_s(b['numbers'])}")
        print(f"  page settled (no run, nothing stale; the evidence follows in a fragment): {_s(b['settled'])}")
        med = statistics.median(b["settled"])
        print(f"  target <= 1 s to a settled page: {_verdict(med, 1.0)} ({med:.2f} s)")
    if args.estimates:
        from benchmarks.bench_estimates import main as estimates_main

        estimates_main(["--glue", str(args.glue)])
    print(f"\nload average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
