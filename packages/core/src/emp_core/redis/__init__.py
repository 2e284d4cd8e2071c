"""Redis: the one way every process opens a client (``connect``), the one way its replies are read
as text (``text``, ``text_map``, ``text_list``), and the private ``redis-server`` that ``make dev``
and the tests start."""

from emp_core.redis.client import connect
from emp_core.redis.replies import text, text_list, text_map

__all__ = ["connect", "text", "text_list", "text_map"]
