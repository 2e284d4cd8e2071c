"""``python -m emp_worker``: the same as ``emp-worker``."""

from emp_worker.main import main

main()
