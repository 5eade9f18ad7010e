"""A real Paradigm server on port 0, in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from service.app import App, build_app
from service.settings import Settings


class RunningServer:
    """Starts `build_app(settings)` in a thread; `target` is what clients dial."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        settings = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, **overrides}
        self.settings = Settings(data_dir=data_dir, **settings)
        self.metrics_registry = CollectorRegistry()
        self.app: App = build_app(self.settings, self.metrics_registry)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._call(self.app.start(), timeout=120)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            raise

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def run(self, coroutine: Any, timeout: float = 120) -> Any:
        """Runs a coroutine on the server's own loop (a serving-side call) and returns it."""
        return self._call(coroutine, timeout)

    def _call(self, coroutine: Any, timeout: float) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        self._call(self.app.stop(grace=1.0), timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
