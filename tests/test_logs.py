"""Log lines name the request they belong to, also those written in inference threads."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from clients.client import ParadigmClient
from service.logs import ContextFilter
from service.serving.runtime import OnnxModel


class Records(logging.Handler):
    """Keeps the records of this test's logger, with the context filter's fields."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_line_from_the_inference_thread_names_model_version_and_request(
    client: ParadigmClient, iris_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logging.getLogger("tests.inference-thread")
    handler = Records()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    run = OnnxModel.run

    def logging_run(
        self: OnnxModel, feeds: dict[str, np.ndarray], output_names: list[str]
    ) -> list[np.ndarray]:
        log.info("running in %s", threading.current_thread().name)
        return run(self, feeds, output_names)

    monkeypatch.setattr(OnnxModel, "run", logging_run)
    try:
        rows = np.random.default_rng(0).uniform(0, 5, (3, 4)).astype(np.float32)
        version = client.infer(iris_model, rows, request_id="req-ctx-1").model_version
    finally:
        log.removeHandler(handler)
    [record] = handler.records
    assert (record.threadName or "").startswith("inference")  # not the event loop's thread
    fields = (record.model, record.version, record.request_id)  # type: ignore[attr-defined]
    assert fields == (iris_model, version, "req-ctx-1")
