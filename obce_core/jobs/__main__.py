"""``python -m obce_core.jobs run <job_dir>``: the worker process that ``start_job`` launches."""

import sys

from obce_core.jobs.worker import main

sys.exit(main())
