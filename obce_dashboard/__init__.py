"""The obce Streamlit dashboard's shared helpers; the pages live in ``pages/``, the entry point is
``app.py`` (run it with ``streamlit run app.py``). Unlike ``obce_core`` this package imports
streamlit; it holds no domain logic (that lives in ``obce_core``).

- ``settings``: the one table of settings a link carries, and widgets bound to them.
- ``session``: the shared model cache, the texts, the shared store of scored runs.
- ``prune_plan``: the plan in force (Prune page settings), the session's pruned model and the
  calibration the fitted compensations use.
- ``paths``: which model folders a visitor may load and where a pruned model may be saved.
- ``ui``: page scaffolding (page paths, error display, the "nothing scored yet" notice).
- ``navigation``: the app's sections and pages, and the bootstrap that keeps them when Streamlit
  runs a page file alone (a deep link opened first after a restart).
- ``uploads``: Model & data's texts upload: read a file or refuse it with one message.
- ``job_panel``: one background job's progress, cancel button and outcome, polled while it runs.
- ``task_models``: Model & data's Task models section (list, load, train as a job).
- ``evidence``: the Prune page's task score of the plan in force and the threshold sweep's curves.
"""

__all__: list[str] = []
