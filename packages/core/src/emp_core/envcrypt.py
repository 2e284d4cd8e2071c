"""Encrypted env files (ADR-001): secrets built into an image, readable only with ``EMP_ENV_KEY``.

A rented GPU host (SALAD, vast.ai, RunPod) cannot be handed secrets at run time, so they travel
inside the image as ``env.encrypted``; the key arrives separately, as the one variable the host
platform is given. See docs/adr-001-envcrypt.md for the threat model.

The file, version 1 (all integers big-endian)::

    offset  size  field
    0       6     magic b"EMPENV"
    6       1     format version (1)
    7       16    key id, ASCII, right-padded with NUL bytes
    23      8     key fingerprint: HMAC-SHA256(check key, b"emp-env key check")[:8]
    31      4     ciphertext length in bytes (a positive multiple of 16)
    35      16    IV, random per file
    51      n     AES-256-CBC(enc key, IV, PKCS7(plaintext))
    51+n    32    tag: HMAC-SHA256(mac key, bytes 0 .. 51+n)

The enc, mac and check keys are HKDF-SHA256 expansions of one 32-byte master key under distinct
labels, so no key is ever used for two purposes. Reading checks, in order: magic, version, size,
key id, fingerprint, then the tag in constant time, and decrypts only once the tag is good: a
modified file never reaches the cipher, so there is no padding oracle.

``EMP_ENV_KEY`` holds one or more comma-separated ``KID:BASE64`` entries (standard base64 of 32
random bytes, from ``emp env keygen``). The first entry encrypts; any entry decrypts the files
that name its key id, which is how keys rotate.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emp_core.errors import EmpError

MAGIC = b"EMPENV"
VERSION = 1
KEY_ENV = "EMP_ENV_KEY"
KEY_BYTES = 32
IV_BYTES = 16
TAG_BYTES = 32
KID_BYTES = 16
FINGERPRINT_BYTES = 8
_HEADER = struct.Struct(f">{len(MAGIC)}sB{KID_BYTES}s{FINGERPRINT_BYTES}sI")
HEADER_BYTES = _HEADER.size  # 35
_BLOCK = 16
_KID = re.compile(r"[A-Za-z0-9_.-]{1,16}")
# Text that marks a key copied from an example rather than generated.
_PLACEHOLDERS = ("change", "placeholder", "example", "your", "secret", "todo", "xxxx", "dummy")
# A random 32-byte key has about 30 distinct byte values; fewer than 12 means it was typed.
_MIN_DISTINCT_BYTES = 12
_LABEL = b"emp-env v1 "


# --- errors --------------------------------------------------------------------------------------
class EnvCryptError(EmpError):
    """Base of every encrypted-env error."""

    status_code = 400
    code = "envcrypt"


class EnvKeyError(EnvCryptError):
    """``EMP_ENV_KEY`` is unusable."""

    code = "env_key"


class MissingKey(EnvKeyError):
    code = "env_key_missing"


class MalformedKey(EnvKeyError):
    code = "env_key_malformed"


class ShortKey(EnvKeyError):
    code = "env_key_short"


class PlaceholderKey(EnvKeyError):
    code = "env_key_placeholder"


class EnvFileError(EnvCryptError):
    """An encrypted env file was refused; nothing of it was decrypted or applied."""

    code = "env_file"


class NotAnEnvFile(EnvFileError):
    code = "env_file_magic"


class UnsupportedVersion(EnvFileError):
    code = "env_file_version"


class MalformedHeader(EnvFileError):
    code = "env_file_header"


class TruncatedFile(EnvFileError):
    code = "env_file_truncated"


class TrailingBytes(EnvFileError):
    code = "env_file_trailing"


class UnknownKeyId(EnvFileError):
    code = "env_file_key_id"


class WrongKey(EnvFileError):
    code = "env_file_wrong_key"


class AuthenticationFailed(EnvFileError):
    code = "env_file_tampered"


class MalformedPlaintext(EnvFileError):
    """The file is authentic but its content is not an env file (made by a broken encryptor)."""

    code = "env_file_content"


class MalformedEnv(EnvCryptError):
    """A plaintext env file that does not parse (refused before it is encrypted)."""

    code = "env_malformed"


# --- keys ----------------------------------------------------------------------------------------
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
        if not _KID.fullmatch(self.kid):
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


def parse_key(entry: str) -> EnvKey:
    """One ``KID:BASE64`` entry of ``EMP_ENV_KEY``."""
    kid, sep, text = entry.strip().partition(":")
    if not sep or not kid or not text:
        raise MalformedKey(
            f"{KEY_ENV} entries read KID:BASE64 (e.g. k1:3q2+7w...=), separated by commas; "
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
            f"key {kid!r} in {KEY_ENV} is a placeholder, not a key; make one with `emp env keygen`"
        )
    if master is None:
        raise MalformedKey(f"key {kid!r} in {KEY_ENV} is not valid base64")
    return EnvKey(kid, master)


@dataclass(frozen=True)
class KeyRing:
    """The keys of ``EMP_ENV_KEY``: ``current`` encrypts, any of them decrypts by key id."""

    keys: tuple[EnvKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise MissingKey(f"{KEY_ENV} holds no key")
        kids = [k.kid for k in self.keys]
        if dupes := sorted({k for k in kids if kids.count(k) > 1}):
            raise MalformedKey(f"{KEY_ENV} names key id {', '.join(dupes)} more than once")

    @property
    def current(self) -> EnvKey:
        return self.keys[0]

    def get(self, kid: str) -> EnvKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        entries = [e for e in text.split(",") if e.strip()]
        if not entries:
            raise MissingKey(
                f"{KEY_ENV} is empty: set it to KID:BASE64 (make a key with `emp env keygen`)"
            )
        return cls(tuple(parse_key(e) for e in entries))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        value = (os.environ if environ is None else environ).get(KEY_ENV)
        if value is None:
            raise MissingKey(
                f"{KEY_ENV} is not set: it must hold the key the env file was encrypted with "
                "(KID:BASE64; make one with `emp env keygen`)"
            )
        return cls.parse(value)


# --- the file ------------------------------------------------------------------------------------
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
    if not _KID.fullmatch(kid):
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


# --- the plaintext: a .env file ------------------------------------------------------------------
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


def decrypt_env(blob: bytes, keys: KeyRing, *, source: str = "env file") -> dict[str, str]:
    """The variables of an encrypted env file, decrypted in memory only."""
    return env_from_plaintext(decrypt(blob, keys, source=source), source=source)


def encrypt_env(text: str, key: EnvKey) -> bytes:
    """Check that ``text`` parses as an env file, then encrypt it as it is (comments kept)."""
    parse_env(text)
    return encrypt(text.encode("utf-8"), key)
