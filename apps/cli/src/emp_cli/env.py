"""``emp env``: make keys, encrypt a ``.env`` file at image-build time, inspect or re-key one.

The key comes from ``EMP_ENV_KEY`` (``KID:BASE64[,KID:BASE64...]``, the first one encrypts;
see ``emp_core.security.envcrypt``). No command writes plaintext to a file: ``decrypt`` prints
to stdout.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from emp_core.security.envcrypt import (
    KEY_ENV,
    EnvCryptError,
    EnvKey,
    KeyRing,
    decrypt,
    encrypt,
    encrypt_env,
    env_from_plaintext,
)

env_app = typer.Typer(
    help="Encrypted env files (ADR-001): keygen, encrypt, decrypt, rotate.", no_args_is_help=True
)

InPath = Annotated[Path, typer.Option("--in", help="File to read.", show_default=False)]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ciphertext beside ``path`` and rename it into place: a reader never sees half a file.
    Only ciphertext passes through here."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)  # ciphertext: readable in the image like any file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}")


def _ring() -> KeyRing:
    try:
        return KeyRing.from_env()
    except EnvCryptError as exc:
        _fail(exc.message)


@env_app.command()
def keygen(
    kid: Annotated[
        str | None, typer.Option(help="Key id, 1-16 of A-Z a-z 0-9 _ . - (default: kYYYYMMDD).")
    ] = None,
) -> None:
    """Print a new random key as KID:BASE64, for EMP_ENV_KEY."""
    try:
        key = EnvKey.generate(kid or f"k{datetime.now(UTC):%Y%m%d}")
    except EnvCryptError as exc:
        _fail(exc.message)
    typer.echo(key.encode())


@env_app.command("encrypt")
def encrypt_cmd(
    in_path: InPath,
    out: Annotated[Path, typer.Option(help="Encrypted file to write.")] = Path("env.encrypted"),
    key_id: Annotated[
        str | None, typer.Option(help="Encrypt with this key of EMP_ENV_KEY (default: the first).")
    ] = None,
) -> None:
    """Encrypt a .env file (checked to parse first) with the current key of EMP_ENV_KEY."""
    ring = _ring()
    key = ring.current if key_id is None else ring.get(key_id)
    if key is None:
        _fail(f"{KEY_ENV} holds no key {key_id!r}")
    raw = _read(in_path)
    try:
        blob = encrypt_env(raw.decode("utf-8"), key)
    except UnicodeDecodeError:
        _fail(f"{in_path} is not UTF-8 text")
    except EnvCryptError as exc:
        _fail(f"{in_path}: {exc.message}")
    _write_atomically(out, blob)
    typer.echo(f"encrypted {in_path} with key {key.kid} into {out} ({len(blob)} bytes)", err=True)


@env_app.command("decrypt")
def decrypt_cmd(in_path: InPath) -> None:
    """Verify and decrypt an encrypted env file, printing it to stdout (never to a file)."""
    ring = _ring()
    blob = _read(in_path)
    try:
        plaintext = decrypt(blob, ring, source=str(in_path))
        env_from_plaintext(plaintext, source=str(in_path))  # refuse what a machine would refuse
    except EnvCryptError as exc:
        _fail(exc.message)
    sys.stdout.buffer.write(plaintext)
    sys.stdout.flush()


@env_app.command()
def rotate(
    in_path: InPath,
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: replace --in).")
    ] = None,
) -> None:
    """Re-encrypt a file under the current (first) key of EMP_ENV_KEY, in memory."""
    ring = _ring()
    blob = _read(in_path)
    try:
        plaintext = decrypt(blob, ring, source=str(in_path))
    except EnvCryptError as exc:
        _fail(exc.message)
    target = out or in_path
    _write_atomically(target, encrypt(plaintext, ring.current))
    typer.echo(f"re-encrypted {in_path} with key {ring.current.kid} into {target}", err=True)
