"""The few MLflow tracking calls Paradigm makes, over MLflow's REST API (plain HTTP + JSON).

Hand-written on urllib rather than the mlflow client: the client (even mlflow-skinny) pins
protobuf, pydantic and others of its own and imports far more than these five calls need,
and it would run in the serving process, which keeps its imports few (docs/architecture.md).
Every call is blocking and bounded by `timeout`: callers run them on their own threads.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: MLflow's limits on one log-batch request.
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000

#: A run's artifacts, when the server proxies them (mlflow server --serve-artifacts).
PROXIED_ARTIFACTS = "mlflow-artifacts:"


class TrackingError(Exception):
    """A tracking call failed: the server is unreachable, refused it, or answered nonsense."""


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    timestamp_ms: int
    step: int = 0


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    artifact_uri: str


class MlflowRest:
    """A client of one tracking server, e.g. http://127.0.0.1:5000."""

    def __init__(self, tracking_uri: str, *, timeout: float) -> None:
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout

    def experiment_id(self, name: str) -> str:
        """The experiment's id; the experiment is created if it does not exist yet."""
        try:
            found = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except _ApiError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            return str(self._call("POST", "experiments/create", {"name": name})["experiment_id"])
        except _ApiError as error:  # another server created it meanwhile
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])

    def create_run(
        self, experiment_id: str, *, name: str, start_time_ms: int, tags: dict[str, str]
    ) -> Run:
        body = {
            "experiment_id": experiment_id,
            "run_name": name,
            "start_time": start_time_ms,
            "tags": [{"key": k, "value": v[:MAX_TAG_CHARS]} for k, v in tags.items()],
        }
        info = self._call("POST", "runs/create", body)["run"]["info"]
        return Run(
            run_id=str(info["run_id"]),
            experiment_id=str(info["experiment_id"]),
            artifact_uri=str(info.get("artifact_uri", "")),
        )

    def log_batch(
        self,
        run_id: str,
        *,
        params: dict[str, str],
        metrics: list[Metric],
        tags: dict[str, str],
    ) -> None:
        """Logs everything, in as many requests as MLflow's per-request limits need."""
        param_items = [{"key": k, "value": v[:MAX_PARAM_CHARS]} for k, v in params.items()]
        tag_items = [{"key": k, "value": v[:MAX_TAG_CHARS]} for k, v in tags.items()]
        metric_items = [
            {"key": m.key, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step}
            for m in metrics
        ]
        while param_items or tag_items or metric_items:
            body = {
                "run_id": run_id,
                "params": param_items[:MAX_PARAMS_PER_BATCH],
                "tags": tag_items[:MAX_TAGS_PER_BATCH],
                "metrics": metric_items[:MAX_METRICS_PER_BATCH],
            }
            self._call("POST", "runs/log-batch", body)
            param_items = param_items[MAX_PARAMS_PER_BATCH:]
            tag_items = tag_items[MAX_TAGS_PER_BATCH:]
            metric_items = metric_items[MAX_METRICS_PER_BATCH:]

    def end_run(self, run_id: str, *, status: str, end_time_ms: int) -> None:
        """status: FINISHED, FAILED or KILLED."""
        body = {"run_id": run_id, "status": status, "end_time": end_time_ms}
        self._call("POST", "runs/update", body)

    def upload_artifact(self, run: Run, name: str, content: Path | bytes) -> None:
        """Puts a file (streamed) or bytes into the run's artifacts through the server's
        artifact proxy."""
        if not run.artifact_uri.startswith(PROXIED_ARTIFACTS):
            raise TrackingError(
                f"the run's artifacts go to {run.artifact_uri!r}, not through the tracking "
                "server: start it with --serve-artifacts"
            )
        where = run.artifact_uri[len(PROXIED_ARTIFACTS) :].lstrip("/")
        url = f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(where)}/{name}"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(content, bytes):
            self._send(urllib.request.Request(url, data=content, method="PUT", headers=headers))
            return
        headers["Content-Length"] = str(content.stat().st_size)
        with content.open("rb") as body:
            self._send(urllib.request.Request(url, data=body, method="PUT", headers=headers))

    def _call(self, method: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base}/api/2.0/mlflow/{endpoint}"
        if method == "GET":
            request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(body)}")
        else:
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), method=method,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        answer = self._send(request)
        try:
            parsed = json.loads(answer or b"{}")
        except ValueError as error:
            raise TrackingError(f"{endpoint}: not JSON: {answer[:200]!r}") from error
        if not isinstance(parsed, dict):
            raise TrackingError(f"{endpoint}: unexpected answer {answer[:200]!r}")
        return parsed

    def _send(self, request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            raise _ApiError.of(request, error) from None
        except (OSError, ValueError) as error:  # URLError, refused, timed out, bad URL
            raise TrackingError(f"{self.base}: {error}") from error


class _ApiError(TrackingError):
    """The server answered with an error: MLflow's error_code, when it gave one."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, request: urllib.request.Request, error: urllib.error.HTTPError) -> _ApiError:
        text = error.read(2000).decode(errors="replace")
        try:
            detail = json.loads(text)
        except ValueError:
            detail = {}
        code = str(detail.get("error_code", "")) if isinstance(detail, dict) else ""
        message = detail.get("message", text) if isinstance(detail, dict) else text
        path = urllib.parse.urlsplit(request.full_url).path
        return cls(f"{request.get_method()} {path}: HTTP {error.code} {code} {message}", code)
