"""Jobs: GLUE comparisons, task-model fine-tunes and threshold sweeps that run in their own process.

How a job runs, file by file:

1. ``runner.start_job(spec)`` (the dashboard) or ``runner.create_job`` + ``worker.run_job`` (the
   CLI, in its own process). ``create_job`` checks the ``spec.JobSpec`` / ``spec.FinetuneJobSpec``,
   refuses a twin of a job that is running, and writes ``<workspace>/jobs/<job_id>/spec.json`` and a
   queued ``status.json`` (``status``). ``start_job`` launches ``python -m obce_core.jobs run
   <job_dir>`` (``__main__`` -> ``worker.main``) in a new session, logging to ``worker.log``.
2. ``worker.run_job`` reads the spec, waits for its turn (``queue``: one job of a workspace runs at a
   time unless ``$OBCE_MAX_PARALLEL_JOBS`` allows more; the status says whom it waits for), and, for a GLUE job, opens the results store
   (``obce_core.results.ResultsStore``) and runs one protocol per task
   (``obce_core.training.run_paper_protocol`` / ``run_finetuned_protocol``: load, prune, fine-tune,
   evaluate); for a finetune job it runs ``obce_core.training.finetune_task_model``; for a sweep
   job ``obce_core.evidence.sweep_task_model`` (rows cached per point: cancelling keeps them).
3. Each protocol run is looked up in the store first and stored as soon as it finishes.
4. Progress arrives as typed events (``PhaseEvent``, ``StepEvent``, ``ResultEvent``) and is
   written to ``status.json`` with the whole job's run count and ETA (``progress.JobClock``);
   ``runner.job_status`` reads it and checks with psutil
   (``process``) that the worker still lives; ``runner.cancel_job`` raises the ``cancel`` flag the
   trainer polls every step, then escalates to SIGTERM and SIGKILL.

Under ``accelerate launch``/``torchrun`` every process runs the protocols together, and only
rank 0 writes results and status.
"""

from obce_core.jobs.runner import (
    cancel_job,
    cancel_requested,
    create_job,
    job_log_tail,
    job_results,
    job_status,
    list_jobs,
    model_jobs,
    start_job,
)
from obce_core.jobs.progress import JobClock, PlannedRun, planned_runs
from obce_core.jobs.queue import MAX_PARALLEL_ENV, max_parallel_jobs, overlapping_jobs
from obce_core.jobs.spec import JOB_KINDS, FinetuneJobSpec, JobSpec, SearchJobSpec, SweepJobSpec, read_spec
from obce_core.jobs.status import (
    ACTIVE_STATES,
    CANCEL_FILE,
    JOB_STATES,
    LOG_FILE,
    PID_FILE,
    SPEC_FILE,
    STATUS_FILE,
    JobError,
    JobStatus,
)
from obce_core.jobs.worker import JobCancelled, run_job
from obce_core.workspace import WORKSPACE_ENV, default_workspace

__all__ = [
    "ACTIVE_STATES",
    "CANCEL_FILE",
    "JOB_KINDS",
    "JOB_STATES",
    "LOG_FILE",
    "MAX_PARALLEL_ENV",
    "PID_FILE",
    "SPEC_FILE",
    "STATUS_FILE",
    "WORKSPACE_ENV",
    "FinetuneJobSpec",
    "JobClock",
    "JobCancelled",
    "JobError",
    "JobSpec",
    "JobStatus",
    "PlannedRun",
    "SearchJobSpec",
    "SweepJobSpec",
    "cancel_job",
    "cancel_requested",
    "create_job",
    "default_workspace",
    "job_log_tail",
    "job_results",
    "job_status",
    "list_jobs",
    "model_jobs",
    "max_parallel_jobs",
    "overlapping_jobs",
    "planned_runs",
    "read_spec",
    "run_job",
    "start_job",
]
