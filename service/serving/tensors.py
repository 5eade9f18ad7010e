"""Plain tensor types of the data plane (the datatype table is service/datatypes.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# Plain slotted dataclasses: frozen ones pay object.__setattr__ per field, per request.
@dataclass(slots=True)
class InferInput:
    """A decoded input tensor."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferOutput:
    """An output tensor ready to encode."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferRequest:
    """A decoded ModelInfer request; `outputs` empty means every output."""

    model_name: str
    model_version: str
    inputs: list[InferInput]
    outputs: list[str] = field(default_factory=list)
    id: str = ""
    #: time.perf_counter() when the request reached the server; latency starts here.
    arrived: float = 0.0
    #: time.perf_counter() after which the caller no longer waits (its gRPC deadline).
    deadline: float | None = None


@dataclass(slots=True)
class InferResponse:
    """A ModelInfer answer before encoding."""

    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
