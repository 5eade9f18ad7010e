"""Dynamic batching for one model version: requests queued while the model is busy run
together as one batch, concatenated along the batch axis and split back.

Event-driven and greedy: a request that finds a free run slot and an empty queue runs at
once in its own task (no hop, no wait, so a lone client pays nothing for batching); while
every slot is busy, requests queue, and the next free slot takes everything queued, up to
max_batch_size rows. An optional max_queue_delay_us waits that long for a fuller batch.
With max_batch_size 1 it is a plain bounded FIFO in front of the run slots: what the data
plane uses for models that cannot batch, so they get the same queue bound and deadlines.

Overload: at most max_queue_size requests wait; the next gets ResourceExhausted at once.
Requests whose deadline passed, or whose caller went away, are dropped before running.
gRPC cancels a handler when its deadline passes, which cancels the queued future: the
caller hears DEADLINE_EXCEEDED at its deadline, not when a slot frees.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import DeadlineExceeded, ResourceExhausted

log = logging.getLogger(__name__)

# (feeds, output names, rows, [enqueue times]) -> outputs; runs in an inference thread.
RunBatch = Callable[[dict[str, np.ndarray], list[str], int, list[float]], list[np.ndarray]]
# After a run that succeeded, on the loop: (each request's contextvars, or None for the
# current task's; enqueue times; when the run was handed over; when it came back; rows).
# service/tracing.py's RunObserver; None (no call at all) when traces are off.
RunObserver = Callable[
    [Sequence[contextvars.Context] | None, Sequence[float], float, float, int], None
]


@dataclass(frozen=True)
class BatchingConfig:
    """How one model batches; defaults come from settings, overrides per model."""

    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024


@dataclass(slots=True)
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    deadline: float | None
    enqueued: float
    future: asyncio.Future[list[np.ndarray]]
    #: The submitter's context (its request's log fields), for the run of its batch.
    context: contextvars.Context
    taken: bool = False  # no longer in the queue
    abandoned: bool = False  # its caller went away while it was in the queue


class Batcher:
    """Queues, batches and runs the requests of one model version."""

    def __init__(
        self,
        name: str,
        input_names: list[str],
        output_names: list[str],
        run: RunBatch,
        run_in_thread: Callable[..., asyncio.Future[list[np.ndarray]]],
        config: BatchingConfig,
        slots: int,
        observe: RunObserver | None = None,
    ) -> None:
        self.name = name
        self._observe = observe
        self._inputs = input_names
        self._outputs = output_names
        self._run = run
        self._run_in_thread = run_in_thread
        self.config = config
        self._slots = slots
        self._free_slots = slots
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._abandoned = 0  # queued requests whose caller went away
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(
        self, feeds: dict[str, np.ndarray], rows: int, deadline: float | None
    ) -> list[np.ndarray]:
        """Runs these rows, alone or in a batch; returns every output for them, in order."""
        if self._free_slots and not self._queue:
            # Nothing to batch with: run now, in this task, with no queue bookkeeping. A
            # cancelled caller frees its slot while its run may go on in its thread, so the
            # runs handed to the executor can exceed the slots by at most its thread count.
            self._free_slots -= 1
            handed = time.perf_counter()
            try:
                outputs = await self._run_in_thread(self._run, feeds, self._outputs, rows, [handed])
            finally:
                self._release()
            if self._observe is not None:
                try:
                    self._observe(None, (handed,), handed, time.perf_counter(), rows)
                except Exception:  # a trace is not worth the request's answer
                    log.exception("%s: recording the run in its trace failed", self.name)
            return outputs
        pending = _Pending(
            feeds,
            rows,
            deadline,
            time.perf_counter(),
            asyncio.get_running_loop().create_future(),
            contextvars.copy_context(),
        )
        limit = self.config.max_queue_size
        if len(self._queue) >= limit and (not self._abandoned or self._purge() >= limit):
            raise ResourceExhausted(
                f"model {self.name!r} has {len(self._queue)} requests queued, the most it "
                "takes (batch_max_queue_size); try again later"
            )
        self._queue.append(pending)
        self._queued_rows += rows
        self._wakeup.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"batcher-{self.name}")
        try:
            return await pending.future
        except asyncio.CancelledError:
            if not pending.taken:
                pending.abandoned = True
                self._abandoned += 1
            raise

    @property
    def dispatcher_started(self) -> bool:
        """Whether any request ever queued (and so a dispatcher task runs): a lone request
        that finds a free slot runs in its own task, with no hop."""
        return self._dispatcher is not None

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running: safe to drop."""
        return not self._queue and not self._running and self._free_slots == self._slots

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    async def _dispatch(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            while not self._free_slots:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            delay = self.config.max_queue_delay_us / 1e6
            if delay and self._queued_rows < self.config.max_batch_size:
                await self._wait_for_more(delay)
            batch = self._take()
            if batch:
                self._free_slots -= 1
                # In its first request's context, not the dispatcher's (a copy of whichever
                # request started it): a batch's log lines name that request.
                task = asyncio.create_task(self._execute(batch), context=batch[0].context)
                self._running.add(task)  # a task nobody references may be collected
                task.add_done_callback(self._running.discard)

    async def _wait_for_more(self, delay: float) -> None:
        until = time.perf_counter() + delay
        while self._queued_rows < self.config.max_batch_size:
            remaining = until - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Pops queued requests up to max_batch_size rows (always at least one)."""
        batch: list[_Pending] = []
        rows = 0
        now = time.perf_counter()
        while self._queue:
            pending = self._queue[0]
            if batch and rows + pending.rows > self.config.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= pending.rows
            pending.taken = True
            if pending.future.done():  # the caller went away (cancelled)
                self._abandoned -= pending.abandoned
                continue
            if pending.deadline is not None and now > pending.deadline:
                pending.future.set_exception(
                    DeadlineExceeded(
                        "the request's deadline passed while it waited in the queue; it was not run"
                    )
                )
                continue
            batch.append(pending)
            rows += pending.rows
        return batch

    def _purge(self) -> int:
        """Drops queued requests whose caller went away (gRPC cancels a handler at its
        deadline), so that only live ones count against the bound and their tensors are
        freed; returns how many remain. O(queue): only when the queue looks full and some
        of it is known to be abandoned."""
        live: deque[_Pending] = deque()
        for pending in self._queue:
            if pending.future.done():
                pending.taken = True
            else:
                live.append(pending)
        self._queue = live
        self._queued_rows = sum(p.rows for p in live)
        self._abandoned = 0
        return len(live)

    def _release(self) -> None:
        self._free_slots += 1
        self._slot_freed.set()

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {
                    name: np.concatenate([p.feeds[name] for p in batch]) for name in self._inputs
                }
            rows = sum(p.rows for p in batch)
            enqueued = [p.enqueued for p in batch]
            handed = time.perf_counter()
            outputs = await self._run_in_thread(self._run, feeds, self._outputs, rows, enqueued)
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._release()
        if self._observe is not None:
            contexts = [p.context for p in batch]
            try:
                self._observe(contexts, enqueued, handed, time.perf_counter(), rows)
            except Exception:  # a trace is not worth the batch's answers
                log.exception("%s: recording the batch's run in its traces failed", self.name)
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result(
                    outputs if len(batch) == 1 else [output[start:end] for output in outputs]
                )
            start = end
