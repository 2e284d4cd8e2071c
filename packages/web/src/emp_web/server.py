"""Serving a web app with uvicorn from its console script: flags over settings, and logging that
includes our own loggers."""

from __future__ import annotations

import argparse
import copy
from typing import Any, Protocol

import uvicorn
from uvicorn.config import LOGGING_CONFIG


class ServerSettings(Protocol):
    host: str
    port: int
    log_level: str


def log_config(level: str, *loggers: str) -> dict[str, Any]:
    """uvicorn's logging, extended to ``loggers`` (the app's own, and core's)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    for name in (*loggers, "emp_core", "emp_sql", "emp_web"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper()}
    return config


def run(
    factory: str,
    settings: ServerSettings,
    *,
    prog: str,
    description: str | None,
    logger: str,
    processes: int | None = None,
    argv: list[str] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Parse ``--host``, ``--port``, ``--log-level`` (and ``--processes`` where ``processes`` is
    given) with ``settings`` as defaults, then serve ``factory`` (``"module:create_app"``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    if processes is not None:
        parser.add_argument("--processes", type=int, default=processes)
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=getattr(args, "processes", None),
        log_level=args.log_level,
        log_config=log_config(args.log_level, logger),
        **uvicorn_options,
    )
