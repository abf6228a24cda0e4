"""The dashboard in a real browser: `streamlit run app.py` driven by headless Chromium (Playwright),
as a teacher, an analyst and an explorer would use it (issue 12).

What AppTest cannot see: the plotly charts actually drawing, JavaScript widgets (a slider moved
with the keyboard, a cell typed into a data editor), page navigation through the sidebar, a server
restarted under a shared link, background jobs seen through the page, and how long a user waits
for the first page. The tests run in order, on one cache folder and one workspace:

1. the walk through every page on a server with no GLUE copy (the demo corpus is the default):
   scoring, a neuron's view and what it separates (the two lists around its largest gap), Learn,
   Prune (slider, override, Apply), Compare's explanation, Layer topology;
2. that server stopped and a new one started with a GLUE copy: the Persistence link of (1) opens
   on the same neuron, scored from the disk cache, on the demo corpus it names, with the app's own
   navigation and page title although that deep link was the new server's first request;
3. on that server: Compare starts a `smoke` job and a second one, which waits in the queue, each
   job line showing its recipe; a tiny task model loaded on Model & data gets the Prune page's
   evidence (its task score and threshold-sweep curves).

Screenshots go to ``artifacts/screenshots/<name>.png`` (1280 px wide); with OBCE_README_SHOTS=1 the
README's pictures in docs/screenshots/ are refreshed from them. Needs Debian's Chromium at
/usr/bin/chromium (``apt-get install -y chromium``); Playwright cannot download its own browser
here. The tests are skipped only when that binary is missing (and test 3 without a GLUE copy).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from browser_helpers import (
    CHROMIUM, CHROMIUM_ARGS, SHOTS, TIMEOUT_MS, assert_clean, goto_page, seed_results, seed_task_model, server_env, shot,
    streamlit_server, wait_idle, wait_plots,
)
from conftest import GLUE_DIR

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "obce_core" / "data" / "demo_sentences.txt"  # the oracle for texts a list shows whole
FIRST_PAGE_TARGET_S = 8.0  # issue 12, on a quiet machine; printed, not asserted (the machine is shared)
VIEWPORT = {"width": 1280, "height": 1000}
TASK_MODEL = "tiny-sst2"
ONNX_WAIT_MS = 600_000  # the ONNX export's child process, on a busy machine
JOB_WAIT_MS = 90_000  # a worker process imports torch before it reports: seconds on a busy machine
LINKS: dict[str, str] = {}  # test 1 -> test 2: the Persistence link shared across the restart
NEURON_LINE = re.compile(r"L(\d+) (\w+) neuron (\d+): rf = ([0-9.e+-]+), rank")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="/usr/bin/chromium is missing; install it with `apt-get install -y chromium`"
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    """The cache folder and workspace both servers share, and a folder for their logs."""
    workspace = tmp_path_factory.mktemp("workspace")
    seed_results(workspace)
    seed_task_model(workspace, tokenizer, TASK_MODEL, GLUE_DIR, tmp_path_factory.mktemp("sweep-cache"))
    return {"cache": tmp_path_factory.mktemp("obce-cache"), "workspace": workspace,
            "logs": tmp_path_factory.mktemp("streamlit")}


@pytest.fixture
def first_server(folders):
    """A server with no GLUE copy: the demo corpus must be the default. Stopped after test 1."""
    env = server_env(folders["cache"], folders["workspace"], glue_dir=None)
    with streamlit_server(env, folders["logs"] / "first.log") as started:
        yield started


@pytest.fixture(scope="module")
def restarted_server(folders):
    """A new server on the same cache and workspace, now with a GLUE copy (when there is one)."""
    env = server_env(folders["cache"], folders["workspace"], glue_dir=GLUE_DIR if GLUE_DIR.is_dir() else None)
    with streamlit_server(env, folders["logs"] / "restarted.log") as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _walk(browser, name: str, walk, *args) -> None:
    """Run ``walk(page, *args)`` on a new page; when it stops, keep a picture of the page as it was."""
    page = browser.new_page(viewport=dict(VIEWPORT))
    page.set_default_timeout(TIMEOUT_MS)
    (SHOTS / f"failure_{name}.png").unlink(missing_ok=True)
    try:
        walk(page, *args)
    except Exception:
        shot(page, f"failure_{name}")
        raise
    finally:
        page.close()


def test_dashboard_in_a_browser(browser, first_server):  # the browser is up first, as for a user
    _walk(browser, "walk", _walk_the_dashboard, *first_server)


def test_a_restarted_server_restores_a_shared_link(browser, restarted_server):
    if "persistence" not in LINKS:
        pytest.skip("needs the link that test_dashboard_in_a_browser shares (run the whole file)")
    _walk(browser, "restart", _open_the_shared_link, restarted_server)


def test_a_link_on_a_restarted_server_gets_the_apps_navigation():
    """The deep link was the restarted server's first request: Streamlit would run that page file
    alone with its automatic pages/ navigation ('app', no sections, no wide layout); the pages
    rerun through app.py instead (obce_dashboard/navigation.py)."""
    if "navigation" not in LINKS:
        pytest.skip("needs test_a_restarted_server_restores_a_shared_link (run the whole file)")
    nav = [line.strip() for line in LINKS["navigation"].split("\n")]
    assert "Explain" in nav and "Compress" in nav and "app" not in nav, nav
    assert LINKS["title"] == "obce", LINKS["title"]  # app.py's page config ran: its title, not "Persistence"


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"real GLUE files not found at {GLUE_DIR}")
def test_jobs_queue_and_a_task_model_gets_evidence(browser, restarted_server):
    _walk(browser, "jobs", _queue_two_jobs, restarted_server)
    _walk(browser, "evidence", _evidence_of_a_task_model, restarted_server)


# ---------------------------------------------------------------------------------------------
# Test 1: every page, no GLUE copy
# ---------------------------------------------------------------------------------------------


def _walk_the_dashboard(page, url: str, started: float, answered_s: float) -> None:
    _first_page(page, url, started, answered_s)
    _persistence(page)
    _learn(page)
    _prune(page)
    _compare_without_glue(page)
    _layer_topology(page)
    # Whatever other pages exist must at least render without an exception.
    for link in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts():
        title = link.strip().splitlines()[-1].strip() if link.strip() else ""  # drop the icon's ligature text
        if title in ("Model & data", "Persistence", "Learn the method", "Prune", "Compare", "Layer topology") or not title:
            continue
        goto_page(page, title)
        assert_clean(page, title)
        shot(page, title.lower().replace(" ", "_"))


def _first_page(page, url: str, started: float, answered_s: float) -> None:
    """Usable = the model's facts are shown and the Score button can be pressed; then score 16 texts."""
    page.goto(url)
    page.get_by_role("heading", name="Model & data").wait_for()
    drawn_s = time.perf_counter() - started
    page.get_by_role("button", name="Score neurons").wait_for()
    page.get_by_text("Hidden size").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes('Score neurons') && !b.disabled)"
    )
    first_page_s = time.perf_counter() - started
    timing = (
        f"from `streamlit run app.py`: server answering {answered_s:.1f} s, page title drawn {drawn_s:.1f} s, "
        f"usable first page (model facts shown, Score enabled) {first_page_s:.1f} s (target <= {FIRST_PAGE_TARGET_S:g} s "
        "on a quiet machine)"
    )
    print("\n" + timing)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "first_page_seconds.txt").write_text(timing + "\n")
    wait_idle(page)
    assert "obce demo corpus" in page.inner_text("body")  # no GLUE copy, no network: the demo corpus
    assert_clean(page, "model page")

    n = page.get_by_role("spinbutton", name="Number of texts")
    n.fill("16")
    n.press("Enter")
    wait_idle(page)
    page.get_by_text("16 of 400 sentences").first.wait_for()
    page.get_by_role("button", name="Score neurons").click()
    page.get_by_text("Neurons with rf = 0").wait_for()
    wait_idle(page)
    wait_plots(page, 1)
    assert_clean(page, "model page after scoring")
    shot(page, "1_model_and_data")


def _neuron_line(page) -> re.Match:
    line = page.get_by_text(NEURON_LINE).first
    line.wait_for()
    match = NEURON_LINE.search(line.inner_text())
    assert match, line.inner_text()
    return match


def _table_column(table, name: str) -> list[str]:
    """The cells of column ``name`` of an st.table, as a visitor reads them (innerText)."""
    table.locator("table").wait_for(state="attached")
    return table.evaluate(
        """(el, name) => {
            const table = el.querySelector("table");
            const heads = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
            const col = heads.indexOf(name);
            if (col < 0) return null;
            return [...table.querySelectorAll('tbody tr')].map(tr => tr.children[col].innerText.trim());
        }""",
        name,
    )


def _persistence(page) -> None:
    """One neuron's outputs, diagram and barcode; the two lists around its largest gap; the rank chart."""
    goto_page(page, "Persistence")
    page.get_by_text("0-D persistence diagram").first.wait_for()
    wait_plots(page, 5)
    neuron = page.get_by_role("spinbutton", name="Neuron")
    page.get_by_role("button", name="Min rf").click()
    wait_idle(page)
    lowest = neuron.input_value()
    page.get_by_role("button", name="Max rf").click()
    wait_idle(page)
    highest = neuron.input_value()
    assert lowest != highest
    # A click on the rank chart selects that neuron: the rightmost point is the highest rf.
    page.get_by_role("button", name="Min rf").click()
    wait_idle(page)
    assert neuron.input_value() == lowest
    point = page.locator(".st-key-rank_chart .scatterlayer .trace").first.locator(".point").last
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 5, y - 5)
    page.mouse.move(x, y)  # plotly clicks the hovered point
    page.wait_for_timeout(300)
    page.mouse.down()
    page.mouse.up()
    wait_idle(page)
    page.wait_for_function(
        "(want) => document.querySelector('[aria-label=\"Neuron\"]').value === want", arg=highest, timeout=30_000
    )
    assert_clean(page, "persistence page")

    # What the neuron separates: the texts nearest its largest gap, below and above. The oracle is
    # the neuron's own rf (the width of that gap, printed above the charts): the highest output
    # listed below the gap and the lowest listed above it must be exactly rf apart.
    layer, component, shown, rf = _neuron_line(page).groups()
    assert shown == highest
    page.get_by_text("What does this neuron separate?").wait_for()
    frame = page.locator('[data-testid="stTable"]')
    below, above = (page.locator('[data-testid="stColumn"]', has_text=side, has=frame).last.locator(frame)
                    for side in ("Below gap:", "Above gap:"))
    low_values = [float(v) for v in _table_column(below, "value")]
    high_values = [float(v) for v in _table_column(above, "value")]
    low_texts, high_texts = _table_column(below, "text"), _table_column(above, "text")
    assert low_values and high_values and all(low_texts) and all(high_texts)
    # Every text is shown whole (a grid cut them to ~30 characters): each is a line of the corpus.
    corpus = {line.strip() for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines()}
    assert set(low_texts + high_texts) <= corpus, set(low_texts + high_texts) - corpus
    assert max(low_values) < min(high_values)
    assert not set(_table_column(below, "text_index")) & set(_table_column(above, "text_index"))
    # The table shows 4 significant digits: the gap is rf to within their rounding.
    assert min(high_values) - max(low_values) == pytest.approx(float(rf), rel=2e-3, abs=2e-4 * max(map(abs, high_values)))
    body = page.inner_text("body")
    assert "Download these lists (CSV)" in body and "Download every neuron (CSV)" in body
    LINKS["persistence"] = page.url  # every setting that decides the scores is in it
    LINKS["neuron"] = f"L{layer} {component} neuron {shown}: rf = {rf}"
    shot(page, "2_persistence")

    page.get_by_text("violin", exact=True).click()
    wait_idle(page)
    page.get_by_text("Log scale", exact=True).click()
    wait_idle(page)
    wait_plots(page, 5)
    assert_clean(page, "persistence page, violins on a log scale")
    shot(page, "2_persistence_violin_log")


def _learn(page) -> None:
    """Move the radius slider with the keyboard; the number of components must change."""
    goto_page(page, "Learn the method")
    metric = page.locator('[data-testid="stMetric"]', has_text="Components at r")
    before = metric.inner_text()
    box = page.locator('[data-testid="stSlider"]', has_text="Radius r")
    shown_before = box.inner_text()  # label, current value, min and max
    slider = box.get_by_role("slider")
    slider.focus()
    slider.press("End")  # to the largest radius: one component
    for _ in range(3):
        slider.press("ArrowLeft")
    wait_idle(page)
    # The figure shows the radius the slider shows (the last rerun is the one on screen).
    page.wait_for_function(
        "() => { const box = [...document.querySelectorAll('[data-testid=\"stSlider\"]')].find(e => e.innerText.includes('Radius r'));"
        " const v = box && box.querySelector('[data-testid=\"stSliderThumbValue\"]');"
        " return v && [...document.querySelectorAll('.gtitle')].some(t => t.textContent.startsWith('r = ' + v.textContent.trim() + ':')); }"
    )
    page.wait_for_function(
        "(before) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.innerText.includes('Components at r')); return m && m.innerText !== before; }",
        arg=before,
    )
    assert box.inner_text() != shown_before
    wait_plots(page, 3)
    assert_clean(page, "learn page")
    shot(page, "5_learn")
    page.get_by_text("2-D (two neurons together)").click()
    wait_idle(page)
    page.wait_for_function("() => [...document.querySelectorAll('.gtitle')].some(t => t.textContent.startsWith('r = '))")
    wait_plots(page, 3)
    assert_clean(page, "learn page in 2-D")
    shot(page, "5_learn_2d")


def _metric_changes(page, label: str, before: str) -> None:
    page.wait_for_function(
        "([label, before]) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.innerText.includes(label)); return m && m.innerText !== before; }",
        arg=[label, before],
    )


def _prune(page) -> None:
    """Move the FFN slider with the keyboard; the parameter count follows; an override; build the model."""
    goto_page(page, "Prune")
    label = "Parameters after (whole model)"
    params = page.locator('[data-testid="stMetric"]', has_text=label)
    params.wait_for()
    wait_plots(page, 2)
    before = params.inner_text()
    ffn = page.locator('[data-testid="stSlider"]', has_text="FFN units removed").get_by_role("slider")
    ffn.focus()
    for _ in range(20):  # 30 % -> about 50 % (a key pressed during a rerun may be dropped)
        ffn.press("ArrowRight")
    wait_idle(page)
    _metric_changes(page, label, before)
    after = params.inner_text()
    assert after != before
    assert label in after and "kept" in after
    # A per-layer override typed into the table (a canvas grid: cells are reached by position).
    page.get_by_text("Per-layer overrides").click()
    page.locator('[data-testid="stDataFrameResizable"]').first.wait_for()
    page.wait_for_timeout(500)  # the expander's opening animation
    # The grid is a canvas; its hidden accessibility table takes focus without pixel positions: focusing
    # cell (0, 0) selects L0, the arrows walk to L2's ffn, Enter opens the editor and Enter commits.
    page.locator("#glide-cell-0-0").focus()
    for key in ("ArrowDown", "ArrowDown", "ArrowRight", "ArrowRight", "ArrowRight", "Enter"):
        page.keyboard.press(key)
    editor = page.locator("input.gdg-input")  # the cell editor glide opens over the grid
    editor.wait_for()
    editor.fill("80")
    editor.press("Enter")
    page.get_by_text("Overrides: L2: ffn 80 %.").wait_for()
    wait_idle(page)
    _metric_changes(page, label, after)
    assert "overrides=" in page.url  # the override is part of the shareable address
    page.get_by_role("button", name="Apply: build the pruned model").click()
    page.get_by_text("Parameters of the built model").wait_for()
    wait_idle(page)
    wait_plots(page, 2)
    assert_clean(page, "prune page")
    assert "Download the model (zip)" in page.inner_text("body")
    # The ONNX file is built in a child process: the server must still stop on SIGTERM afterwards
    # (browser_helpers.streamlit_server checks it when the walk's server is stopped).
    page.get_by_role("button", name="Build the ONNX file").click()
    # A child process imports torch and ONNX Runtime first: minutes on a loaded 2-core machine.
    page.get_by_role("button", name="Download the model (ONNX)").wait_for(timeout=ONNX_WAIT_MS)
    wait_idle(page)
    shot(page, "3_prune")


def _compare_without_glue(page) -> None:
    """No GLUE copy here, so the page explains how to get one; stored results still draw."""
    goto_page(page, "Compare")
    page.get_by_text("No GLUE data to fine-tune on").wait_for()
    page.get_by_text("score vs size: every plan tried").wait_for()
    wait_plots(page, 2)
    assert_clean(page, "compare page")
    body = page.inner_text("body")
    assert "OBCE_GLUE_DIR" in body and "HF_HUB_OFFLINE" in body
    shot(page, "4_compare_no_glue")


def _layer_topology(page) -> None:
    """The 16 texts' vectors per layer: the chosen layer's diagram draws its points, and the
    pruned model built on Prune is compared layer by layer."""
    goto_page(page, "Layer topology")
    page.get_by_text(re.compile(r"Original model: 7 diagrams on 16 points")).wait_for()
    page.get_by_text("bottleneck distance between the two diagrams").wait_for()
    wait_idle(page)
    wait_plots(page, 7)
    points = page.locator(".st-key-topo_diagram .scatterlayer .point")
    assert points.count() >= 15  # 15 finite H0 bars of 16 points, plus any H1 bars
    strip = page.locator(".st-key-topo_strip .js-plotly-plot .main-svg")
    assert strip.count() >= 1
    assert_clean(page, "layer topology page")
    shot(page, "6_layer_topology")


# ---------------------------------------------------------------------------------------------
# Test 2: the shared link after a restart
# ---------------------------------------------------------------------------------------------


def _open_the_shared_link(page, url: str) -> None:
    """A new server, a new visitor, the old link: the same neuron's view, scored from the disk cache,
    on the demo corpus the link names although this server has a GLUE copy."""
    link = LINKS["persistence"]
    path_and_query = link.split("/", 3)[3]
    page.goto(f"{url}/{path_and_query}")
    page.get_by_text("0-D persistence diagram").first.wait_for()
    wait_idle(page)
    wait_plots(page, 3)
    body = page.inner_text("body")
    assert "Nothing is scored yet" not in body
    assert "Scores of `default`" in body or "Scores of default" in body
    assert "obce demo corpus" in body
    match = _neuron_line(page)
    assert match.group(0).startswith(LINKS["neuron"])
    page.get_by_text("What does this neuron separate?").wait_for()
    assert_clean(page, "persistence page after a restart")
    LINKS["navigation"] = page.locator('[data-testid="stSidebarNav"]').inner_text()
    LINKS["title"] = page.title()


# ---------------------------------------------------------------------------------------------
# Test 3: Compare's queue and the Prune page's evidence, with a GLUE copy
# ---------------------------------------------------------------------------------------------


def _job_ids(page) -> list[str]:
    text = page.locator('[data-testid="stAlert"]', has_text="Started job").last.inner_text()
    return re.findall(r"Started job (\S+):", text)


def _body_has(page, text: str, timeout_ms: int = JOB_WAIT_MS) -> None:
    page.wait_for_function("(t) => document.body.innerText.includes(t)", arg=text, timeout=timeout_ms)


def _queue_two_jobs(page, url: str) -> None:
    """The restored session (MiniLM on 16 demo texts) starts a smoke job; the form survives a
    refresh; the same job again is refused; a second one (10 steps) waits for the first; both are
    cancelled from their lines."""
    query = LINKS["persistence"].split("?", 1)[1]
    page.goto(f"{url}/?{query}")  # the root URL: Model & data
    page.get_by_text("Neurons with rf = 0").wait_for()
    wait_idle(page)
    goto_page(page, "Compare")
    recipe = page.locator('[data-testid="stSelectbox"]', has_text="Recipe")
    recipe.wait_for()
    recipe.click()
    page.get_by_role("option", name=re.compile(r"^smoke")).click()
    wait_idle(page)
    smoke = "recipe: 256 train / 128 eval examples, 20 steps, 64 tokens"
    page.get_by_text(re.compile(r"sst2: 2 x 20 steps")).wait_for()
    page.reload()  # the form is in the address: Start starts what the page shows
    recipe.wait_for()
    wait_idle(page)
    shown = recipe.evaluate("el => el.innerText + ' ' + [...el.querySelectorAll('input')].map(i => i.value).join(' ')")
    assert "smoke" in shown, shown
    page.get_by_text(re.compile(r"sst2: 2 x 20 steps")).wait_for()

    start = page.get_by_role("button", name="Start the job")
    start.click()
    page.get_by_text("Started job").wait_for()
    wait_idle(page)
    (first,) = _job_ids(page)
    start.click()  # the same job again is refused, not run twice
    page.get_by_text(f"An identical job, {first}, is already").wait_for()
    steps = page.get_by_role("spinbutton", name="Max steps (0 = epochs)")
    steps.fill("10")
    steps.press("Enter")
    page.get_by_text(re.compile(r"sst2: 2 x 10 steps")).wait_for()
    wait_idle(page)
    start.click()
    page.get_by_text("Started job").wait_for()
    (second,) = _job_ids(page)
    assert second != first
    _body_has(page, f"queued (waiting for job {first}")  # the second job's worker waits its turn
    _body_has(page, f"running · job {first}")
    body = page.inner_text("body")
    for job, recipe_line in ((first, smoke), (second, smoke.replace("20 steps", "10 steps"))):
        line = next(t for t in body.splitlines() if f"job {job} ·" in t)
        assert "sst2 · protocol paper · plan " in line and recipe_line in line, line
    shot(page, "4_compare")

    for job in (second, first):  # the queued one first, so the other never starts
        page.locator(f".st-key-cancel_{job} button").click()
        _body_has(page, f"cancelled · job {job}")
    assert_clean(page, "compare page with jobs")


def _evidence_of_a_task_model(page, url: str) -> None:
    """Load the tiny task model from Model & data, score it, and read its task score and sweep
    curves on the Prune page."""
    page.goto(f"{url}/?data=demo&n=16")
    page.get_by_role("heading", name="Model & data").wait_for()
    load = page.get_by_role("button", name=re.compile(rf"Load {TASK_MODEL} \(sst2"))
    load.click()
    page.get_by_role("button", name=re.compile(rf"Loaded {TASK_MODEL}")).wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Score neurons").click()
    page.get_by_text("Neurons with rf = 0").wait_for()
    wait_idle(page)
    goto_page(page, "Prune")
    heading = page.get_by_role("heading", name="What this plan costs the task")
    heading.wait_for()
    score = page.locator('[data-testid="stMetric"]', has_text="sst2 score of this plan (estimate on")
    score.wait_for()
    value = float(re.search(r"\n\s*([0-9.]+)\s*\n", score.inner_text() + "\n").group(1))
    assert 0 <= value <= 100
    page.get_by_text("95 % interval").first.wait_for()
    page.get_by_text("Largest swept percentile within 1 point").first.wait_for()
    wait_idle(page)
    wait_plots(page, 3)
    assert_clean(page, "prune page with evidence")
    shot(page, "3_prune_evidence", below=heading)
