"""Encrypted env files (ADR-001): the format, keys and rotation, each way a file can be wrong,
and that no command leaves plaintext on disk.

The known-answer vectors in ``data/envcrypt_vectors.json`` were made once with
``python packages/core/tests/test_envcrypt.py`` (fixed keys and IVs) and are committed: any
change to the format or the key derivation fails here instead of on a rented host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emp_core.security import envcrypt
from emp_core.security.envcrypt import (
    HEADER_BYTES,
    IV_BYTES,
    KEY_ENV,
    TAG_BYTES,
    AuthenticationFailed,
    EnvFileError,
    EnvKey,
    KeyRing,
    MalformedEnv,
    MalformedHeader,
    MalformedKey,
    MissingKey,
    NotAnEnvFile,
    PlaceholderKey,
    ShortKey,
    TrailingBytes,
    TruncatedFile,
    UnknownKeyId,
    UnsupportedVersion,
    WrongKey,
    decrypt,
    decrypt_env,
    encrypt,
    encrypt_env,
    parse_env,
)
from emp_core.security.envcrypt import format as envfile

VECTORS = Path(__file__).parent / "data" / "envcrypt_vectors.json"
SECRET = "hf_s3cr3t-token-do-not-leak-7c1e"
ENV_TEXT = f'# machine secrets\nEMP_REDIS_URL=redis://:pw@10.0.0.5:6379/0\nHF_TOKEN="{SECRET}"\n'


def _key(kid: str = "k1", seed: str = "one") -> EnvKey:
    return EnvKey(kid, hashlib.sha256(f"test key {seed}".encode()).digest())


def _flip(blob: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(blob)
    out[offset] ^= 1 << bit
    return bytes(out)


# --- round trip and known answers ----------------------------------------------------------------
def test_round_trip_and_fresh_iv_per_file() -> None:
    key = _key()
    ring = KeyRing((key,))
    first, second = encrypt_env(ENV_TEXT, key), encrypt_env(ENV_TEXT, key)
    assert first != second  # a random IV each time
    assert SECRET.encode() not in first
    assert decrypt(first, ring) == ENV_TEXT.encode()
    assert decrypt_env(second, ring) == {
        "EMP_REDIS_URL": "redis://:pw@10.0.0.5:6379/0",
        "HF_TOKEN": SECRET,
    }


def test_known_answer_vectors() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors) >= 4
    for v in vectors:
        key = envcrypt.parse_key(v["key"])
        plaintext = v["plaintext"].encode()
        blob = bytes.fromhex(v["file_hex"])
        assert key.enc_key.hex() == v["enc_key_hex"], v["name"]
        assert key.mac_key.hex() == v["mac_key_hex"], v["name"]
        assert encrypt(plaintext, key, _iv=bytes.fromhex(v["iv_hex"])) == blob, v["name"]
        assert decrypt(blob, KeyRing((key,))) == plaintext, v["name"]


def test_the_documented_format_built_from_primitives() -> None:
    """Rebuild the first vector from the module docstring alone (stdlib HMAC, HKDF, AES)."""
    v = json.loads(VECTORS.read_text())[0]
    kid, _, b64 = v["key"].partition(":")
    master, iv = base64.b64decode(b64), bytes.fromhex(v["iv_hex"])

    def hkdf(label: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, None, b"emp-env v1 " + label).derive(master)

    enc, mac, check = hkdf(b"aes-256-cbc"), hkdf(b"hmac-sha256"), hkdf(b"check")
    data = v["plaintext"].encode()
    pad = 16 - len(data) % 16
    encryptor = Cipher(algorithms.AES(enc), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()
    fingerprint = hmac.new(check, b"emp-env key check", hashlib.sha256).digest()[:8]
    header = b"EMPENV" + bytes([1]) + kid.encode().ljust(16, b"\0") + fingerprint
    header += len(ciphertext).to_bytes(4, "big")
    body = header + iv + ciphertext
    assert body + hmac.new(mac, body, hashlib.sha256).digest() == bytes.fromhex(v["file_hex"])


# --- every way a file can be wrong ---------------------------------------------------------------
def _tamper_cases(blob: bytes) -> dict[str, tuple[bytes, type[EnvFileError]]]:
    n = len(blob) - HEADER_BYTES - IV_BYTES - TAG_BYTES
    bigger = bytearray(blob)
    bigger[31:35] = (n + 16).to_bytes(4, "big")
    first_block, last_block = HEADER_BYTES + IV_BYTES, len(blob) - TAG_BYTES - 16
    return {
        "bit flip in the magic": (_flip(blob, 0), NotAnEnvFile),
        "unknown format version": (blob[:6] + bytes([2]) + blob[7:], UnsupportedVersion),
        "bit flip in the version": (_flip(blob, 6, 3), UnsupportedVersion),
        "bit flip in the key id": (_flip(blob, 7), UnknownKeyId),
        "bit flip in the key id padding": (_flip(blob, 20), MalformedHeader),
        "bit flip in the fingerprint": (_flip(blob, 25), WrongKey),
        "length not a block multiple": (_flip(blob, 34), MalformedHeader),
        "length announcing more": (bytes(bigger), TruncatedFile),
        "bit flip in the IV": (_flip(blob, HEADER_BYTES + 3), AuthenticationFailed),
        "bit flip in the ciphertext": (_flip(blob, first_block + 5, 7), AuthenticationFailed),
        "bit flip in the last block": (_flip(blob, last_block + 15), AuthenticationFailed),
        "bit flip in the tag": (_flip(blob, len(blob) - 1, 6), AuthenticationFailed),
        "truncated by one byte": (blob[:-1], TruncatedFile),
        "truncated inside the header": (blob[: HEADER_BYTES - 4], TruncatedFile),
        "tag cut off": (blob[:-TAG_BYTES], TruncatedFile),
        "bytes appended": (blob + b"\n", TrailingBytes),
        "not an env file at all": (ENV_TEXT.encode(), NotAnEnvFile),
        "empty file": (b"", NotAnEnvFile),
    }


def test_every_tampering_is_refused_with_its_own_error_before_decrypting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _key()
    ring = KeyRing((key,))
    blob = encrypt_env(ENV_TEXT, key)
    calls: list[Any] = []
    real_cipher = envfile.Cipher

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real_cipher(*args, **kwargs)

    monkeypatch.setattr(envfile, "Cipher", spy)
    seen_messages: set[str] = set()
    for name, (bad, expected) in _tamper_cases(blob).items():
        with pytest.raises(EnvFileError) as info:
            decrypt(bad, ring, source="env.encrypted")
        assert type(info.value) is expected, f"{name}: {info.value!r}"
        assert "env.encrypted" in info.value.message or expected is NotAnEnvFile, name
        seen_messages.add(info.value.message)
    assert calls == []  # nothing tampered ever reached the cipher: no padding oracle
    assert len(seen_messages) >= 9
    decrypt(blob, ring)
    assert len(calls) == 1


def test_wrong_key_and_unknown_key_id_are_told_apart() -> None:
    blob = encrypt_env(ENV_TEXT, _key("k1", "one"))
    with pytest.raises(WrongKey, match="'k1' in EMP_ENV_KEY is not the key"):
        decrypt(blob, KeyRing((_key("k1", "other"),)))
    with pytest.raises(UnknownKeyId, match=r"encrypted with key 'k1'.*holds k2"):
        decrypt(blob, KeyRing((_key("k2", "two"),)))


def test_a_refused_file_sets_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entrypoint path (decrypt, then apply) applies nothing from a file that fails."""
    key = _key()
    blob = encrypt_env(ENV_TEXT, key)
    monkeypatch.setenv(KEY_ENV, key.encode())
    monkeypatch.delenv("HF_TOKEN", raising=False)
    before = dict(os.environ)
    for name, (bad, _) in _tamper_cases(blob).items():
        with pytest.raises(EnvFileError):
            os.environ.update(decrypt_env(bad, KeyRing.from_env()))
        assert dict(os.environ) == before, name


# --- keys ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "error", "needle"),
    [
        (None, MissingKey, "EMP_ENV_KEY is not set"),
        ("", MissingKey, "is empty"),
        (" , ", MissingKey, "is empty"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), ShortKey, "holds 16 bytes"),
        ("k1:" + base64.b64encode(os.urandom(48)).decode(), ShortKey, "holds 48 bytes"),
        ("k1:changeme", PlaceholderKey, "placeholder"),
        ("k1:your-key-here", PlaceholderKey, "placeholder"),
        ("k1:" + base64.b64encode(bytes(32)).decode(), PlaceholderKey, "not random"),
        ("k1:" + base64.b64encode(b"ab" * 16).decode(), PlaceholderKey, "not random"),
        (base64.b64encode(os.urandom(32)).decode(), MalformedKey, "KID:BASE64"),
        ("k1:not base64!", MalformedKey, "not valid base64"),
        ("bad kid!:" + base64.b64encode(os.urandom(32)).decode(), MalformedKey, "key id"),
        (
            f"{EnvKey.generate('k1').encode()},{EnvKey.generate('k1').encode()}",
            MalformedKey,
            "more than once",
        ),
    ],
)
def test_unusable_keys_are_refused_clearly(
    value: str | None, error: type[Exception], needle: str
) -> None:
    environ = {} if value is None else {KEY_ENV: value}
    with pytest.raises(error, match=needle) as info:
        KeyRing.from_env(environ)
    if error is not MalformedKey:
        assert "emp env keygen" in str(info.value)


def test_key_never_shows_in_repr() -> None:
    key = _key()
    assert base64.b64encode(key.master).decode() not in repr(key)
    assert key.master.hex() not in repr(key)


def test_rotation_decrypts_by_key_id_and_encrypts_with_the_first() -> None:
    old, new = _key("k2025", "old"), _key("k2026", "new")
    legacy = encrypt_env(ENV_TEXT, old)
    ring = KeyRing.parse(f"{new.encode()}, {old.encode()}")
    assert ring.current.kid == "k2026"
    assert decrypt(legacy, ring) == ENV_TEXT.encode()
    rotated = encrypt(decrypt(legacy, ring), ring.current)
    assert envcrypt.read_header(rotated).kid == "k2026"
    with pytest.raises(UnknownKeyId):
        decrypt(rotated, KeyRing((old,)))  # a host still on the old key is told which it needs


# --- the plaintext -------------------------------------------------------------------------------
def test_env_parsing() -> None:
    text = (
        "# comment\n\nexport A=1\nB = two words # trailing comment\nC='single $x # kept'\n"
        'D="line\\nbreak \\"q\\""  # c\nE=\nF=a#b\n'
    )
    assert parse_env(text) == {
        "A": "1",
        "B": "two words",
        "C": "single $x # kept",
        "D": 'line\nbreak "q"',
        "E": "",
        "F": "a#b",
    }
    for bad, needle in [
        ("A=1\nnot a line\n", "line 2"),
        ("1A=x\n", "line 1"),
        ('A="open\n', "not closed"),
        ("A=1\nA=2\n", "set twice"),
        ('A="x" junk\n', "not closed"),
    ]:
        with pytest.raises(MalformedEnv, match=needle):
            parse_env(bad)


# --- the CLI: no plaintext on disk ---------------------------------------------------------------
def _files_holding(root: Path, needle: bytes) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    }


def _emp(
    cwd: Path, env: dict[str, str], *args: str, whole_cli: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """``emp env ARGS`` in a subprocess; without ``whole_cli`` only the ``env`` group is loaded
    (the whole ``emp`` imports SQLAlchemy and Alembic: a second per run on these machines)."""
    if whole_cli:
        command = [sys.executable, "-m", "emp_cli.main", "env", *args]
    else:
        code = "from emp_cli.env import env_app; env_app(prog_name='emp env')"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=60, check=False)


def test_cli_keygen_encrypt_decrypt_rotate_write_no_plaintext(tmp_path: Path) -> None:
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update(TMPDIR=str(tmp), HOME=str(tmp_path))

    made = _emp(work, env, "keygen", "--kid", "k1", whole_cli=True)  # registered under `emp`
    assert made.returncode == 0, made.stderr
    env[KEY_ENV] = made.stdout.decode().strip()
    KeyRing.from_env(env)  # a usable key

    (work / ".env.machine").write_text(ENV_TEXT)
    before = _files_holding(tmp_path, SECRET.encode())
    assert before == {"work/.env.machine"}

    done = _emp(work, env, "encrypt", "--in", ".env.machine", "--out", "env.encrypted")
    assert done.returncode == 0, done.stderr
    shown = _emp(work, env, "decrypt", "--in", "env.encrypted")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ENV_TEXT.encode()

    second = EnvKey.generate("k2").encode()
    env[KEY_ENV] = f"{second},{env[KEY_ENV]}"
    rotated = _emp(work, env, "rotate", "--in", "env.encrypted")
    assert rotated.returncode == 0, rotated.stderr
    assert envcrypt.read_header((work / "env.encrypted").read_bytes()).kid == "k2"

    (work / ".env.machine").unlink()
    assert _files_holding(tmp_path, SECRET.encode()) == set()
    assert sorted(p.name for p in work.iterdir()) == ["env.encrypted"]
    assert list(tmp.iterdir()) == []

    # A tampered file: exit 2, one clear line, nothing on stdout.
    path = work / "env.encrypted"
    path.write_bytes(_flip(path.read_bytes(), HEADER_BYTES + 1))
    refused = _emp(work, env, "decrypt", "--in", "env.encrypted")
    assert refused.returncode == 2
    assert refused.stdout == b""
    assert b"failed authentication" in refused.stderr


def test_cli_refuses_a_malformed_env_before_encrypting(tmp_path: Path) -> None:
    env = {**os.environ, KEY_ENV: _key().encode()}
    (tmp_path / ".env.machine").write_text("GOOD=1\nthis is not an assignment\n")
    result = _emp(tmp_path, env, "encrypt", "--in", ".env.machine", "--out", "env.encrypted")
    assert result.returncode == 2
    assert b"line 2" in result.stderr
    assert not (tmp_path / "env.encrypted").exists()


# --- making the vectors (run once; the output is committed) --------------------------------------
def _make_vectors() -> list[dict[str, str]]:
    cases = [
        ("one line", "k1", "a", "EMP_REDIS_URL=redis://127.0.0.1:6379/0\n"),
        ("exactly one block", "k1", "b", "HF_TOKEN=abcdef\n"),  # 16 bytes: a whole padding block
        ("empty", "k2026-01", "c", ""),
        ("quotes and unicode", "prod.k7", "d", 'A="x \\"y\\""\nB=\'ü € 漢\'\nexport C=3\n'),
    ]
    out = []
    for name, kid, seed, text in cases:
        key = EnvKey(kid, hashlib.sha256(f"emp envcrypt vector key {seed}".encode()).digest())
        iv = hashlib.sha256(f"emp envcrypt vector iv {seed}".encode()).digest()[:16]
        out.append({
            "name": name,
            "key": key.encode(),
            "enc_key_hex": key.enc_key.hex(),
            "mac_key_hex": key.mac_key.hex(),
            "iv_hex": iv.hex(),
            "plaintext": text,
            "file_hex": encrypt(text.encode(), key, _iv=iv).hex(),
        })  # fmt: skip
    return out


if __name__ == "__main__":
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps(_make_vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}")
