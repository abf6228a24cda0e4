"""Helpers of the real-browser walk (tests/test_browser.py): what the servers' workspace starts with
(stored results, a tiny task model and its sweep), a `streamlit run app.py` server on a free port,
bounded waits for Streamlit's reruns and plotly's drawing, and page screenshots.

Every wait here has a limit: a walk that stalls fails with the page's picture, it never hangs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM", "CHROMIUM_ARGS", "README_SHOTS", "README_SHOT_NAMES", "SHOTS", "TIMEOUT_MS", "assert_clean", "cut_off_texts",
    "goto_page", "server_env",
    "seed_results", "seed_task_model", "shot", "streamlit_server", "wait_idle", "wait_plots",
]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = ROOT / "artifacts" / "screenshots"
# The README's pictures: copied from SHOTS into docs/screenshots when OBCE_README_SHOTS=1 is set
# (so an ordinary test run leaves the tracked files alone).
README_SHOTS = ROOT / "docs" / "screenshots"
README_SHOT_NAMES = ("1_model_and_data", "2_persistence", "3_prune", "3_prune_evidence", "4_compare", "5_learn",
                     "6_layer_topology")
TIMEOUT_MS = 120_000
SERVER_START_S = 60
STOP_S = 30  # a server stops in about 4 s on SIGTERM; generous for a busy machine


def seed_results(root: Path) -> None:
    """Two plans on two tasks in the results store, for the Compare page's charts."""
    from obce_core.pruning import PruningPlan
    from obce_core.results import STORE_FILE, ResultsStore
    from obce_core.training import Recipe, RunResult

    store = ResultsStore(root / STORE_FILE)
    recipe = Recipe.for_task("sst2").to_dict()
    runs = [("original", None, 22_713_216, {"sst2": 0.86, "rte": 0.58})]
    for p, params, scores in ((30, 20_113_456, {"sst2": 0.84, "rte": 0.57}), (50, 18_282_816, {"sst2": 0.80, "rte": 0.55})):
        runs.append(("pruned", PruningPlan(ffn=p, qk=p, v=p, skip_layers=1).to_dict(), params, scores))
    for role, plan, params, scores in runs:
        for task, score in scores.items():
            store.add(RunResult(
                task=task, role=role, protocol="paper", model_source="default", fingerprint=f"{role}-{params}",
                head_fingerprint="head", source_fingerprint="source", plan=plan, recipe=recipe,
                metrics={"accuracy": score, "main_score": score}, main_score=score, params_total=params,
                params_encoder=params - 12_066_432, latency_ms=250.0 * params / 22_713_216, wall_s=60.0, device="cpu",
            ))


def seed_task_model(root: Path, tokenizer, name: str, glue_dir: Path, cache: Path) -> None:
    """A tiny random SST-2 classifier saved as a task model, and (with a GLUE copy) a finished
    threshold sweep of it, run here: the Prune page's evidence has curves to draw."""
    from conftest import make_tiny_bert
    from obce_core import glue, jobs
    from obce_core.training import Recipe, TaskModelInfo
    from obce_core.training.task_models import TASK_MODEL_FILE

    path = root / "task_models" / name
    spec = glue.get_task("sst2")
    make_tiny_bert(seed=3, classifier=True, num_labels=spec.num_labels).save_pretrained(path)
    tokenizer.save_pretrained(path)
    TaskModelInfo(task=spec.name, recipe=Recipe.preset("smoke", spec.name), metrics={"accuracy": 0.5, "main_score": 0.5},
                  main_score=0.5, train_s=1.0, train_steps=20, device="cpu", source_model="tiny",
                  created_at="2024-05-01T12:00:00+00:00", obce_version="test").to_json(path / TASK_MODEL_FILE)
    if not glue_dir.is_dir():
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBCE_GLUE_DIR", str(glue_dir))
        mp.setenv("OBCE_CACHE_DIR", str(cache))
        sweep = jobs.SweepJobSpec(model=str(path.resolve()), task="sst2", groups=["ffn", "all"],
                                  percentiles=[0, 25, 50, 75], scorers=["rf", "random"], seeds=[0], eval_size=64,
                                  score_texts=16, skip_layers=1)
        jobs.run_job(jobs.create_job(sweep, root))


def server_env(cache: Path, workspace: Path, glue_dir: Path | None) -> dict:
    """The server's environment: its own cache and workspace, no network, the default job queue."""
    env = {**os.environ, "OBCE_CACHE_DIR": str(cache), "OBCE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("OBCE_GLUE_DIR", "OBCE_MAX_PARALLEL_JOBS", "OBCE_MODEL_DIRS"):
        env.pop(name, None)
    if glue_dir is not None:
        env["OBCE_GLUE_DIR"] = str(glue_dir)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict, log: Path):
    """`streamlit run app.py` on a free port; yields (url, start time, seconds until it answered).
    On leaving, the server is stopped and its log must hold no traceback."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"streamlit did not answer on {url} within {SERVER_START_S} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, started, time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_S)
            ignored_sigterm = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            ignored_sigterm = True
    text = log.read_text()
    assert "Traceback" not in text, f"the server logged a traceback:\n{text}"
    # After an ONNX export in the server, it once ignored SIGTERM (issue 24): the walk builds one.
    assert not ignored_sigterm, f"the server was still running {STOP_S} s after SIGTERM:\n{text[-3000:]}"


def wait_idle(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the script run finished: the "Running…" icon has gone and no element is stale."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:  # a run shows the icon after a short delay; a quick run may never show it
        page.wait_for_selector('[data-testid="stStatusWidgetRunningIcon"]', timeout=800)
    except PlaywrightTimeout:
        pass
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')"
        " && !document.querySelector('[data-stale=\"true\"]')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(300)


def wait_plots(page, n: int, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until ``n`` plotly charts have drawn (Streamlit loads plotly lazily)."""
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
                           timeout=timeout_ms)


# What a visitor cannot read whole at the walk's 1280 px: a heading or metric label cut off ("…"),
# a chart title running out of its chart, a legend outside its chart, over its title or under
# plotly's toolbar. One string per problem.
_CUT_OFF_JS = """() => {
  const out = [];
  const texts = 'h1, h2, h3, [data-testid="stMetricLabel"], [data-testid="stMetricLabel"] *, [data-testid="stTable"] td';
  for (const e of document.querySelectorAll(texts)) {
    if (e.getClientRects().length && e.scrollWidth > e.clientWidth + 1) out.push('cut off: ' + e.innerText.slice(0, 80));
  }
  const meet = (a, b) => a.width > 0 && b.width > 0 && a.left < b.right - 1 && b.left < a.right - 1
                         && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  for (const chart of document.querySelectorAll('.js-plotly-plot')) {
    const box = chart.getBoundingClientRect();
    if (!box.width) continue;
    const title = chart.querySelector('.gtitle'), legend = chart.querySelector('.legend');
    const toolbar = chart.querySelector('.modebar');
    const name = title ? title.textContent : 'a chart without a title';
    const inside = b => b.left >= box.left - 1 && b.right <= box.right + 1 && b.top >= box.top - 1 && b.bottom <= box.bottom + 1;
    if (title && !inside(title.getBoundingClientRect())) out.push('chart title cut off: ' + name);
    if (legend) {
      const lb = legend.getBoundingClientRect();
      if (!inside(lb)) out.push('legend outside its chart: ' + name);
      if (title && meet(lb, title.getBoundingClientRect())) out.push('legend over the title: ' + name);
      if (toolbar && meet(lb, toolbar.getBoundingClientRect())) out.push('legend under the toolbar: ' + name);
    }
  }
  return out;
}"""


def cut_off_texts(page) -> list[str]:
    """Headings, metric labels, chart titles and legends that cannot be read whole (see _CUT_OFF_JS)."""
    return page.evaluate(_CUT_OFF_JS)


def assert_clean(page, name: str) -> None:
    body = page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: an exception box is shown"
    assert "Traceback" not in body, f"{name}: a traceback is shown"
    assert "Error" not in page.title()
    problems = cut_off_texts(page)
    assert not problems, f"{name} at {page.viewport_size['width']} px: " + "; ".join(problems)


def goto_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).first.click()
    wait_idle(page)


def shot(page, name: str, *, below=None) -> Path:
    """A screenshot of the whole page (or of what lies from the element ``below`` down). Streamlit
    scrolls inside its own container, so the window is made as tall as the content for the shot
    (Playwright's full_page sees only the window). With OBCE_README_SHOTS=1 a picture the README
    shows is copied to docs/screenshots/ too."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...['[data-testid=\"stMain\"]', '[data-testid=\"stAppViewContainer\"]']"
        ".map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    page.mouse.move(0, 0)  # no tooltip in the picture
    tall = min(max(size["height"], int(height) + 40), 8000)
    page.set_viewport_size({"width": size["width"], "height": tall})
    page.wait_for_timeout(800)  # let plotly re-lay out its charts
    clip = None
    if below is not None:
        top = max(below.bounding_box()["y"] - 16, 0)
        clip = {"x": 0, "y": top, "width": size["width"], "height": tall - top}
    page.screenshot(path=str(path), clip=clip)
    page.set_viewport_size(size)
    if os.environ.get("OBCE_README_SHOTS") == "1" and name in README_SHOT_NAMES:
        shutil.copyfile(path, README_SHOTS / path.name)
    return path
