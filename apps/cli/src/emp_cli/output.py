"""How the ``emp`` command prints.

Nothing a user or a job wrote is ever read as Rich markup (a job id like ``[/x]`` or a pattern
like ``^[a-z0-9]{0,63}$`` prints as it is), and nothing is wrapped at the terminal's width: a
token or a command printed into a pipe or a log can be pasted back whole. Results are summarised:
an image (a ``data:`` URL or a long run of base64) shows as its kind and size, long text is cut.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

# Longest string shown whole in a summary; longer text is cut with a count of what was left out.
MAX_TEXT = 200
_DATA_URL = re.compile(
    r"^data:(?P<kind>[\w.+-]+/[\w.+-]+)?(?:;[\w=.-]+)*;base64,(?P<data>.*)$", re.S
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def error(message: str) -> None:
    """Print ``error: message`` on stderr, the message as plain text."""
    err.print(Text.assemble(("error:", "red"), " ", message))


def _size(chars: int) -> str:
    n = chars * 3 // 4  # bytes a base64 text of this length decodes to
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n / 1000:.1f} kB"


def summarise(value: Any) -> Any:
    """``value`` with every embedded file replaced by a short note and long text cut."""
    if isinstance(value, str):
        if match := _DATA_URL.match(value):
            return f"<{match['kind'] or 'data'}, {_size(len(match['data']))} as base64>"
        if len(value) > MAX_TEXT and _BASE64.match(value):
            return f"<base64, {_size(len(value))}>"
        if len(value) > MAX_TEXT:
            return f"{value[:MAX_TEXT]}… ({len(value) - MAX_TEXT} more characters)"
        return value
    if isinstance(value, dict):
        return {k: summarise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summarise(v) for v in value]
    return value
