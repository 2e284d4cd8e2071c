"""Domain errors. Services raise these; each app maps them to its own wire format in one place."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class EmpError(Exception):
    """Base of every domain error: a message for people, a status code and a stable code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        where = f", field={self.field!r}" if self.field else ""
        return f"{type(self).__name__}({self.message!r}{where})"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(EmpError):
    """Something a caller sent does not parse; ``field`` names where."""

    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    status_code = 413
    code = "payload_too_large"


class NotFound(EmpError):
    status_code = 404
    code = "not_found"


class Conflict(EmpError):
    """The job is not in a state that allows the operation (already finished, say)."""

    status_code = 409
    code = "conflict"


class StaleToken(Conflict):
    """A worker's fencing token is no longer current: the job was reassigned or cancelled."""

    code = "stale_token"


class LibraryMismatch(EmpError):
    """Redis holds a Function library of another version than this code was built with."""

    status_code = 500
    code = "library_mismatch"


def invalid_from_validation(exc: ValidationError, *, root: str = "") -> InvalidInput:
    """The first problem of a pydantic error as ``InvalidInput`` naming the field's dotted path."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    field = ".".join(p for p in (root, loc) if p) or None
    where = f"{field}: " if field else ""
    count = exc.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return InvalidInput(f"{where}{first['msg']}{more}", field=field)
