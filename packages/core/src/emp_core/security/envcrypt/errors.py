"""What can be wrong with a key, an encrypted env file or its plaintext: one error class each, so a
machine that refuses to start says exactly why."""

from __future__ import annotations

from emp_core.errors import EmpError


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
