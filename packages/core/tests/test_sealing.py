"""Sealing secrets at rest (``emp_core.security.sealing``): AES-256-GCM under the EMP_DATA_KEY
ring, bound to a row, with key ids so keys rotate."""

from __future__ import annotations

import base64

import pytest

from emp_core.security.envcrypt import EnvKey, MalformedKey, MissingKey
from emp_core.security.sealing import (
    PREFIX,
    BrokenSeal,
    Sealer,
    UnknownSealKey,
    is_sealed,
    key_id,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def _ring(*kids: str) -> tuple[Sealer, str]:
    text = ",".join(EnvKey.generate(k).encode() for k in kids)
    return Sealer.parse(text), text


def test_a_sealed_value_holds_no_plaintext_and_opens_in_its_row() -> None:
    sealer, _ = _ring("k1")
    sealed = sealer.seal(SECRET, "webhook_endpoints:a")
    assert sealed.startswith(f"{PREFIX}k1:")
    assert is_sealed(sealed)
    assert key_id(sealed) == "k1"
    assert SECRET not in sealed
    assert SECRET[6:] not in sealed
    assert sealer.unseal(sealed, "webhook_endpoints:a") == SECRET
    # A fresh nonce each time: the same secret never seals to the same text.
    assert sealer.seal(SECRET, "webhook_endpoints:a") != sealed
    assert len(sealed) <= 256  # the column's width


def test_a_value_moved_to_another_row_or_changed_does_not_open() -> None:
    sealer, _ = _ring("k1")
    sealed = sealer.seal(SECRET, "webhook_endpoints:a")
    with pytest.raises(BrokenSeal, match="not sealed for this row"):
        sealer.unseal(sealed, "webhook_endpoints:b")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(BrokenSeal):
        sealer.unseal(flipped, "webhook_endpoints:a")
    for broken in (f"{PREFIX}k1:", f"{PREFIX}k1", f"{PREFIX}k1:%%%", f"{PREFIX}k1:AAAA"):
        with pytest.raises(BrokenSeal, match="malformed"):
            sealer.unseal(broken, "webhook_endpoints:a")


def test_keys_rotate_the_first_seals_any_opens() -> None:
    old, old_text = _ring("k1")
    sealed_old = old.seal(SECRET, "r")
    new_key = EnvKey.generate("k2").encode()
    both = Sealer.parse(f"{new_key},{old_text}")
    assert both.unseal(sealed_old, "r") == SECRET
    assert both.needs_sealing(sealed_old)
    assert not both.needs_sealing(both.seal(SECRET, "r"))
    assert key_id(both.seal(SECRET, "r")) == "k2"
    assert both.needs_sealing(SECRET)  # plaintext


def test_an_unknown_key_id_says_which_and_names_the_setting() -> None:
    sealer, _ = _ring("k1")
    other, _ = _ring("k2")
    with pytest.raises(UnknownSealKey) as info:
        other.unseal(sealer.seal(SECRET, "r"), "r")
    assert "'k1'" in info.value.message
    assert "EMP_DATA_KEY" in info.value.message
    assert "k2" in info.value.message


def test_plaintext_from_before_sealing_reads_as_it_is() -> None:
    sealer, _ = _ring("k1")
    assert not is_sealed(SECRET)
    assert key_id(SECRET) is None
    assert sealer.unseal(SECRET, "r") == SECRET


def test_bad_keys_are_refused_naming_emp_data_key() -> None:
    for text, error in (("", MissingKey), ("k1", MalformedKey), ("k1:not-base64!", MalformedKey)):
        with pytest.raises(error, match="EMP_DATA_KEY"):
            Sealer.parse(text)


def test_no_key_material_in_a_repr() -> None:
    sealer, text = _ring("k1")
    shown = repr(sealer)
    assert text.partition(":")[2] not in shown
    assert "k1" in shown
