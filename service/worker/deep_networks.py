"""The deep networks as torch modules: the four bodies, the standardization they start with,
and the export heads that turn a network's model-space output into the ONNX outputs.

Model space: logits (classification), the standardized target (regression) or the
standardized reconstruction (autoencoder); the heads map it back to labels, probabilities
and original units, so the exported graph takes raw features and answers in the dataset's
terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """Per-feature (x - mean) / std with the training statistics held as buffers.

    Living inside the network, the statistics are exported with it: the ONNX graph takes
    raw features and serving needs no separate scaler.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    def __init__(
        self, n_features: int, n_out: int, hidden_units: int, hidden_layers: int, dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_units
        layers.append(nn.Linear(width, n_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """The guide's Keras CNN: two conv(tanh)+maxpool blocks, dropout, one dense layer.

    "same" padding keeps each conv's output the size of its input, so an 8x8 digit goes
    8 -> 4 -> 2 through the two poolings (the guide's 28x28 MNIST layout would too).
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        n_out: int,
        filters_1: int,
        filters_2: int,
        kernel_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        height, width = image_shape[:2]
        # Rows of an image upload are flattened (height, width, channels); others are grey.
        channels = image_shape[2] if len(image_shape) > 2 else 1
        if height < 4 or width < 4:
            raise ValueError(
                f"cnn needs images of at least 4x4 (two 2x2 poolings), got {height}x{width}"
            )
        self.image_shape = (height, width)
        self.channels = channels
        self.features = nn.Sequential(
            nn.Conv2d(channels, filters_1, kernel_size, padding="same"),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(filters_1, filters_2, kernel_size, padding="same"),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(filters_2 * (height // 4) * (width // 4), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.image_shape
        if self.channels == 1:
            return self.head(self.features(x.reshape(-1, 1, height, width)))
        pixels = x.reshape(-1, height, width, self.channels).permute(0, 3, 1, 2)
        return self.head(self.features(pixels))


class LSTM(nn.Module):
    """Reads a row as a sequence and classifies/regresses from the last hidden state.

    Image rows are the time steps of an image (seq_len = H, W features per step); any
    other row is a sequence of its features, one value per step.
    """

    def __init__(
        self,
        seq_len: int,
        step_features: int,
        n_out: int,
        hidden_units: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.seq_len, self.step_features = seq_len, step_features
        # torch applies LSTM dropout only between stacked layers (and warns when there is
        # one layer); dropping the final hidden state as well makes the setting count for a
        # single-layer LSTM too.
        self.lstm = nn.LSTM(
            step_features,
            hidden_units,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_units, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x.reshape(-1, self.seq_len, self.step_features))
        return self.head(self.dropout(sequence[:, -1, :]))


class Autoencoder(nn.Module):
    def __init__(self, n_features: int, hidden_units: int, bottleneck_units: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, bottleneck_units),
            nn.ReLU(),
            nn.Linear(bottleneck_units, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, n_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Network(nn.Module):
    """Standardization followed by the body; maps raw features to model-space outputs.

    Model space: logits (classification), the standardized target (regression) or the
    standardized reconstruction (autoencoder).
    """

    def __init__(self, scaler: Standardize, body: nn.Module) -> None:
        super().__init__()
        self.scaler = scaler
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scaler(x))


class ClassifierHead(nn.Module):
    """Outputs (label INT64 [batch], probabilities FP32 [batch, n_classes])."""

    classes: torch.Tensor

    def __init__(self, network: Network, classes: np.ndarray) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.network(x), dim=1)
        # index_select exports as a plain ONNX Gather on the classes constant.
        label = torch.index_select(self.classes, 0, torch.argmax(probabilities, dim=1))
        return label, probabilities


class RegressorHead(nn.Module):
    """Outputs prediction FP32 [batch, 1] in the target's original units."""

    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, network: Network, y_mean: float, y_std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("y_mean", torch.tensor(y_mean, dtype=torch.float32))
        self.register_buffer("y_std", torch.tensor(y_std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.network(x) * self.y_std + self.y_mean,)


class AnomalyHead(nn.Module):
    """Outputs reconstruction FP32 [batch, n_features] and score FP32 [batch].

    Both in the original feature units, so a score threshold means the same thing
    whatever the scaling learned in training.
    """

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaler = self.network.scaler
        reconstruction = self.network(x) * scaler.std + scaler.mean
        score = torch.mean((reconstruction - x) ** 2, dim=1)
        return reconstruction, score


OUTPUT_NAMES = {
    "classification": ("label", "probabilities"),
    "regression": ("prediction",),
    "anomaly_detection": ("reconstruction", "score"),
}


def n_outputs(task: str, classes: np.ndarray | None, n_features: int) -> int:
    """The width of the network's model-space output for `task`."""
    if task == "classification":
        assert classes is not None
        return len(classes)
    return 1 if task == "regression" else n_features


def build_body(
    algorithm: str,
    params: dict[str, Any],
    n_features: int,
    n_out: int,
    image_shape: list[int] | None,
) -> nn.Module:
    """The untrained body of `algorithm` with validated, complete `params`."""
    if algorithm == "mlp":
        return MLP(
            n_features,
            n_out,
            int(params["hidden_units"]),
            int(params["hidden_layers"]),
            float(params["dropout"]),
        )
    if algorithm == "cnn":
        assert image_shape
        return CNN(
            tuple(int(n) for n in image_shape),
            n_out,
            int(params["filters_1"]),
            int(params["filters_2"]),
            int(params["kernel_size"]),
            float(params["dropout"]),
        )
    if algorithm == "lstm":
        # An image's rows are the steps: width x channels features each.
        seq_len, step = (
            (int(image_shape[0]), n_features // int(image_shape[0]))
            if image_shape
            else (n_features, 1)
        )
        return LSTM(
            seq_len,
            step,
            n_out,
            int(params["hidden_units"]),
            int(params["num_layers"]),
            float(params["dropout"]),
        )
    return Autoencoder(n_features, int(params["hidden_units"]), int(params["bottleneck_units"]))


def export_head(
    network: Network, task: str, classes: np.ndarray | None, y_mean: float, y_std: float
) -> nn.Module:
    """The head that gives `network` the ONNX outputs of `task` (OUTPUT_NAMES)."""
    if task == "classification":
        assert classes is not None
        return ClassifierHead(network, classes)
    if task == "regression":
        return RegressorHead(network, y_mean, y_std)
    return AnomalyHead(network)
