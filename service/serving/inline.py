"""Runs of tiny models on the event loop, bounded so that a slow one cannot hold it.

Handing a run to an inference thread costs a queue put, a thread wake-up and a wake-up of
the loop when it is done: tens of microseconds of CPU, more than a batch-1 logistic
regression takes to run (~10 us). So a model whose batch-1 run, timed at load, is within
`inline_run_us` runs right on the loop, as long as its run stays small:

- only batches whose estimated cost (rows x the measured run) fits the same bound; bigger
  ones go to a thread as before;
- every inline run is timed (CPU time of the loop's thread, so a preempted loop does not
  count); after TRIPS_ALLOWED runs over TRIP_FACTOR x the bound, the model runs in
  threads for good and a warning says so. At most that many slow runs ever hold the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: An inline run over this many times the bound counts as a trip.
TRIP_FACTOR = 10
#: Trips after which the model stops running inline.
TRIPS_ALLOWED = 3


class InlineRuns:
    """A `run_in_thread` for the batcher that runs small batches on the loop instead."""

    def __init__(
        self,
        model: str,
        run_seconds: float,
        bound_seconds: float,
        in_thread: Callable[..., asyncio.Future[Any]],
    ) -> None:
        self.model = model
        self._in_thread = in_thread
        #: Most rows whose estimated run fits the bound.
        self.max_rows = max(1, int(bound_seconds / max(run_seconds, 1e-9)))
        self._trip_seconds = TRIP_FACTOR * bound_seconds
        self.trips = 0

    @property
    def inline(self) -> bool:
        return self.trips < TRIPS_ALLOWED

    def __call__(self, run: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        rows = args[2]  # RunBatch: (feeds, output names, rows, enqueue times)
        if rows > self.max_rows or not self.inline:
            return self._in_thread(run, *args)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        started = time.thread_time()
        try:
            future.set_result(run(*args))
        except Exception as exc:
            future.set_exception(exc)
        if time.thread_time() - started > self._trip_seconds:
            self.trips += 1
            if not self.inline:
                log.warning(
                    "%s: %d runs on the event loop took over %.0f us; it runs in inference "
                    "threads from now on", self.model, self.trips, self._trip_seconds * 1e6,
                )  # fmt: skip
        return future
