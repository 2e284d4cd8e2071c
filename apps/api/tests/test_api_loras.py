"""``/api/loras``: streamed upload with the safetensors check, dedupe, every bad input leaving
nothing behind, who may see / use / change which LoRA, and LoRAs named by id in jobs."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_helpers import Api, job_body, running_api

from emp_core.blobs.settings import BlobSettings
from emp_core.loras.safetensors import encode
from emp_core.loras.settings import LoraSettings
from emp_core.settings import QueueSettings
from emp_web.testing import Account

LAYERS = {
    "lora_unet_mid.lora_down.weight": ("F16", [4, 64]),
    "lora_unet_mid.lora_up.weight": ("F16", [64, 4]),
    "lora_unet_mid.alpha": ("F32", []),
}


def lora_bytes(**layers: tuple[str, list[int]]) -> bytes:
    """A valid LoRA, different from every other one this session (a random tag in metadata)."""
    return encode({**LAYERS, **layers}, {"tag": uuid.uuid4().hex})


def raw_file(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = orjson.dumps(header)
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


async def upload(
    api: Api,
    who: Account,
    data: bytes,
    *,
    name: str | None = "my-style",
    filename: str = "s.safetensors",
) -> httpx.Response:
    form = {"name": name} if name is not None else {}
    return await api.http.post(
        "/api/loras", data=form, files={"file": (filename, data)}, headers=who.headers
    )


def blob_files(api: Api) -> list[Path]:
    """Every file in the local store, its temporary folder included."""
    root = api.services.backends.blobs.root
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if root.exists() else []


async def visible(api: Api, who: Account) -> list[dict[str, Any]]:
    response = await api.http.get("/api/loras", headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()["loras"]


async def test_upload_list_get_download(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    data = lora_bytes()
    response = await upload(api, alice, data, name="My style v2")
    assert response.status_code == 201, response.text
    lora = response.json()
    assert lora["name"] == "My style v2"
    assert lora["size"] == len(data)
    assert lora["sha256"] == hashlib.sha256(data).hexdigest()
    assert lora["mine"] is True
    assert lora["shared"] is False
    assert lora["duplicate"] is False
    assert lora["id"] in [x["id"] for x in await visible(api, alice)]
    got = await api.http.get(f"/api/loras/{lora['id']}", headers=alice.headers)
    assert got.json()["sha256"] == lora["sha256"]

    redirect = await api.http.get(f"/api/loras/{lora['id']}/download", headers=alice.headers)
    assert redirect.status_code == 307
    url = redirect.headers["location"]
    async with httpx.AsyncClient() as plain:  # a worker: no token, only the signed URL
        fetched = await plain.get(url)
        assert fetched.status_code == 200
        assert fetched.content == data
        ranged = await plain.get(url, headers={"Range": "bytes=8-15"})
        assert ranged.status_code == 206
        assert ranged.content == data[8:16]
        assert ranged.headers["content-range"] == f"bytes 8-15/{len(data)}"
        assert (await plain.get(url.replace("sig=", "sig=0"))).status_code == 403
        assert (await plain.get(url.split("?")[0])).status_code == 422


async def test_name_defaults_to_the_file_name(api: Api, accounts: dict[str, Account]) -> None:
    response = await upload(
        api, accounts["alice"], lora_bytes(), name=None, filename="cat.safetensors"
    )
    assert response.status_code == 201
    assert response.json()["name"] == "cat.safetensors"


async def test_same_bytes_twice_keep_one_blob(api: Api, accounts: dict[str, Account]) -> None:
    alice, bob = accounts["alice"], accounts["bob"]
    data = lora_bytes()
    first = await upload(api, alice, data)
    blobs = blob_files(api)
    second = await upload(api, alice, data, name="another name")
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["name"] == first.json()["name"]
    assert blob_files(api) == blobs
    # Another user's copy is theirs: a second blob under their own prefix.
    theirs = await upload(api, bob, data)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]
    assert len(blob_files(api)) == len(blobs) + 1


BAD_FILES = {
    "empty": (b"", "the file is empty"),
    "not safetensors": (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a safetensors file"),
    "header over the limit": ((1 << 40).to_bytes(8, "little") + b"{}", "the limit is"),
    "header claims more than the file": (
        raw_file({"a.lora_down.weight": {}}, length=5000),
        "ends inside its header",
    ),
    "overlapping offsets": (
        raw_file(
            {
                "a.lora_down.weight": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                "a.lora_up.weight": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
            },
            bytes(6),
        ),
        "overlap",
    ),
    "offsets past the end": (
        raw_file(
            {
                "a.lora_down.weight": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                "a.lora_up.weight": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
            },
            bytes(5),
        ),
        "cut short",
    ),
    "not a LoRA": (encode({"model.conv.weight": ("F16", [8, 8])}), "not a LoRA"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
async def test_bad_files_are_refused_and_leave_nothing(
    api: Api, accounts: dict[str, Account], case: str
) -> None:
    alice = accounts["alice"]
    data, message = BAD_FILES[case]
    before = await visible(api, alice)
    response = await upload(api, alice, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "file"
    assert message in error["message"]
    assert blob_files(api) == []
    assert await visible(api, alice) == before


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../etc/passwd", "'/'"),
        ("a/b.safetensors", "'/'"),
        ("a\\b", "'\\'"),
        ("..", "'..'"),
        ("evil\x00name", "control characters"),
        ("line\nbreak", "control characters"),
        ("   ", "needs a name"),
        ("x" * 300, "over 255"),
    ],
)
async def test_bad_names_are_refused(
    api: Api, accounts: dict[str, Account], name: str, message: str
) -> None:
    alice = accounts["alice"]
    before = await visible(api, alice)
    response = await upload(api, alice, lora_bytes(), name=name)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "name"
    assert message in response.json()["error"]["message"]
    assert blob_files(api) == []
    assert await visible(api, alice) == before


async def test_upload_cut_off_mid_stream_leaves_nothing(
    api: Api, accounts: dict[str, Account]
) -> None:
    """Two ways an upload ends early: the body ends before the multipart closing boundary, and
    the client's connection drops half-way through a declared length."""
    alice = accounts["alice"]
    before = await visible(api, alice)
    data = lora_bytes(**{"lora_unet_big.lora_down.weight": ("F32", [256, 1024])})
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.safetensors"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data[: len(data) // 2]  # no closing boundary
    response = await api.http.post(
        "/api/loras",
        content=body,
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "upload_cut_off"

    host, port = api.host.split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    full = head + data + f"\r\n--{boundary}--\r\n".encode()
    writer.write(
        (
            f"POST /api/loras HTTP/1.1\r\nHost: {api.host}\r\nAuthorization: Bearer {alice.token}"
            f"\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(full)}\r\n\r\n"
        ).encode()
        + full[: len(full) // 2]
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(200):  # until the server has noticed the disconnect and cleaned up
        if blob_files(api) == []:
            break
        await asyncio.sleep(0.02)
    assert blob_files(api) == []
    assert await visible(api, alice) == before


async def test_a_stalled_upload_is_abandoned(api: Api, accounts: dict[str, Account]) -> None:
    """A client that stops sending half-way (connection open) gets 408 and leaves nothing."""
    api.services.loras.settings = LoraSettings(upload_idle_seconds=0.3)
    alice = accounts["alice"]
    before = await visible(api, alice)
    boundary = "st4ll"
    data = lora_bytes()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.safetensors"'
        "\r\n\r\n"
    ).encode() + data[: len(data) // 2]
    host, port = api.host.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"POST /api/loras HTTP/1.1\r\nHost: {api.host}\r\nAuthorization: Bearer {alice.token}"
            f"\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(part) * 2}\r\n\r\n"
        ).encode()
        + part
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    assert b" 408 " in status_line, status_line
    assert blob_files(api) == []
    assert await visible(api, alice) == before


async def test_concurrent_uploads_of_the_same_bytes_keep_one(
    api: Api, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    data = lora_bytes()
    results = await asyncio.gather(*(upload(api, alice, data, name=f"copy {i}") for i in range(4)))
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1, [r.text for r in results]
    assert sorted(r.status_code for r in results).count(201) == 1
    mine = [x for x in await visible(api, alice) if x["id"] in ids]
    assert len(mine) == 1
    assert len([p for p in blob_files(api) if p.stat().st_size == len(data)]) == 1


async def test_size_limit(api: Api, accounts: dict[str, Account]) -> None:
    api.services.loras.settings = LoraSettings(max_bytes=4096)
    big = lora_bytes(**{"lora_unet_x.lora_down.weight": ("F32", [64, 64])})
    response = await upload(api, accounts["alice"], big)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["field"] == "file"
    assert blob_files(api) == []


async def test_authorization(api: Api, accounts: dict[str, Account]) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    lora = (await upload(api, alice, lora_bytes(), name="alice's")).json()
    path = f"/api/loras/{lora['id']}"

    # Bob cannot see, download, use, rename, share or delete it: 404 as for a missing one.
    assert lora["id"] not in [x["id"] for x in await visible(api, bob)]
    for method, url, body in [
        ("GET", path, None),
        ("GET", f"{path}/download", None),
        ("PATCH", path, {"name": "mine now"}),
        ("DELETE", path, None),
    ]:
        response = await api.http.request(method, url, json=body, headers=bob.headers)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["error"]["message"] == f"LoRA {lora['id']} does not exist"
    used = await api.http.post(
        "/api/jobs", json=job_body(loras=[{"id": lora["id"]}]), headers=bob.headers
    )
    assert used.status_code == 404
    assert used.json()["error"]["field"] == "loras.0.id"
    shared = await api.http.patch(path, json={"shared": True}, headers=bob.headers)
    assert shared.status_code == 403
    # Only admins share, not even the owner.
    assert (
        await api.http.patch(path, json={"shared": True}, headers=alice.headers)
    ).status_code == 403
    # No token: 401.
    assert (await api.http.get("/api/loras")).status_code == 401
    assert (await api.http.post("/api/loras", files={"file": ("a", b"x")})).status_code == 401

    # The admin sees every LoRA and shares it; then Bob sees and uses it, but may not change it.
    assert lora["id"] in [x["id"] for x in await visible(api, admin)]
    response = await api.http.patch(path, json={"shared": True}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["shared"] is True
    assert lora["id"] in [x["id"] for x in await visible(api, bob)]
    assert (await api.http.get(path, headers=bob.headers)).json()["mine"] is False
    job = await api.http.post(
        "/api/jobs", json=job_body(loras=[{"id": lora["id"], "weight": 0.5}]), headers=bob.headers
    )
    assert job.status_code == 201, job.text
    assert job.json()["loras"][0]["scope"] == "shared"
    assert (await api.http.patch(path, json={"name": "x"}, headers=bob.headers)).status_code == 403
    assert (await api.http.delete(path, headers=bob.headers)).status_code == 403

    # Unshared again: gone for Bob.
    await api.http.patch(path, json={"shared": False}, headers=admin.headers)
    assert (await api.http.get(path, headers=bob.headers)).status_code == 404

    renamed = await api.http.patch(path, json={"name": "renamed"}, headers=alice.headers)
    assert renamed.json()["name"] == "renamed"
    bad = await api.http.patch(path, json={"name": "a/b"}, headers=alice.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "name"


async def test_a_job_names_loras_by_id(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    data = lora_bytes()
    lora = (await upload(api, alice, data)).json()
    body = job_body(loras=[{"id": lora["id"], "weight": 0.8}])
    response = await api.http.post("/api/jobs", json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    (ref,) = response.json()["loras"]
    assert ref["id"] == lora["id"]
    assert ref["sha256"] == hashlib.sha256(data).hexdigest()
    assert ref["size"] == len(data)
    assert ref["scope"] == "user"
    assert ref["weight"] == 0.8
    assert ref["name"] == lora["name"]
    async with httpx.AsyncClient() as worker:
        assert (await worker.get(ref["url"])).content == data

    # Retrying with an Idempotency-Key answers the same job, although URLs are minted afresh.
    headers = {**alice.headers, "Idempotency-Key": uuid.uuid4().hex}
    first = await api.http.post("/api/jobs", json=body, headers=headers)
    again = await api.http.post("/api/jobs", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]

    for loras, field in [
        ([{"id": lora["id"]}, {"id": lora["id"]}], "loras"),
        ([{"id": lora["id"], "weight": 9}], "loras.0.weight"),
        ([{"id": "no-such-lora"}], "loras.0.id"),
        ([{"id": lora["id"], "sha256": "0" * 64}], "loras.0.sha256"),
        ([{"id": f"x{i}"} for i in range(9)], "loras"),
    ]:
        bad = await api.http.post("/api/jobs", json=job_body(loras=loras), headers=alice.headers)
        assert bad.status_code in (404, 422), bad.text
        assert bad.json()["error"]["field"] == field, bad.text

    # Deleted: its URL in the queued job stops working, and no new job may name it.
    assert (
        await api.http.delete(f"/api/loras/{lora['id']}", headers=alice.headers)
    ).status_code == 204
    async with httpx.AsyncClient() as worker:
        assert (await worker.get(ref["url"])).status_code == 404
    gone = await api.http.post("/api/jobs", json=body, headers=alice.headers)
    assert gone.status_code == 404
    assert (
        await api.http.get(f"/api/loras/{lora['id']}", headers=alice.headers)
    ).status_code == 404
    # Uploading the same bytes again after a delete makes a new LoRA.
    assert (await upload(api, alice, data)).status_code == 201


async def test_upload_to_azure(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account],
    azurite_connection_string: str,
) -> None:  # fmt: skip
    """The same path with the Azure store (Azurite): upload, SAS URL in a job, delete."""
    from pydantic import SecretStr

    blob_settings = BlobSettings(
        url=f"azure://t{uuid.uuid4().hex[:12]}",
        azure_connection_string=SecretStr(azurite_connection_string),
    )
    async with running_api(settings, database_url, blob_settings=blob_settings) as api:
        alice = accounts["alice"]
        data = lora_bytes()
        lora = (await upload(api, alice, data)).json()
        assert lora["sha256"] == hashlib.sha256(data).hexdigest()
        bad = await upload(api, alice, data[:-1])
        assert bad.status_code == 422
        job = await api.http.post(
            "/api/jobs", json=job_body(loras=[{"id": lora["id"]}]), headers=alice.headers
        )
        url = job.json()["loras"][0]["url"]
        assert "sig=" in url
        assert "se=" in url
        async with httpx.AsyncClient() as worker:
            assert (await worker.get(url)).content == data
            await api.http.delete(f"/api/loras/{lora['id']}", headers=alice.headers)
            assert (await worker.get(url)).status_code == 404
        store = api.services.backends.blobs
        names = [b.name async for b in store.container.list_blobs()]
        assert names == []
