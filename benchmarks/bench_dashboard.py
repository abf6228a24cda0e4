"""Dashboard responsiveness: a Prune slider move on the server, and the first page after `streamlit run`.

(a) Slider move (target <= 200 ms): the Prune page on the embedded all-MiniLM-L6-v2, scored on
    ``--n`` demo sentences, driven by Streamlit's AppTest in this process. One move =
    ``at.slider("FFN").set_value(v).run()``: the whole page script (widgets, ``select_units``,
    ``build_report``, both figures, their serialisation into the page's messages). The core part
    (``select_units`` + ``build_report``) and the figure part (both figures built and turned into
    JSON, as ``st.plotly_chart`` does) are timed separately on the same plans. Medians over
    ``--moves`` moves; the first move after opening the page is not counted (it hashes the weights).
(b) First page (target <= 10 s): ``streamlit run app.py`` in a fresh process, headless Chromium
    (Debian's /usr/bin/chromium through Playwright) opens the page; "usable" = the model's facts
    are shown and the Score button is enabled (the same definition as tests/test_browser.py).
    Repeated ``--starts`` times, each with a new server.

    python benchmarks/bench_dashboard.py                 # both parts
    python benchmarks/bench_dashboard.py --no-browser    # (a) only

Prints the figures; writes nothing.
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
FIRST_PAGE_TARGET_S = 10.0
CHROMIUM = Path("/usr/bin/chromium")


def _ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.1f} ms (min {min(xs):.1f}, max {max(xs):.1f}, n = {len(xs)})"


def bench_slider(n_texts: int, moves: int) -> dict:
    from streamlit.testing.v1 import AppTest

    from obce_core import load_model, plots
    from obce_core.pruning import PruningPlan, build_report, select_units

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.number_input(key="_w_n").set_value(n_texts).run()
    at.button[0].click().run()
    at.switch_page("pages/3_Prune.py").run()
    if at.exception or at.error:
        raise SystemExit(f"The Prune page failed: {[e.value for e in [*at.exception, *at.error]]}")
    values = [float(v) for v in range(31, 31 + moves + 1)]  # each move changes the plan
    page_ms = []
    for k, v in enumerate(values):
        start = time.perf_counter()
        at.slider(key="_w_ffn").set_value(v).run()
        if k:  # the first move is the warm-up
            page_ms.append((time.perf_counter() - start) * 1000)
    assert not at.exception, [e.value for e in at.exception]
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
    return {"page": page_ms, "core": core_ms, "figures": figure_ms, "neurons": len(scores.table)}


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="demo sentences scored before the slider moves (default 64)")
    parser.add_argument("--moves", type=int, default=15, help="timed slider moves (default 15)")
    parser.add_argument("--starts", type=int, default=3, help="server starts for the first-page time (default 3)")
    parser.add_argument("--no-browser", action="store_true", help="skip the first-page measurement")
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
    r = bench_slider(args.n, args.moves)
    page = statistics.median(r["page"])
    print(f"\n(a) Prune slider move on all-MiniLM-L6-v2 ({r['neurons']:,} scored neurons, {args.n} texts):")
    print(f"  whole page rerun (AppTest):                 {_ms(r['page'])}")
    print(f"  core: select_units + build_report:          {_ms(r['core'])}")
    print(f"  figures: heatmap + bars built and to JSON:  {_ms(r['figures'])}")
    print(f"  target <= {SLIDER_TARGET_MS:g} ms per move: {'met' if page <= SLIDER_TARGET_MS else 'NOT met'} ({page:.1f} ms)")

    if args.no_browser:
        return 0
    if not CHROMIUM.is_file():
        print(f"\n(b) skipped: {CHROMIUM} is missing (apt-get install -y chromium)")
        return 0
    starts = bench_first_page(args.starts)
    usable = [s["usable"] for s in starts]
    print(f"\n(b) `streamlit run app.py` to a usable first page (facts shown, Score enabled), {len(starts)} fresh servers:")
    for k, s in enumerate(starts, 1):
        print(f"  start {k}: server answering {s['answered']:.1f} s, title drawn {s['drawn']:.1f} s, usable {s['usable']:.1f} s")
    med = statistics.median(usable)
    print(f"  median {med:.1f} s; target <= {FIRST_PAGE_TARGET_S:g} s: {'met' if med <= FIRST_PAGE_TARGET_S else 'NOT met'}")
    print(f"\nload average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
