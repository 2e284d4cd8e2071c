# ruff: noqa: E501, ASYNC110
"""A ComfyUI test server that speaks the stock protocol, for the comfyui connector's tests.

Written from the protocol (not from ComfyUI's code): ``/ws?clientId=`` (a ``status`` message on
connect; messages for a prompt go to the socket of the client id that submitted it, and are
dropped while that client has no socket), ``POST /prompt`` (validation: an unknown class_type is
``invalid_prompt``; a value not in the allowed list is ``prompt_outputs_failed_validation`` with
``node_errors``), execution messages in ComfyUI's order, binary preview frames (event 1, format 2
= PNG), ``/history/{id}`` (optionally lagging), ``/view``, ``POST /interrupt``, ``/queue``.

Knobs for the tests: ``step_time``, ``drop_socket_at_step`` (close the client's socket once, at
that sampler step), ``history_lag_s``, ``silent`` (run without sending anything).
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

KNOWN = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
         "SaveImage", "PreviewImage", "LoraLoader", "Explode"}  # fmt: skip


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))  # fmt: skip


class FakeComfy:
    def __init__(self, root: Path) -> None:
        self.output_dir = root / "output"
        self.loras_dir = root / "models" / "loras"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.loras_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = ["tiny.safetensors"]
        self.step_time = 0.005
        self.drop_socket_at_step: int | None = None
        self.history_lag_s = 0.0
        self.silent = False
        self.sockets: dict[str, WebSocket] = {}
        self.connects: list[str] = []
        self.prompts: list[dict[str, Any]] = []  # what POST /prompt received
        self.submitted_with_socket: list[bool] = []
        self.history: dict[str, tuple[float, dict[str, Any]]] = {}
        self.pending: list[str] = []
        self.running: str | None = None
        self.interrupts: list[Any] = []
        self._interrupt = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.lora_seen: list[str] = []
        self.url = ""
        self.app = Starlette(routes=[
            WebSocketRoute("/ws", self.ws),
            Route("/prompt", self.prompt, methods=["POST"]),
            Route("/history/{prompt_id}", self.get_history),
            Route("/view", self.view),
            Route("/interrupt", self.interrupt, methods=["POST"]),
            Route("/queue", self.queue, methods=["GET", "POST"]),
        ])  # fmt: skip

    # --- sending ---------------------------------------------------------------------------------
    async def send(self, client_id: str, type_: str, data: dict[str, Any]) -> None:
        ws = self.sockets.get(client_id)
        if ws is None or self.silent:
            return  # like ComfyUI: nobody listening, the message is gone
        try:
            await ws.send_json({"type": type_, "data": data})
        except Exception:
            self.sockets.pop(client_id, None)

    async def send_bytes(self, client_id: str, data: bytes) -> None:
        ws = self.sockets.get(client_id)
        if ws is None or self.silent:
            return
        try:
            await ws.send_bytes(data)
        except Exception:
            self.sockets.pop(client_id, None)

    # --- routes ----------------------------------------------------------------------------------
    async def ws(self, websocket: WebSocket) -> None:
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        self.sockets[sid] = websocket
        self.connects.append(sid)
        await websocket.send_json({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": len(self.pending)}}, "sid": sid}})  # fmt: skip
        try:
            while True:
                await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self.sockets.get(sid) is websocket:
                del self.sockets[sid]

    async def prompt(self, request: Request) -> Response:
        body = await request.json()
        graph = body.get("prompt")
        client_id = body.get("client_id", "")
        if not isinstance(graph, dict):
            return JSONResponse({"error": {"type": "invalid_prompt", "message": "Invalid prompt",
                                           "details": "no prompt", "extra_info": {}},
                                 "node_errors": {}}, status_code=400)  # fmt: skip
        for node_id, node in graph.items():
            if node.get("class_type") not in KNOWN:
                return JSONResponse({"error": {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {node.get('class_type')} does not exist.",
                    "details": f"Node ID '#{node_id}'", "extra_info": {}}, "node_errors": {}},
                    status_code=400)  # fmt: skip
        node_errors = {}
        for node_id, node in graph.items():
            inputs = node.get("inputs", {})
            if node["class_type"] == "CheckpointLoaderSimple":
                allowed, name, value = self.checkpoints, "ckpt_name", inputs.get("ckpt_name")
            elif node["class_type"] == "LoraLoader":
                allowed = sorted(
                    str(p.relative_to(self.loras_dir))
                    for p in self.loras_dir.rglob("*.safetensors")
                )
                name, value = "lora_name", inputs.get("lora_name")
            else:
                continue
            if value not in allowed:
                node_errors[node_id] = {"errors": [{
                    "type": "value_not_in_list", "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {allowed}",
                    "extra_info": {"input_name": name, "received_value": value}}],
                    "dependent_outputs": [], "class_type": node["class_type"]}  # fmt: skip
        if node_errors:
            return JSONResponse({"error": {"type": "prompt_outputs_failed_validation",
                                           "message": "Prompt outputs failed validation",
                                           "details": "", "extra_info": {}},
                                 "node_errors": node_errors}, status_code=400)  # fmt: skip
        prompt_id = str(uuid.uuid4())
        self.prompts.append(body)
        self.submitted_with_socket.append(client_id in self.sockets)
        self.pending.append(prompt_id)
        task = asyncio.create_task(self.execute(prompt_id, graph, client_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(
            {"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}}
        )

    async def get_history(self, request: Request) -> Response:
        pid = request.path_params["prompt_id"]
        entry = self.history.get(pid)
        if entry is None or time.monotonic() < entry[0]:
            return JSONResponse({})
        return JSONResponse({pid: entry[1]})

    async def view(self, request: Request) -> Response:
        q = request.query_params
        if q.get("type") != "output":
            return Response(status_code=404)
        path = self.output_dir / q.get("subfolder", "") / q.get("filename", "")
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="image/png")

    async def interrupt(self, request: Request) -> Response:
        body = await request.body()
        import json

        data = json.loads(body) if body else {}
        self.interrupts.append(data.get("prompt_id"))
        if self.running is not None and data.get("prompt_id") in (None, self.running):
            self._interrupt = True
        return Response(status_code=200)

    async def queue(self, request: Request) -> Response:
        if request.method == "POST":
            body = await request.json()
            for pid in body.get("delete", []):
                if pid in self.pending:
                    self.pending.remove(pid)
            return Response(status_code=200)
        running = [[0, self.running]] if self.running else []
        return JSONResponse(
            {
                "queue_running": running,
                "queue_pending": [[i, p] for i, p in enumerate(self.pending)],
            }
        )

    # --- execution -------------------------------------------------------------------------------
    async def execute(self, pid: str, graph: dict[str, Any], cid: str) -> None:
        async with self._lock:
            if pid not in self.pending:
                return  # deleted from the queue before it started
            self.pending.remove(pid)
            self.running, self._interrupt = pid, False
            try:
                await self._execute(pid, graph, cid)
            finally:
                self.running = None

    async def _execute(self, pid: str, graph: dict[str, Any], cid: str) -> None:
        now = lambda: int(time.time() * 1000)  # noqa: E731
        await self.send(cid, "execution_start", {"prompt_id": pid, "timestamp": now()})
        await self.send(
            cid, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": now()}
        )
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        messages: list[Any] = [["execution_start", {"prompt_id": pid}]]
        for node_id, node in graph.items():
            ctype, inputs = node["class_type"], node.get("inputs", {})
            await self.send(
                cid, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}
            )
            if ctype == "LoraLoader":
                self.lora_seen.append(str((self.loras_dir / inputs["lora_name"]).resolve()))
            if ctype == "KSampler":
                steps = int(inputs.get("steps", 4))
                for i in range(1, steps + 1):
                    await asyncio.sleep(self.step_time)
                    if self._interrupt:
                        data = {"prompt_id": pid, "node_id": node_id, "node_type": ctype,
                                "executed": executed, "timestamp": now()}  # fmt: skip
                        await self.send(cid, "execution_interrupted", data)
                        messages.append(["execution_interrupted", data])
                        self._finish(pid, graph, outputs, messages, "error")
                        return
                    await self.send(
                        cid,
                        "progress",
                        {"value": i, "max": steps, "prompt_id": pid, "node": node_id},
                    )
                    frame = struct.pack(">II", 1, 2) + png(8, 8, (i * 20 % 256, 80, 160))
                    await self.send_bytes(cid, frame)
                    if self.drop_socket_at_step == i and cid in self.sockets:
                        self.drop_socket_at_step = None
                        ws = self.sockets.pop(cid)
                        await ws.close(code=1011)
            if ctype == "Explode":
                data = {"prompt_id": pid, "node_id": node_id, "node_type": ctype, "executed": executed,
                        "exception_message": str(inputs.get("message", "boom")),
                        "exception_type": str(inputs.get("exception_type", "RuntimeError")),
                        "traceback": ["Traceback..."], "current_inputs": {}, "current_outputs": {},
                        "timestamp": now()}  # fmt: skip
                await self.send(cid, "execution_error", data)
                messages.append(["execution_error", data])
                self._finish(pid, graph, outputs, messages, "error")
                return
            if ctype in ("SaveImage", "PreviewImage"):
                kind = "output" if ctype == "SaveImage" else "temp"
                prefix = str(inputs.get("filename_prefix", "ComfyUI"))
                name = f"{prefix}_{len(list(self.output_dir.glob(prefix + '_*'))) + 1:05d}_.png"
                if kind == "output":
                    (self.output_dir / name).write_bytes(png(16, 24, (200, 30, 30)))
                out = {"images": [{"filename": name, "subfolder": "", "type": kind}]}
                outputs[node_id] = out
                await self.send(cid, "executed", {"node": node_id, "display_node": node_id,
                                                  "output": out, "prompt_id": pid})  # fmt: skip
            executed.append(node_id)
        await self.send(cid, "execution_success", {"prompt_id": pid, "timestamp": now()})
        messages.append(["execution_success", {"prompt_id": pid}])
        self._finish(pid, graph, outputs, messages, "success")
        await self.send(cid, "executing", {"node": None, "prompt_id": pid})

    def _finish(self, pid: str, graph: dict[str, Any], outputs: dict[str, Any],
                messages: list[Any], status: str) -> None:  # fmt: skip
        entry = {"prompt": [0, pid, graph, {}, list(outputs)], "outputs": outputs,
                 "status": {"status_str": status, "completed": status == "success",
                            "messages": messages}}  # fmt: skip
        self.history[pid] = (time.monotonic() + self.history_lag_s, entry)


async def start(root: Path) -> tuple[FakeComfy, uvicorn.Server, asyncio.Task[None]]:
    fake = FakeComfy(root)
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning", ws="auto")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    return fake, server, task
