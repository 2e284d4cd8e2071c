"""The LoRAs page: upload (script and no-script), list with size and hash, rename, share, delete
with a confirmation, who sees what, and the New job form's LoRA picker."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from studio_helpers import Studio, Visitor, job_form

from emp_core.loras.safetensors import encode

LAYERS = {
    "lora_te_x.lora_down.weight": ("F16", [4, 32]),
    "lora_te_x.lora_up.weight": ("F16", [32, 4]),
}


def lora_bytes() -> bytes:
    return encode(LAYERS, {"tag": uuid.uuid4().hex})


async def upload(who: Visitor, data: bytes, name: str = "", *, script: bool = True):
    headers = {"Accept": "application/json", "X-CSRF-Token": who.csrf} if script else {}
    return await who.http.post(
        "/loras/upload",
        data={"csrf_token": "" if script else who.csrf, "name": name},
        files={"file": ("style.safetensors", data)},
        headers=headers,
    )


def stored(studio: Studio) -> list[Path]:
    root = Path(studio.services.backends.blobs.root)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_upload_list_and_delete(alice: Visitor, studio: Studio) -> None:
    page = await alice.get("/loras")
    assert page.status_code == 200
    assert 'data-testid="lora-upload"' in page.text
    data = lora_bytes()
    response = await upload(alice, data, "Watercolour")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["message"] == "The file uploaded as “Watercolour”."

    listing = (await alice.get("/loras")).text
    assert "Watercolour" in listing
    assert body["sha256"][:16] in listing
    assert f'title="{len(data)} bytes"' in listing

    again = await upload(alice, data, "other")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert len(stored(studio)) == 1

    confirm = await alice.get(f"/loras/{body['id']}/delete")
    assert confirm.status_code == 200
    assert 'data-testid="delete-confirm"' in confirm.text
    deleted = await alice.post(f"/loras/{body['id']}/delete")
    assert deleted.status_code == 303
    assert "Watercolour" not in (await alice.get("/loras")).text
    assert stored(studio) == []


async def test_upload_without_script_redirects_with_a_notice(alice: Visitor) -> None:
    await alice.get("/loras")
    response = await upload(alice, lora_bytes(), "plain form", script=False)
    assert response.status_code == 303
    assert "notice=" in response.headers["location"]


async def test_bad_uploads_name_the_problem(alice: Visitor, studio: Studio) -> None:
    await alice.get("/loras")
    response = await upload(alice, b"definitely not a safetensors file")
    assert response.status_code == 422
    assert "not a safetensors file" in response.json()["error"]["message"]
    response = await upload(alice, lora_bytes(), "../evil")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "name"
    assert stored(studio) == []


async def test_upload_needs_the_csrf_token(alice: Visitor, studio: Studio) -> None:
    response = await alice.http.post(
        "/loras/upload",
        files={"file": ("x.safetensors", lora_bytes())},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 403
    assert stored(studio) == []


async def test_others_loras_are_invisible_until_shared(
    alice: Visitor, bob: Visitor, admin: Visitor
) -> None:
    await alice.get("/loras")
    lora = (await upload(alice, lora_bytes(), "alice only")).json()
    assert "alice only" not in (await bob.get("/loras")).text
    assert (await bob.get(f"/loras/{lora['id']}/delete")).status_code == 404
    await bob.get("/loras")
    assert (await bob.post(f"/loras/{lora['id']}/delete")).status_code == 404
    assert (await bob.post(f"/loras/{lora['id']}/share", {"shared": "true"})).status_code == 403

    admin_page = (await admin.get("/loras")).text
    assert "alice only" in admin_page
    assert (await admin.post(f"/loras/{lora['id']}/share", {"shared": "true"})).status_code == 303
    bob_page = (await bob.get("/loras")).text
    assert "alice only" in bob_page
    assert 'data-testid="lora-delete"' not in bob_page  # visible, not his to delete


async def test_new_job_form_picks_loras(alice: Visitor, bob: Visitor, studio: Studio) -> None:
    await alice.get("/loras")
    lora = (await upload(alice, lora_bytes(), "picker test")).json()
    form = await alice.get("/jobs/new")
    assert 'data-testid="lora-picker"' in form.text
    assert "picker test" in form.text
    response = await alice.post(
        "/jobs", job_form(lora=lora["id"], **{f"lora_weight_{lora['id']}": "0.7"})
    )
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].rsplit("/", 1)[1]
    job = await studio.services.queue.get(job_id)
    (ref,) = job.loras
    assert ref.id == lora["id"]
    assert ref.weight == 0.7
    assert ref.sha256 == lora["sha256"]

    bad = await alice.post("/jobs", job_form(lora=lora["id"], **{f"lora_weight_{lora['id']}": "9"}))
    assert bad.status_code == 422
    assert "less than or equal to 4" in bad.text

    await bob.get("/jobs/new")
    theirs = await bob.post("/jobs", job_form(lora=lora["id"]))
    assert theirs.status_code == 422
    assert f"LoRA {lora['id']} does not exist" in theirs.text
