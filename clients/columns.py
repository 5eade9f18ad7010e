"""Rows of a table as a table model's inputs: one tensor per column, typed as the model says.

A table model (trained on a CSV or Parquet dataset) takes one input per column, named after
it: FP32 [rows, 1] for numbers (NaN for a blank), BYTES for words ("" for a blank), BOOL for
booleans. This module turns what users hold — a CSV or Parquet file, a pyarrow Table, a
pandas DataFrame or a dict of columns — into those tensors, leaving out the columns the model
does not take (the label, an ignored id) and naming any it needs but does not find.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

#: Cells read as missing: the same list the server's ingestion uses.
NULL_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "#N/A"]


@dataclass
class ColumnInputs:
    """The tensors to send, and the columns of the data that the model does not take."""

    tensors: dict[str, np.ndarray]
    left_out: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(next(iter(self.tensors.values()))) if self.tensors else 0


def read_table(path: Path) -> pa.Table:
    """A .csv (header row; blanks, NA, NaN, null are missing) or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".csv":
        options = pa_csv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True)
        return pa_csv.read_csv(path, convert_options=options)
    raise ValueError(f"{path}: expected a .csv or .parquet file")


def as_table(data: Any) -> pa.Table:
    """A pyarrow Table from a Table, a pandas DataFrame or a mapping of column -> values."""
    if isinstance(data, pa.Table):
        return data
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):  # pandas, optional
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        return pa.table({str(k): _column_values(v) for k, v in data.items()})
    raise TypeError(
        f"expected a pyarrow Table, a pandas DataFrame or a dict of columns, got "
        f"{type(data).__name__}"
    )


def _column_values(values: Any) -> Any:
    array = np.asarray(values)
    return array.reshape(-1) if array.ndim > 1 else array


def column_inputs(table: pa.Table, inputs: Sequence[Any]) -> ColumnInputs:
    """Tensors for the model inputs (name, datatype, shape: ModelMetadata's TensorMetadata).

    ValueError names the columns the model needs and the data lacks.
    """
    wanted = [spec.name for spec in inputs]
    missing = [name for name in wanted if name not in table.column_names]
    if missing:
        raise ValueError(
            f"the data has no column {', '.join(repr(m) for m in missing)}; the model takes "
            f"{', '.join(repr(w) for w in wanted)}"
        )
    tensors = {}
    for spec in inputs:
        values = _typed(table.column(spec.name), spec.datatype, spec.name)
        tensors[spec.name] = values.reshape(-1, 1) if len(spec.shape) == 2 else values
    left_out = [name for name in table.column_names if name not in wanted]
    return ColumnInputs(tensors, left_out)


def _typed(column: pa.ChunkedArray, datatype: str, name: str) -> np.ndarray:
    if datatype in ("FP32", "FP64"):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column = pc.cast(column, pa.float64())
            except pa.ArrowInvalid:
                raise ValueError(f"column {name!r} must hold numbers") from None
        numbers = column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return numbers.astype(np.float32 if datatype == "FP32" else np.float64)
    if datatype == "BYTES":
        if pa.types.is_floating(column.type):
            whole = pc.fill_null(pc.equal(pc.round(column), column), True)
            if pc.all(whole).as_py():  # 2007.0 is the category "2007"
                column = column.cast(pa.int64())
        if pa.types.is_boolean(column.type):
            text = [None if v is None else ("true" if v else "false") for v in column.to_pylist()]
        else:
            text = column.cast(pa.string()).to_pylist()
        return np.array(["" if v is None else v for v in text], dtype=object)
    if datatype == "BOOL":
        if column.null_count:
            raise ValueError(f"column {name!r} has blanks; a boolean input needs true or false")
        if not pa.types.is_boolean(column.type):
            words = pc.utf8_lower(column.cast(pa.string()))
            column = pc.is_in(words, pa.array(["true", "yes", "y", "t", "1"]))
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)
    if datatype in ("INT64", "INT32"):
        if column.null_count:
            raise ValueError(f"column {name!r} has blanks; the model takes {datatype} there")
        return column.to_numpy(zero_copy_only=False).astype(
            np.int64 if datatype == "INT64" else np.int32
        )
    raise ValueError(f"column {name!r}: the model takes {datatype}, which tables do not carry")
