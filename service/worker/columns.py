"""Table datasets for training: raw columns in, one feature matrix out, and the same
preprocessing as an ONNX graph that the model's graph is joined behind.

Fitted on the training rows only: numeric columns impute the median (the model's own
scaling, where it has one, follows); categorical columns one-hot encode, a missing value
being the category "" and a category never seen in training encoding as all zeros; boolean
columns become 0/1 with the most frequent value for a missing one; text columns become
TF-IDF features for classical models and token ids for deep ones (text.py), "" for missing.
Both paradigms train on the matrix this produces and export its front graph, so a
classical and a deep model of one table take the same inputs: one per column, named after
it (FP32 [batch, 1] for numbers, NaN for missing; BYTES for categories and text, "" for
missing; BOOL for booleans).
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
from service.worker import text

#: A category no training row has: the parity rows send it to prove it encodes as zeros.
UNSEEN_CATEGORY = "\x00paradigm-unseen"
FEATURES = "features"


@dataclass
class Columns:
    """A table's model columns as numpy arrays, one per column, typed for the model.

    numeric: float32 with NaN for missing; categorical and text: object array of str with ""
    for missing; boolean: float32 0/1 with NaN for missing (served as BOOL).
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
        cannot be missing on the wire, false; text empty), and every category one never
        seen (text: unseen words, then the first row's text many times over, longer than
        any token sequence a deep model reads)."""
        first = {name: array[:1] for name, array in self.values.items()}
        blank, unseen = {}, {}
        for spec in self.specs:
            array = first[spec.name]
            if spec.kind == "categorical":
                blank[spec.name] = np.array([""], dtype=object)
                unseen[spec.name] = np.array([UNSEEN_CATEGORY], dtype=object)
            elif spec.kind == "text":
                blank[spec.name] = np.array([""], dtype=object)
                long_text = " ".join([text.UNSEEN_TEXT, *[str(array[0])] * 50])
                unseen[spec.name] = np.array([long_text], dtype=object)
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
        if spec.kind in ("categorical", "text"):
            strings = array.fill_null("").to_numpy(zero_copy_only=False)
            values[spec.name] = np.asarray(strings, dtype=object)
        elif spec.kind == "boolean":
            values[spec.name] = array.cast(pa.float32()).to_numpy(zero_copy_only=False)
        else:
            numbers = array.cast(pa.float32()).fill_null(np.nan)
            values[spec.name] = numbers.to_numpy(zero_copy_only=False)
    return Columns(specs, values)


@dataclass(frozen=True)
class TokenSettings:
    """Deep models read a text column as token ids: how many words a vocabulary keeps
    (with the padding and unknown ids) and how many tokens of a text are read."""

    vocabulary_size: int
    length: int


class Preprocessor:
    """The fitted column preprocessing: a scikit-learn ColumnTransformer over one input per
    column, or, for a table of numbers only (`matrix`), a median imputer over the one input
    "input" [rows, columns] that array datasets have too.

    Text columns are TF-IDF inside the ColumnTransformer, or, given `tokens` (deep models),
    token ids after its output: the feature matrix is then [other columns | ids per text
    column], `dense_width` columns of the first.
    """

    def __init__(
        self,
        specs: list[ColumnInfo],
        *,
        matrix: bool = False,
        tokens: TokenSettings | None = None,
    ) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        self.specs = specs
        self.matrix = matrix
        self.seconds = 0.0
        self.encoders: dict[str, text.TokenIds] = {}
        self.dense_width = 0
        if matrix:
            self.transformer: Any = SimpleImputer(strategy="median", keep_empty_features=True)
            return
        by_kind = {
            kind: [s.name for s in specs if s.kind == kind]
            for kind in ("numeric", "categorical", "boolean", "text")
        }
        parts: list[tuple[str, Any, Any]] = []
        if by_kind["numeric"]:
            median = SimpleImputer(strategy="median", keep_empty_features=True)
            parts.append(("numeric", median, by_kind["numeric"]))
        if by_kind["categorical"]:
            one_hot = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
            parts.append(("categorical", one_hot, by_kind["categorical"]))
        if by_kind["boolean"]:
            frequent = SimpleImputer(strategy="most_frequent", keep_empty_features=True)
            parts.append(("boolean", frequent, by_kind["boolean"]))
        for index, column in enumerate(by_kind["text"]):
            if tokens is not None:
                self.encoders[column] = text.TokenIds(tokens.vocabulary_size, tokens.length)
            else:
                # A column name, not a list: the vectoriser reads one string per row.
                parts.append((_text_part(column, index), text.tfidf(), column))
        self.transformer = ColumnTransformer(parts, sparse_threshold=0.0) if parts else None

    def _rows(self, columns: Columns) -> Any:
        if self.matrix:
            return columns.matrix()
        frame = columns.frame()
        for spec in self.specs:
            if spec.kind == "text" and spec.name not in self.encoders:
                frame[spec.name] = [text.python_side(value) for value in frame[spec.name]]
        return frame

    def fit(self, columns: Columns) -> Preprocessor:
        if self.transformer is not None and not self.matrix:
            rows = self._rows(columns)
            for name, _, column in self.transformer.transformers:
                if name.startswith("text_"):
                    vocabulary = text.tfidf_vocabulary(rows[column])
                    if vocabulary is None:
                        raise InvalidArgument(
                            f"text column {column!r} has no word in any training row"
                        )
                    self.transformer.set_params(**{name: text.tfidf(vocabulary)})
        if self.transformer is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # all-missing columns, kept as 0
                self.transformer.fit(self._rows(columns))
        for column, encoder in self.encoders.items():
            encoder.fit(columns.values[column])
        if self.transformer is not None and not self.matrix:
            self.dense_width = len(self.transformer.get_feature_names_out())
        return self

    def transform(self, columns: Columns) -> np.ndarray:
        parts = []
        if self.transformer is not None:
            with warnings.catch_warnings():
                # Categories never seen in training encode as zeros, as documented.
                warnings.simplefilter("ignore", UserWarning)
                parts.append(self.transformer.transform(self._rows(columns)))
        for column, encoder in self.encoders.items():
            parts.append(encoder.transform(columns.values[column]))
        features = np.hstack(parts) if len(parts) > 1 else parts[0]
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
        for name, step, names in self.transformer.transformers_ if self.transformer else ():
            if name == "categorical":
                for column, categories in zip(names, step.categories_, strict=True):
                    known[column] = sorted(str(c) for c in categories if c != "")
        return [
            {"name": s.name, "kind": s.kind, "categories": known.get(s.name, [])}
            for s in self.specs
        ]

    def feature_names(self) -> list[str]:
        """One name per output feature: "numeric__age", "categorical__island_Biscoe",
        "text_review__great movie", "text__review__token_0", ..."""
        if self.matrix:
            return [s.name for s in self.specs]
        names = (
            [str(name) for name in self.transformer.get_feature_names_out()]
            if self.transformer is not None
            else []
        )
        for column, encoder in self.encoders.items():
            names.extend(encoder.feature_names(column))
        return names

    def to_onnx(self) -> onnx.ModelProto:
        """The preprocessing graph: one input per column (named after it), output FEATURES."""
        front = self._transformer_onnx() if self.transformer is not None else None
        if not self.encoders:
            assert front is not None
            return front
        if front is not None:
            rename(front.graph, FEATURES, "features/columns")
        order = [s.name for s in self.specs]
        return text.token_graph(front, "features/columns", self.encoders, order, FEATURES)

    def _transformer_onnx(self) -> onnx.ModelProto:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        if self.matrix:
            types: list[tuple[str, Any]] = [("input", FloatTensorType([None, len(self.specs)]))]
        else:
            types = self._column_types()
        options: dict[int, dict[str, Any]] = {}
        for _, step, _ in self.transformer.transformers_ if not self.matrix else ():
            if type(step).__name__ == "TfidfVectorizer":
                options.update(text.tfidf_options(step))
        try:
            model = convert_sklearn(
                self.transformer,
                name="preprocessing",
                initial_types=types,
                target_opset={"": 17, "ai.onnx.ml": 3},
                options=options or None,
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
        """skl2onnx input types of the ColumnTransformer's columns (token id columns are
        not its)."""
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        return [
            (
                spec.name,
                StringTensorType([None, 1])
                if spec.kind in ("categorical", "text")
                else FloatTensorType([None, 1]),
            )
            for spec in self.specs
            if spec.name not in self.encoders
        ]


def _text_part(column: str, index: int) -> str:
    """The ColumnTransformer's name for a text column's vectoriser: "text_<column>", unless
    the column's name has the "__" scikit-learn keeps for its own use."""
    return f"text_{column}" if "__" not in column else f"text_{index}"


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
