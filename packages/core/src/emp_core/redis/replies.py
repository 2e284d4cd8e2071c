"""Redis replies read as text, decoded in this one place.

The client keeps raw bytes (``decode_responses=False``, see ``client.py``): job payloads and
results are handed on as bytes, and hiredis packs and parses without a decoding step. What a
caller reads as text (ids, hash fields, channel names) goes through ``text`` or ``text_map``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def text(value: object) -> str:
    """One reply as str: bytes decoded as UTF-8 (what redis-py encoded), anything else by str()."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply (HGETALL, or a stream entry's fields) with every field and value as str."""
    return {text(k): text(v) for k, v in raw.items()}


def text_list(raw: Iterable[object]) -> list[str]:
    """A list reply (ZRANGE, SMEMBERS, HKEYS) as str."""
    return [text(v) for v in raw]
