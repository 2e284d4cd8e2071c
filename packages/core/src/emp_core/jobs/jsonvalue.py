"""What a job's JSON may hold: values every JSON parser reads back unchanged.

A payload (or a capability tree) is refused, naming the path of the first bad value, when it holds
a string with a lone surrogate (not Unicode; orjson cannot write it), NaN or an infinity (JSON
has no such numbers; orjson would write ``null``), an integer outside 64 bits (orjson cannot
write it), or nesting deeper than ``MAX_DEPTH``. The API and the studio share the limit: the API
checks the raw body before parsing it (``too_deep``), the studio the payload text, so a
10,000-deep document never reaches a recursive parser.
"""

from __future__ import annotations

import math
import re
from typing import Any

from emp_core.errors import InvalidInput

MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

# A JSON string (escapes included) or a bracket: enough to measure nesting without parsing.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")

_Where = tuple[Any, ...] | None  # (parent, key): the path, built only when it is needed


def _path(field: str, where: _Where) -> str:
    keys: list[str] = []
    while where is not None:
        where, key = where
        keys.append(f"[{key}]" if isinstance(key, int) else f".{_printable(key)}")
    return field + "".join(reversed(keys))


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse(field: str, where: _Where, problem: str) -> InvalidInput:
    path = _path(field, where)
    if len(path) > 120:
        path = path[:119] + "…"
    return InvalidInput(f"{path}: {problem}", field=path)


def _check_text(text: str, field: str, where: _Where, what: str = "holds") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(
            field, where, f"{what} a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        ) from None


def check(value: Any, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``InvalidInput`` naming ``field``'s path to the first value JSON cannot hold.
    Iterative, so depth costs no recursion; ``value`` itself is level 1."""
    stack: list[tuple[Any, _Where, int]] = [(value, None, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise _refuse(field, where, f"is nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _refuse(field, where, f"key {key!r} is not a string")
                _check_text(key, field, where, "has a key with")
                stack.append((child, (where, key), depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise _refuse(field, where, f"is nested deeper than {max_depth} levels")
            stack.extend((child, (where, i), depth + 1) for i, child in enumerate(item))
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, str):
            _check_text(item, field, where)
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise _refuse(field, where, "is an integer beyond 64 bits; send it as a string")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse(field, where, f"{item} is not a number JSON can hold")
        else:
            raise _refuse(field, where, f"a {type(item).__name__} is not a JSON value")


def too_deep(raw: bytes | str, max_depth: int) -> str | None:
    """Whether JSON text nests deeper than ``max_depth``, measured without parsing it: None when
    it does not, else the top-level key under which it does (``""`` when there is none). Cheap
    when it cannot: fewer brackets than the limit are not even scanned."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return None
    depth = 0
    top_key = ""
    last_string = b""
    for match in _TOKENS.finditer(data):
        token = match.group()
        first = token[0]
        if first == 0x22:  # '"'
            last_string = token
            continue
        if first in _OPENERS:
            if depth == 1:
                top_key = last_string[1:-1].decode("utf-8", "replace")
            depth += 1
            if depth > max_depth:
                return top_key
        else:
            depth -= 1
    return None
