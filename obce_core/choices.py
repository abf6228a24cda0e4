"""The names a user picks among and the defaults a command line offers, in a module that imports nothing.

``python -m obce_core --help`` builds every subcommand's parser, whose ``choices=`` and help texts
need these values; the modules that give them their meaning import torch, transformers or pandas
(seconds). So each value is defined once here and re-exported from the module that owns it
(``obce_core.pruning.plan.SCORERS``, ``obce_core.training.recipe.PRESET_CHOICES``, ...), which is
where the library and the dashboard import it from. Where a tuple mirrors a registry the owner
builds (scorers, recipe presets, layout groups), ``tests/test_cli_light.py`` checks that they agree.
"""

from __future__ import annotations

__all__ = [
    "CLASSIFIER_POOLINGS", "COMPENSATIONS", "COSTS", "CPU_PRESET", "DEFAULT_CONFIDENCE", "DEFAULT_LEVELS",
    "DEFAULT_MAX_POINTS", "EMBEDDING_SCORERS", "GROUPS", "HIDDEN_NORMS", "MIN_SEARCH_ROWS", "ONNX_MAX_OPSET",
    "ONNX_MIN_OPSET", "ONNX_OPSET", "PLAN_FILE", "POOLINGS", "PRECISIONS", "PRESET_CHOICES", "PROTOCOLS",
    "RECOVERY_PRESET", "RIPS_MAX_DIMENSIONS", "RIPS_MEMORY_BUDGET_GB", "RIPS_METRICS", "SCORERS", "SEARCH_REPORT_FILE",
    "SEARCH_SPLITS", "SEQUENTIAL_LSQ", "SWEEP_GROUPS", "SWEEP_SCORERS", "TOKEN_MODES",
]

# -- layout, scoring, pruning ---------------------------------------------------------------
GROUPS = ("ffn", "qk", "v")  # layout.GROUP_LAYOUT's keys: the prunable groups
TOKEN_MODES = ("cls", "all", "mean")  # which token(s) of a text make a sample (scoring.capture)
POOLINGS = ("cls", "mean")  # a text's vector: its [CLS] hidden state or the mean over its tokens (forward.pool)
SCORERS = ("rf", "std", "magnitude", "flap", "fisher", "random")  # pruning.importance.IMPORTANCES' keys
SEQUENTIAL_LSQ = "sequential-lsq"
COMPENSATIONS = ("auto", "none", "token-mean", "cls-mean", "cls-mean-std", "lsq", SEQUENTIAL_LSQ)
HIDDEN_NORMS = ("kept", "std-ratio", "fitted")  # how a narrowed LayerNorm normalises (pruning.hidden_stream)
PLAN_FILE = "obce_plan.json"  # the plan saved beside a pruned model (pruning.files)
CLASSIFIER_POOLINGS = ("cls", "mean")  # what an ObceBert task head reads (obce_bert.configuration_obce_bert)

# -- training -------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16", "fp16")
# The alias for "the CPU preset of the task at hand" (cpu-sst2 for sst2, ...).
CPU_PRESET = "cpu"
RECOVERY_PRESET = "recover"  # recovery of a pruned model from its teacher (training.recipe)
# Every name a user may give where the task is known (the CLI's --recipe, the dashboard):
# CPU_PRESET, training.recipe.RECIPE_PRESETS' keys in order, RECOVERY_PRESET.
PRESET_CHOICES = (CPU_PRESET, "bert-glue", "obce-40", "cpu-sst2", "cpu-cola", "cpu-mrpc", "cpu-rte", "cpu-wnli",
                  "cpu-generic", "smoke", RECOVERY_PRESET)
PROTOCOLS = ("paper", "finetuned")  # training.protocols

# -- evidence, topology ---------------------------------------------------------------------
# "all" prunes every group at the same percentile.
SWEEP_GROUPS = ("ffn", "v", "qk", "all")
# The default scorers: rf and the three controls of issue 8; any registered scorer (e.g. flap) may be asked for.
SWEEP_SCORERS = ("rf", "std", "magnitude", "random")
EMBEDDING_SCORERS = ("rf", "std", "random")  # label-free sweeps of a model without a task head
RIPS_METRICS = ("euclidean", "cosine")  # topology.rips.METRICS
RIPS_MAX_DIMENSIONS = (0, 1)  # topology.rips.MAX_DIMENSIONS
RIPS_MEMORY_BUDGET_GB = 2.0  # topology.rips.DEFAULT_MEMORY_BUDGET_GB
DEFAULT_MAX_POINTS = 256  # texts per layer diagram (topology.diagrams)

# -- search ---------------------------------------------------------------------------------
DEFAULT_LEVELS = tuple(float(p) for p in range(0, 100, 10))  # the percentiles a layer's group may take
COSTS = ("flops", "params", "latency")
DEFAULT_CONFIDENCE = 90.0  # percent: the one-sided level a plan's drop bound is taken at
SEARCH_SPLITS = ("auto", "held-out", "dev-halves")
MIN_SEARCH_ROWS = 200  # fewer examples measure a drop to no better than about +-2 points
SEARCH_REPORT_FILE = "search_report.json"

# -- export ---------------------------------------------------------------------------------
ONNX_OPSET = 18
ONNX_MIN_OPSET = 17  # torch's dynamo exporter writes opset 17 or later
# The newest opset whose BERT graph ONNX Runtime loads: from 26 on, torch 2.13 writes attention as an
# ONNX `Attention` node that onnxruntime 1.32 refuses (InvalidGraph), after a whole export (45 s for
# MiniLM). Measured on tiny BERTs, opsets 17-28 (issue 26).
ONNX_MAX_OPSET = 25
