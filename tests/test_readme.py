"""README.md read against the code (issue 24): what it tells a newcomer to run and what it says
about the tests, the presets and the layout must be true. The oracles are the code itself: the
test file's own test functions, the preset's recipe, the packages on disk, the CLI's parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_the_quick_start_points_obce_at_the_local_glue_copy():
    first_block = re.search(r"```bash\n(.*?)```", _section("Quick start"), re.S).group(1)
    assert "streamlit run app.py" in first_block
    assert first_block.count("\n") == 1, "one command"
    assert re.search(r"OBCE_GLUE_DIR=.*\.\./shared/data/glue.* \.venv/bin/streamlit run app\.py", first_block), first_block


def test_it_says_how_many_browser_tests_a_missing_chromium_skips():
    source = (ROOT / "tests" / "test_browser.py").read_text()
    count = len(re.findall(r"^def test_", source, re.M))
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    quick = _section("Quick start")
    assert f"the {words[count]} real-browser tests" in quick and f"all {words[count]} are skipped" in quick


def test_the_example_link_names_the_texts_it_was_scored_on():
    links = re.findall(r"http://localhost:8501/Persistence\?\S+", README)
    assert links and all("data=" in link and "n=" in link for link in links), links


@pytest.mark.parametrize("command", ["finetune", "search", "glue"])
def test_commands_that_read_glue_name_the_copy_they_read(command):
    lines = [line for line in README.splitlines() if line.startswith(f".venv/bin/python -m obce_core {command} ")]
    assert lines
    for line in lines:
        assert "--glue-dir" in line or "--search-data" in line, line


def test_the_cpu_presets_are_described_as_they_are():
    from obce_core.training import Recipe

    sentence = next(s for s in re.split(r";\s*", README.replace("\n", " ")) if "`cpu-wnli`" in s)
    pooling = Recipe.preset("cpu", "wnli").pooling
    assert pooling == "cls" and "[CLS]" in sentence and "mean-pooled" not in sentence, sentence


def test_the_layout_lists_every_package_of_the_core():
    layout = _section("Layout")
    packages = sorted(p.parent.name for p in (ROOT / "obce_core").glob("*/__init__.py"))
    missing = [p for p in packages if f"`{p}/`" not in layout]
    assert not missing, f"README's Layout omits obce_core/{missing}"
