"""``emp-api``: serve the API with uvicorn (settings from ``EMP_API_*``, flags override them)."""

from __future__ import annotations

from emp_api.settings import ApiSettings
from emp_web import server


def main(argv: list[str] | None = None) -> None:
    settings = ApiSettings()
    server.run(
        "emp_api.app:create_app",
        settings,
        prog="emp-api",
        description=__doc__,
        logger="emp_api",
        processes=settings.processes,
        argv=argv,
        # Keep-alive clients (SDKs, the benchmark) reuse connections across bursts.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
