"""The one worker-process lifecycle (launcher.WorkerProcess) and the journal's writer
thread, each without a server."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from service.launcher import WorkerProcess
from service.training.journal import JobEvent, JobJournal, JobRecord, JournalWriter

HERE = "tests.test_worker_process"


def ignore_sigterm(spec: float, connection: Connection) -> None:
    """A worker that reports once, then ignores SIGTERM for `spec` seconds."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    connection.send_bytes(b'{"type": "event", "stage": "sleeping"}')
    time.sleep(spec)


def answer(spec: float, connection: Connection) -> None:
    connection.send_bytes(b'{"type": "done", "usage": {"cpu_seconds": %f}}' % spec)


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[dict[str, object]] = []

    async def main() -> tuple[int | None, bool]:
        worker = WorkerProcess(
            f"{HERE}:ignore_sigterm", 60.0, name="paradigm-test", who="job t", grace=0.5
        )

        def stop_on_first_event(message: dict[str, object]) -> None:
            events.append(message)
            worker.stop()

        ended = await worker.run(stop_on_first_event)
        return ended.exitcode, ended.timed_out

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(main()) == (-signal.SIGKILL, False)
    assert events == [{"type": "event", "stage": "sleeping"}]
    assert "job t: worker ignored SIGTERM; killing it" in caplog.text


def test_past_its_deadline_a_worker_without_grace_is_killed_at_once() -> None:
    timed_out: list[bool] = []

    async def main() -> tuple[int | None, bool]:
        worker = WorkerProcess(
            f"{HERE}:ignore_sigterm", 60.0, name="paradigm-test", who="test", grace=0.0
        )
        ended = await worker.run(timeout=0.5, on_timeout=lambda: timed_out.append(True))
        return ended.exitcode, ended.timed_out

    assert asyncio.run(main()) == (-signal.SIGKILL, True)
    assert timed_out == [True]


def test_the_last_message_and_its_usage_come_back() -> None:
    async def main() -> tuple[object, float, int | None]:
        worker = WorkerProcess(f"{HERE}:answer", 1.5, name="paradigm-test", who="t", grace=1.0)
        ended = await worker.run(timeout=60)
        return (ended.final or {}).get("type"), ended.cpu_seconds, ended.exitcode

    assert asyncio.run(main()) == ("done", 1.5, 0)


def test_journal_writes_keep_their_order_and_close_finishes_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    job = JobRecord(id="j", kind="train", model_name="m")

    async def main() -> list[JobEvent]:
        writer = JournalWriter(JobJournal(path))
        for sequence in range(50):
            job.progress = sequence / 50
            event = JobEvent(sequence, job.created_at, "running", "epoch", progress=job.progress)
            writer.save(job, event, durable=sequence % 10 == 0)
        job.state = "succeeded"  # changed after the writes were asked for: not in them
        events = await writer.events("j")  # read after every write asked for so far
        await writer.close()
        with pytest.raises(Exception, match="closed"):
            writer.save(job, None, durable=True).result()
        return events

    events = asyncio.run(main())
    assert [event.sequence for event in events] == list(range(50))
    journal = JobJournal(path)
    (stored,) = journal.load(lambda **fields: JobRecord(**fields))
    journal.close()
    assert (stored.state, stored.progress) == ("queued", 49 / 50)
