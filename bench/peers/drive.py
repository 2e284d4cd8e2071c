"""``python -m bench.peers.drive SYSTEM URL DIR [sizes]``: every workload against one system,
its result as JSON on stdout. Run by ``bench.peers`` with the interpreter of the system's own
environment (the workspace's for EMP, the peers' virtual environment for the others)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
from pathlib import Path

from bench.peers.harness import Sizes, measure


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", help="emp, saq, arq, rq, celery or dramatiq")
    p.add_argument("url")
    p.add_argument("directory", type=Path)
    p.add_argument("--sizes", default="{}", help="JSON: Sizes fields to change")
    args = p.parse_args()
    system = importlib.import_module(f"bench.peers.sys_{args.system}").SYSTEM
    sizes = Sizes(**json.loads(args.sizes))
    result = asyncio.run(measure(system, args.url, args.directory, sizes))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
