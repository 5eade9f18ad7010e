"""What one fit needs, whichever library fits it: the request classical.fit, deep.fit and the
distributed fits all take.

A leaf module (numpy and the spec only): deep and distributed import it, so it must import
neither of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service.training.spec import Emit, FittedModel


@dataclass(frozen=True)
class TextLayout:
    """Where a table's token ids are in the feature matrix of a deep model: after `dense`
    other features, `length` ids per text column, column i's ids below vocabularies[i]."""

    dense: int
    length: int
    vocabularies: tuple[int, ...]


@dataclass(frozen=True)
class FitRequest:
    """One model to fit: the algorithm, its resolved parameters and the training rows.

    `params` must already be resolved by the catalog. The deep fields (device, image_shape,
    classes, threads) are ignored by classical.fit.
    """

    algorithm: str
    params: dict[str, Any]
    X_train: np.ndarray
    y_train: np.ndarray
    task: str
    seed: int
    emit: Emit
    #: "auto", "cpu" or "cuda"; deep.resolve_device maps it to where training runs.
    device: str = "auto"
    #: [H, W] of image rows, which arrive flattened; None for any other dataset.
    image_shape: list[int] | None = None
    #: The sorted class labels (classification), so every DDP rank agrees on them.
    classes: np.ndarray | None = None
    #: torch intra-op threads for training, prediction and export.
    threads: int = 1
    #: Deep models of a table with text columns: where the token ids are; None otherwise.
    text: TextLayout | None = None


class DeepFit(Protocol):
    """deep.fit's signature: what trains a deep model for the pipeline."""

    def __call__(self, request: FitRequest) -> FittedModel: ...
