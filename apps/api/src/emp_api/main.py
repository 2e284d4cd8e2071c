"""``emp-api``: serve the API with uvicorn (settings from ``EMP_API_*``, flags override them)."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from emp_api.settings import ApiSettings


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, extended to our own loggers (the reaper, the hub, the projector)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    for name in ("emp_api", "emp_core"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper()}
    return config


def main(argv: list[str] | None = None) -> None:
    settings = ApiSettings()
    parser = argparse.ArgumentParser(prog="emp-api", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--processes", type=int, default=settings.processes)
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    uvicorn.run(
        "emp_api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.processes,
        log_level=args.log_level,
        log_config=_log_config(args.log_level),
        # Keep-alive clients (SDKs, the benchmark) reuse connections across bursts.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
