"""Prefect flows of hitl-loop, one per module. Each is the table of contents of one job.

Prefect reads its API URL when it is first imported, so importing this package first points this process
at the configured stack ($HITL_CONFIG, else configs/demo.yaml) unless PREFECT_API_URL is already set.
"""

import os

if "PREFECT_API_URL" not in os.environ:
    from hitl.config import CONFIG_ENV, DEFAULT_CONFIG, load_config
    from hitl.environment import apply_environment

    _path = os.environ.get(CONFIG_ENV, str(DEFAULT_CONFIG))
    if os.path.exists(_path):
        apply_environment(load_config(_path))
