"""Redis: the one way every process opens a client (``connect``), and the private ``redis-server``
that ``make dev`` and the tests start."""

from emp_core.redis.client import connect

__all__ = ["connect"]
