"""The Prometheus rules and the Grafana dashboard, proved on a real Prometheus.

A real server (port 0) trains a classical and a deep model, fails an import, and serves a
few hundred ModelInfer calls, while a real Prometheus (Debian's package, which brings
promtool) scrapes it every second and evaluates the repository's rule files. Then every
dashboard query, every recording rule and every alert's signal must return finite numbers;
only queries over GPU series may be empty, and only where there is no NVML. promtool checks
the config, the rules, their unit tests and our /metrics text.

CI installs prometheus with `make tools`; elsewhere the test skips without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from clients.client import JobFailed, ParadigmClient, ParadigmClientError
from tests.server import RunningServer

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "paradigm.json"
# Grafana's interval variables, as a 1 s scrape would make them over a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}
# An alert expression's final comparison with a constant: `... > 0.25`, `... == 0`.
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.]+(?:e[-+]?[0-9]+)?\s*$")
METRIC_NAME = re.compile(r"\b(?:paradigm|process|python)_[a-z0-9_]+\b|\bup\b")
# name -> features of the models the test trains (default names: <dataset>-<algorithm>).
MODELS = {"iris-logistic_regression": 4, "digits-mlp": 64}
#: A table model (one input per column) on the built-in penguins: its traffic carries an
#: island it never saw, so the unknown-category series and their alert signal move.
TABLE_MODEL = "penguins-logistic_regression"
#: A cascade of two digits models, for the cascade panels.
CASCADE = "digits-cascade"
#: An alias of the cheap digits model with the MLP as its shadow, for the shadow panels.
SHADOWED_ALIAS = "champion"
TABLE_ROWS = {
    "island": ["Biscoe", "Atlantis", ""], "bill_length_mm": [45.0, 39.0, None],
    "bill_depth_mm": [15.0, 18.0, 17.0], "flipper_length_mm": [215.0, 190.0, 200.0],
    "body_mass_g": [5000.0, 3700.0, 4000.0], "sex": ["male", "female", ""],
    "year": [2008.0, 2008.0, 2009.0],
}  # fmt: skip
# Samples of each serving counter in a 1m window before querying: with fewer, a rate() can
# rest on two samples taken between the same two calls, and be 0.
SCRAPES_PER_WINDOW = 4
# First scrape, first rule evaluations, and rate() windows holding two samples.
DATA_DEADLINE_S = 60.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (`make tools` installs Debian's prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # a bad query answers 400 with a reason
        raise AssertionError(f"{url}: {error.code} {error.read().decode()}") from error


def _promtool(*args: str, stdin: str | None = None) -> str:
    """Runs promtool; asserts exit 0 and no warning; returns its output."""
    done = subprocess.run(
        [_tool("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    assert "warn" not in output.lower(), f"promtool {' '.join(args)}:\n{output}"
    return output


@dataclass
class Stack:
    """The server, the Prometheus scraping it, and what the server exposed."""

    prometheus_url: str
    metrics_url: str
    nvml: bool
    data_by: float

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = _get_json(url)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def results(self, exprs: list[str], poll: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Each expression's result; with `poll`, the empty ones again until the deadline."""
        results = {expr: self.query(expr) for expr in exprs}
        while poll and time.monotonic() < self.data_by:
            empty = [expr for expr, result in results.items() if not result]
            if not empty:
                break
            time.sleep(1)
            results.update({expr: self.query(expr) for expr in empty})
        return results

    def wait_for_scrapes(self, scrapes: int, of: str) -> None:
        """Until every series of a metric has `scrapes` samples in the last minute."""
        expr = f"min(count_over_time({of}[1m]))"
        while time.monotonic() < self.data_by:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) >= scrapes:
                return
            time.sleep(0.5)
        raise AssertionError(f"{expr} stayed under {scrapes}")

    def rules(self) -> list[dict[str, Any]]:
        body = _get_json(f"{self.prometheus_url}/api/v1/rules")
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def _prometheus_config(path: Path, metrics_port: int) -> None:
    # JSON is YAML; job "paradigm" as in deploy/prometheus/prometheus.yml (alerts select it).
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_file) for rule_file in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "paradigm",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready after 30 s:\n{log.read_text()}")


def _train(client: ParadigmClient, tmp_path: Path) -> None:
    """Trains a classical and a deep model and a table model, fails a fourth job, and runs
    a one-trial search."""
    lr = client.start_training("iris", "logistic_regression", seed=0)
    # A deep model, so that epoch metrics exist; two epochs keep it short.
    mlp = client.start_training("digits", "mlp", hyperparameters={"epochs": 2}, seed=0)
    # Valid on its face, it fails inside the worker: iris has fewer rows than neighbours.
    doomed = client.start_training("iris", "knn", hyperparameters={"n_neighbors": 1000})
    # A table model (one input per column): the unknown-category series and their panel.
    table = client.start_training("penguins", "logistic_regression", seed=0)
    # The cascade panels: logistic regression first, the MLP when it is unsure.
    cheap = client.start_training("digits", "logistic_regression", seed=0)
    # A one-trial search: the search series and their panels.
    search = client.start_search("iris", algorithms=["naive_bayes"], trials=1)
    client.wait_for_job(lr.id)
    client.wait_for_job(mlp.id)
    client.wait_for_job(cheap.id)
    client.create_cascade(
        CASCADE, "digits-logistic_regression", "digits-mlp", max_dollars_per_1k=1.0
    )
    # The shadow panels: the MLP shadows the logistic regression's alias.
    client.set_alias("digits-logistic_regression", "1", SHADOWED_ALIAS)
    client.set_shadow("digits-logistic_regression", SHADOWED_ALIAS, "digits-mlp")
    client.wait_for_job(table.id)
    with pytest.raises(JobFailed):  # a failed job: the training-failure alert's signal
        client.wait_for_job(doomed.id)
    client.wait_for_search(search.id)


class Traffic(threading.Thread):
    """ModelInfer rounds on every model, about one a second, until stopped.

    Each round is 60 calls at batch 1, 15 at batches of 8 to 128 rows and one refused call
    (NaN) per model, and 10 calls of 3 rows to the table model (one with an unknown island).
    Rounds go on while the tests query, so the 1m rate() windows of the rules and panels
    never run dry, however long the tests before them took.
    """

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self._target = target
        self._stopping = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = np.random.default_rng(0)
        try:
            with ParadigmClient(self._target, timeout=30) as client:
                shadowed: list[str] = []
                while not self._stopping.is_set():
                    for name, features in MODELS.items():
                        for rows in [1] * 60 + [8, 32, 128] * 5:
                            client.infer(name, rng.normal(size=(rows, features)).astype("f4"))
                        self._refused(client, name, features)
                    for _ in range(10):
                        client.predict(TABLE_MODEL, TABLE_ROWS)
                        client.infer(CASCADE, rng.uniform(0, 16, size=(16, 64)).astype("f4"))
                    # Feedback on the last round's shadowed requests (answered by now).
                    for request_id in shadowed:
                        self._feedback(client, request_id)
                    shadowed = [
                        client.infer(
                            "digits-logistic_regression",
                            rng.uniform(0, 16, size=(16, 64)).astype("f4"),
                            version=SHADOWED_ALIAS,
                        ).id
                        for _ in range(5)
                    ]
                    self.rounds += 1
                    self._stopping.wait(1.0)
        except BaseException as error:  # reported by wait_for_rounds() and stop()
            self.error = error

    @staticmethod
    def _feedback(client: ParadigmClient, request_id: str) -> None:
        """True labels of a shadowed request; one the shadow dropped (its CPU budget) or
        has not answered yet is NOT_FOUND, as documented."""
        try:
            client.submit_feedback(request_id, ["0"] * 16)
        except ParadigmClientError as error:
            assert error.code == grpc.StatusCode.NOT_FOUND, error

    @staticmethod
    def _refused(client: ParadigmClient, name: str, features: int) -> None:
        try:
            client.infer(name, np.full((1, features), np.nan, dtype=np.float32))
        except ParadigmClientError as error:
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        else:
            raise AssertionError(f"{name} accepted NaN")

    def wait_for_rounds(self, rounds: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.rounds < rounds and self.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self._raise()
        assert self.rounds >= rounds, f"{self.rounds} traffic rounds in {timeout} s"

    def halt(self) -> None:
        self._stopping.set()
        self.join(timeout=30)

    def stop(self) -> None:
        """Halts, and fails if any call went wrong."""
        self.halt()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise AssertionError(f"inference traffic failed: {self.error!r}") from self.error


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = _tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    server = RunningServer(tmp_path / "data", max_concurrent_jobs=2)
    process: subprocess.Popen[bytes] | None = None
    traffic: Traffic | None = None
    try:
        config = tmp_path / "prometheus.yml"
        _prometheus_config(config, server.app.metrics_port)
        url = f"http://127.0.0.1:{_free_port()}"
        log = tmp_path / "prometheus.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={url.removeprefix('http://')}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        _wait_ready(url, process, log)
        with ParadigmClient(server.target, timeout=120) as client:
            client.wait_until_ready(30)
            _train(client, tmp_path)
        traffic = Traffic(server.target)
        traffic.start()
        # A few hundred calls on each model, spread over several scrapes.
        traffic.wait_for_rounds(3, timeout=60)
        metrics_url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            nvml = b"paradigm_gpu_memory_total_bytes" in response.read()
        stack = Stack(url, metrics_url, nvml, time.monotonic() + DATA_DEADLINE_S)
        stack.wait_for_scrapes(SCRAPES_PER_WINDOW, of="paradigm_predictions_total")
        yield stack
        traffic.stop()
    finally:
        if traffic is not None:
            traffic.halt()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.stop()


def _gpu_only(expr: str) -> bool:
    names = set(METRIC_NAME.findall(expr))
    return bool(names) and all(name.startswith("paradigm_gpu_") for name in names)


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    exprs = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {expr}"
            exprs.append(expr)
    assert exprs
    return exprs


def _assert_data(stack: Stack, exprs: list[str], what: str) -> None:
    """Every expression has data, except GPU-only ones without NVML (those must be absent)."""
    absent = [] if stack.nvml else [expr for expr in exprs if _gpu_only(expr)]
    results = stack.results([expr for expr in exprs if expr not in absent])
    empty = [expr for expr, result in results.items() if not result]
    assert not empty, f"{what} without data:\n" + "\n".join(empty)
    # Data means numbers: both paradigms have traffic, so no ratio may be 0/0 (NaN).
    not_finite = [
        f"{expr}: {sample['metric']} {sample['value'][1]}"
        for expr, result in results.items()
        for sample in result
        if not math.isfinite(float(sample["value"][1]))
    ]
    assert not not_finite, f"{what} with NaN or Inf:\n" + "\n".join(not_finite)
    # Without NVML the GPU series are absent, never zero.
    present = [expr for expr, result in stack.results(absent, poll=False).items() if result]
    assert not present, "GPU queries with data but no NVML:\n" + "\n".join(present)


def _rule_count(kind: str) -> int:
    return sum(
        len(re.findall(rf"^\s*- {kind}:", path.read_text(), re.MULTILINE)) for path in RULE_FILES
    )


def test_promtool_checks_the_config_rules_and_rule_tests() -> None:
    _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    _promtool("check", "rules", *map(str, RULE_FILES))
    output = _promtool("test", "rules", *map(str, sorted(PROMETHEUS_DIR.glob("tests/*.yml"))))
    assert "FAILED" not in output


def test_promtool_accepts_our_metrics(stack: Stack) -> None:
    with urllib.request.urlopen(stack.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert "paradigm_predictions_total" in text
    _promtool("check", "metrics", stdin=text)


def test_prometheus_loaded_every_rule_and_evaluates_it(stack: Stack) -> None:
    rules = stack.rules()
    assert len([r for r in rules if r["type"] == "recording"]) == _rule_count("record")
    assert len([r for r in rules if r["type"] == "alerting"]) == _rule_count("alert")
    while time.monotonic() < stack.data_by and any("lastEvaluation" not in r for r in rules):
        time.sleep(1)
        rules = stack.rules()
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not broken, "rules that failed to evaluate:\n" + "\n".join(broken)


def test_every_recording_rule_has_data(stack: Stack) -> None:
    recording = [rule for rule in stack.rules() if rule["type"] == "recording"]
    # The expressions themselves, and the series Prometheus recorded from them.
    exprs = [rule["query"] for rule in recording] + [rule["name"] for rule in recording]
    _assert_data(stack, exprs, "recording rules")


def test_every_alert_signal_exists(stack: Stack) -> None:
    # Whether an alert fires depends on something going wrong; what must hold always is
    # that the signal it compares exists. So evaluate each expression without its final
    # threshold comparison.
    exprs = []
    for rule in stack.rules():
        if rule["type"] == "alerting":
            signal = THRESHOLD.sub("", rule["query"])
            assert signal != rule["query"], f"{rule['name']}: no threshold to remove"
            exprs.append(signal)
    _assert_data(stack, exprs, "alert signals")


def test_a_failed_job_makes_the_training_alert_pending(stack: Stack) -> None:
    # The knn job failed moments ago; with `for: 1m` the alert is still pending.
    expr = 'ALERTS{alertname="ParadigmTrainingJobsFailing"}'
    alerts = stack.results([expr])[expr]
    assert [alert["metric"]["alertstate"] for alert in alerts] in (["pending"], ["firing"])


def test_every_dashboard_query_has_data(stack: Stack) -> None:
    _assert_data(stack, _dashboard_exprs(), "dashboard queries")
