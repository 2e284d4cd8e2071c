"""HMAC-signed, expiring URLs for blobs the local store holds (what a SAS is to Azure).

The signature covers the blob path and the expiry (unix seconds), HMAC-SHA256 under a key the
signing and the serving processes share (``EMP_BLOB_SIGNING_KEY``). Verification is constant-time
and refuses an expired URL before looking at the file.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from emp_core.errors import EmpError


class BadSignature(EmpError):
    """A signed URL that was altered, made with another key, or has expired."""

    status_code = 403
    code = "bad_signature"


def sign(key: bytes, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_query(key: bytes, path: str, *, ttl_s: int, now: float | None = None) -> str:
    """``exp=…&sig=…`` for ``path``, valid ``ttl_s`` seconds from ``now``."""
    expires = int(now if now is not None else time.time()) + ttl_s
    return urlencode({"exp": expires, "sig": sign(key, path, expires)})


def signed_url(base_url: str, key: bytes, path: str, *, ttl_s: int) -> str:
    """``{base_url}/{path}?exp=…&sig=…``."""
    return f"{base_url.rstrip('/')}/{quote(path)}?{signed_query(key, path, ttl_s=ttl_s)}"


def verify(
    key: bytes, path: str, expires: str | int, signature: str, *, now: float | None = None
) -> None:
    """Raise ``BadSignature`` unless ``signature`` is ``path``'s for ``expires``, still ahead."""
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        raise BadSignature("the URL's expiry is not a number", field="exp") from None
    if not hmac.compare_digest(sign(key, path, exp), str(signature)):
        raise BadSignature("the URL's signature does not match", field="sig")
    if exp < (now if now is not None else time.time()):
        raise BadSignature("the URL has expired", field="exp")
