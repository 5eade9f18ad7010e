"""A trained deep network's export head as one self-contained ONNX model (torch.onnx)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn


def export_onnx(head: nn.Module, n_features: int, output_names: tuple[str, ...]) -> bytes:
    """Exports `head` with a dynamic batch axis; the weights live inside the returned bytes.

    Exporter: the legacy TorchScript one (dynamo=False). Both were measured on torch 2.13
    for all four architectures: both export nn.LSTM as ONNX LSTM nodes, and both match
    torch to ~1e-7 (probabilities) at batch sizes 1, 7 and 256. The legacy exporter takes
    0.02-0.2 s per model where dynamo takes 0.8-2.5 s, which is most of a small job's
    export time on a 2-core machine; its graphs are also smaller (LSTM: 43 nodes, 219 KB
    against 56 nodes, 299 KB) and it does not need onnxscript at run time. It is
    deprecated, but torch is pinned in pyproject.toml: revisit when upgrading torch (the
    dynamo call is `torch.onnx.export(head, (x,), None, dynamo=True, input_names=...,
    output_names=..., dynamic_shapes=({0: torch.export.Dim("batch")},),
    external_data=False).model_proto.SerializeToString()`).
    """
    head = head.to("cpu").eval()
    # Batch 2, not 1: a size-1 example dimension invites exporters to specialise it.
    example = torch.zeros((2, n_features), dtype=torch.float32)
    # A path rather than a BytesIO: torch 2.13 types `f` as a path, and a model this size
    # is written as one file (external data only starts at the 2 GiB protobuf limit).
    with tempfile.TemporaryDirectory(prefix="paradigm-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                head,
                (example,),
                path,
                dynamo=False,
                input_names=["input"],
                output_names=list(output_names),
                dynamic_axes={name: {0: "batch"} for name in ("input", *output_names)},
                opset_version=17,
                do_constant_folding=True,
            )
        if any(p.name != path.name for p in Path(tmp).iterdir()):
            raise RuntimeError("torch.onnx wrote external data; the model must be one file")
        return path.read_bytes()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keeps torch.onnx's progress prints, warnings and log lines out of the job's log."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
