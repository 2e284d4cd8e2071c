"""The LoRA cache's index: which files it holds, how big, when last used. A small JSON file in the
cache folder, rewritten atomically (temporary file, fsync, rename) after every change, so that a
worker restarted after a crash, or killed mid-write, finds either the old index or the new one.

A missing or unreadable index is rebuilt from the files in the folder (their modification time
standing in for last use); entries read from disk are re-hashed once before first use in a process
(``verified`` is never persisted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(slots=True)
class Entry:
    """One cached file."""

    size: int
    last_used: float  # seconds since the epoch, by the cache's clock
    added: float
    mtime_ns: int  # the file's modification time when it was written or last verified
    verified: bool = False  # hashed (or downloaded) by this process

    def to_json(self) -> dict[str, int | float]:
        return {
            "size": self.size,
            "last_used": self.last_used,
            "added": self.added,
            "mtime_ns": self.mtime_ns,
        }


class CacheIndex:
    """Entries by sha256, persisted as ``<root>/index.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / INDEX_NAME
        self.entries: dict[str, Entry] = {}

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())

    def load(self, blobs: Path) -> None:
        """Read the index, or rebuild it from the files in ``blobs`` when it cannot be read.
        Entries whose file is gone are dropped; files the index does not know are adopted."""
        entries: dict[str, Entry] = {}
        try:
            raw = orjson.loads(self.path.read_bytes())
            if raw.get("version") != INDEX_VERSION:
                raise ValueError(f"index version {raw.get('version')!r}")
            for sha, e in raw["entries"].items():
                if _SHA256.match(sha):
                    entries[sha] = Entry(
                        int(e["size"]), float(e["last_used"]), float(e["added"]), int(e["mtime_ns"])
                    )
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("LoRA cache index %s is unreadable (%s); rebuilding it", self.path, exc)
            entries = {}
        on_disk = {p.name: p for p in blobs.iterdir() if _SHA256.match(p.name)}
        for sha in list(entries):
            if sha not in on_disk:
                del entries[sha]
        for sha, path in on_disk.items():
            if sha not in entries:
                st = path.stat()
                entries[sha] = Entry(st.st_size, st.st_mtime, st.st_mtime, st.st_mtime_ns)
        self.entries = entries

    def save(self) -> None:
        body = orjson.dumps(
            {
                "version": INDEX_VERSION,
                "entries": {sha: e.to_json() for sha, e in self.entries.items()},
            }
        )
        fd, tmp = tempfile.mkstemp(prefix=".index.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
