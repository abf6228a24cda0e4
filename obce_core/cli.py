"""The ``python -m obce_core`` command line: a thin argparse layer over the library.

Every subcommand calls the same functions the dashboard calls. Errors a user can fix are
printed as one message on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from obce_core.choices import (CLASSIFIER_POOLINGS, COMPENSATIONS, ONNX_MAX_OPSET, ONNX_MIN_OPSET, ONNX_OPSET, PRECISIONS,
                               PRESET_CHOICES, PROTOCOLS, RECOVERY_PRESET, SCORERS, TOKEN_MODES)
from obce_core.cli_args import (
    CliError,
    ObceArgumentParser,
    add_device_argument,
    add_model_argument,
    add_overwrite_argument,
    add_texts_arguments,
    check_model_limits,
    int_range,
    number_range,
    percent,
    progress_bar,
)
from obce_core.attribution.cli import add_parser as add_attribution_parser
from obce_core.evidence.cli import add_parser as add_sweep_parser
from obce_core.io import check_output_path
from obce_core.topology.cli import add_parser as add_layers_parser
from obce_core.search.cli import add_parser as add_search_parser
from obce_core.evidence.domain_cli import add_parser as add_domain_parser
from obce_core.pruning.cli import add_hidden_arguments, hidden_plan, hidden_stream_for

# Each command imports what its work needs (torch, transformers, pandas: seconds) in its own body:
# building the parser, and so `python -m obce_core --help`, loads none of them (tests/test_cli_light.py).

__all__ = ["main", "build_parser"]

_positive_gb = number_range(0, low_open=True)


def _cmd_score(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from obce_core.loading import load_model
    from obce_core.scoring.scores import score_model
    from obce_core.scoring.texts import resolve_texts

    out = check_output_path(args.out, overwrite=args.overwrite) if args.out is not None else None
    texts, source = resolve_texts(args.texts, args.task, args.split, args.glue_dir, args.n, args.seed)
    model, tokenizer = load_model(args.model, device=args.device)
    print(f"Scoring {len(texts)} texts from {source} at token={args.token} on {args.model}", file=sys.stderr)
    bar = tqdm(total=len(texts), unit="text", desc="capture", file=sys.stderr)

    def progress(done, total):
        bar.update(done - bar.n)

    scores = score_model(
        model, tokenizer, texts, token=args.token, max_length=args.max_length, batch_size=args.batch_size,
        convention=args.convention, memory_budget_gb=args.memory_budget_gb, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, progress=progress,
    )
    bar.close()
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.float_format", "{:.4g}".format):
        print(scores.summary().to_string(index=False))
    tied = scores.table[scores.table["rf_ties"] > 1]
    print(
        f"\n{len(scores.table):,} neurons, {scores.n_samples:,} samples; {len(tied):,} neurons share their rf "
        "with another in the same layer and component (ties broken by std, then neuron index)."
    )
    if out is not None:
        scores.to_parquet(out)
        print(f"Wrote {out}")
    return 0


def _add_plan_arguments(group, seed_flag: str) -> None:
    """--plan or the plan's flags; ``seed_flag`` names the random scorer's seed (glue's --seed is the recipe's)."""
    group.add_argument("--plan", help="a plan JSON file (PruningPlan.to_json); replaces the flags below")
    group.add_argument("--ffn", type=percent, help="percent of FFN units removed per layer, in [0, 100) (default 0)")
    group.add_argument("--qk", type=percent, help="percent of query/key dim pairs removed per head (default 0)")
    group.add_argument("--v", type=percent, help="percent of value dims removed per head (default 0)")
    group.add_argument("--skip-layers", type=int_range(0), help="leave the first N layers unpruned (default 0)")
    group.add_argument("--compensation", choices=COMPENSATIONS, help="what replaces removed units (default auto: per layer, the best on held-out tokens "
                            "of the scoring texts; none when no texts are at hand)")
    group.add_argument("--scorer", choices=SCORERS, help="unit ranking (default rf)")
    group.add_argument(seed_flag, dest="plan_seed", type=int_range(0), help="seed of scorer 'random' (default 0)")


def _plan_from_args(args, seed_flag: str):
    """The ``PruningPlan`` of --plan or the flags; None when neither is given."""
    flags = {"ffn": args.ffn, "qk": args.qk, "v": args.v, "skip_layers": args.skip_layers,
             "compensation": args.compensation, "scorer": args.scorer, "seed": args.plan_seed}
    given = {k: v for k, v in flags.items() if v is not None}
    if args.plan and given:
        names = ", ".join(seed_flag if k == "seed" else "--" + k.replace("_", "-") for k in given)
        raise CliError(f"--plan cannot be combined with {names}; put those settings in the plan file.")
    from obce_core.pruning.plan import PruningPlan

    if args.plan:
        return PruningPlan.from_json(args.plan)
    return PruningPlan(**given) if given else None


def _cmd_prune(args) -> int:
    from obce_core.loading import load_model
    from obce_core.pruning.files import is_obce_saved, save_pruned
    from obce_core.pruning.plan import PruningPlan
    from obce_core.pruning.surgery import prune
    from obce_core.scoring.scores import NeuronScores

    out = check_output_path(args.out, overwrite=args.overwrite, kind="dir", may_replace=is_obce_saved)
    plan = hidden_plan(_plan_from_args(args, "--seed") or PruningPlan(), args, from_file=bool(args.plan))
    scores = NeuronScores.from_parquet(args.scores)
    model, tokenizer = load_model(args.model, device=args.device)
    pruned, report = prune(model, scores, plan, hidden_stream=hidden_stream_for(plan, model, tokenizer, args))
    save_pruned(pruned, tokenizer, out, plan=plan, report=report, overwrite=args.overwrite)
    print(report.summary())
    print(f"\nWrote {out} (reload with obce_core.load_model({str(out)!r}) or AutoModel after `import obce_core`)")
    return 0


_RECIPE_FIELDS = ("max_length", "epochs", "max_steps", "learning_rate", "batch_size", "eval_batch_size", "train_size",
                  "eval_size", "seed", "warmup_ratio", "weight_decay", "precision", "pooling", "held_out", "held_out_max")


def _recipe_for(args, task: str):
    """The --recipe preset for ``task`` (``cpu`` = the task's CPU preset) with the flags' overrides."""
    from obce_core.training.recipe import Recipe

    overrides = {name: getattr(args, name) for name in _RECIPE_FIELDS if getattr(args, name) is not None}
    return Recipe.preset(args.recipe, task, **overrides)


def _cmd_glue(args) -> int:
    import pandas as pd

    from obce_core import glue
    from obce_core.jobs import JobSpec, create_job, run_job, start_job
    from obce_core.results import STORE_FILE, comparison_table
    from obce_core.training.progress import TrainingCancelled, is_main_process

    tasks = [glue.get_task(t).name for t in args.tasks.split(",") if t.strip()]
    recipes = {task: _recipe_for(args, task) for task in tasks}
    spec = JobSpec(
        model=args.model, tasks=tasks, plan=_plan_from_args(args, "--plan-seed"), recipe=recipes[tasks[0]] if tasks else None,
        recipes=recipes if len(set(recipes.values())) > 1 else {}, protocol=args.protocol,
        recover_steps=args.recover_steps, scores=args.scores, score_n=args.score_n, score_seed=args.score_seed,
        glue_dir=args.glue_dir, device=args.device,
    )
    if args.background:
        job_id = start_job(spec, args.workspace)
        print(f"Started job {job_id}; follow it with obce_core.jobs.job_status or the dashboard.")
        return 0
    job_dir = create_job(spec, args.workspace)
    main_process = is_main_process()  # one report under accelerate launch / torchrun
    if main_process:
        for task in tasks:
            print(f"Job {job_dir} | {task} recipe {spec.recipe_for(task).canonical_json()}", file=sys.stderr)
    bar, progress = progress_bar(show=main_process, per_phase=True)
    try:
        results = run_job(job_dir, progress=progress)
    except TrainingCancelled as exc:
        raise CliError(f"cancelled: {exc}") from exc
    finally:
        bar.close()
    if not main_process:
        return 0
    table = comparison_table(results).drop(columns="main")  # rows are one per metric; the headline needs no flag here
    scores = [c for c in ("original", "pruned", "recovered", "difference") if c in table]
    table[scores] = table[scores] * 100.0
    cached = sum(r.from_store for r in results)
    print("\nGLUE validation scores x100 (params %: pruned / original, whole model and encoder layers alone)")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep=""))
    print(f"\n{len(results)} runs ({cached} answered from the store) in {job_dir.parent.parent / STORE_FILE}")
    return 0


def _is_task_model(folder: Path) -> bool:
    from obce_core.training.task_models import TASK_MODEL_FILE

    return (folder / TASK_MODEL_FILE).is_file()


def _cmd_finetune(args) -> int:
    from obce_core import glue
    from obce_core.training.progress import TrainingCancelled, is_main_process
    from obce_core.training.task_models import finetune_task_model, task_model_info

    check_output_path(args.out, overwrite=args.overwrite, kind="dir", may_replace=_is_task_model)
    task = glue.get_task(args.task).name
    kd = {name: getattr(args, name) for name in ("kd_temperature", "kd_alpha", "kd_hidden", "eval_steps",
                                                 "early_stopping_patience") if getattr(args, name) is not None}
    if kd and args.teacher is None:
        raise CliError(f"--{'/--'.join(k.replace('_', '-') for k in kd)} set the distillation; add --teacher "
                       f"TASK_MODEL_DIR (a task model for {task}) or leave them out.")
    if args.recipe is None:  # recovering a pruned model from its teacher wants its own recipe
        args.recipe = RECOVERY_PRESET if args.teacher else "cpu"
    teacher_info = task_model_info(str(args.teacher)) if args.teacher else None
    if args.seed is None and teacher_info is not None and teacher_info.held_out is not None:
        args.seed = teacher_info.held_out.seed  # the student leaves out the rows the teacher never saw
    recipe = _recipe_for(args, task).replace(**kd)
    main_process = is_main_process()
    if main_process:
        how = f"Distilling {args.teacher} into" if args.teacher else "Fine-tuning"
        print(f"{how} {args.model} on {task} into {args.out} | recipe {recipe.canonical_json()}", file=sys.stderr)
    bar, progress = progress_bar(show=main_process, per_phase=True)
    try:
        info = finetune_task_model(task, args.out, model=args.model, recipe=recipe, teacher=args.teacher,
                                   glue_dir=args.glue_dir, device=args.device, progress=progress, overwrite=args.overwrite)
    except TrainingCancelled as exc:
        raise CliError(f"cancelled: {exc}") from exc
    except FileExistsError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    if main_process:
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in info.metrics.items() if k != "main_score")
        print(f"{task} dev (x100): {metrics}; main score {100 * info.main_score:.2f}")
        print(f"trained {info.train_steps} steps in {info.train_s:.1f} s on {info.device}"
              + (f", distilled from {info.distilled_from} ({info.recipe.kd_teacher})" if info.distilled_from else ""))
        print(f"Wrote {args.out} (reload with obce_core.load_model({str(args.out)!r}))")
    return 0


def _cmd_export_onnx(args) -> int:
    from obce_core.export import export_onnx
    from obce_core.loading import load_model

    out = check_output_path(args.out, overwrite=args.overwrite)
    model, tokenizer = load_model(args.model_dir, device="cpu")
    report = export_onnx(model, tokenizer, out, opset=args.opset, max_length=args.max_length)
    print(report.summary())
    return 0


def _add_recipe_arguments(parser, *, default: str) -> None:
    # Counts are checked here; the bounds of the other numbers are Recipe's (checked before any work).
    rec = parser.add_argument_group("recipe (a preset, then any of these overrides)")
    rec.add_argument("--recipe", default=default, choices=PRESET_CHOICES,
                     help="cpu: the task's CPU preset (cpu-sst2, ...); bert-glue: BERT's GLUE recipe (128 tokens, "
                          "batch 32, lr 2e-5, 3 epochs); obce-40: the OBCE paper's 40 epochs (GPU); smoke: 20 steps "
                          f"(default {default or 'recover with --teacher, else cpu'})")
    rec.add_argument("--max-length", type=int)
    rec.add_argument("--epochs", type=number_range(0, low_open=True))
    rec.add_argument("--max-steps", type=int_range(0), help="> 0 wins over --epochs")
    rec.add_argument("--lr", dest="learning_rate", type=number_range())
    rec.add_argument("--batch-size", type=int_range(1), help="global training batch (split over processes)")
    rec.add_argument("--eval-batch-size", type=int_range(1))
    rec.add_argument("--train-size", type=int_range(1), help="seeded subset of the training split")
    rec.add_argument("--eval-size", type=int_range(1), help="seeded subset of the validation split")
    rec.add_argument("--held-out", type=number_range(0, 0.5),
                     help="share of the training split never trained on, kept for the plan search (default 0.1; 0: none)")
    rec.add_argument("--held-out-max", type=int_range(1), help="at most this many held-out examples (default 2000)")
    rec.add_argument("--seed", type=int_range(0))
    rec.add_argument("--warmup-ratio", type=number_range())
    rec.add_argument("--weight-decay", type=number_range())
    rec.add_argument("--precision", choices=PRECISIONS)
    rec.add_argument("--pooling", choices=CLASSIFIER_POOLINGS, help="what a new task head reads: [CLS] or the token mean")


def build_parser() -> argparse.ArgumentParser:
    parser = ObceArgumentParser(
        prog="python -m obce_core",
        description="Explain and compress BERT models with zero-dimensional persistent homology (OBCE).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score every neuron by the 0-D persistence (rf) of its outputs")
    add_model_argument(score)
    add_texts_arguments(score)
    score.add_argument("--token", default="cls", choices=TOKEN_MODES, help="which token(s) make a sample")
    score.add_argument("--max-length", type=int_range(2), default=128)
    score.add_argument("--batch-size", type=int_range(1), default=32)
    score.add_argument("--convention", default="length", choices=["length", "radius"],
                       help="filtration value of an edge: its length (gudhi) or half of it")
    score.add_argument("--memory-budget-gb", type=_positive_gb, default=4.0)
    score.add_argument("--cache-dir", help="score cache folder (default $OBCE_CACHE_DIR or ~/.cache/obce)")
    score.add_argument("--no-cache", action="store_true")
    add_device_argument(score)
    score.add_argument("--out", help="write the per-neuron table to this .parquet file")
    add_overwrite_argument(score, "an existing --out file")
    score.set_defaults(func=_cmd_score)

    prune_p = sub.add_parser("prune", help="remove low-scoring FFN units and Q/K/V dims; save the smaller model")
    add_model_argument(prune_p)
    prune_p.add_argument("--scores", required=True, help="per-neuron scores (.parquet from `score --out`) of this model")
    _add_plan_arguments(prune_p, "--seed")
    add_hidden_arguments(prune_p)
    add_device_argument(prune_p)
    prune_p.add_argument("--out", required=True, help="directory for the pruned model, plan and report")
    add_overwrite_argument(prune_p, "an --out folder holding a model obce saved")
    prune_p.set_defaults(func=_cmd_prune)
    glue_p = sub.add_parser("glue", help="fine-tune and evaluate original vs pruned on GLUE tasks (results are stored)")
    add_model_argument(glue_p)
    glue_p.add_argument("--tasks", required=True, help="comma-separated GLUE tasks, e.g. sst2,mrpc,cola,rte")
    glue_p.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    glue_p.add_argument("--protocol", default="paper", choices=PROTOCOLS,
                        help="paper: prune the pre-trained model, fine-tune both; finetuned: prune a fine-tuned classifier")
    glue_p.add_argument("--recover-steps", type=int_range(0), default=0, help="finetuned protocol: fine-tune the pruned model this many steps")
    plan_g = glue_p.add_argument_group("pruning (no plan and no flags: the original alone)")
    _add_plan_arguments(plan_g, "--plan-seed")
    plan_g.add_argument("--scores", help="scores .parquet of --model (default: score each task's training sentences)")
    plan_g.add_argument("--score-n", type=int_range(2), default=512, help="training sentences scored per task (default 512)")
    plan_g.add_argument("--score-seed", type=int_range(0), default=0)
    _add_recipe_arguments(glue_p, default="cpu")
    glue_p.add_argument("--workspace", help="jobs and results.sqlite folder (default $OBCE_WORKSPACE or ./obce_workspace)")
    add_device_argument(glue_p, "cpu, cuda ... (default: what Trainer picks)")
    glue_p.add_argument("--background", action="store_true", help="start a background job and return at once")
    glue_p.set_defaults(func=_cmd_glue)

    ft = sub.add_parser("finetune", help="fine-tune a model on one GLUE task and save the classifier (a task model)")
    add_model_argument(ft)
    ft.add_argument("--task", required=True, help="the GLUE task (sst2, cola, mrpc, rte, ...)")
    ft.add_argument("--out", required=True, help="directory for the task model (reload with obce_core.load_model)")
    ft.add_argument("--glue-dir", help="local GLUE folder (<TASK>/train.tsv, dev.tsv); default $OBCE_GLUE_DIR, else the hub")
    _add_recipe_arguments(ft, default=None)
    kd = ft.add_argument_group("recovery by distillation (knowledge distillation from a teacher; --recipe defaults "
                               "to 'recover' with --teacher: lower lr, hidden-state distillation, early stopping on "
                               "the teacher's held-out reserve, checkpoints in OUT.checkpoints that a rerun resumes)")
    kd.add_argument("--teacher", metavar="TASK_MODEL_DIR",
                    help="a task model for --task (e.g. the one --model was pruned from): --model learns from its "
                         "outputs as well as from the labels")
    kd.add_argument("--kd-temperature", type=number_range(0, 100, low_open=True),
                    help="softmax temperature of the teacher term (default 2)")
    kd.add_argument("--kd-alpha", type=number_range(0, 1),
                    help="weight of the teacher term: 1 = teacher alone, 0 = labels alone (default 0.5)")
    kd.add_argument("--kd-hidden", type=number_range(0, 1000),
                    help="weight of the MSE between every layer's hidden states, student vs teacher (recover: 1)")
    kd.add_argument("--eval-steps", type=int_range(0),
                    help="score the teacher's held-out reserve every N steps and keep the best checkpoint (0: never)")
    kd.add_argument("--early-stopping-patience", type=int_range(0),
                    help="stop after N held-out scores without a gain (0: never; recover: 3)")
    add_device_argument(ft, "cpu, cuda ... (default: what Trainer picks)")
    add_overwrite_argument(ft, "an --out folder holding an earlier task model")
    ft.set_defaults(func=_cmd_finetune)
    onnx_p = sub.add_parser("export-onnx", help="write a model (pruned or not) as ONNX, checked against PyTorch in ONNX Runtime")
    onnx_p.add_argument("model_dir", metavar="DIR", help="a saved model directory ('default': the embedded all-MiniLM-L6-v2)")
    onnx_p.add_argument("--out", required=True, help="the .onnx file to write")
    onnx_p.add_argument("--opset", type=int_range(ONNX_MIN_OPSET, ONNX_MAX_OPSET), default=ONNX_OPSET,
                        help=f"ONNX opset, {ONNX_MIN_OPSET} to {ONNX_MAX_OPSET} (default {ONNX_OPSET})")
    onnx_p.add_argument("--max-length", type=int_range(2), default=128, help="longest input in tokens (default 128)")
    add_overwrite_argument(onnx_p, "an existing --out file")
    onnx_p.set_defaults(func=_cmd_export_onnx)
    add_sweep_parser(sub)  # `sweep`, `layers` and `search` live with their packages
    add_layers_parser(sub)
    add_search_parser(sub)
    add_attribution_parser(sub)
    add_domain_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging  # after parsing: `--help` never loads transformers

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        check_model_limits(args)
        return args.func(args)
    except (CliError, ValueError, OSError, KeyError) as exc:
        # ValueError covers every obce input error (ModelLoadError, GlueDataError, TextsError, ...).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
