"""What a stock ComfyUI server says, decoded: its JSON messages on ``/ws`` and its binary preview
frames, and the progress of one prompt across its nodes.

Spoken by ComfyUI since the ``/ws?clientId=`` + ``POST /prompt`` API settled (2023) through the
0.3.x releases: messages ``status``, ``execution_start``, ``execution_cached``, ``executing``
(``node`` null: the prompt is done), ``progress``, ``executed``, ``execution_success``,
``execution_error``, ``execution_interrupted``; binary frames of type 1 (``PREVIEW_IMAGE``: a
4-byte image format, 1 JPEG or 2 PNG, then the image) and 4 (``PREVIEW_IMAGE_WITH_METADATA``: a
4-byte JSON length, the JSON, then the image), each after a 4-byte big-endian event type.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_FORMATS = {1: "image/jpeg", 2: "image/png"}
MAX_PREVIEW_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return str(value) if value is not None else None


def parse_text(raw: str | bytes) -> Message | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return None
    data = body.get("data")
    return Message(body["type"], data if isinstance(data, dict) else {})


@dataclass(frozen=True, slots=True)
class Preview:
    content_type: str
    data: bytes
    prompt_id: str | None = None

    def data_url(self) -> str | None:
        """As a ``data:`` URL when small enough to ride in a progress event."""
        url = f"data:{self.content_type};base64," + base64.b64encode(self.data).decode()
        return url if len(url) <= MAX_PREVIEW_BYTES else None


def parse_binary(frame: bytes) -> Preview | None:
    """A preview image from a binary frame, or None for frames of other kinds."""
    if len(frame) < 8:
        return None
    (event,) = struct.unpack(">I", frame[:4])
    if event == PREVIEW_IMAGE:
        (fmt,) = struct.unpack(">I", frame[4:8])
        ctype = _FORMATS.get(fmt)
        return Preview(ctype, frame[8:]) if ctype else None
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            meta = orjson.loads(frame[8 : 8 + length])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(meta, dict):
            return None
        ctype = str(meta.get("image_type") or "image/png")
        pid = meta.get("prompt_id")
        return Preview(ctype, frame[8 + length :], str(pid) if pid else None)
    return None


@dataclass
class Tracker:
    """One prompt's state as its messages arrive: nodes done, the node running, its steps."""

    prompt_id: str
    graph: dict[str, Any]
    done_nodes: set[str] = field(default_factory=set)
    current: str | None = None
    value: int = 0
    maximum: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def class_of(self, node: str | None) -> str:
        info = self.graph.get(str(node)) if node is not None else None
        return str(info.get("class_type", "?")) if isinstance(info, dict) else "?"

    def percent(self) -> float:
        if self.finished:
            return 100.0
        total = max(1, len(self.graph))
        part = self.value / self.maximum if self.maximum else 0.0
        return min(100.0, 100.0 * (len(self.done_nodes) + part) / total)

    def describe(self) -> str:
        if self.current is None:
            return f"{len(self.done_nodes)} of {len(self.graph)} nodes done"
        where = f"node {self.current} ({self.class_of(self.current)})"
        if self.maximum:
            return f"{where}: step {self.value} of {self.maximum}"
        return f"{where} running"

    def apply(self, msg: Message) -> bool:
        """Update from a message about this prompt; True when it moved progress."""
        d = msg.data
        if msg.type == "execution_cached":
            self.done_nodes.update(str(n) for n in d.get("nodes") or [])
            return True
        if msg.type == "executing":
            node = d.get("node")
            if self.current is not None:
                self.done_nodes.add(self.current)
            if node is None:
                self.current, self.finished = None, True
            else:
                self.current, self.value, self.maximum = str(node), 0, 0
            return True
        if msg.type == "progress":
            node = d.get("node")
            if node is not None:
                self.current = str(node)
            self.value, self.maximum = int(d.get("value") or 0), int(d.get("max") or 0)
            return True
        if msg.type == "executed":
            node = d.get("node")
            if node is not None and isinstance(d.get("output"), dict):
                self.outputs[str(node)] = d["output"]
            return True
        if msg.type == "execution_success":
            if self.current is not None:
                self.done_nodes.add(self.current)
            self.current, self.finished = None, True
            return True
        return msg.type == "execution_start"


def validation_problem(body: Any) -> tuple[str, str]:
    """(field, problem) from the body of a refused ``POST /prompt`` (HTTP 400): the first node
    error as ``workflow.NODE.INPUT`` and its message, or the top-level error."""
    if isinstance(body, dict):
        node_errors = body.get("node_errors")
        if isinstance(node_errors, dict):
            for node_id, info in node_errors.items():
                errors = info.get("errors") if isinstance(info, dict) else None
                for err in errors or []:
                    if not isinstance(err, dict):
                        continue
                    extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
                    name = extra.get("input_name") if extra else None
                    where = f"workflow.{node_id}" + (f".{name}" if name else "")
                    ctype = info.get("class_type", "?")
                    text = f"{err.get('message', 'invalid')} ({ctype})"
                    if err.get("details"):
                        text += f": {err['details']}"
                    return where, text
        error = body.get("error")
        if isinstance(error, dict):
            text = str(error.get("message") or error.get("type") or "refused")
            if error.get("details"):
                text += f": {error['details']}"
            return "workflow", text
        if isinstance(error, str):
            return "workflow", error
    return "workflow", "ComfyUI refused the workflow"
