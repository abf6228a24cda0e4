"""`import obce_core` and the command line's parser load no torch; a pruned model still loads through
transformers' Auto classes after `import obce_core` alone.

Oracles: ``sys.modules`` of a fresh interpreter (what was really imported), the registries the light
``obce_core.choices`` mirrors, and the pruned model's own forward pass in this process (the reloaded
one must give the same hidden states).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import obce_core
from obce_core.pruning import PruningPlan, prune, save_pruned
from obce_core.scoring.scores import score_model
from tests.conftest import make_tiny_bert

SUBCOMMANDS = ["score", "prune", "glue", "finetune", "export-onnx", "sweep", "layers", "search", "attribution", "domain"]
HEAVY = ("torch", "transformers", "pandas")
LAZY_PACKAGES = ["obce_core", "obce_core.pruning", "obce_core.evidence", "obce_core.topology", "obce_core.search",
                 "obce_core.attribution"]


def _python(code: str, timeout: float = 240) -> str:
    """Run ``code`` in a fresh interpreter (offline hub); its stdout, after checking it exited 0."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _loaded_heavy(statements: str) -> list[str]:
    out = _python(f"import sys\n{statements}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    return json.loads(out.strip().splitlines()[-1].replace("'", '"'))


def test_import_obce_core_loads_no_torch():
    assert _loaded_heavy("import obce_core") == []


def test_building_the_parser_and_every_help_loads_no_torch():
    helps = "\n".join(f"""
try:
    c.main([{name!r}, "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code""" for name in SUBCOMMANDS)
    assert _loaded_heavy(f"import obce_core.cli as c\nc.build_parser(){helps}") == []


def test_python_m_obce_core_help_lists_every_subcommand():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "obce_core", "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("positional arguments:")[1].split()[0]
    assert listed == "{" + ",".join(SUBCOMMANDS) + "}"
    done = subprocess.run([sys.executable, "-m", "obce_core", "layers", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m obce_core layers")
    assert "{euclidean,cosine}" in done.stdout and "(default 256)" in done.stdout


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_of_a_lazy_package_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [] and set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_public_api_names_are_the_defining_modules_objects():
    from obce_core import PruningPlan as plan_class, load_model  # the README's import
    from obce_core.loading import load_model as defined
    from obce_core.pruning.plan import PruningPlan as plan_defined

    assert plan_class is plan_defined and load_model is defined and obce_core.load_model is defined
    assert obce_core.pruning.surgery.prune is obce_core.prune  # a subpackage's module is an attribute, as before


def test_the_light_choices_agree_with_the_registries_they_mirror():
    from obce_core import choices
    from obce_core.layout import GROUP_LAYOUT
    from obce_core.pruning.importance import IMPORTANCES
    from obce_core.training.recipe import RECIPE_PRESETS

    assert choices.SCORERS == tuple(IMPORTANCES)
    assert choices.GROUPS == tuple(GROUP_LAYOUT)
    assert choices.PRESET_CHOICES == (choices.CPU_PRESET, *RECIPE_PRESETS, choices.RECOVERY_PRESET)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, tokenizer):
    """A tiny pruned encoder saved by obce (model_type obce_bert) and its [CLS] output on a fixed input."""
    model = make_tiny_bert(layers=2)
    texts = ["A man is playing a guitar.", "The market fell sharply today.", "Two dogs run in the park.",
             "Nobody expected the second act to be this dull.", "It rained all day.", "She won the race."]
    scores = score_model(model, tokenizer, texts, token="cls", max_length=32, use_cache=False)
    plan = PruningPlan(ffn=40, v=30, compensation="none")
    pruned, report = prune(model, scores, plan)
    folder = save_pruned(pruned, tokenizer, tmp_path_factory.mktemp("light") / "pruned", plan=plan, report=report)
    ids = torch.tensor([[101, 1037, 2158, 2003, 2652, 1037, 2858, 102]])
    with torch.no_grad():
        expected = pruned(input_ids=ids).last_hidden_state[0, 0].numpy()
    np.save(folder.parent / "expected.npy", expected)
    return folder, pruned.config.intermediate_sizes


# The child loads the folder with AutoConfig and AutoModel after nothing from obce but the prelude and
# prints what it got: [config class, intermediate_sizes, model class, same [CLS] output as the parent's].
_LOAD = """
import numpy as np, torch
from transformers import AutoConfig, AutoModel
config = AutoConfig.from_pretrained(folder)
model = AutoModel.from_pretrained(folder).eval()
with torch.no_grad():
    cls = model(input_ids=torch.tensor([[101, 1037, 2158, 2003, 2652, 1037, 2858, 102]])).last_hidden_state[0, 0].numpy()
got = [type(config).__name__, config.intermediate_sizes, type(model).__name__,
       float(np.abs(cls - np.load(expected)).max()) < 1e-5]
"""
# ... and the classifier and sentence-transformers routes the README promises.
_LOAD_MORE = """
from transformers import AutoModelForSequenceClassification
from sentence_transformers import SentenceTransformer
got += [type(AutoModelForSequenceClassification.from_pretrained(folder)).__name__,
        type(SentenceTransformer(folder, device="cpu")[0].auto_model).__name__]
"""


def _load_in_child(prelude: str, pruned_dir, more: bool = False) -> list:
    folder, sizes = pruned_dir
    code = (f"folder, expected = {str(folder)!r}, {str(folder.parent / 'expected.npy')!r}\n"
            f"import json, sys\n{prelude}\n{_LOAD}{_LOAD_MORE if more else ''}print(json.dumps(got))")
    return json.loads(_python(code).strip().splitlines()[-1])


def test_import_obce_core_alone_registers_obce_bert_for_transformers(pruned_dir):
    _, sizes = pruned_dir
    got = _load_in_child("import obce_core\nassert 'transformers' not in sys.modules", pruned_dir, more=True)
    assert got == ["ObceBertConfig", sizes, "ObceBertModel", True, "ObceBertForSequenceClassification",
                   "ObceBertModel"]


@pytest.mark.parametrize("prelude", [
    # transformers' auto modules already loaded: registered at `import obce_core`
    "from transformers import AutoModel\nimport obce_core",
    # modeling_auto is first loaded half-way through transformers.modeling_layers (imported by BertModel's
    # module): the registration waits until that outermost import has finished
    "import obce_core\nfrom transformers import BertModel",
])
def test_registration_in_either_import_order(prelude, pruned_dir):
    _, sizes = pruned_dir
    got = _load_in_child(prelude, pruned_dir)
    assert got[:4] == ["ObceBertConfig", sizes, "ObceBertModel", True]
