"""A real MLflow tracking server for tests and benchmarks: `mlflow server` on loopback,
SQLite backend, artifacts proxied into a directory, from the venv that `make tools`
installs (.venv-mlflow); tests that need it skip without it. Read back over MLflow's REST
API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"
NOT_INSTALLED = "the MLflow server is not installed (.venv-mlflow): run make tools"
START_SECONDS = 120.0  # imports and the SQLite schema migrations: ~20 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MlflowServer:
    """One server: start(), url, get(endpoint, **query), stop()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            # Its own session: the server forks uvicorn, and stop() ends both.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def get(self, endpoint: str, **query: Any) -> dict[str, Any]:
        """GET /api/2.0/<endpoint>?query, parsed."""
        url = f"{self.url}/api/2.0/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            parsed: dict[str, Any] = json.loads(answer.read())
            return parsed

    def job_runs(self, job_id: str) -> list[dict[str, Any]]:
        """The runs of a Paradigm job, found by its job_id tag (in every experiment)."""
        experiments = self.get("mlflow/experiments/search", max_results=1000)["experiments"]
        body = {
            "experiment_ids": [e["experiment_id"] for e in experiments],
            "filter": f"tags.job_id = '{job_id}'",
        }
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/runs/search", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            runs: list[dict[str, Any]] = json.loads(answer.read()).get("runs", [])
            return runs

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get("mlflow/runs/get", run_id=run_id)["run"]
        return run

    def finished_run(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The run once its job's last logging step ended it (done in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["info"]["status"] != "RUNNING" or time.monotonic() > deadline:
                return run
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=15)
