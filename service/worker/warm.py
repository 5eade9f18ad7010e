"""Imported once by the warm fork server (service/launcher.py), after the libraries: pays
the first-use costs that every job forked from it would otherwise pay again.

Measured on warm iris jobs: a forked mlp job spent 1.7 s in its first torch training step
and export (lazy kernel and exporter set-up; the same fit takes 0.04 s the second time in one
process), and every job spent about a third of its worker time in importlib.metadata
scanning installed packages for pydantic's and narwhals' plugins. A tiny classical and deep
fit, export and ONNX Runtime run here, in the fork server, leave all of that done for the
children: they inherit the state and stay separate processes.

Single-threaded on purpose (threads=1): a fork copies only the forking thread, so the
server must not keep thread pools that a child could find half-locked.
"""

from __future__ import annotations

import logging
import os

import numpy as np

import service.cli  # noqa: F401  (pydantic, pydantic-settings and the settings model)
from service.training import catalog
from service.worker import classical, deep, export
from service.worker.fitting import FitRequest

log = logging.getLogger(__name__)

#: One classical and one deep algorithm: the exporters and runtimes every job uses.
WARMED = (("logistic_regression", classical.fit), ("mlp", deep.fit))


def _first_use() -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((16, 4), dtype=np.float32)
    labels = np.array([0, 1] * 8)
    for name, fit in WARMED:
        algorithm = catalog.get_algorithm(name)
        params = catalog.resolve_hyperparameters(algorithm, {"epochs": 1} if name == "mlp" else {})
        request = FitRequest(
            algorithm=name,
            params=params,
            X_train=rows,
            y_train=labels,
            task="classification",
            seed=0,
            emit=lambda *_, **__: None,
            device="cpu",
            classes=np.array([0, 1]),
            threads=1,
        )
        model = fit(request)
        onnx_bytes = model.to_onnx(rows.shape[1])
        export.check_model(onnx_bytes)
        export.check_parity(
            model.predict_outputs(rows), export.run_onnx(onnx_bytes, {"input": rows}), 1e-3
        )


try:
    _first_use()
except Exception as exc:  # a warm-up that fails leaves jobs correct, only slower
    log.warning("warm-up of the fork server failed (%s): jobs pay their first-use costs", exc)
log.debug("fork server warmed up; %d threads", len(os.listdir("/proc/self/task")))
