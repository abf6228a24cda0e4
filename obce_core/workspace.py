"""The workspace: the one folder where obce keeps jobs, the results store and task models.

``$OBCE_WORKSPACE``, else ``./obce_workspace``. Jobs live in ``<workspace>/jobs/<job_id>/``, GLUE
results in ``<workspace>/results.sqlite``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WORKSPACE_ENV", "default_workspace"]

WORKSPACE_ENV = "OBCE_WORKSPACE"


def default_workspace() -> Path:
    """``$OBCE_WORKSPACE``, else ``./obce_workspace``."""
    env = os.environ.get(WORKSPACE_ENV, "").strip()
    return Path(env).expanduser() if env else Path("obce_workspace")
