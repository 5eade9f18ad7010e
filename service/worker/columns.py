"""Table datasets for training: raw columns in, one feature matrix out, and the same
preprocessing as an ONNX graph that the model's graph is joined behind.

Fitted on the training rows only: numeric columns impute the median (the model's own
scaling, where it has one, follows); categorical columns one-hot encode, a missing value
being the category "" and a category never seen in training encoding as all zeros; boolean
columns become 0/1 with the most frequent value for a missing one. Both paradigms train on
the matrix this produces, and both export the same front graph, so a classical and a deep
model of one table take the same inputs: one per column, named after it (FP32 [batch, 1]
for numbers, NaN for missing; BYTES for categories, "" for missing; BOOL for booleans).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pyarrow as pa
from onnx import TensorProto, helper

from service.datasets.schema import ColumnInfo, model_columns
from service.errors import InvalidArgument

#: A category no training row has: the parity rows send it to prove it encodes as zeros.
UNSEEN_CATEGORY = "\x00paradigm-unseen"
FEATURES = "features"


@dataclass
class Columns:
    """A table's model columns as numpy arrays, one per column, typed for the model.

    numeric: float32 with NaN for missing; categorical: object array of str with "" for
    missing; boolean: float32 0/1 with NaN for missing (served as BOOL).
    """

    specs: list[ColumnInfo]
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def take(self, rows: np.ndarray) -> Columns:
        return Columns(self.specs, {name: array[rows] for name, array in self.values.items()})

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.values)

    def matrix(self) -> np.ndarray:
        """Numbers-only tables: the columns side by side, float32 [rows, columns]."""
        return np.column_stack([self.values[s.name] for s in self.specs]).astype(np.float32)

    def feeds(self) -> dict[str, np.ndarray]:
        """ONNX Runtime inputs: [rows, 1] per column, booleans as bool."""
        feeds = {}
        for spec in self.specs:
            array = self.values[spec.name]
            if spec.kind == "boolean":
                array = np.nan_to_num(array, nan=0.0) > 0.5
            feeds[spec.name] = array.reshape(-1, 1)
        return feeds

    def with_edge_rows(self) -> Columns:
        """These rows plus two that serving will meet: every value missing (booleans, which
        cannot be missing on the wire, false), and every category one never seen."""
        first = {name: array[:1] for name, array in self.values.items()}
        blank, unseen = {}, {}
        for spec in self.specs:
            array = first[spec.name]
            if spec.kind == "categorical":
                blank[spec.name] = np.array([""], dtype=object)
                unseen[spec.name] = np.array([UNSEEN_CATEGORY], dtype=object)
            elif spec.kind == "boolean":
                blank[spec.name] = np.zeros(1, dtype=np.float32)
                unseen[spec.name] = array
            else:
                blank[spec.name] = np.full(1, np.nan, dtype=np.float32)
                unseen[spec.name] = array
        values = {
            name: np.concatenate([array, blank[name], unseen[name]])
            for name, array in self.values.items()
        }
        return Columns(self.specs, values)


def read_columns(table: pa.Table, columns: list[ColumnInfo]) -> Columns:
    """The model columns of a stored table, typed for the model."""
    specs = model_columns(columns)
    values: dict[str, np.ndarray] = {}
    for spec in specs:
        array = table.column(spec.name)
        if spec.kind == "categorical":
            text = array.fill_null("").to_numpy(zero_copy_only=False)
            values[spec.name] = np.asarray(text, dtype=object)
        elif spec.kind == "boolean":
            values[spec.name] = array.cast(pa.float32()).to_numpy(zero_copy_only=False)
        else:
            numbers = array.cast(pa.float32()).fill_null(np.nan)
            values[spec.name] = numbers.to_numpy(zero_copy_only=False)
    return Columns(specs, values)


class Preprocessor:
    """The fitted column preprocessing: a scikit-learn ColumnTransformer over one input per
    column, or, for a table of numbers only (`matrix`), a median imputer over the one input
    "input" [rows, columns] that array datasets have too."""

    def __init__(self, specs: list[ColumnInfo], *, matrix: bool = False) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        self.specs = specs
        self.matrix = matrix
        self.seconds = 0.0
        if matrix:
            self.transformer: Any = SimpleImputer(strategy="median", keep_empty_features=True)
            return
        by_kind = {
            kind: [s.name for s in specs if s.kind == kind]
            for kind in ("numeric", "categorical", "boolean")
        }
        parts: list[tuple[str, Any, list[str]]] = []
        if by_kind["numeric"]:
            median = SimpleImputer(strategy="median", keep_empty_features=True)
            parts.append(("numeric", median, by_kind["numeric"]))
        if by_kind["categorical"]:
            one_hot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
            parts.append(("categorical", one_hot, by_kind["categorical"]))
        if by_kind["boolean"]:
            frequent = SimpleImputer(strategy="most_frequent", keep_empty_features=True)
            parts.append(("boolean", frequent, by_kind["boolean"]))
        self.transformer = ColumnTransformer(parts, sparse_threshold=0.0)

    def _rows(self, columns: Columns) -> Any:
        return columns.matrix() if self.matrix else columns.frame()

    def fit(self, columns: Columns) -> Preprocessor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # all-missing columns, kept as 0
            self.transformer.fit(self._rows(columns))
        return self

    def transform(self, columns: Columns) -> np.ndarray:
        with warnings.catch_warnings():
            # Categories never seen in training encode as zeros, as documented.
            warnings.simplefilter("ignore", UserWarning)
            features = self.transformer.transform(self._rows(columns))
        return np.ascontiguousarray(features, dtype=np.float32)

    def feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        """What the exported graph takes for these rows."""
        return {"input": columns.matrix()} if self.matrix else columns.feeds()

    def input_columns(self) -> list[dict[str, Any]]:
        """The manifest's input_columns: each input's kind and, for categorical ones, the
        categories seen in training ("" is missing, not a category)."""
        if self.matrix:
            return [{"name": "input", "kind": "numeric", "categories": []}]
        known: dict[str, list[str]] = {}
        for name, step, names in self.transformer.transformers_:
            if name == "categorical":
                for column, categories in zip(names, step.categories_, strict=True):
                    known[column] = sorted(str(c) for c in categories if c != "")
        return [
            {"name": s.name, "kind": s.kind, "categories": known.get(s.name, [])}
            for s in self.specs
        ]

    def feature_names(self) -> list[str]:
        """One name per output feature: "numeric__age", "categorical__island_Biscoe", ..."""
        if self.matrix:
            return [s.name for s in self.specs]
        return [str(name) for name in self.transformer.get_feature_names_out()]

    def to_onnx(self) -> onnx.ModelProto:
        """The preprocessing graph: one input per column (named after it), output FEATURES."""
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        if self.matrix:
            types: list[tuple[str, Any]] = [("input", FloatTensorType([None, len(self.specs)]))]
        else:
            types = self._column_types()
        try:
            model = convert_sklearn(
                self.transformer,
                name="preprocessing",
                initial_types=types,
                target_opset={"": 17, "ai.onnx.ml": 3},
            )
        except Exception as exc:  # skl2onnx raises RuntimeError, KeyError, ...
            raise InvalidArgument(
                f"skl2onnx cannot convert the column preprocessing: {type(exc).__name__}: {exc}"
            ) from None
        graph = model.graph
        # skl2onnx makes names identifiers ("Body Mass (g)" -> "Body_Mass__g_"); the served
        # inputs keep the columns' own names.
        for (name, _), value in zip(types, list(graph.input), strict=True):
            if value.name != name:
                rename(graph, value.name, name)
        rename(graph, graph.output[0].name, FEATURES)
        _booleans_as_bool(graph, [s.name for s in self.specs if s.kind == "boolean"])
        return model

    def _column_types(self) -> list[tuple[str, Any]]:
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        return [
            (
                spec.name,
                StringTensorType([None, 1])
                if spec.kind == "categorical"
                else FloatTensorType([None, 1]),
            )
            for spec in self.specs
        ]


def _booleans_as_bool(graph: onnx.GraphProto, names: list[str]) -> None:
    """Boolean columns are served as BOOL: the graph takes bool and casts it to float."""
    casts = []
    for value in graph.input:
        if value.name not in names:
            continue
        outer, inner = value.name, f"{value.name}/float"
        for node in graph.node:
            node.input[:] = [inner if n == outer else n for n in node.input]
        value.type.tensor_type.elem_type = TensorProto.BOOL
        casts.append(helper.make_node("Cast", [outer], [inner], to=TensorProto.FLOAT))
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def join(front: onnx.ModelProto, back: onnx.ModelProto, back_input: str) -> onnx.ModelProto:
    """`back` behind `front`: front's FEATURES output feeds back's `back_input`; the joined
    model has front's inputs and back's outputs, under their own names."""
    from onnx import compose

    _same_opsets(front, back)
    outputs = [o.name for o in back.graph.output]
    joined = compose.merge_models(front, back, io_map=[(FEATURES, back_input)], prefix2="model/")
    for name in outputs:
        rename(joined.graph, f"model/{name}", name)
    return joined


def with_class_labels(model: onnx.ModelProto, classes: np.ndarray) -> onnx.ModelProto:
    """Turns the class index output "label" into the class itself: its name (BYTES) for
    named classes, its number (INT64) otherwise."""
    graph = model.graph
    rename(graph, "label", "label/index")
    if classes.dtype.kind in "OUS":
        values = np.array([str(c).encode() for c in classes], dtype=object)
        table = helper.make_tensor("label/classes", TensorProto.STRING, [len(values)], values)
        elem_type = TensorProto.STRING
    else:
        table = helper.make_tensor(
            "label/classes", TensorProto.INT64, [len(classes)], classes.astype(np.int64).tolist()
        )
        elem_type = TensorProto.INT64
    graph.initializer.append(table)
    graph.node.append(
        helper.make_node("Gather", ["label/classes", "label/index"], ["label"], axis=0)
    )
    for value in graph.output:
        if value.name == "label/index":
            value.name = "label"
            value.type.tensor_type.elem_type = elem_type
    return model


def _same_opsets(*models: onnx.ModelProto) -> None:
    """merge_models wants one opset per domain and one IR version: the newest of each."""
    versions: dict[str, int] = {}
    for model in models:
        for entry in model.opset_import:
            versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    ir_version = max(model.ir_version for model in models)
    for model in models:
        del model.opset_import[:]
        model.opset_import.extend(
            helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())
        )
        model.ir_version = ir_version


def rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Renames one value everywhere the top-level graph mentions it."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
