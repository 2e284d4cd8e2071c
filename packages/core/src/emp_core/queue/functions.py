"""The typed wrapper of the ``emp`` Redis Function library (``lua/emp.lua``).

One method per Lua function, with the same name (less the ``emp_`` prefix) and the Lua's argument
order after the key base. Lua returns flat values; this module turns errors into ``EmpError``
classes and leaves building models to ``queue.py``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from emp_core.errors import Conflict, EmpError, InvalidInput, LibraryMismatch, NotFound, StaleToken
from emp_core.queue.idempotency import IdempotencyKeyReused, IdempotencyRecord
from emp_core.queue.keys import Keys
from emp_core.redis import text, text_list
from emp_core.redis.cluster import is_cluster, on_each_primary
from emp_core.redis.replicated import fcall_replicated

_ERROR = re.compile(
    r"^EMP_(?P<kind>[A-Z_]+) (?P<field>\S+) (?P<message>.*?)(?: script: .*)?$", re.S
)
_KINDS: dict[str, type[EmpError]] = {
    "INVALID": InvalidInput,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "STALE": StaleToken,
    "IDEMPOTENCY": IdempotencyKeyReused,
}


def library_source() -> str:
    """The Lua library: packaged with the wheel, or read from the repository in a checkout."""
    packaged = resources.files("emp_core").joinpath("lua/emp.lua")
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[5] / "lua" / "emp.lua").read_text()


LIBRARY_SOURCE = library_source()
LIBRARY_VERSION = int(re.search(r"local VERSION = '(\d+)'", LIBRARY_SOURCE).group(1))  # type: ignore[union-attr]


def translate(exc: ResponseError) -> EmpError | ResponseError:
    """A Lua ``EMP_*`` error as its domain error; anything else unchanged."""
    match = _ERROR.match(str(exc))
    if not match:
        return exc
    cls = _KINDS.get(match["kind"], EmpError)
    return cls(f"{match['field']} {match['message']}".strip(), field=match["field"])


@dataclass(frozen=True, slots=True)
class SubmitArgs:
    """One job as the submit function takes it (all strings, as Redis stores them)."""

    id: str
    service: str
    priority: int
    payload: bytes
    requirements: str
    class_id: str
    customer_id: str
    workflow_id: str
    step: str
    total_steps: str
    max_attempts: int
    timeout_s: float
    traceparent: str
    loras: bytes = b"[]"

    def argv(self) -> tuple[Any, ...]:
        return (
            self.id, self.service, self.priority, self.payload, self.requirements, self.class_id,
            self.customer_id, self.workflow_id, self.step, self.total_steps, self.max_attempts,
            self.timeout_s, self.traceparent, self.loras,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Affinity:
    """How a claim weighs the LoRAs a worker holds (see ``affine_choice`` in the Lua)."""

    scan: int = 16
    patience_ms: int = 30_000
    grace_ms: int = 1_000
    window_ms: int = 0

    def argv(self) -> tuple[int, int, int, int]:
        return (self.scan, self.patience_ms, self.grace_ms, self.window_ms)


@dataclass(frozen=True, slots=True)
class NextClaim:
    """What ``complete`` needs to claim the worker's next job in the same call."""

    services: Sequence[str]
    capabilities: bytes
    lease_ms: int
    promote_limit: int
    slot: int | None = None
    affinity: Affinity = Affinity()
    fair_scan: int = 0


class Functions:
    """Calls into the library for one queue."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.base = keys.base
        # (replicas, timeout ms): a submit answers once that many replicas hold it (0: at once).
        self.wait_replicas = (0, 0)

    async def _call(
        self, name: str, keys: Sequence[str], *args: Any, replicated: bool = False
    ) -> Any:
        replicas, timeout_ms = self.wait_replicas
        call: Callable[..., Awaitable[Any]]
        if replicated and replicas > 0:
            call = functools.partial(fcall_replicated, self.redis, replicas, timeout_ms, name, keys)
        else:
            call = functools.partial(self.redis.fcall, name, len(keys), *keys)
        try:
            return await call(self.base, *args)
        except ResponseError as exc:
            if not (is_cluster(self.redis) and _not_found(exc)):
                raise translate(exc) from None
        # A cluster node without the library (one that joined since start): install it
        # everywhere it is missing, then call again, once.
        await self.load()
        try:
            return await call(self.base, *args)
        except ResponseError as exc:
            raise translate(exc) from None

    # --- loading ---------------------------------------------------------------------------------
    async def installed_version(self) -> int | None:
        """The library version Redis holds: on a cluster, the oldest any primary holds (None
        where one holds none), since every primary must run the same library."""
        versions = await on_each_primary(self.redis, _version)
        return None if None in versions else min(v for v in versions if v is not None)

    async def load(self) -> int:
        """Install this code's library (``FUNCTION LOAD REPLACE``) unless Redis holds a newer one,
        or already this very code, then read the version back, so a library replaced by an older
        deploy is caught here. On a cluster, on every primary (``FUNCTION LOAD`` is per node).

        Every worker calls this at start: reading the installed code back (no Lua compile) instead
        of loading it again spares Redis ~3 ms of compiling, blocking every client, per start."""

        async def load_here(execute: Callable[..., Awaitable[Any]]) -> None:
            installed = await _version(execute)
            if installed is not None and installed > LIBRARY_VERSION:
                raise LibraryMismatch(
                    f"Redis holds emp library v{installed}, newer than this code's "
                    f"v{LIBRARY_VERSION}: upgrade this process instead of downgrading the shared "
                    "library"
                )
            if installed == LIBRARY_VERSION and await _code(execute) == LIBRARY_SOURCE:
                return
            await execute("FUNCTION", "LOAD", "REPLACE", LIBRARY_SOURCE)

        await on_each_primary(self.redis, load_here)
        await self.check()
        return LIBRARY_VERSION

    async def check(self) -> None:
        """Refuse to run against a library of another version (on any primary)."""
        versions = await on_each_primary(self.redis, _version)
        for installed in versions:
            if installed != LIBRARY_VERSION:
                found = "no emp library" if installed is None else f"emp library v{installed}"
                raise LibraryMismatch(
                    f"Redis holds {found}; this code needs v{LIBRARY_VERSION} "
                    "(run `emp functions load`)"
                )

    # --- one method per function -----------------------------------------------------------------
    def _submit_args(self, jobs: Sequence[SubmitArgs]) -> tuple[list[str], list[Any]]:
        k = self.keys
        keys: list[str] = []
        argv: list[Any] = []
        for job in jobs:
            keys += [
                k.job(job.id),
                k.events(job.id),
                k.seq(),
                k.classes(job.service),
                k.pending(job.class_id),
                k.pending_count(),
                k.workflow(job.workflow_id),
                k.customer_jobs(job.customer_id),
            ]
            argv += job.argv()
        return keys, argv

    async def submit(
        self, jobs: Sequence[SubmitArgs], events_maxlen: int, retention_s: int
    ) -> list[str]:
        keys, argv = self._submit_args(jobs)
        ids = await self._call(
            "emp_submit", keys, len(jobs), events_maxlen, retention_s, *argv, replicated=True
        )
        return text_list(ids)

    async def submit_and_read(
        self, job: SubmitArgs, events_maxlen: int, retention_s: int
    ) -> dict[bytes, bytes] | None:
        """``emp_submit`` of one job and HGETALL of the job as stored, pipelined: one round trip
        where the API's submit took two. None where that does not apply (a cluster, whose
        "library missing on a new node" retry is per call, or a write that must WAIT for
        replicas): the caller then submits and reads in two calls."""
        if self.wait_replicas[0] > 0 or is_cluster(self.redis):
            return None
        keys, argv = self._submit_args([job])
        pipe: Any = self.redis.pipeline(transaction=False)
        pipe.fcall("emp_submit", len(keys), *keys, self.base, 1, events_maxlen, retention_s, *argv)
        pipe.hgetall(self.keys.job(job.id))
        # Errors come back as replies (a raising pipeline rewrites their message); the submit's
        # is the Lua's own, whose EMP_* prefix names the domain error.
        submitted, fields = await pipe.execute(raise_on_error=False)
        if isinstance(submitted, ResponseError):
            raise translate(submitted) from None
        if isinstance(fields, Exception):
            raise fields
        return dict(fields)

    async def submit_once(
        self, job: SubmitArgs, record: IdempotencyRecord, events_maxlen: int, retention_s: int
    ) -> tuple[str, bool]:
        """``emp_submit`` with an Idempotency-Key: the check and the submit in one call. Returns
        the job id and whether it is an earlier request's job (a replay); a key used with another
        body raises ``IdempotencyKeyReused``."""
        keys, argv = self._submit_args([job])
        keys.append(self.keys.idempotency(record.owner_id, record.key_digest))
        outcome, job_id = await self._call(
            "emp_submit", keys, 1, events_maxlen, retention_s, *argv, record.owner_id,
            record.key_digest, record.body_digest, record.ttl_s, replicated=True,
        )  # fmt: skip
        return text(job_id), text(outcome) == "replayed"

    async def claim(
        self,
        worker_id: str,
        services: Sequence[str],
        capabilities: bytes,
        lease_ms: int,
        events_maxlen: int,
        promote_limit: int,
        slot: int | None = None,
        affinity: Affinity = Affinity(),
        fair_scan: int = 0,
    ) -> list[Any]:
        """``slot``: the worker slot claiming; given, an empty claim enters the slot in its
        profile's idle set, and a job becoming pending wakes it (``Waker``). ``fair_scan``:
        customers per class compared for fair shares (0: off, first submitted first)."""
        k = self.keys
        keys = [k.worker(worker_id), k.leases(), k.fence(), k.delayed()]
        keys += [k.classes(s) for s in services]
        keys.append(k.worker_loras(worker_id))
        result: list[Any] = await self._call(
            "emp_claim", keys, capabilities, lease_ms, events_maxlen, promote_limit,
            "" if slot is None else slot,
            *affinity.argv(), fair_scan,
        )  # fmt: skip
        return result

    async def rest(
        self, worker_id: str, capabilities: bytes, slots: int, slot: int | None = None
    ) -> None:
        """A stopping worker's slots leave the idle sets (no wake-up is sent to them); with
        ``slot``, that slot alone (it is busy with another queue's job)."""
        extra = () if slot is None else (slot,)
        await self._call("emp_rest", [self.keys.worker(worker_id)], capabilities, slots, *extra)

    async def heartbeat(self, job_id: str, token: str, lease_ms: int) -> int:
        k = self.keys
        return int(
            await self._call("emp_heartbeat", [k.job(job_id), k.leases()], job_id, token, lease_ms)
        )

    @staticmethod
    def heartbeat_sync(redis: SyncRedis, keys: Keys, job_id: str, token: str, lease_ms: int) -> int:
        """``heartbeat`` over a synchronous client, for a worker's lease thread, which must keep
        renewing while a connector blocks the event loop. Same keys and arguments."""
        lua_keys = [keys.job(job_id), keys.leases()]
        try:
            reply = redis.fcall(
                "emp_heartbeat", len(lua_keys), *lua_keys, keys.base, job_id, token, lease_ms
            )
        except ResponseError as exc:
            raise translate(exc) from None
        return int(reply)

    async def progress(
        self,
        job_id: str,
        token: str,
        progress: float,
        message: str,
        events_maxlen: int,
        preview: str | None = None,
    ) -> None:
        k = self.keys
        await self._call(
            "emp_progress", [k.job(job_id), k.events(job_id)], job_id, token, progress, message,
            events_maxlen, preview or "",
        )  # fmt: skip

    async def complete(
        self,
        worker_id: str,
        job_id: str,
        token: str,
        result: bytes,
        retention_s: int,
        events_maxlen: int,
        claim_next: NextClaim | None = None,
    ) -> list[Any] | None:
        """With ``claim_next``, the same call claims this worker's next job and returns what
        ``claim`` returns."""
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.leases(), k.worker(worker_id), k.finished()]
        args: list[Any] = [job_id, token, result, retention_s, events_maxlen]
        if claim_next is not None:
            keys += [k.fence(), k.delayed(), *(k.classes(s) for s in claim_next.services)]
            keys.append(k.worker_loras(worker_id))
            args += [claim_next.capabilities, claim_next.lease_ms, claim_next.promote_limit]
            args.append("" if claim_next.slot is None else claim_next.slot)
            args += claim_next.affinity.argv()
            args.append(claim_next.fair_scan)
        reply = await self._call("emp_complete", keys, *args)
        return reply if claim_next is not None else None

    async def fail(
        self,
        worker_id: str,
        job_id: str,
        token: str,
        error: str,
        retryable: bool,
        delay_ms: int,
        avoid_grace_ms: int,
        retention_s: int,
        events_maxlen: int,
        classification: tuple[str, str, str] = ("", "", ""),
    ) -> str:
        """``classification``: category, pattern id and user message, stored on the job."""
        k = self.keys
        keys = [
            k.job(job_id),
            k.events(job_id),
            k.leases(),
            k.worker(worker_id),
            k.delayed(),
            k.dead(),
            k.finished(),
        ]
        outcome = await self._call(
            "emp_fail", keys, job_id, token, error, int(retryable), delay_ms, avoid_grace_ms,
            retention_s, events_maxlen, *classification,
        )  # fmt: skip
        return text(outcome)

    async def release(
        self, worker_id: str, job_id: str, token: str, reason: str, events_maxlen: int
    ) -> None:
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.leases(), k.worker(worker_id)]
        await self._call("emp_release", keys, job_id, token, reason, events_maxlen)

    async def cancel(self, job_id: str, reason: str, retention_s: int, events_maxlen: int) -> str:
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.leases(), k.delayed(), k.finished()]
        previous = await self._call("emp_cancel", keys, job_id, reason, retention_s, events_maxlen)
        return text(previous)

    async def reap(
        self,
        limit: int,
        retention_s: int,
        events_maxlen: int,
        max_lost: int,
        gate_ms: int = 0,
        owner: str = "",
    ) -> tuple[int, int, int, bool]:
        """(requeued, failed, promoted, swept); ``swept`` is False when ``gate_ms`` > 0 and
        another process swept within the last ``gate_ms``."""
        k = self.keys
        requeued, failed, promoted, swept = await self._call(
            "emp_reap",
            [k.leases(), k.delayed(), k.dead(), k.finished(), k.reaper_lock()],
            limit, retention_s, events_maxlen, max_lost, gate_ms, owner,
        )  # fmt: skip
        return int(requeued), int(failed), int(promoted), bool(swept)

    # --- operator actions (issue 17) -----------------------------------------------------------
    async def retry(
        self, job_ids: Sequence[str], events_maxlen: int, priority: int | None, reason: str
    ) -> tuple[int, list[str]]:
        """Failed jobs back to pending with a fresh attempt budget: (retried, skipped ids)."""
        retried, skipped = await self._call(
            "emp_retry", [self.keys.dead()], events_maxlen,
            "" if priority is None else priority, reason, *job_ids,
        )  # fmt: skip
        return int(retried), text_list(skipped)

    async def requeue(self, job_id: str, reason: str, events_maxlen: int) -> str:
        """A claimed, running or retrying job back to pending now; returns its former status."""
        k = self.keys
        previous = await self._call(
            "emp_requeue", [k.job(job_id), k.leases(), k.delayed()], job_id, reason, events_maxlen
        )
        return text(previous)


def _not_found(exc: ResponseError) -> bool:
    return "function not found" in str(exc).lower()


async def _code(execute: Callable[..., Awaitable[Any]]) -> str | None:
    """The source of the ``emp`` library on the node ``execute`` talks to (None: none there)."""
    for library in await execute("FUNCTION", "LIST", "LIBRARYNAME", "emp", "WITHCODE"):
        # A dict through redis-py's reply parser, a flat list without it (cluster nodes).
        if not isinstance(library, dict):
            library = dict(zip(library[::2], library[1::2], strict=True))
        fields = {text(k): v for k, v in library.items()}
        if text(fields.get("library_name")) == "emp" and fields.get("library_code") is not None:
            return text(fields["library_code"])
    return None


async def _version(execute: Callable[..., Awaitable[Any]]) -> int | None:
    """The version of the library on the node ``execute`` talks to; None when it has none."""
    try:
        return int(await execute("FCALL", "emp_version", 0))
    except ResponseError as exc:
        if _not_found(exc):
            return None
        raise
