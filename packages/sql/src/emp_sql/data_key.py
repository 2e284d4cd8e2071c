"""Where the data key (the ``Sealer`` of secrets stored in SQL) comes from.

``EMP_DATA_KEY`` when it is set. Otherwise, on the embedded default (SQLite, ``make dev``, the
tests), a key file made on first use beside the database file (``.data/data-key``, mode 0600), so
a checkout runs with no configuration and restarts open what earlier runs sealed; the key file and
the database sit in one folder, so this protects a copied database file, not a copied folder,
which is all a laptop needs. With PostgreSQL (production) there is no fallback: the process
refuses to start and says which setting to set, because a key made up on one host would seal rows
that no other API process could open.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from emp_core.security.envcrypt.errors import MissingKey
from emp_core.security.sealing import DATA_KEY_ENV, Sealer
from emp_sql.settings import DatabaseSettings

KEY_FILE = "data-key"
# The id of a key this module generates, as ``emp env keygen`` would print it.
LOCAL_KID = "local"


def key_file(settings: DatabaseSettings) -> Path | None:
    """The key file of a SQLite database on disk; None for PostgreSQL and in-memory SQLite."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).parent / KEY_FILE


def _read_or_create(path: Path) -> str:
    """The key file's text, made first when absent. Made under a temporary name and linked into
    place, so processes starting together agree on one key and none reads half a file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
                out.write(Sealer.generate(LOCAL_KID).ring.current.encode() + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()


def load_sealer(settings: DatabaseSettings) -> Sealer:
    """The sealer of ``settings``' database; raises ``MissingKey`` naming ``EMP_DATA_KEY`` when
    a PostgreSQL database has none (see the module's docstring)."""
    if settings.data_key is not None:
        return Sealer.parse(settings.data_key.get_secret_value())
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        path = key_file(settings)
        # An in-memory database lives as long as the process: so may its key.
        return Sealer.generate(LOCAL_KID) if path is None else Sealer.parse(_read_or_create(path))
    raise MissingKey(
        f"{DATA_KEY_ENV} is not set: with a {url.get_backend_name()} database it must hold the "
        "key that seals webhook secrets (KID:BASE64, from `emp env keygen --kid d1`; keep it "
        "outside the database, e.g. in the secret store that holds the database password)"
    )
