"""The encrypted file, version 1: header, IV, AES-256-CBC ciphertext, HMAC-SHA256 tag
(encrypt-then-MAC). See the package docstring for the byte layout."""

from __future__ import annotations

import hmac
import secrets
import struct
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from emp_core.security.envcrypt.dotenv import env_from_plaintext, parse_env
from emp_core.security.envcrypt.errors import (
    AuthenticationFailed,
    MalformedHeader,
    MalformedPlaintext,
    NotAnEnvFile,
    TrailingBytes,
    TruncatedFile,
    UnknownKeyId,
    UnsupportedVersion,
    WrongKey,
)
from emp_core.security.envcrypt.keyring import (
    FINGERPRINT_BYTES,
    KEY_ENV,
    KID_BYTES,
    KID_PATTERN,
    EnvKey,
    KeyRing,
)

MAGIC = b"EMPENV"
VERSION = 1
IV_BYTES = 16
TAG_BYTES = 32
_HEADER = struct.Struct(f">{len(MAGIC)}sB{KID_BYTES}s{FINGERPRINT_BYTES}sI")
HEADER_BYTES = _HEADER.size  # 35
_BLOCK = 16


def encrypt(plaintext: bytes, key: EnvKey, *, _iv: bytes | None = None) -> bytes:
    """The encrypted file for ``plaintext``. ``_iv`` is for known-answer tests only: a fixed IV
    makes the output deterministic, and reusing one leaks which files start alike."""
    iv = secrets.token_bytes(IV_BYTES) if _iv is None else _iv
    if len(iv) != IV_BYTES:
        raise ValueError(f"the IV must be {IV_BYTES} bytes")
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key.enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    kid = key.kid.encode().ljust(KID_BYTES, b"\0")
    header = _HEADER.pack(MAGIC, VERSION, kid, key.fingerprint, len(ciphertext))
    body = header + iv + ciphertext
    return body + hmac.new(key.mac_key, body, sha256).digest()


@dataclass(frozen=True)
class Header:
    """The clear part of an encrypted file: enough to pick the key, nothing secret."""

    version: int
    kid: str
    fingerprint: bytes
    ciphertext_bytes: int


def read_header(blob: bytes, *, source: str = "env file") -> Header:
    """Parse and check the header and the file's size (no key needed)."""
    if len(blob) < len(MAGIC) or blob[: len(MAGIC)] != MAGIC:
        raise NotAnEnvFile(f"{source} is not an encrypted env file (it does not start with EMPENV)")
    if len(blob) < HEADER_BYTES:
        raise TruncatedFile(
            f"{source} is truncated: {len(blob)} bytes, shorter than its {HEADER_BYTES}-byte header"
        )
    _, version, raw_kid, fingerprint, n = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise UnsupportedVersion(
            f"{source} has format version {version}; this emp reads version {VERSION} only "
            "(a newer emp wrote it, or the header is damaged)"
        )
    kid_bytes = raw_kid.rstrip(b"\0")
    try:
        kid = kid_bytes.decode("ascii")
    except UnicodeDecodeError:
        kid = ""
    if not KID_PATTERN.fullmatch(kid):
        raise MalformedHeader(f"{source} has a damaged header: its key id is not readable")
    if n == 0 or n % _BLOCK:
        raise MalformedHeader(
            f"{source} has a damaged header: ciphertext length {n} is not a positive multiple "
            f"of {_BLOCK}"
        )
    expected = HEADER_BYTES + IV_BYTES + n + TAG_BYTES
    if len(blob) < expected:
        raise TruncatedFile(
            f"{source} is truncated: {len(blob)} bytes where its header announces {expected}"
        )
    if len(blob) > expected:
        raise TrailingBytes(
            f"{source} has {len(blob) - expected} unexpected bytes after its tag "
            f"({len(blob)} bytes where its header announces {expected})"
        )
    return Header(version, kid, fingerprint, n)


def decrypt(blob: bytes, keys: KeyRing, *, source: str = "env file") -> bytes:
    """Verify and decrypt; raises an ``EnvFileError`` naming what is wrong, before decrypting."""
    header = read_header(blob, source=source)
    key = keys.get(header.kid)
    if key is None:
        have = ", ".join(k.kid for k in keys.keys)
        raise UnknownKeyId(
            f"{source} was encrypted with key {header.kid!r}, which {KEY_ENV} does not hold "
            f"(it holds {have})"
        )
    if not hmac.compare_digest(key.fingerprint, header.fingerprint):
        raise WrongKey(
            f"key {key.kid!r} in {KEY_ENV} is not the key {source} was encrypted with "
            "(their fingerprints differ), or the file's header was altered"
        )
    body, tag = blob[:-TAG_BYTES], blob[-TAG_BYTES:]
    if not hmac.compare_digest(hmac.new(key.mac_key, body, sha256).digest(), tag):
        raise AuthenticationFailed(
            f"{source} failed authentication: its header, IV, ciphertext or tag was altered "
            "after it was encrypted; nothing was decrypted"
        )
    iv = blob[HEADER_BYTES : HEADER_BYTES + IV_BYTES]
    decryptor = Cipher(algorithms.AES(key.enc_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(blob[HEADER_BYTES + IV_BYTES : -TAG_BYTES]) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        # Authentic but badly padded: the encryptor was broken, not the file tampered with.
        raise MalformedPlaintext(f"{source} is authentic but its padding is invalid") from None


def decrypt_env(blob: bytes, keys: KeyRing, *, source: str = "env file") -> dict[str, str]:
    """The variables of an encrypted env file, decrypted in memory only."""
    return env_from_plaintext(decrypt(blob, keys, source=source), source=source)


def encrypt_env(text: str, key: EnvKey) -> bytes:
    """Check that ``text`` parses as an env file, then encrypt it as it is (comments kept)."""
    parse_env(text)
    return encrypt(text.encode("utf-8"), key)
