"""A file upload (``multipart/form-data``) read as a stream: the file's bytes are handed on as they
arrive and never held whole, in memory or on disk.

Starlette's ``request.form()`` spools a file to a temporary file before the route sees a byte;
here python-multipart's push parser is fed the request body chunk by chunk instead. Text fields
that come before the file (``name``) are collected (small, bounded); the file part is
``chunks()``; anything after it is read and ignored. A body that ends before the closing boundary
(an upload cut off mid-stream) raises from ``chunks()`` before it ends, so whatever consumes it
(a blob store's atomic ``put``) keeps nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from emp_core.errors import EmpError, InvalidInput
from emp_core.loras.safetensors import FileTooLarge
from emp_core.loras.settings import LoraSettings

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16

# Room for the multipart form around the file (boundaries, part headers, the name field).
FORM_OVERHEAD = 64 * 1024


class UploadCutOff(InvalidInput):
    code = "upload_cut_off"


class UploadStalled(EmpError):
    """No byte of the body arrived for ``idle_timeout_s``: a client dribbling an upload must not
    hold a request open for ever (the body guard leaves streamed uploads to this check)."""

    status_code = 408
    code = "request_timeout"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None


class StreamedUpload:
    """Open with ``await StreamedUpload.open(request, file_field="file")``."""

    def __init__(self, request: Request, file_field: str, idle_timeout_s: float = 60.0) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise InvalidInput(
                "send the file as multipart/form-data with a boundary", field="content-type"
            )
        self.file_field = file_field
        self.idle_timeout_s = idle_timeout_s
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._body = request.stream()
        self._events: list[tuple[str, bytes]] = []
        self._header_field = b""
        self._header_value = b""
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: self._events.append(("begin", b"")),
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": lambda: self._events.append(("headers", b"")),
                "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self._events.append(("end", b"")),
                "on_end": self._on_end,
            },
        )
        self._part = _Part()
        self._in_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._events.append(("header", self._header_field.lower() + b"\0" + self._header_value))
        self._header_field = self._header_value = b""

    def _on_end(self) -> None:
        self._ended = True

    @classmethod
    async def open(
        cls, request: Request, *, file_field: str = "file", idle_timeout_s: float = 60.0
    ) -> StreamedUpload:
        """Read up to the start of the file part, collecting the fields before it."""
        upload = cls(request, file_field, idle_timeout_s)
        await upload._until_file()
        return upload

    @classmethod
    async def open_lora(cls, request: Request, settings: LoraSettings) -> StreamedUpload:
        """Open a LoRA upload: refuse at once a body that declares more than the size limit
        (plus room for the form around the file), before reading any of it."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_bytes + FORM_OVERHEAD:
            raise FileTooLarge(
                f"the file is over the limit of {settings.max_bytes:,} bytes", field="file"
            )
        return await cls.open(request, idle_timeout_s=settings.upload_idle_seconds)

    async def _pump(self) -> bool:
        """Feed the parser the next chunk of the body; False at the end of the body."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                chunk = await self._body.__anext__()
        except StopAsyncIteration:
            return False
        except TimeoutError:
            raise UploadStalled(
                f"no data arrived for {self.idle_timeout_s:g} s; the upload was abandoned",
                field="body",
            ) from None
        if chunk:
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart raises its own parse errors
                raise InvalidInput(
                    f"the multipart body does not parse: {exc}", field="body"
                ) from None
        return True

    async def _until_file(self) -> None:
        value = bytearray()
        while True:
            while self._events:
                kind, data = self._events.pop(0)
                if kind == "begin":
                    self._part, value = _Part(), bytearray()
                elif kind == "header":
                    name, _, raw = data.partition(b"\0")
                    self._part.headers[name] = raw
                elif kind == "headers":
                    _, options = parse_options_header(
                        self._part.headers.get(b"content-disposition", b"")
                    )
                    self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
                    filename = options.get(b"filename")
                    if self._part.name == self.file_field and filename is not None:
                        self.filename = filename.decode("utf-8", "replace")
                        self._in_file = True
                        return
                elif kind == "data":
                    value += data
                    if len(value) > MAX_FIELD_BYTES:
                        raise InvalidInput(
                            f"form field {self._part.name!r} is over {MAX_FIELD_BYTES:,} bytes",
                            field=self._part.name or "body",
                        )
                elif kind == "end":
                    if len(self.fields) >= MAX_FIELDS:
                        raise InvalidInput("too many form fields", field="body")
                    self.fields[self._part.name] = value.decode("utf-8", "replace")
            if not await self._pump():
                raise InvalidInput(
                    f"the form has no file field {self.file_field!r}", field=self.file_field
                )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; raises ``UploadCutOff`` when the body ends early."""
        while True:
            while self._events:
                kind, data = self._events.pop(0)
                if kind == "data" and self._in_file:
                    yield data
                elif kind == "end":
                    self._in_file = False
            if self._ended:
                # Drain what follows the closing boundary (nothing, normally).
                while await self._pump():
                    pass
                return
            if not await self._pump():
                raise UploadCutOff(
                    "the upload was cut off before the end of the file", field=self.file_field
                )
