"""Bearer tokens in gRPC metadata: the same API tokens as REST, under ``authorization``."""

from __future__ import annotations

from collections.abc import Iterable

AUTHORIZATION = "authorization"
# Trailing metadata of an error: the stable error code and the field it names (as REST's body).
ERROR_CODE = "emp-error-code"
ERROR_FIELD = "emp-error-field"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


def token_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token of a call, or None when there is none (or it is not ``Bearer …``)."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
