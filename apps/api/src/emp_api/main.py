"""``emp-api``: serve the API with uvicorn (settings from ``EMP_API_*``, flags override them).
``--grpc-port PORT`` serves the gRPC services beside it, in the same process(es)."""

from __future__ import annotations

import argparse
import os
import sys

from emp_api.settings import ApiSettings
from emp_web import server


def main(argv: list[str] | None = None) -> None:
    settings = ApiSettings()
    # The app is built by uvicorn from its factory (in each worker process), so the gRPC flags
    # reach it as the environment variables the settings read.
    grpc = argparse.ArgumentParser(add_help=False)
    grpc.add_argument("--grpc-port", type=int, default=None)
    grpc.add_argument("--grpc-host", default=None)
    known, rest = grpc.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.grpc_port is not None:
        os.environ["EMP_API_GRPC_PORT"] = str(known.grpc_port)
    if known.grpc_host is not None:
        os.environ["EMP_API_GRPC_HOST"] = known.grpc_host
    server.run(
        "emp_api.app:create_app",
        settings,
        prog="emp-api",
        description=__doc__,
        logger="emp_api",
        processes=settings.processes,
        argv=rest,
        # Keep-alive clients (SDKs, the benchmark) reuse connections across bursts.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
