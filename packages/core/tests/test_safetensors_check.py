"""The streaming safetensors/LoRA check: every bad file refused, with a message naming why."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import orjson
import pytest

from emp_core.loras.safetensors import (
    FileTooLarge,
    InvalidSafetensors,
    SafetensorsCheck,
    checked,
    encode,
)

LORA = {
    "lora_unet_down_0.lora_down.weight": ("F16", [4, 32]),
    "lora_unet_down_0.lora_up.weight": ("F16", [32, 4]),
    "lora_unet_down_0.alpha": ("F32", []),
}


def run(data: bytes, piece: int = 7, **limits: int) -> object:
    check = SafetensorsCheck(**limits)  # type: ignore[arg-type]
    for i in range(0, len(data), piece):
        check.update(data[i : i + piece])
    return check.finish()


def raw_file(header: object, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = orjson.dumps(header)
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_a_lora_passes_with_hash_and_size(piece: int) -> None:
    data = encode(LORA, {"ss_network_dim": "4"})
    info = run(data, piece)
    assert info.size == len(data)  # type: ignore[attr-defined]
    assert info.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert info.tensors == 3  # type: ignore[attr-defined]
    assert info.metadata == {"ss_network_dim": "4"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "names",
    [
        ["unet.down.lora_A.weight", "unet.down.lora_B.weight"],  # PEFT
        ["unet.attn.to_q.lora.down.weight", "unet.attn.to_q.lora.up.weight"],  # diffusers
    ],
)
def test_other_lora_namings_pass(names: list[str]) -> None:
    run(encode({n: ("BF16", [2, 2]) for n in names}))


def bad(data: bytes, match: str, **limits: int) -> None:
    with pytest.raises(InvalidSafetensors, match=match) as info:
        run(data, **limits)
    assert info.value.field == "file"


def test_empty_file() -> None:
    bad(b"", "empty")


def test_not_safetensors() -> None:
    bad(b"PK\x03\x04 this is a zip file" * 10, "not a safetensors file")
    bad(b"abc", "inside the 8-byte header length")
    bad(raw_file([1, 2]), "not a JSON object")
    bad((5).to_bytes(8, "little") + b"{nope", "not valid JSON")
    bad((0).to_bytes(8, "little"), "header length is 0")


def test_header_longer_than_the_limit_is_refused_after_8_bytes() -> None:
    check = SafetensorsCheck(max_header_bytes=1024)
    with pytest.raises(
        InvalidSafetensors, match="claim a header of 1,025 bytes; the limit is 1,024"
    ):
        check.update((1025).to_bytes(8, "little"))


def test_header_claiming_more_bytes_than_the_file() -> None:
    data = encode(LORA)
    bad(data[:20], "ends inside its header")
    bad(data[:-1], "cut short")


def test_file_longer_than_its_header() -> None:
    bad(encode(LORA) + b"\0", "longer than its header says")


def test_overlapping_offsets() -> None:
    header = {
        "a.lora_down.weight": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "a.lora_up.weight": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
    }
    bad(raw_file(header, bytes(6)), "overlap")


def test_out_of_range_and_inconsistent_offsets() -> None:
    header = {
        "a.lora_down.weight": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "a.lora_up.weight": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
    }
    bad(raw_file(header, bytes(4)), "cut short")  # offsets past the end of the file
    header["a.lora_up.weight"]["data_offsets"] = [4, 1 << 40]
    bad(raw_file(header, bytes(8)), "needs 4 bytes but its offsets span")
    header["a.lora_up.weight"]["data_offsets"] = [8, 4]
    bad(raw_file(header, bytes(8)), "0 <= begin <= end")
    header["a.lora_up.weight"]["data_offsets"] = [6, 10]
    bad(raw_file(header, bytes(10)), "a hole in the data section")


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}, "unknown dtype"),
        ({"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}, "non-negative integers"),
        ({"dtype": "U8", "shape": "4", "data_offsets": [0, 1]}, "non-negative integers"),
        ({"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}, "at most 8"),
        ({"dtype": "U8", "shape": [1]}, "needs dtype, shape and data_offsets"),
    ],
)
def test_insane_tensor_entries(entry: dict[str, object], match: str) -> None:
    bad(raw_file({"x.lora_down.weight": entry}, b"\0"), match)


def test_not_a_lora() -> None:
    bad(encode({"model.diffusion_model.conv.weight": ("F16", [8, 8])}), "not a LoRA")
    bad(encode({"a.lora_down.weight": ("F16", [8, 8])}), "not a LoRA")  # half a pair
    bad(encode({"a.hada_w1_a": ("F16", [8, 8]), "a.hada_w1_b": ("F16", [8, 8])}), "not a LoRA")
    bad(raw_file({"__metadata__": {"a": "b"}}), "no tensors")


def test_size_limit() -> None:
    data = encode({"a.lora_down.weight": ("F32", [64, 64]), "a.lora_up.weight": ("F32", [64, 64])})
    with pytest.raises(FileTooLarge, match="over the limit of 1,000"):
        run(data, max_bytes=1000)


async def test_checked_stream_raises_before_ending() -> None:
    """A stream wrapped in ``checked`` raises at its end when the file is incomplete, so a blob
    store's ``put`` never commits it."""

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    data = encode(LORA)
    out = [c async for c in checked(pieces(data), SafetensorsCheck())]
    assert b"".join(out) == data
    with pytest.raises(InvalidSafetensors, match="cut short"):
        async for _ in checked(pieces(data[:-3]), SafetensorsCheck()):
            pass
