"""Env-file keys: one master key per id, HKDF-derived enc/mac/check keys, and the key ring in
``EMP_ENV_KEY`` (``KID:BASE64[,KID:BASE64...]``; the first encrypts, any decrypts its own files)."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emp_core.security.envcrypt.errors import (
    MalformedKey,
    MissingKey,
    PlaceholderKey,
    ShortKey,
)

KEY_ENV = "EMP_ENV_KEY"
KEY_BYTES = 32
KID_BYTES = 16
FINGERPRINT_BYTES = 8
KID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,16}")
# Text that marks a key copied from an example rather than generated.
_PLACEHOLDERS = ("change", "placeholder", "example", "your", "secret", "todo", "xxxx", "dummy")
# A random 32-byte key has about 30 distinct byte values; fewer than 12 means it was typed.
_MIN_DISTINCT_BYTES = 12
_LABEL = b"emp-env v1 "


def _hkdf(master: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL + label.encode()
    ).derive(master)


@dataclass(frozen=True)
class EnvKey:
    """One master key and its id; ``repr`` never shows the key."""

    kid: str
    master: bytes = field(repr=False)
    enc_key: bytes = field(init=False, repr=False)
    mac_key: bytes = field(init=False, repr=False)
    fingerprint: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not KID_PATTERN.fullmatch(self.kid):
            raise MalformedKey(
                f"key id {self.kid!r} must be 1-16 characters of A-Z a-z 0-9 _ . -", field="kid"
            )
        if len(self.master) != KEY_BYTES:
            raise ShortKey(
                f"key {self.kid!r} holds {len(self.master)} bytes; a key is exactly {KEY_BYTES} "
                "random bytes (make one with `emp env keygen`)"
            )
        if len(set(self.master)) < _MIN_DISTINCT_BYTES:
            raise PlaceholderKey(
                f"key {self.kid!r} is not random (it repeats a few byte values); make one with "
                "`emp env keygen`"
            )
        check = _hkdf(self.master, "check")
        object.__setattr__(self, "enc_key", _hkdf(self.master, "aes-256-cbc"))
        object.__setattr__(self, "mac_key", _hkdf(self.master, "hmac-sha256"))
        object.__setattr__(
            self,
            "fingerprint",
            hmac.new(check, b"emp-env key check", sha256).digest()[:FINGERPRINT_BYTES],
        )

    @classmethod
    def generate(cls, kid: str) -> EnvKey:
        return cls(kid, secrets.token_bytes(KEY_BYTES))

    def encode(self) -> str:
        """``KID:BASE64``, the form ``EMP_ENV_KEY`` holds."""
        return f"{self.kid}:{base64.b64encode(self.master).decode()}"


def parse_key(entry: str, variable: str = KEY_ENV) -> EnvKey:
    """One ``KID:BASE64`` entry of ``variable`` (``EMP_ENV_KEY``, or ``EMP_DATA_KEY``, which
    holds keys of the same form)."""
    kid, sep, text = entry.strip().partition(":")
    if not sep or not kid or not text:
        raise MalformedKey(
            f"{variable} entries read KID:BASE64 (e.g. k1:3q2+7w...=), separated by commas; "
            f"got an entry of {len(entry.strip())} characters without that shape"
        )
    try:
        master = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        master = None
    # Words are looked for only when the text is not a 32-byte key: a generated key may spell
    # "your" by chance, a copied example never decodes to exactly 32 bytes.
    if (master is None or len(master) != KEY_BYTES) and any(
        word in text.lower() for word in _PLACEHOLDERS
    ):
        raise PlaceholderKey(
            f"key {kid!r} in {variable} is a placeholder, not a key; make one with `emp env keygen`"
        )
    if master is None:
        raise MalformedKey(f"key {kid!r} in {variable} is not valid base64")
    return EnvKey(kid, master)


@dataclass(frozen=True)
class KeyRing:
    """The keys of ``EMP_ENV_KEY`` (or of ``variable``, another setting of the same form):
    ``current`` encrypts, any of them decrypts by key id."""

    keys: tuple[EnvKey, ...]
    # The setting the keys came from, named in every error.
    variable: str = field(default=KEY_ENV, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise MissingKey(f"{self.variable} holds no key")
        kids = [k.kid for k in self.keys]
        if dupes := sorted({k for k in kids if kids.count(k) > 1}):
            raise MalformedKey(f"{self.variable} names key id {', '.join(dupes)} more than once")

    @property
    def current(self) -> EnvKey:
        return self.keys[0]

    def get(self, kid: str) -> EnvKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    @classmethod
    def parse(cls, text: str, variable: str = KEY_ENV) -> KeyRing:
        entries = [e for e in text.split(",") if e.strip()]
        if not entries:
            raise MissingKey(
                f"{variable} is empty: set it to KID:BASE64 (make a key with `emp env keygen`)"
            )
        return cls(tuple(parse_key(e, variable) for e in entries), variable)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        value = (os.environ if environ is None else environ).get(KEY_ENV)
        if value is None:
            raise MissingKey(
                f"{KEY_ENV} is not set: it must hold the key the env file was encrypted with "
                "(KID:BASE64; make one with `emp env keygen`)"
            )
        return cls.parse(value)
