"""Image datasets for training: uint8 pixels in, one feature matrix out, and the same
computation as an ONNX graph that the model's graph is joined behind (columns.join).

Served image models take the raw pixels, UINT8 [batch, height, width, channels], and scale
them themselves, so a client sends a decoded picture and nothing else. Two front ends:

- "pixels": each pixel / 255, flattened in (height, width, channels) order. Every algorithm
  trains on these; the CNN and LSTM unflatten them inside their own graphs.
- "hog": a hand-made feature extractor for classical algorithms, histograms of oriented
  gradients. Sobel gradients of the grey picture (ONNX Conv with fixed kernels); each
  pixel's gradient votes for ORIENTATIONS unsigned directions with weight
  max(0, |g| cos 2(angle - direction)), computed from gx and gy without an arctangent; the
  votes are averaged over a CELLS x CELLS grid of cells and each cell's histogram is
  L2-normalised. numpy computes the very same at training time; the pipeline's parity check
  compares the two end to end.

Only operators that mean the same from opset 13 to 21 are used (Cast, Div, Mul, Sub, Add,
Sqrt, Relu, Conv, AveragePool, Concat, Transpose, Reshape), since joining a model raises
the front graph's opset to the model's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.worker.columns import FEATURES

INPUT = "input"
ORIENTATIONS = 9
CELLS = 4
#: Added to a cell's sum of squares before normalising: a flat cell stays near zero
#: instead of amplifying noise.
NORM_EPSILON = 1e-4
GRADIENT_EPSILON = 1e-6
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
SOBEL_Y = SOBEL_X.T.copy()
OPSET = 17
#: The IR version of opset 17: the installed onnx's newest is more than ONNX Runtime reads.
IR_VERSION = 8


class ImageRows:
    """Images, uint8 [n, height, width, channels], as the pipeline's parity rows."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def take(self, rows: np.ndarray) -> ImageRows:
        return ImageRows(self.images[rows])

    def with_edge_rows(self) -> ImageRows:
        """These images plus two that serving will meet: all black and all white."""
        shape = (1, *self.images.shape[1:])
        edges = [np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)]
        return ImageRows(np.concatenate([self.images, *edges]))


class ImageFront:
    """The front of an image model: pixels to features, in numpy and as ONNX."""

    def __init__(self, image_shape: list[int], features: str = "pixels") -> None:
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be [height, width, channels], got {image_shape}")
        if features not in ("pixels", "hog"):
            raise ValueError(f"unknown image features {features!r}; expected pixels or hog")
        self.height, self.width, self.channels = (int(n) for n in image_shape)
        self.features = features
        self.cell_height = max(1, self.height // CELLS)
        self.cell_width = max(1, self.width // CELLS)

    # ------------------------------------------------------------------ numpy

    def transform(self, rows: ImageRows | np.ndarray) -> np.ndarray:
        """float32 [n, features] for uint8 images [n, height, width, channels]."""
        images = rows.images if isinstance(rows, ImageRows) else rows
        scaled = images.astype(np.float32) / np.float32(255.0)
        if self.features == "pixels":
            return scaled.reshape(len(scaled), -1)
        return self._hog(scaled)

    def _hog(self, scaled: np.ndarray) -> np.ndarray:
        # As the graph: NCHW, Sobel over every channel with the kernel / channels (the grey
        # picture's gradient, since both are linear), zero padding of one.
        x = np.transpose(scaled, (0, 3, 1, 2))
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        gx = self._correlate(padded, SOBEL_X / np.float32(self.channels))
        gy = self._correlate(padded, SOBEL_Y / np.float32(self.channels))
        a, b = gx * gx - gy * gy, np.float32(2.0) * gx * gy
        magnitude = np.sqrt(gx * gx + gy * gy) + np.float32(GRADIENT_EPSILON)
        cosines, sines = _directions()
        votes = np.maximum(
            (a[:, None] * cosines[None, :, None, None] + b[:, None] * sines[None, :, None, None])
            / magnitude[:, None],
            np.float32(0.0),
        )
        cells = self._pool(votes)
        norms = np.sqrt(np.sum(cells * cells, axis=1, keepdims=True) + np.float32(NORM_EPSILON))
        return (cells / norms).reshape(len(cells), -1).astype(np.float32)

    def _correlate(self, padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """ONNX Conv (a cross-correlation) of every channel with `kernel`, summed: [n, H, W]."""
        out = np.zeros((len(padded), self.height, self.width), dtype=np.float32)
        for dy in range(3):
            for dx in range(3):
                if kernel[dy, dx] != 0:
                    window = padded[:, :, dy : dy + self.height, dx : dx + self.width]
                    out += kernel[dy, dx] * window.sum(axis=1)
        return out

    def _pool(self, votes: np.ndarray) -> np.ndarray:
        """AveragePool over cells (the remainder past whole cells left out, as ONNX does)."""
        kh, kw = self.cell_height, self.cell_width
        rows, columns = self.height // kh, self.width // kw
        cropped = votes[:, :, : rows * kh, : columns * kw]
        shaped = cropped.reshape(len(votes), ORIENTATIONS, rows, kh, columns, kw)
        return shaped.mean(axis=(3, 5), dtype=np.float32)

    def feature_names(self) -> list[str]:
        if self.features == "pixels":
            return [
                f"y{row}x{column}c{channel}"
                for row in range(self.height)
                for column in range(self.width)
                for channel in range(self.channels)
            ]
        rows, columns = self.height // self.cell_height, self.width // self.cell_width
        return [
            f"hog_o{k}_y{row}x{column}"
            for k in range(ORIENTATIONS)
            for row in range(rows)
            for column in range(columns)
        ]

    # ------------------------------------------------------------------ pipeline seams

    def feeds(self, rows: ImageRows) -> dict[str, np.ndarray]:
        return {INPUT: rows.images}

    def input_columns(self) -> list[dict[str, object]]:
        """No per-column serving rules: UINT8 pixels cannot be missing."""
        return []

    # ------------------------------------------------------------------ ONNX

    def to_onnx(self) -> onnx.ModelProto:
        """The front graph: input "input" UINT8 [batch, H, W, C], output FEATURES FP32."""
        nodes = [
            helper.make_node("Cast", [INPUT], ["front/float"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["front/float", "front/255"], ["front/scaled"]),
        ]
        initializers = [_scalar("front/255", 255.0)]
        if self.features == "pixels":
            size = self.height * self.width * self.channels
            initializers.append(numpy_helper.from_array(np.array([-1, size]), "front/shape"))
            nodes.append(helper.make_node("Reshape", ["front/scaled", "front/shape"], [FEATURES]))
        else:
            more_nodes, more_initializers = self._hog_nodes()
            nodes += more_nodes
            initializers += more_initializers
        image = helper.make_tensor_value_info(
            INPUT, TensorProto.UINT8, [None, self.height, self.width, self.channels]
        )
        features = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [None, None])
        graph = helper.make_graph(nodes, "image_front", [image], [features], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model

    def _hog_nodes(self) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        c = self.channels
        sobel = np.stack([np.repeat(k[None], c, axis=0) for k in (SOBEL_X, SOBEL_Y)])
        sobel = (sobel / np.float32(c)).astype(np.float32)  # [2, C, 3, 3]: gx, gy
        cosines, sines = _directions()
        # Channel 0 of "front/ab" is gx² - gy², channel 1 is 2 gx gy.
        directions = np.stack([cosines, sines], axis=1)[:, :, None, None].astype(np.float32)
        initializers = [
            numpy_helper.from_array(sobel, "front/sobel"),
            numpy_helper.from_array(directions, "front/directions"),
            numpy_helper.from_array(np.ones((1, ORIENTATIONS, 1, 1), np.float32), "front/sum"),
            _scalar("front/2", 2.0),
            _scalar("front/gradient_eps", GRADIENT_EPSILON),
            _scalar("front/norm_eps", NORM_EPSILON),
            numpy_helper.from_array(np.array([1], np.int64), "front/one"),
            *(
                numpy_helper.from_array(np.array([k], np.int64), f"front/channel{k}")
                for k in (0, 2)
            ),
            numpy_helper.from_array(np.array([0, -1], np.int64), "front/flat"),
        ]
        kernel = [self.cell_height, self.cell_width]
        node = helper.make_node
        nodes = [
            node("Transpose", ["front/scaled"], ["front/nchw"], perm=[0, 3, 1, 2]),
            node("Conv", ["front/nchw", "front/sobel"], ["front/g"], pads=[1, 1, 1, 1]),
            _slice("front/g", 0, "front/gx"),
            _slice("front/g", 1, "front/gy"),
            node("Mul", ["front/gx", "front/gx"], ["front/gx2"]),
            node("Mul", ["front/gy", "front/gy"], ["front/gy2"]),
            node("Sub", ["front/gx2", "front/gy2"], ["front/a"]),
            node("Mul", ["front/gx", "front/gy"], ["front/gxgy"]),
            node("Mul", ["front/gxgy", "front/2"], ["front/b"]),
            node("Add", ["front/gx2", "front/gy2"], ["front/g2"]),
            node("Sqrt", ["front/g2"], ["front/g_abs"]),
            node("Add", ["front/g_abs", "front/gradient_eps"], ["front/magnitude"]),
            node("Concat", ["front/a", "front/b"], ["front/ab"], axis=1),
            node("Conv", ["front/ab", "front/directions"], ["front/projected"]),
            node("Div", ["front/projected", "front/magnitude"], ["front/oriented"]),
            node("Relu", ["front/oriented"], ["front/votes"]),
            node(
                "AveragePool", ["front/votes"], ["front/cells"], kernel_shape=kernel, strides=kernel
            ),
            node("Mul", ["front/cells", "front/cells"], ["front/cells2"]),
            node("Conv", ["front/cells2", "front/sum"], ["front/sum2"]),
            node("Add", ["front/sum2", "front/norm_eps"], ["front/sum2_eps"]),
            node("Sqrt", ["front/sum2_eps"], ["front/norm"]),
            node("Div", ["front/cells", "front/norm"], ["front/normalised"]),
            node("Reshape", ["front/normalised", "front/flat"], [FEATURES]),
        ]
        return nodes, initializers


def _slice(source: str, channel: int, out: str) -> onnx.NodeProto:
    """Channel `channel` (0 or 1) of an NCHW tensor, keeping the channel axis."""
    start, end = ("front/channel0", "front/one")
    if channel == 1:
        start, end = ("front/one", "front/channel2")
    return helper.make_node("Slice", [source, start, end, "front/one"], [out])


def _directions() -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of twice each orientation's angle (unsigned: 0 to pi)."""
    angles = np.arange(ORIENTATIONS, dtype=np.float64) * np.pi / ORIENTATIONS
    return np.cos(2 * angles).astype(np.float32), np.sin(2 * angles).astype(np.float32)


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)
