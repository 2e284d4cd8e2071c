"""Logging of the web processes: secrets never reach a log line.

uvicorn logs every request line, WebSocket handshakes included, with its query string; a client
that put its API token in ``?token=`` (or a ticket in ``?ticket=``) would have it written to the
access log. ``RedactSecrets`` masks such query values and anything shaped like an EMP token in
every record its handlers write; ``log_config`` installs it on uvicorn's handlers.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from emp_sql.tokens import TOKEN_PREFIX
from emp_web.tickets import TICKET_PREFIX

REDACTED = "[redacted]"
_QUERY_SECRET = re.compile(r"(?i)\b((?:access_)?(?:token|ticket|key|secret|password)=)[^&\s\"']+")
# uvicorn's DEBUG lines echo request and response headers ("< authorization: Bearer …").
_HEADER_SECRET = re.compile(r"(?i)^([<>] (?:authorization|cookie|set-cookie|x-api-key):\s*).+$")
_PREFIXES = (TOKEN_PREFIX, TICKET_PREFIX)
_TOKEN = re.compile(f"({'|'.join(map(re.escape, _PREFIXES))})" + r"[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    if text[:2] in ("< ", "> "):
        text = _HEADER_SECRET.sub(r"\1" + REDACTED, text)
    if "=" not in text and not any(p in text for p in _PREFIXES):
        return text
    return _TOKEN.sub(r"\1" + REDACTED, _QUERY_SECRET.sub(r"\1" + REDACTED, text))


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)  # an object (headers, a URL): its text, redacted
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactSecrets(logging.Filter):
    """Masks secrets in a record (it never drops one). uvicorn's access records keep their
    arguments (its formatter reads them one by one), each masked; any other record whose text
    holds a secret is replaced by its masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
            return True
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed record: logging reports it as it would have
        cleaned = redact(text)
        if cleaned != text:
            record.msg, record.args = cleaned, ()
        return True


def log_config(level: str, *loggers: str) -> dict[str, Any]:
    """uvicorn's logging, extended to ``loggers`` (the app's own, and core's), every handler
    redacting secrets."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    for name in (*loggers, "emp_core", "emp_sql", "emp_web"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper()}
    return config


def install(*names: str) -> None:
    """Redact on these loggers directly too (``uvicorn.access``, ``uvicorn.error``), for a server
    started with another logging configuration (tests, an embedding process)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
