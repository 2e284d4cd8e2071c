"""``emp-studio``: serve the studio with uvicorn (settings from ``EMP_STUDIO_*``, flags override
them)."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from emp_studio.settings import StudioSettings


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, extended to our own loggers (sign-ins, submits, the hub)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    for name in ("emp_studio", "emp_core"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper()}
    return config


def main(argv: list[str] | None = None) -> None:
    settings = StudioSettings()
    parser = argparse.ArgumentParser(prog="emp-studio", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    uvicorn.run(
        "emp_studio.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=_log_config(args.log_level),
    )


if __name__ == "__main__":
    main()
