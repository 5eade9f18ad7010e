"""The job journal: every job and its event history in SQLite, so a restart loses none.

<data_dir>/jobs.sqlite3, in WAL mode. Each recorded event is one small transaction that
adds the event and rewrites its job's row. Commits that change a job's state are fsynced
(synchronous=FULL); progress events are not (NORMAL): an fsync per epoch is a cost for no
safety that matters. The serving process writes through `JournalWriter`: one thread, in
the order the writes were asked for, so neither the fsyncs nor SQLite's lock stall the
event loop that also serves inference. A committed write survives a killed server (WAL)
and a power cut, except progress recorded since the job's last state change; the file is
never corrupted. A killed server also loses the writes still waiting for the thread, a
moment's worth: the job manager answers a new job, and shows a watcher an event, only once
it is written.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from service.errors import storage_error

JOURNAL_FILE = "jobs.sqlite3"
#: 2 added jobs.world_size (a version-1 file gains it on open, every job at 1).
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model_name TEXT NOT NULL,
    dataset TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    paradigm TEXT NOT NULL,
    task TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    model_version TEXT NOT NULL,
    progress REAL NOT NULL,
    metrics TEXT NOT NULL,
    device TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    world_size INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL,
    message TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    progress REAL NOT NULL,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
"""
_JOB_COLUMNS = (
    "id", "kind", "model_name", "dataset", "algorithm", "paradigm", "task",
    "hyperparameters", "state", "error", "model_version", "progress", "metrics", "device",
    "created_at", "started_at", "finished_at", "world_size",
)  # fmt: skip
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _JOB_COLUMNS)}) ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _JOB_COLUMNS[1:])
)
_INSERT_EVENT = (
    "INSERT OR REPLACE INTO events (job_id, sequence, time, state, stage, message, epoch, "
    "epochs, metrics, progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_T = TypeVar("_T")


@dataclass
class JobEvent:
    """One entry of a job's history."""

    sequence: int
    time: datetime
    state: str
    stage: str
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    progress: float = 0.0


@dataclass
class JobRecord:
    """What the journal keeps of a job: everything a client may ask about it."""

    id: str
    kind: str  # "train" | "import"
    model_name: str
    dataset: str = ""
    algorithm: str = ""
    paradigm: str = ""
    task: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"
    model_version: str = ""
    error: str = ""
    progress: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    device: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: Training processes (DDP); 1 for one process and for imports.
    world_size: int = 1
    events: list[JobEvent] = field(default_factory=list)


class JobJournal:
    """Jobs and events in SQLite; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._synchronous = ""
        try:
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # A small, rarely written database: checkpoint early so the WAL stays small.
            self._db.execute("PRAGMA wal_autocheckpoint=100")
            with self._db:
                self._db.executescript(_SCHEMA)
                _migrate(self._db)
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            error = storage_error(exc, f"cannot open the job journal {path}")
            if error is None:
                raise
            raise error from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, job: JobRecord, event: JobEvent | None = None, *, durable: bool) -> None:
        """Writes the job's row and (optionally) one new event in one transaction.

        Raises sqlite3.Error; storage_error() says what to tell a caller.
        """
        self.write(_Rows.of(job, event), durable=durable)

    def write(self, rows: _Rows, *, durable: bool) -> None:
        with self._lock:
            synchronous = "FULL" if durable else "NORMAL"
            if synchronous != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            with self._db:
                self._db.execute(_UPSERT_JOB, rows.job)
                if rows.event is not None:
                    self._db.execute(_INSERT_EVENT, rows.event)

    def load(self, factory: Callable[..., _T]) -> list[_T]:
        """Every job, oldest first, built by factory(**fields); events are not loaded."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs ORDER BY created_at"
            ).fetchall()
        jobs = []
        for row in rows:
            values = dict(zip(_JOB_COLUMNS, row, strict=True))
            values["hyperparameters"] = json.loads(values["hyperparameters"])
            values["metrics"] = json.loads(values["metrics"])
            for name in ("created_at", "started_at", "finished_at"):
                values[name] = _parse_time(values[name])
            jobs.append(factory(**values))
        return jobs

    def events(self, job_id: str) -> list[JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT sequence, time, state, stage, message, epoch, epochs, metrics, progress "
                "FROM events WHERE job_id = ? ORDER BY sequence",
                (job_id,),
            ).fetchall()
        events = []
        for sequence, time, state, stage, message, epoch, epochs, metrics, progress in rows:
            event = JobEvent(sequence, _parse_time(time) or datetime.now(UTC), state, stage)
            event.message, event.epoch, event.epochs = message, epoch, epochs
            event.metrics, event.progress = json.loads(metrics), progress
            events.append(event)
        return events

    def delete(self, job_ids: Iterable[str]) -> None:
        ids = [(job_id,) for job_id in job_ids]
        if not ids:
            return
        with self._lock, self._db:
            self._db.executemany("DELETE FROM events WHERE job_id = ?", ids)
            self._db.executemany("DELETE FROM jobs WHERE id = ?", ids)


@dataclass(frozen=True)
class _Rows:
    """A job's row and one event's, as they are at the moment they are recorded."""

    job: tuple[Any, ...]
    event: tuple[Any, ...] | None

    @classmethod
    def of(cls, job: JobRecord, event: JobEvent | None) -> _Rows:
        row = (
            job.id, job.kind, job.model_name, job.dataset, job.algorithm, job.paradigm,
            job.task, _dumps(job.hyperparameters), job.state, job.error, job.model_version,
            job.progress, _dumps(job.metrics), job.device, _time(job.created_at),
            _time(job.started_at), _time(job.finished_at), job.world_size,
        )  # fmt: skip
        if event is None:
            return cls(row, None)
        return cls(
            row,
            (
                job.id, event.sequence, _time(event.time), event.state, event.stage,
                event.message, event.epoch, event.epochs, _dumps(event.metrics), event.progress,
            ),
        )  # fmt: skip


class JournalWriter:
    """A JobJournal written off the event loop: by one thread, in the order asked.

    A write is snapshotted when it is asked for (the job goes on changing) and runs later;
    its future says how it went. One thread keeps the order, so a job's events are written
    in sequence, a state after the progress before it, a deletion after the job's writes.
    """

    def __init__(self, journal: JobJournal) -> None:
        self._journal = journal
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-journal")
        self._closed = False

    def save(self, job: JobRecord, event: JobEvent | None, *, durable: bool) -> Future[None]:
        if self._closed:
            return _failed(sqlite3.ProgrammingError("the job journal is closed"))
        return self._thread.submit(self._journal.write, _Rows.of(job, event), durable=durable)

    def delete(self, job_ids: Iterable[str]) -> Future[None]:
        if self._closed:
            return _failed(sqlite3.ProgrammingError("the job journal is closed"))
        return self._thread.submit(self._journal.delete, list(job_ids))

    def load(self, factory: Callable[..., _T]) -> list[_T]:
        """Every job (see JobJournal.load); read at start, before anything is written."""
        return self._journal.load(factory)

    def events_now(self, job_id: str) -> list[JobEvent]:
        """A job's events, read on the caller's thread: only at start, as for load()."""
        return self._journal.events(job_id)

    async def events(self, job_id: str) -> list[JobEvent]:
        """A job's events, read after every write asked for so far."""
        return await asyncio.wrap_future(self._thread.submit(self._journal.events, job_id))

    async def close(self) -> None:
        """Finishes every write asked for, then closes the journal."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._thread.submit(self._journal.close))
        self._thread.shutdown(wait=False)


def _failed(error: BaseException) -> Future[None]:
    future: Future[None] = Future()
    future.set_exception(error)
    return future


def _migrate(db: sqlite3.Connection) -> None:
    """Brings a journal written by an older server up to this schema, in place."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if "world_size" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 1")


def _dumps(value: Any) -> str:
    # NaN stays NaN (Python's json writes and reads it); a metric may legitimately be NaN.
    return json.dumps(value, sort_keys=True)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
