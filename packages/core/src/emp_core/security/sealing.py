"""Sealing short secrets at rest: AES-256-GCM under a data key held outside the database, so a
dump or a read-only role holds ciphertext only (a webhook's signing secret is the first user).

A sealed value is text, so it fits the column the plaintext had::

    sealed:v1:<kid>:<base64url(nonce[12] || ciphertext || tag[16])>

The prefix makes a value's state unambiguous: anything without it is plaintext from before
sealing. ``where`` (the table and row, say ``webhook_endpoints:<id>``) is the associated data: a
sealed value copied into another row does not open there.

Keys have the ADR-001 form and parsing (``emp_core.security.envcrypt.keyring``):
``EMP_DATA_KEY`` holds ``KID:BASE64[,KID:BASE64...]`` (``emp env keygen`` prints one); the first
key seals, any key opens the values that name its id, which is how keys rotate. The AES key is an
HKDF-SHA256 expansion of the master under a label of its own, so even a master that also served
as an env key would never key two purposes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emp_core.errors import EmpError
from emp_core.security.envcrypt.keyring import EnvKey, KeyRing

DATA_KEY_ENV = "EMP_DATA_KEY"
PREFIX = "sealed:v1:"
NONCE_BYTES = 12
_LABEL = b"emp-seal v1 aes-256-gcm"


class SealError(EmpError):
    """A sealed value that cannot be opened. Only background work opens sealed values (no
    request does), so this is recorded where that work records failures, never answered."""

    status_code = 500
    code = "sealed_value"


class UnknownSealKey(SealError):
    code = "sealed_value_key_id"


class BrokenSeal(SealError):
    """Malformed, modified, or moved from the row it was sealed for."""

    code = "sealed_value_broken"


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def key_id(value: str) -> str | None:
    """The id of the key that sealed ``value``; None for plaintext."""
    if not is_sealed(value):
        return None
    return value[len(PREFIX) :].partition(":")[0]


def _aead(key: EnvKey) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL)
    return AESGCM(hkdf.derive(key.master))


@dataclass(frozen=True)
class Sealer:
    """Seals with the ring's current key, opens with whichever key a value names."""

    ring: KeyRing
    _ciphers: dict[str, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ciphers", {k.kid: _aead(k) for k in self.ring.keys})

    @classmethod
    def parse(cls, text: str) -> Sealer:
        """From the text of ``EMP_DATA_KEY``; errors name that setting."""
        return cls(KeyRing.parse(text, DATA_KEY_ENV))

    @classmethod
    def generate(cls, kid: str) -> Sealer:
        return cls(KeyRing((EnvKey.generate(kid),), DATA_KEY_ENV))

    @property
    def current_kid(self) -> str:
        return self.ring.current.kid

    def seal(self, plaintext: str, where: str) -> str:
        kid = self.current_kid
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, plaintext.encode(), where.encode())
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unseal(self, value: str, where: str) -> str:
        """The plaintext of a sealed value (a plaintext value is returned as it is: rows from
        before sealing stay readable until they are sealed)."""
        if not is_sealed(value):
            return value
        kid, sep, text = value[len(PREFIX) :].partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownSealKey(
                f"sealed with key {kid!r}, which {self.ring.variable} does not hold "
                f"(it holds {', '.join(self._ciphers)})"
            )
        try:
            blob = base64.urlsafe_b64decode(text.encode()) if sep else b""
        except (binascii.Error, ValueError):
            blob = b""
        if len(blob) <= NONCE_BYTES:
            raise BrokenSeal(f"a value sealed with key {kid!r} is malformed")
        try:
            plain = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], where.encode())
        except InvalidTag:
            raise BrokenSeal(
                f"a value sealed with key {kid!r} does not open: modified, or not sealed for "
                "this row, or the key under that id has changed"
            ) from None
        return plain.decode()

    def needs_sealing(self, value: str) -> bool:
        """Plaintext, or sealed with a key other than the current one (a key being retired)."""
        return key_id(value) != self.current_kid
