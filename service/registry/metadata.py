"""Where the registry indexes its versions: SQLite in the data directory, or PostgreSQL.

One interface, MetadataStore, two implementations. SQLite is one server's own index (the
default); PostgreSQL is shared by replicas, so everything that must hold across servers is
done by the database in one statement or one transaction: reserving a version number,
committing a version (its row is the commit point of a publish), and the change marker
that replicas poll. psycopg is imported only by PostgresMetadata: the default server never
loads it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from service.errors import FailedPrecondition, NotFound, Unavailable
from service.registry.aliases import (
    Alias,
    AliasEvent,
    Shadow,
    aliased_refusal,
    decode_evidence,
    encode_evidence,
    no_alias_to_shadow,
)
from service.registry.manifest import Manifest

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class MetadataStore(Protocol):
    """The index of published versions; every method is safe to call from several threads.

    Versions are whole numbers as strings ("1", "2", ...), as in Manifest.version.
    """

    #: True when other servers write to the same store (then nothing here may assume that
    #: a version it does not know about is a leftover of its own crash).
    shared: bool

    def describe(self) -> str:
        """Where the store is, for logs and error messages (never with a password)."""
        ...

    def reserve_version(self, name: str) -> int:
        """Claims the next version number of name for good, atomically across servers."""
        ...

    def next_version(self, name: str) -> int:
        """The number the next publish would get, claiming nothing (single-server stores)."""
        ...

    def raise_next_version(self, name: str, at_least: int) -> None:
        """Makes sure no number below at_least is handed out again for name."""
        ...

    def insert(self, manifest: Manifest) -> None:
        """Commits a version: its row, its number taken, the change marker moved, at once."""
        ...

    def delete(self, name: str, versions: list[str], *, force: bool = True) -> list[Alias]:
        """Removes these versions' rows and moves the change marker, in one transaction,
        with the aliases that point at them (recorded in their history); returns those
        aliases. Without `force`, an alias pointing at one of them refuses the whole delete
        (FailedPrecondition naming it), checked in the same transaction."""
        ...

    def get(self, name: str, version: str = "") -> Manifest | None:
        """The version's manifest (the latest when version is empty), None when absent."""
        ...

    def manifests(self, name: str = "") -> list[Manifest]:
        """Every version's manifest (of one name when given), by name then version."""
        ...

    def versions(self, name: str) -> list[str]:
        """The versions of name, oldest first."""
        ...

    def keys(self) -> set[tuple[str, str]]:
        """Every (name, version) published."""
        ...

    def generation(self) -> int:
        """A number that moves with every insert, delete and alias change: one tiny query
        to poll."""
        ...

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        evidence: dict[str, Any],
        expected: str | None = None,
    ) -> AliasEvent:
        """Points alias at version, records the change with its evidence and moves the
        marker, in one transaction. NotFound when the version does not exist; with
        `expected` (the version the caller saw the alias at, "" for none) FailedPrecondition
        when it has moved since."""
        ...

    def delete_alias(self, name: str, alias: str, evidence: dict[str, Any]) -> AliasEvent | None:
        """Removes an alias, recording why; None when there was no such alias."""
        ...

    def aliases(self, name: str = "") -> list[Alias]:
        """The aliases as they stand (of one name when given), by name then alias."""
        ...

    def alias_history(self, name: str, alias: str = "") -> list[AliasEvent]:
        """Every change of name's aliases (of one alias when given), oldest first."""
        ...

    def set_shadow(self, shadow: Shadow) -> Shadow:
        """Gives an existing alias a shadow (replacing its last) and moves the marker;
        NotFound when there is no such alias."""
        ...

    def clear_shadow(self, name: str, alias: str) -> bool:
        """Removes an alias's shadow; whether it had one."""
        ...

    def shadows(self) -> list[Shadow]:
        """Every alias's shadow, by name then alias."""
        ...

    def close(self) -> None: ...


def _decode(text: str) -> Manifest:
    return Manifest.from_dict(json.loads(text))


def _now() -> str:
    return datetime.now(UTC).isoformat()


#: The evidence of an alias removed because its version was deleted (with force).
DELETED_WITH_VERSION = {"reason": "its version was deleted (force)"}


def _check_expected(name: str, alias: str, current: str, expected: str | None) -> None:
    if expected is not None and current != expected:
        now = f"version {current}" if current else "no version"
        was = f"version {expected}" if expected else "no version"
        raise FailedPrecondition(
            f"alias {alias!r} of model {name!r} moved while the promotion was checked: it "
            f"points at {now}, not {was}; check the gates again"
        )


def _shadow_row(shadow: Shadow) -> tuple[str, str, str, str, float, str]:
    return (
        shadow.name, shadow.alias, shadow.shadow, shadow.shadow_version, shadow.sample_rate,
        shadow.updated_at,
    )  # fmt: skip


def _missing_version(name: str, version: str) -> NotFound:
    return NotFound(f"model {name!r} has no version {version!r} to point an alias at")


# ------------------------------------------------------------------------------ SQLite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_names (
    name TEXT PRIMARY KEY,
    next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT OR IGNORE INTO registry_state (id, generation) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS model_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS model_alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    previous TEXT NOT NULL,
    at TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_alias_shadows (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    shadow TEXT NOT NULL,
    shadow_version TEXT NOT NULL,
    sample_rate REAL NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
"""


class SqliteMetadata:
    """The default: one SQLite file in the server's data directory, one connection."""

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # A second connection (another SqliteMetadata on the file, in tests) waits for the
        # write lock instead of failing at once with "database is locked".
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        try:
            self._db.executescript(_SQLITE_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reserve_version(self, name: str) -> int:
        with self._lock, self._db:
            row = self._db.execute(
                "INSERT INTO model_names (name, next_version) VALUES (?, 2) "
                "ON CONFLICT(name) DO UPDATE SET next_version = next_version + 1 "
                "RETURNING next_version - 1",
                (name,),
            ).fetchone()
        return int(row[0])

    def next_version(self, name: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT next_version FROM model_names WHERE name = ?", (name,)
            ).fetchone()
        return int(row[0]) if row else 1

    def raise_next_version(self, name: str, at_least: int) -> None:
        with self._lock, self._db:
            self._raise_next_version(name, at_least)

    def _raise_next_version(self, name: str, at_least: int) -> None:
        self._db.execute(
            "INSERT INTO model_names (name, next_version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET next_version = "
            "MAX(model_names.next_version, excluded.next_version)",
            (name, at_least),
        )

    def insert(self, manifest: Manifest) -> None:
        version = int(manifest.version)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO models (name, version, manifest) VALUES (?, ?, ?)",
                (manifest.name, version, manifest.to_json()),
            )
            self._raise_next_version(manifest.name, version + 1)
            self._bump()

    def delete(self, name: str, versions: list[str], *, force: bool = True) -> list[Alias]:
        numbers = {int(v) for v in versions}
        with self._lock, self._db:
            held = [
                Alias(name, alias, str(version), at)
                for alias, version, at in self._db.execute(
                    "SELECT alias, version, updated_at FROM model_aliases WHERE name = ? "
                    "ORDER BY alias",
                    (name,),
                ).fetchall()
                if version in numbers
            ]
            if held and not force:
                raise aliased_refusal(name, held)
            self._db.executemany(
                "DELETE FROM models WHERE name = ? AND version = ?",
                [(name, number) for number in numbers],
            )
            for alias in held:
                self._db.execute(
                    "DELETE FROM model_aliases WHERE name = ? AND alias = ?", (name, alias.alias)
                )
                self._db.execute(
                    "DELETE FROM model_alias_shadows WHERE name = ? AND alias = ?",
                    (name, alias.alias),
                )
                self._record(name, alias.alias, "", alias.version, DELETED_WITH_VERSION)
            self._bump()
        return held

    def _record(
        self, name: str, alias: str, version: str, previous: str, evidence: dict[str, Any]
    ) -> AliasEvent:
        text = encode_evidence(evidence)  # the event says what the history holds
        event = AliasEvent(name, alias, version, previous, _now(), decode_evidence(text))
        self._db.execute(
            "INSERT INTO model_alias_history (name, alias, version, previous, at, evidence) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, alias, version, previous, event.at, text),
        )
        return event

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        evidence: dict[str, Any],
        expected: str | None = None,
    ) -> AliasEvent:
        with self._lock, self._db:
            exists = self._db.execute(
                "SELECT 1 FROM models WHERE name = ? AND version = ?", (name, int(version))
            ).fetchone()
            if exists is None:
                raise _missing_version(name, version)
            row = self._db.execute(
                "SELECT version FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
            previous = str(row[0]) if row else ""
            _check_expected(name, alias, previous, expected)
            event = self._record(name, alias, str(int(version)), previous, evidence)
            self._db.execute(
                "INSERT INTO model_aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, "
                "updated_at = excluded.updated_at",
                (name, alias, int(version), event.at),
            )
            self._bump()
        return event

    def delete_alias(self, name: str, alias: str, evidence: dict[str, Any]) -> AliasEvent | None:
        with self._lock, self._db:
            row = self._db.execute(
                "DELETE FROM model_aliases WHERE name = ? AND alias = ? RETURNING version",
                (name, alias),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "DELETE FROM model_alias_shadows WHERE name = ? AND alias = ?", (name, alias)
            )
            event = self._record(name, alias, "", str(row[0]), evidence)
            self._bump()
        return event

    def aliases(self, name: str = "") -> list[Alias]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, alias, version, updated_at FROM model_aliases "
                "WHERE ? = '' OR name = ? ORDER BY name, alias",
                (name, name),
            ).fetchall()
        return [Alias(n, a, str(v), at) for n, a, v, at in rows]

    def alias_history(self, name: str, alias: str = "") -> list[AliasEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, alias, version, previous, at, evidence FROM model_alias_history "
                "WHERE name = ? AND (? = '' OR alias = ?) ORDER BY id",
                (name, alias, alias),
            ).fetchall()
        return [AliasEvent(n, a, v, p, at, decode_evidence(e)) for n, a, v, p, at, e in rows]

    def set_shadow(self, shadow: Shadow) -> Shadow:
        stamped = replace(shadow, updated_at=_now())
        with self._lock, self._db:
            exists = self._db.execute(
                "SELECT 1 FROM model_aliases WHERE name = ? AND alias = ?",
                (shadow.name, shadow.alias),
            ).fetchone()
            if exists is None:
                raise no_alias_to_shadow(shadow.name, shadow.alias)
            self._db.execute(
                "INSERT INTO model_alias_shadows "
                "(name, alias, shadow, shadow_version, sample_rate, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name, alias) DO UPDATE SET "
                "shadow = excluded.shadow, shadow_version = excluded.shadow_version, "
                "sample_rate = excluded.sample_rate, updated_at = excluded.updated_at",
                _shadow_row(stamped),
            )
            self._bump()
        return stamped

    def clear_shadow(self, name: str, alias: str) -> bool:
        with self._lock, self._db:
            gone = self._db.execute(
                "DELETE FROM model_alias_shadows WHERE name = ? AND alias = ? RETURNING 1",
                (name, alias),
            ).fetchone()
            if gone is not None:
                self._bump()
        return gone is not None

    def shadows(self) -> list[Shadow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, alias, shadow, shadow_version, sample_rate, updated_at "
                "FROM model_alias_shadows ORDER BY name, alias"
            ).fetchall()
        return [Shadow(n, a, s, v, float(r), at) for n, a, s, v, r, at in rows]

    def _bump(self) -> None:
        self._db.execute("UPDATE registry_state SET generation = generation + 1 WHERE id = 1")

    def get(self, name: str, version: str = "") -> Manifest | None:
        with self._lock:
            if version:
                row = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? AND version = ?",
                    (name, int(version)),
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? ORDER BY version DESC LIMIT 1",
                    (name,),
                ).fetchone()
        return None if row is None else _decode(row[0])

    def manifests(self, name: str = "") -> list[Manifest]:
        with self._lock:
            if name:
                rows = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? ORDER BY version", (name,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT manifest FROM models ORDER BY name, version"
                ).fetchall()
        return [_decode(row[0]) for row in rows]

    def versions(self, name: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version FROM models WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    def keys(self) -> set[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT name, version FROM models").fetchall()
        return {(name, str(version)) for name, version in rows}

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT generation FROM registry_state WHERE id = 1").fetchone()
        return int(row[0])

    def highest_versions(self) -> dict[str, int]:
        """The highest indexed version of each name (reconcile after a crash)."""
        with self._lock:
            rows = self._db.execute("SELECT name, MAX(version) FROM models GROUP BY name")
            return {name: int(top) for name, top in rows.fetchall()}


# -------------------------------------------------------------------------- PostgreSQL

# Prefixed: the database may be shared with other applications.
_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS paradigm_models (
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS paradigm_model_names (
        name TEXT PRIMARY KEY,
        next_version BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS paradigm_registry_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation BIGINT NOT NULL
    )""",
    "INSERT INTO paradigm_registry_state (id, generation) VALUES (1, 0) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS paradigm_model_aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (name, alias)
    )""",
    """CREATE TABLE IF NOT EXISTS paradigm_model_alias_history (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        previous TEXT NOT NULL,
        at TEXT NOT NULL,
        evidence TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS paradigm_model_alias_shadows (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        shadow TEXT NOT NULL,
        shadow_version TEXT NOT NULL,
        sample_rate DOUBLE PRECISION NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (name, alias)
    )""",
)
# Two servers starting at once would both run CREATE TABLE IF NOT EXISTS, and one can fail
# on the catalog's unique index; the transaction-scoped advisory lock makes them take turns.
_SCHEMA_LOCK = 0x70617261  # "para"
# With a hash of the model's name: changes of one name's aliases take turns across servers,
# so each history row's `previous` is what the alias really pointed at.
_ALIAS_LOCK = 0x616C6961  # "alia"
# Applied unless the URL sets them: a dead server or network is noticed in seconds, not
# after the kernel's TCP timeouts (minutes), while the registry's lock is held.
_CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "paradigm",
}


class PostgresMetadata:
    """A registry index shared by replicas: one autocommit connection behind a lock.

    One connection is enough: every operation is one short statement or transaction, and
    the registry is touched per publish, delete, load and poll, not per inference. A
    broken connection (database restarted, idle connection dropped) is replaced once per
    operation; every operation is safe to repeat (see insert).
    """

    shared = True

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise FailedPrecondition(f"registry_url is not a PostgreSQL URL: {exc}") from None
        self._conninfo = make_conninfo(
            url, **{k: v for k, v in _CONNECT_DEFAULTS.items() if k not in params}
        )
        self._where = "postgresql://{}@{}:{}/{}".format(
            params.get("user", ""),
            params.get("host", "localhost"),
            params.get("port", "5432"),
            params.get("dbname", ""),
        )
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._run(self._create_schema)

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        # autocommit: a statement outside `transaction()` commits by itself, so no
        # connection is ever left "idle in transaction" holding locks between calls.
        return psycopg.connect(self._conninfo, autocommit=True)

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        import psycopg

        with self._lock:
            if self._closed:  # a poll that outlived stop() must not open a new connection
                raise Unavailable(f"model metadata store {self._where}: closed")
            for attempt in (1, 2):
                fresh = self._conn is None
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    return work(self._conn)
                except psycopg.OperationalError as exc:
                    if self._conn is not None and (self._conn.broken or self._conn.closed):
                        self._conn.close()
                        self._conn = None
                    if attempt == 1 and not fresh and self._conn is None:
                        log.warning("metadata store %s: connection lost (%s); reconnecting",
                                    self._where, _first_line(exc))  # fmt: skip
                        continue
                    raise Unavailable(
                        f"model metadata store {self._where} unreachable: {_first_line(exc)}"
                    ) from None
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise FailedPrecondition(
                        f"model metadata store {self._where} refused: {_first_line(exc)}"
                    ) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _create_schema(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _PG_SCHEMA:
                conn.execute(statement)

    def reserve_version(self, name: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            # One statement: the row lock makes concurrent reservations take turns.
            row = conn.execute(
                "INSERT INTO paradigm_model_names (name, next_version) VALUES (%s, 2) "
                "ON CONFLICT (name) DO UPDATE "
                "SET next_version = paradigm_model_names.next_version + 1 "
                "RETURNING next_version - 1",
                (name,),
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._run(work)

    def next_version(self, name: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "SELECT next_version FROM paradigm_model_names WHERE name = %s", (name,)
            ).fetchone()
            return int(row[0]) if row else 1

        return self._run(work)

    def raise_next_version(self, name: str, at_least: int) -> None:
        self._run(lambda conn: self._raise_next_version(conn, name, at_least))

    @staticmethod
    def _raise_next_version(conn: psycopg.Connection[Any], name: str, at_least: int) -> None:
        conn.execute(
            "INSERT INTO paradigm_model_names (name, next_version) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET next_version = "
            "GREATEST(paradigm_model_names.next_version, EXCLUDED.next_version)",
            (name, at_least),
        )

    def insert(self, manifest: Manifest) -> None:
        version = int(manifest.version)

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                # DO NOTHING: numbers are reserved, so the only row that can be there
                # already is this one, committed by a first try whose reply was lost.
                conn.execute(
                    "INSERT INTO paradigm_models (name, version, manifest) "
                    "VALUES (%s, %s, %s) ON CONFLICT (name, version) DO NOTHING",
                    (manifest.name, version, manifest.to_json()),
                )
                self._raise_next_version(conn, manifest.name, version + 1)
                self._bump(conn)

        self._run(work)

    def delete(self, name: str, versions: list[str], *, force: bool = True) -> list[Alias]:
        numbers = [int(v) for v in versions]

        def work(conn: psycopg.Connection[Any]) -> list[Alias]:
            with conn.transaction():
                # Under the lock no replica can point an alias at them meanwhile.
                self._lock_aliases(conn, name)
                held = [
                    Alias(name, alias, str(version), at)
                    for alias, version, at in conn.execute(
                        "SELECT alias, version, updated_at FROM paradigm_model_aliases "
                        'WHERE name = %s AND version = ANY(%s) ORDER BY alias COLLATE "C"',
                        (name, numbers),
                    ).fetchall()
                ]
                if held and not force:
                    raise aliased_refusal(name, held)
                conn.execute(
                    "DELETE FROM paradigm_models WHERE name = %s AND version = ANY(%s)",
                    (name, numbers),
                )
                conn.execute(
                    "DELETE FROM paradigm_model_aliases WHERE name = %s AND version = ANY(%s)",
                    (name, numbers),
                )
                for alias in held:
                    conn.execute(
                        "DELETE FROM paradigm_model_alias_shadows WHERE name = %s AND alias = %s",
                        (name, alias.alias),
                    )
                    self._record(conn, name, alias.alias, "", alias.version, DELETED_WITH_VERSION)
                self._bump(conn)
            return held

        return self._run(work)

    @staticmethod
    def _lock_aliases(conn: psycopg.Connection[Any], name: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ALIAS_LOCK, name))

    @staticmethod
    def _record(
        conn: psycopg.Connection[Any],
        name: str,
        alias: str,
        version: str,
        previous: str,
        evidence: dict[str, Any],
    ) -> AliasEvent:
        text = encode_evidence(evidence)  # the event says what the history holds
        event = AliasEvent(name, alias, version, previous, _now(), decode_evidence(text))
        conn.execute(
            "INSERT INTO paradigm_model_alias_history "
            "(name, alias, version, previous, at, evidence) VALUES (%s, %s, %s, %s, %s, %s)",
            (name, alias, version, previous, event.at, text),
        )
        return event

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        evidence: dict[str, Any],
        expected: str | None = None,
    ) -> AliasEvent:
        def work(conn: psycopg.Connection[Any]) -> AliasEvent:
            with conn.transaction():
                self._lock_aliases(conn, name)
                # FOR SHARE: the version cannot be deleted before this commits.
                exists = conn.execute(
                    "SELECT 1 FROM paradigm_models WHERE name = %s AND version = %s FOR SHARE",
                    (name, int(version)),
                ).fetchone()
                if exists is None:
                    raise _missing_version(name, version)
                row = conn.execute(
                    "SELECT version FROM paradigm_model_aliases WHERE name = %s AND alias = %s",
                    (name, alias),
                ).fetchone()
                previous = str(row[0]) if row else ""
                _check_expected(name, alias, previous, expected)
                event = self._record(conn, name, alias, str(int(version)), previous, evidence)
                conn.execute(
                    "INSERT INTO paradigm_model_aliases (name, alias, version, updated_at) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (name, alias) DO UPDATE SET "
                    "version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
                    (name, alias, int(version), event.at),
                )
                self._bump(conn)
            return event

        return self._run(work)

    def delete_alias(self, name: str, alias: str, evidence: dict[str, Any]) -> AliasEvent | None:
        def work(conn: psycopg.Connection[Any]) -> AliasEvent | None:
            with conn.transaction():
                self._lock_aliases(conn, name)
                row = conn.execute(
                    "DELETE FROM paradigm_model_aliases WHERE name = %s AND alias = %s "
                    "RETURNING version",
                    (name, alias),
                ).fetchone()
                if row is None:
                    return None
                conn.execute(
                    "DELETE FROM paradigm_model_alias_shadows WHERE name = %s AND alias = %s",
                    (name, alias),
                )
                event = self._record(conn, name, alias, "", str(row[0]), evidence)
                self._bump(conn)
            return event

        return self._run(work)

    def aliases(self, name: str = "") -> list[Alias]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT name, alias, version, updated_at FROM paradigm_model_aliases "
                "WHERE %s::text = '' OR name = %s "
                'ORDER BY name COLLATE "C", alias COLLATE "C"',
                (name, name),
            ).fetchall()
        )
        return [Alias(n, a, str(v), at) for n, a, v, at in rows]

    def alias_history(self, name: str, alias: str = "") -> list[AliasEvent]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT name, alias, version, previous, at, evidence "
                "FROM paradigm_model_alias_history "
                "WHERE name = %s AND (%s::text = '' OR alias = %s) ORDER BY id",
                (name, alias, alias),
            ).fetchall()
        )
        return [AliasEvent(n, a, v, p, at, decode_evidence(e)) for n, a, v, p, at, e in rows]

    def set_shadow(self, shadow: Shadow) -> Shadow:
        stamped = replace(shadow, updated_at=_now())

        def work(conn: psycopg.Connection[Any]) -> Shadow:
            with conn.transaction():
                self._lock_aliases(conn, shadow.name)
                exists = conn.execute(
                    "SELECT 1 FROM paradigm_model_aliases WHERE name = %s AND alias = %s",
                    (shadow.name, shadow.alias),
                ).fetchone()
                if exists is None:
                    raise no_alias_to_shadow(shadow.name, shadow.alias)
                conn.execute(
                    "INSERT INTO paradigm_model_alias_shadows "
                    "(name, alias, shadow, shadow_version, sample_rate, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name, alias) DO UPDATE SET "
                    "shadow = EXCLUDED.shadow, shadow_version = EXCLUDED.shadow_version, "
                    "sample_rate = EXCLUDED.sample_rate, updated_at = EXCLUDED.updated_at",
                    _shadow_row(stamped),
                )
                self._bump(conn)
            return stamped

        return self._run(work)

    def clear_shadow(self, name: str, alias: str) -> bool:
        def work(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                gone = conn.execute(
                    "DELETE FROM paradigm_model_alias_shadows WHERE name = %s AND alias = %s "
                    "RETURNING 1",
                    (name, alias),
                ).fetchone()
                if gone is not None:
                    self._bump(conn)
            return gone is not None

        return self._run(work)

    def shadows(self) -> list[Shadow]:
        def work(conn: psycopg.Connection[Any]) -> list[Shadow]:
            rows = conn.execute(
                "SELECT name, alias, shadow, shadow_version, sample_rate, updated_at "
                'FROM paradigm_model_alias_shadows ORDER BY name COLLATE "C", alias COLLATE "C"'
            ).fetchall()
            return [Shadow(n, a, s, v, float(r), at) for n, a, s, v, r, at in rows]

        return self._run(work)

    @staticmethod
    def _bump(conn: psycopg.Connection[Any]) -> None:
        # A row, not a sequence: the new number becomes visible with the rows it stands
        # for, at commit; a sequence moves at once, and a poller could see the new number
        # before the rows, then never look again.
        conn.execute("UPDATE paradigm_registry_state SET generation = generation + 1")

    def get(self, name: str, version: str = "") -> Manifest | None:
        def work(conn: psycopg.Connection[Any]) -> Any:
            if version:
                return conn.execute(
                    "SELECT manifest FROM paradigm_models WHERE name = %s AND version = %s",
                    (name, int(version)),
                ).fetchone()
            return conn.execute(
                "SELECT manifest FROM paradigm_models WHERE name = %s "
                "ORDER BY version DESC LIMIT 1",
                (name,),
            ).fetchone()

        row = self._run(work)
        return None if row is None else _decode(row[0])

    def manifests(self, name: str = "") -> list[Manifest]:
        def work(conn: psycopg.Connection[Any]) -> list[Any]:
            # COLLATE "C": the same order as SQLite's, whatever the database's locale.
            if name:
                return conn.execute(
                    "SELECT manifest FROM paradigm_models WHERE name = %s ORDER BY version",
                    (name,),
                ).fetchall()
            return conn.execute(
                'SELECT manifest FROM paradigm_models ORDER BY name COLLATE "C", version'
            ).fetchall()

        return [_decode(row[0]) for row in self._run(work)]

    def versions(self, name: str) -> list[str]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT version FROM paradigm_models WHERE name = %s ORDER BY version", (name,)
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    def keys(self) -> set[tuple[str, str]]:
        rows = self._run(
            lambda conn: conn.execute("SELECT name, version FROM paradigm_models").fetchall()
        )
        return {(name, str(version)) for name, version in rows}

    def generation(self) -> int:
        row = self._run(
            lambda conn: conn.execute("SELECT generation FROM paradigm_registry_state").fetchone()
        )
        return int(row[0]) if row else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_metadata(url: str, default_path: Path) -> MetadataStore:
    """SQLite at default_path for an empty url, PostgreSQL for postgresql:// (postgres://)."""
    if not url:
        return SqliteMetadata(default_path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            return PostgresMetadata(url)
        except ImportError:
            raise FailedPrecondition(
                "registry_url names PostgreSQL, but psycopg is not installed: "
                "pip install 'paradigm[postgres]'"
            ) from None
    raise FailedPrecondition(
        f"registry_url {url.split('://')[0]}://... is not supported: leave it empty for "
        "SQLite, or use postgresql://user:password@host:port/database"
    )
