"""The obce Streamlit dashboard's shared helpers; the pages live in ``pages/``, the entry point is
``app.py`` (run it with ``streamlit run app.py``). Unlike ``obce_core`` this package imports
streamlit; it holds no domain logic (that lives in ``obce_core``).

- ``settings``: the one table of settings a link carries, and widgets bound to them.
- ``session``: the shared model cache, the texts, the shared store of scored runs.
- ``prune_plan``: the plan in force (Prune page settings) and the session's pruned model.
- ``paths``: which model folders a visitor may load and where a pruned model may be saved.
- ``ui``: page scaffolding (page paths, error display, the "nothing scored yet" notice).
"""

__all__: list[str] = []
