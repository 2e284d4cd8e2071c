"""``emp-studio``: serve the studio with uvicorn (settings from ``EMP_STUDIO_*``, flags override
them)."""

from __future__ import annotations

from emp_studio.settings import StudioSettings
from emp_web import server


def main(argv: list[str] | None = None) -> None:
    server.run(
        "emp_studio.app:create_app",
        StudioSettings(),
        prog="emp-studio",
        description=__doc__,
        logger="emp_studio",
        argv=argv,
    )


if __name__ == "__main__":
    main()
