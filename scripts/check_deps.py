"""Check what each workspace member declares against what it imports, and what a worker installs.

1. ``deptry`` over every member's ``src/``: an import of a package the member does not declare
   (DEP001/DEP003), or a declared dependency it never imports (DEP002), fails.
2. The packages a GPU worker's install resolves to (``uv export --package emp-worker``, from the
   lock, so exactly what ``uv sync --package emp-worker`` installs) must hold no web framework,
   SQL driver or CLI toolkit. The same for the machine supervisor that runs beside it.

Run by ``make deps`` (part of ``make lint`` and so of ``make test``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(
    p.parent for p in ROOT.glob("*/*/pyproject.toml") if p.parts[-3] in {"apps", "packages"}
)
# What a GPU host must never carry: web frameworks and servers, SQL, CLI toolkits.
FORBIDDEN_ON_GPU_HOSTS = {
    "starlette", "fastapi", "uvicorn", "jinja2", "python-multipart", "itsdangerous",
    "sqlalchemy", "alembic", "psycopg", "psycopg-binary", "aiosqlite", "greenlet",
    "typer", "click", "rich",
    # gRPC only with the worker's `grpc` extra (emp-worker --transport grpc).
    "grpcio", "grpcio-tools", "emp-rpc",
}  # fmt: skip
GPU_HOST_PACKAGES = ("emp-worker", "emp-machine")


def _uv() -> str:
    """The uv the Makefile uses (``UV``), as a full path."""
    name = os.environ.get("UV", "uv")
    return shutil.which(name) or name


def installed_by(package: str) -> set[str]:
    """Distribution names ``uv sync --package PACKAGE --no-dev`` installs, read from the lock."""
    out = subprocess.run(  # noqa: S603 - fixed arguments, no user input
        [_uv(), "export", "--package", package, "--no-dev", "--frozen", "--no-hashes",
         "--no-header", "--no-annotate", "--no-emit-workspace"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    names = set()
    for line in out.splitlines():
        if m := re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==", line):
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def main() -> int:
    failed = False
    for member in MEMBERS:
        result = subprocess.run(
            [sys.executable, "-m", "deptry", "src"], cwd=member, capture_output=True, text=True
        )
        if result.returncode != 0:
            failed = True
            print(f"{member.relative_to(ROOT)}: dependencies do not match imports", file=sys.stderr)
            print(result.stdout + result.stderr, file=sys.stderr)
    for package in GPU_HOST_PACKAGES:
        names = installed_by(package)
        if bad := sorted(names & FORBIDDEN_ON_GPU_HOSTS):
            failed = True
            print(f"{package} would install {', '.join(bad)}: keep them out", file=sys.stderr)
        else:
            print(f"{package}: {len(names)} third-party distributions, none of web/SQL/CLI")
    if not failed:
        print(f"deptry: {len(MEMBERS)} members declare exactly what they import")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
