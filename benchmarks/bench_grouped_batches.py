"""Seconds per optimizer step of each task's CPU preset, with random vs length-grouped batches.

Each line fine-tunes a fresh copy of the embedded all-MiniLM-L6-v2 for ``--steps`` steps of the
task's CPU preset (``Recipe.for_task``) on the CPU, once with random batches and once with
``group_by_length``, and prints the wall time per step (data loading and tokenizing included,
model loading not). Run it with nothing else running:

    python benchmarks/bench_grouped_batches.py --tasks sst2,rte,mrpc,cola --steps 40 --glue-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="sst2,rte,mrpc,cola")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--glue-dir", default=os.environ.get("OBCE_GLUE_DIR", "../shared/data/glue"))
    a = p.parse_args(argv)
    import torch

    from obce_core import Recipe, fine_tune, glue, load_model

    for task in a.tasks.split(","):
        for grouped in (False, True):
            recipe = Recipe.for_task(task, max_steps=a.steps, group_by_length=grouped)
            model, tok = load_model(None, num_labels=glue.get_task(task).num_labels, classifier_pooling=recipe.pooling)
            start = time.perf_counter()
            fine_tune(model, tok, task, recipe, glue_dir=a.glue_dir, device="cpu")
            per_step = (time.perf_counter() - start) / a.steps
            print(f"{task} {'length-grouped' if grouped else 'random':>14} batches: {per_step:.3f} s/step "
                  f"({torch.get_num_threads()} threads)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
