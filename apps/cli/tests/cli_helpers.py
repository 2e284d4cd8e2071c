"""What the CLI's test modules share: running ``emp`` as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from emp_core.settings import QueueSettings


def emp(settings: QueueSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMP_REDIS_URL": settings.redis_url, "EMP_QUEUE": settings.queue}
    return subprocess.run(
        [sys.executable, "-m", "emp_cli.main", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
