"""The serving process's one door into worker-side code (service/worker/).

Worker-side modules import scikit-learn, torch, skl2onnx and onnx; the serving process must
never import them (import-linter contracts in pyproject.toml). So a worker process is started
on a target named as text, "module:function", which only the child imports, and the parent
reads what the child reports over a one-way pipe of JSON messages (nothing is unpickled).
Standard library only.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: Worker-side entry points, by name (see service/worker/entry.py).
RUN_JOB = "service.worker.entry:run"
RUN_EXPLAIN = "service.worker.entry:run_explain"
MATERIALIZE_BUILTIN = "service.worker.datasets.builtin:materialize_builtin"
GENERATE_SCALE = "service.worker.datasets.scale:generate"
INGEST_TABLE = "service.worker.datasets.tabular:ingest"


def run_by_name(target: str, *args: Any, **kwargs: Any) -> Any:
    """Imports `target` ("module:function") and calls it: the function a spawned child runs."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(*args, **kwargs)


async def receive(
    receiver: Connection,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    who: str = "a worker",
) -> dict[str, Any] | None:
    """Reads a worker's messages from the event loop (add_reader: no thread per worker)
    until its pipe closes: events go to on_event, the last other message is returned."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    final: dict[str, Any] | None = None
    fd = receiver.fileno()

    def readable() -> None:
        nonlocal final
        try:
            while receiver.poll():
                message = _decode(receiver.recv_bytes())
                if message is None:
                    logging.getLogger(__name__).warning("ignored a malformed message from %s", who)
                elif message.get("type") == "event":
                    if on_event is not None:
                        on_event(message)
                else:
                    final = message
        except (EOFError, OSError):
            loop.remove_reader(fd)  # the pipe stays readable at EOF: stop being called
            if not closed.done():
                closed.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await closed
    finally:
        # Always, not only while `closed` is pending: cancelling the caller cancels `closed`
        # too. A reader left registered on a descriptor that is then closed makes the next
        # pipe given that number silent: add_reader finds it registered and never re-adds
        # it to epoll (measured: the next explanation hung until its deadline).
        loop.remove_reader(fd)
    return final


def _decode(data: bytes) -> dict[str, Any] | None:
    """A worker's message: a JSON object, or None for anything else."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
