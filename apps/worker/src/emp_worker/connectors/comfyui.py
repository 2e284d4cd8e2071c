"""The ``comfyui`` connector: runs a job's API-format workflow on a stock ComfyUI server (one per
GPU, on the same machine), no fork and no custom nodes.

1. The job's LoRAs (local files from the worker's LoRA cache) are linked into ComfyUI's loras
   folder as ``emp/NAME``, where a workflow's LoraLoader finds them, and unlinked afterwards.
2. Connect ``ws://HOST/ws?clientId=ID`` first, then ``POST /prompt`` with that ``client_id``:
   no message about the prompt can be missed. HTTP 400 with ``node_errors`` is a validation
   error: the job fails, not retried, naming ``payload.workflow.NODE.INPUT``.
3. Follow the prompt's messages (``emp_worker.comfy.protocol``): progress per node and overall,
   binary preview frames forwarded with the progress, ``executing`` with node null or
   ``execution_success`` = done, ``execution_error`` = a failure whose message the error
   patterns classify (connector ``comfyui``), ``execution_interrupted`` = stopped.
   A dropped socket is reconnected with the same client id; the prompt keeps running in ComfyUI,
   and ``/history`` tells whether it finished meanwhile. The idle timeout resets on every
   message about the prompt.
4. Outputs: ``/history/{prompt_id}`` (which may lag the success message: polled a while) lists
   the files; each is fetched through ``/view`` and written to the blob store.
5. Cancel: ``POST /interrupt`` (with the prompt id, which newer servers check) and the prompt is
   deleted from the queue if it had not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from pydantic import JsonValue

from emp_core.errors import InvalidInput
from emp_core.jobs.job import Job
from emp_core.jobs.payloads import parse_comfyui
from emp_worker.comfy.protocol import Message, Preview, Tracker, parse_binary, parse_text
from emp_worker.comfy.protocol import validation_problem as _validation_problem
from emp_worker.config import WorkerSettings
from emp_worker.connectors.base import (
    InvalidParameter,
    JobContext,
    LocalLora,
    LoraResolver,
    cached_loras,
)
from emp_worker.outputs import BlobStoreOnDemand, BlobWriter, Outputs

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                  ".webp": "image/webp", ".gif": "image/gif", ".mp4": "video/mp4"}  # fmt: skip


class ComfyUIError(RuntimeError):
    """A prompt failed inside ComfyUI; the message goes to the error patterns."""


class ComfyUIConnector:
    service = "comfyui"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8188",
        *,
        outputs: BlobWriter,
        loras: LoraResolver = cached_loras,
        loras_dir: Path | None = None,
        idle_timeout_s: float = 300.0,
        history_wait_s: float = 30.0,
        reconnect_s: float = 0.5,
        preview_every_s: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.store = outputs
        self.resolve_loras = loras
        self.loras_dir = loras_dir
        self.idle_timeout_s = idle_timeout_s
        self.history_wait_s = history_wait_s
        self.reconnect_s = reconnect_s
        self.preview_every_s = preview_every_s

    @property
    def ws_url(self) -> str:
        return re.sub(r"^http", "ws", self.url) + "/ws"

    async def run(self, job: Job, ctx: JobContext) -> JsonValue:
        try:
            graph: dict[str, Any] = dict(parse_comfyui(job.payload).workflow)
        except InvalidInput as exc:
            field = (exc.field or "payload").removeprefix("payload.")
            raise InvalidParameter(field, exc.message.split(": ", 1)[-1]) from None
        loras = await self.resolve_loras(job, ctx)
        links = self._link_loras(loras)
        outputs = Outputs(self.store, job)
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=30.0) as http:
                result = await self._run(graph, job, ctx, http, outputs)
        except BaseException:
            await asyncio.shield(outputs.discard())
            raise
        finally:
            for link in links:
                with contextlib.suppress(OSError):
                    link.unlink()
        return result

    # --- LoRAs -----------------------------------------------------------------------------------
    def _link_loras(self, loras: list[LocalLora]) -> list[Path]:
        if not loras:
            return []
        if self.loras_dir is None:
            raise InvalidParameter(
                "loras", "this worker's ComfyUI has no loras folder configured (comfyui_loras_dir)"
            )
        folder = self.loras_dir / "emp"
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for lora in loras:
            name = _SAFE.sub("_", lora.name or lora.path.name)
            if not name.endswith(".safetensors"):
                name += ".safetensors"
            link = folder / name
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(lora.path.resolve())
            links.append(link)
        return links

    # --- one prompt ------------------------------------------------------------------------------
    async def _run(
        self, graph: dict[str, Any], job: Job, ctx: JobContext, http: httpx.AsyncClient,
        outputs: Outputs,
    ) -> JsonValue:  # fmt: skip
        client_id = uuid.uuid4().hex
        ws = await websockets.connect(f"{self.ws_url}?clientId={client_id}", max_size=2**24)
        prompt_id: str | None = None
        try:
            prompt_id = await self._submit(http, graph, client_id)
            tracker = Tracker(prompt_id, graph)
            await ctx.progress(0, "queued in ComfyUI")
            ws = await self._follow(ws, client_id, tracker, ctx, http)
        except asyncio.CancelledError:
            if prompt_id is not None:
                await asyncio.shield(self._interrupt(http, prompt_id))
            raise
        finally:
            await ws.close()
        files = await self._history_outputs(http, prompt_id, tracker)
        images = []
        for item in files:
            data = await self._view(http, item)
            ext = Path(str(item.get("filename", ""))).suffix.lower()
            width, height = _dimensions(data)
            images.append(
                await outputs.save(
                    data,
                    ext=ext.lstrip(".") or "bin",
                    content_type=_CONTENT_TYPES.get(ext, "application/octet-stream"),
                    width=width,
                    height=height,
                )
            )
        result: dict[str, JsonValue] = {"images": images, "prompt_id": prompt_id}  # type: ignore[dict-item]
        result["nodes"] = len(graph)
        return result

    async def _submit(self, http: httpx.AsyncClient, graph: dict[str, Any], client_id: str) -> str:
        response = await http.post("/prompt", json={"prompt": graph, "client_id": client_id})
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            field, problem = _validation_problem(body)
            raise InvalidParameter(field, problem)
        response.raise_for_status()
        body = response.json()
        if body.get("node_errors"):
            field, problem = _validation_problem(body)
            raise InvalidParameter(field, problem)
        return str(body["prompt_id"])

    async def _follow(
        self, ws: Any, client_id: str, tracker: Tracker, ctx: JobContext,
        http: httpx.AsyncClient,
    ) -> Any:  # fmt: skip
        """Read messages until the prompt is done; returns the (possibly new) socket."""
        last_preview = 0.0
        preview: str | None = None
        deadline = time.monotonic() + self.idle_timeout_s
        while not tracker.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                if await self._finished_in_history(http, tracker):
                    break
                await self._interrupt(http, tracker.prompt_id)
                raise TimeoutError(
                    f"ComfyUI prompt {tracker.prompt_id} timed out: no progress for "
                    f"{self.idle_timeout_s:g} s ({tracker.describe()})"
                )
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=left)
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                ws = await self._reconnect(client_id)
                if await self._finished_in_history(http, tracker):
                    break
                continue
            if isinstance(frame, bytes):
                shot = parse_binary(frame)
                if shot is not None and _ours(shot, tracker):
                    preview = shot.data_url() or preview
                    deadline = time.monotonic() + self.idle_timeout_s
                continue
            msg = parse_text(frame)
            if msg is None or msg.prompt_id != tracker.prompt_id:
                continue
            deadline = time.monotonic() + self.idle_timeout_s
            self._raise_on_failure(msg, tracker)
            if tracker.apply(msg):
                now = time.monotonic()
                send = preview if preview and now - last_preview >= self.preview_every_s else None
                if send:
                    last_preview, preview = now, None
                await ctx.progress(tracker.percent(), tracker.describe(), preview=send)
        return ws

    @staticmethod
    def _raise_on_failure(msg: Message, tracker: Tracker) -> None:
        d = msg.data
        if msg.type == "execution_error":
            node = d.get("node_id")
            kind = d.get("node_type") or tracker.class_of(node)
            raise ComfyUIError(
                f"ComfyUI node {node} ({kind}) failed: {d.get('exception_type', 'error')}: "
                f"{str(d.get('exception_message', '')).strip()}"
            )
        if msg.type == "execution_interrupted":
            raise ComfyUIError(
                f"ComfyUI interrupted prompt {tracker.prompt_id} at node {d.get('node_id')} "
                "(someone else stopped it); trying again"
            )

    async def _reconnect(self, client_id: str) -> Any:
        """A new socket with the same client id, trying until it opens (the caller's idle
        timeout and the job's timeout bound the wait)."""
        while True:
            try:
                return await websockets.connect(
                    f"{self.ws_url}?clientId={client_id}", max_size=2**24
                )
            except (OSError, websockets.InvalidHandshake) as exc:
                logger.warning("ComfyUI socket at %s: %s; reconnecting", self.ws_url, exc)
                await asyncio.sleep(self.reconnect_s)

    async def _finished_in_history(self, http: httpx.AsyncClient, tracker: Tracker) -> bool:
        """After a gap (reconnect, silence): did the prompt finish meanwhile? Failures too."""
        entry = await self._history(http, tracker.prompt_id)
        if entry is None:
            return False
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            for name, data in status.get("messages") or []:
                msg = Message(str(name), data if isinstance(data, dict) else {})
                self._raise_on_failure(msg, tracker)
            raise ComfyUIError(f"ComfyUI prompt {tracker.prompt_id} failed")
        if status.get("completed") or entry.get("outputs"):
            tracker.finished = True
            return True
        return False

    async def _history(self, http: httpx.AsyncClient, prompt_id: str) -> dict[str, Any] | None:
        response = await http.get(f"/history/{prompt_id}")
        response.raise_for_status()
        body = response.json()
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _history_outputs(
        self, http: httpx.AsyncClient, prompt_id: str | None, tracker: Tracker
    ) -> list[dict[str, Any]]:
        """The prompt's output files from /history, which can lag the success message: polled
        with a growing pause up to ``history_wait_s``."""
        assert prompt_id is not None
        deadline = time.monotonic() + self.history_wait_s
        pause = 0.05
        while True:
            entry = await self._history(http, prompt_id)
            if entry is not None and (
                entry.get("outputs") or (entry.get("status") or {}).get("completed")
            ):
                return _files(entry.get("outputs") or {})
            if time.monotonic() >= deadline:
                if tracker.outputs:  # the executed messages said what was written
                    return _files(tracker.outputs)
                raise ComfyUIError(
                    f"ComfyUI prompt {prompt_id} finished but /history did not list it within "
                    f"{self.history_wait_s:g} s"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _view(self, http: httpx.AsyncClient, item: dict[str, Any]) -> bytes:
        params = {
            "filename": str(item.get("filename", "")),
            "subfolder": str(item.get("subfolder", "")),
            "type": str(item.get("type", "output")),
        }
        response = await http.get("/view", params=params)
        response.raise_for_status()
        return response.content

    async def _interrupt(self, http: httpx.AsyncClient, prompt_id: str) -> None:
        """Stop the prompt: interrupt it if running, delete it if still queued."""
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/interrupt", json={"prompt_id": prompt_id})
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/queue", json={"delete": [prompt_id]})


def _ours(shot: Preview, tracker: Tracker) -> bool:
    return shot.prompt_id is None or shot.prompt_id == tracker.prompt_id


def _files(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Output files (``type`` output, not the temp previews) of every node, in node order."""
    files: list[dict[str, Any]] = []
    for node in sorted(outputs, key=lambda n: (len(n), n)):
        out = outputs[node]
        if not isinstance(out, dict):
            continue
        for kind in ("images", "gifs", "videos"):
            for item in out.get(kind) or []:
                if isinstance(item, dict) and item.get("type", "output") == "output":
                    files.append(item)
    return files


def _dimensions(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from a PNG's header (other formats: unknown)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None, None


def connector_from_settings(settings: WorkerSettings) -> ComfyUIConnector:
    return ComfyUIConnector(
        settings.comfyui_url,
        outputs=BlobStoreOnDemand(),
        loras_dir=settings.comfyui_loras_dir,
        idle_timeout_s=settings.comfyui_idle_timeout_seconds,
        history_wait_s=settings.comfyui_history_wait_seconds,
    )


__all__ = ["ComfyUIConnector", "ComfyUIError", "connector_from_settings", "orjson"]
