"""The plaintext of an env file: a strict ``.env`` parser (python-dotenv is lenient; a rented host
must refuse a file it would misread)."""

from __future__ import annotations

import re

from emp_core.security.envcrypt.errors import MalformedEnv, MalformedPlaintext

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def _unquote_double(raw: str, lineno: int) -> str:
    out: list[str] = []
    chars = iter(raw)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt not in _ESCAPES:
            raise MalformedEnv(f"line {lineno}: unknown escape \\{nxt} in a double-quoted value")
        out.append(_ESCAPES[nxt])
    return "".join(out)


def _value(raw: str, lineno: int) -> str:
    raw = raw.strip()
    quote = raw[:1]
    if quote not in ("'", '"'):
        # Unquoted: a # after whitespace starts a comment, as in shells and docker compose.
        return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    # The closing quote: the next one for '...', the next unescaped one for "...".
    pattern = r"'([^']*)'" if quote == "'" else r'"((?:[^"\\]|\\.)*)"'
    match = re.match(pattern, raw)
    rest = raw[match.end() :].strip() if match else ""
    if match is None or (rest and not rest.startswith("#")):
        raise MalformedEnv(f"line {lineno}: a value opened with {quote} is not closed")
    inner = match.group(1)
    return inner if quote == "'" else _unquote_double(inner, lineno)


def parse_env(text: str) -> dict[str, str]:
    """``NAME=value`` lines (``export`` allowed, ``#`` comments, '' and "" quotes, no
    interpolation) as a dict. Anything else is refused with its line number, so a typo is
    found when the file is encrypted, not on a rented host."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        name, sep, raw = stripped.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise MalformedEnv(f"line {lineno}: expected NAME=value, got {name[:40]!r}…")
        if name in out:
            raise MalformedEnv(f"line {lineno}: {name} is set twice")
        out[name] = _value(raw, lineno)
    return out


def env_from_plaintext(plaintext: bytes, *, source: str = "env file") -> dict[str, str]:
    """The variables of a decrypted file; ``MalformedPlaintext`` when it is not an env file."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPlaintext(f"{source} is authentic but not UTF-8 text") from None
    try:
        return parse_env(text)
    except MalformedEnv as exc:
        raise MalformedPlaintext(f"{source} is authentic but does not parse: {exc}") from None
