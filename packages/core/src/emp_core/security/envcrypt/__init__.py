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

The package is split by noun: ``errors`` (one class per way to be wrong), ``keyring`` (keys and
``EMP_ENV_KEY``), ``format`` (the file) and ``dotenv`` (its plaintext). Everything public is
re-exported here.
"""

from emp_core.security.envcrypt.dotenv import env_from_plaintext, parse_env
from emp_core.security.envcrypt.errors import (
    AuthenticationFailed,
    EnvCryptError,
    EnvFileError,
    EnvKeyError,
    MalformedEnv,
    MalformedHeader,
    MalformedKey,
    MalformedPlaintext,
    MissingKey,
    NotAnEnvFile,
    PlaceholderKey,
    ShortKey,
    TrailingBytes,
    TruncatedFile,
    UnknownKeyId,
    UnsupportedVersion,
    WrongKey,
)
from emp_core.security.envcrypt.format import (
    HEADER_BYTES,
    IV_BYTES,
    MAGIC,
    TAG_BYTES,
    VERSION,
    Header,
    decrypt,
    decrypt_env,
    encrypt,
    encrypt_env,
    read_header,
)
from emp_core.security.envcrypt.keyring import (
    FINGERPRINT_BYTES,
    KEY_BYTES,
    KEY_ENV,
    KID_BYTES,
    EnvKey,
    KeyRing,
    parse_key,
)

__all__ = [
    "FINGERPRINT_BYTES",
    "HEADER_BYTES",
    "IV_BYTES",
    "KEY_BYTES",
    "KEY_ENV",
    "KID_BYTES",
    "MAGIC",
    "TAG_BYTES",
    "VERSION",
    "AuthenticationFailed",
    "EnvCryptError",
    "EnvFileError",
    "EnvKey",
    "EnvKeyError",
    "Header",
    "KeyRing",
    "MalformedEnv",
    "MalformedHeader",
    "MalformedKey",
    "MalformedPlaintext",
    "MissingKey",
    "NotAnEnvFile",
    "PlaceholderKey",
    "ShortKey",
    "TrailingBytes",
    "TruncatedFile",
    "UnknownKeyId",
    "UnsupportedVersion",
    "WrongKey",
    "decrypt",
    "decrypt_env",
    "encrypt",
    "encrypt_env",
    "env_from_plaintext",
    "parse_env",
    "parse_key",
    "read_header",
]
