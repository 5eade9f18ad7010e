"""Table uploads (CSV, Parquet) into stored table datasets: runs in a worker process.

pyarrow parses (its multi-threaded C++ CSV reader; Parquet natively), so no cell passes
through a Python loop; a cell is looked at one by one only to name the row of an error.
Each column gets a kind (service/datasets/schema.py), inferred or given, is converted to the
type its kind stores (numeric: float64 with null for missing; categorical and text: string;
boolean: bool) and counted. The table is written as Parquet beside dataset.json, in a
staging directory renamed into place, like every dataset.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from service.datasets import layout
from service.datasets.schema import (
    KINDS,
    TOP_VALUES,
    ColumnInfo,
    ColumnKind,
    ValueCount,
    model_columns,
    parse_column_kinds,
)
from service.errors import AlreadyExists, InvalidArgument

#: Cells read as missing (pandas' list, less the rare spreadsheet error codes).
NULL_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "null", "NULL", "None", "#N/A"]
TRUE_WORDS = ("true", "yes", "y", "t", "1")
FALSE_WORDS = ("false", "no", "n", "f", "0")
#: A column whose every value differs is an id or a name, not something to learn from, but
#: only with enough rows to tell: in five rows every value may differ by chance. Whole
#: numbers that all differ may as well be a measurement (sizes 1..60), so those count as an
#: id only when the name says so.
MIN_ROWS_FOR_ID = 20
ID_NAME = re.compile(r"(^|[^a-z])(id|key|index|number|no)$|^(id|key|index)([^a-z]|$)", re.I)
#: Strings this long on average, or of this many words, are free text, not categories.
TEXT_MEAN_CHARS = 40
TEXT_MEAN_WORDS = 5
#: Values looked at to tell free text from categories, and ids from repeats.
TEXT_SAMPLE = 10_000
#: The classes a classification label may have; more is a regression or an id.
MAX_CLASSES = 1000
#: Models take numbers as float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
SHOWN = 40


def ingest(
    spool: str,
    root: str,
    name: str,
    *,
    file_format: str,
    label_column: str,
    column_kinds: Mapping[str, str] | None = None,
    task: str = "",
    description: str = "",
    builtin: bool = False,
) -> None:
    """Parses the spooled upload and stores it as root/name; InvalidArgument on bad input."""
    kinds = parse_column_kinds(column_kinds or {})
    if not label_column:
        raise InvalidArgument(f"{file_format.upper()} uploads need label_column: the label's name")
    if task and task not in layout.TASKS:
        raise InvalidArgument(f"task {task!r} is not one of {list(layout.TASKS)}")
    source = Source(Path(spool), file_format)
    table = source.read()
    _check_names(table, source)
    if label_column not in table.column_names:
        raise InvalidArgument(
            f"label column {_shown(label_column)} not in the header [{_listed(table.column_names)}]"
        )
    if label_column in kinds:
        raise InvalidArgument(
            f"column {_shown(label_column)} is the label: give kinds for feature columns only"
        )
    unknown = [column for column in kinds if column not in table.column_names]
    if unknown:
        raise InvalidArgument(
            f"column kinds given for {_listed(unknown)}, which the file does not have "
            f"(its columns: {_listed(table.column_names)})"
        )
    source.check_rows(table)
    table, warnings = _drop_unlabelled(table, label_column, source)
    label, task, classes = _label(table.column(label_column), task, label_column, source)

    columns: list[ColumnInfo] = []
    arrays: list[pa.ChunkedArray] = []
    for column_name in table.column_names:
        if column_name == label_column:
            arrays.append(label)
            continue
        array, info, note = _column(table.column(column_name), column_name, kinds, source)
        arrays.append(array)
        columns.append(info)
        if note:
            warnings.append(note)
    stored = pa.table(arrays, names=table.column_names)
    used = model_columns(columns)
    if not used:
        raise InvalidArgument(
            "no column a model can use: every column besides the label is ignored "
            f"({_listed([c.name + '=' + c.kind for c in columns])}); give kinds with column_kinds"
        )
    _write(
        Path(root),
        name,
        stored,
        layout.DatasetInfo(
            name=name,
            task=task,
            n_samples=stored.num_rows,
            n_features=len(used),
            n_classes=len(classes),
            feature_names=[c.name for c in used],
            description=description,
            builtin=builtin,
            storage="table",
            columns=[c.to_dict() for c in columns],
            label_column=label_column,
            classes=[asdict(c) for c in classes],
            warnings=warnings,
        ),
    )


class Source:
    """The uploaded file, and how its rows are named in messages."""

    def __init__(self, path: Path, file_format: str) -> None:
        if file_format not in ("csv", "parquet"):
            raise InvalidArgument(f"format {file_format!r} is not a table format (csv, parquet)")
        self.path = path
        self.format = file_format

    def row(self, index: int) -> str:
        """Data row `index` (0-based) as the user finds it: a CSV line or a Parquet row."""
        return f"CSV line {index + 2}" if self.format == "csv" else f"row {index + 1}"

    def read(self) -> pa.Table:
        return self._read_csv() if self.format == "csv" else self._read_parquet()

    def check_rows(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            what = "CSV has a header but" if self.format == "csv" else "the Parquet file has"
            raise InvalidArgument(f"{what} no data rows")

    def _read_csv(self) -> pa.Table:
        convert = pa_csv.ConvertOptions(
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            true_values=["true", "True", "TRUE"],
            false_values=["false", "False", "FALSE"],
        )
        try:
            table = pa_csv.read_csv(self.path, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise InvalidArgument(self._csv_error(str(exc))) from None
        for index, field in enumerate(table.schema):
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                row = _first_not_utf8(table.column(index))
                raise InvalidArgument(
                    f"CSV must be UTF-8 text: {self.row(row)}, column {_shown(field.name)} is not"
                )
        return table

    def _csv_error(self, message: str) -> str:
        if "Empty CSV file" in message:
            return "CSV is empty: expected a header row with column names"
        if "Expected" in message and "columns" in message:
            return self._ragged_line() or f"CSV has rows of different lengths: {message}"
        return f"CSV could not be parsed: {message}"

    def _ragged_line(self) -> str:
        """Names the first line whose field count differs from the header's (error path)."""
        with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    return (
                        f"CSV line {reader.line_num} has {len(row)} fields; the header has "
                        f"{len(header)}"
                    )
        return ""

    def _read_parquet(self) -> pa.Table:
        try:
            table = pq.read_table(self.path)
        except (pa.ArrowException, OSError) as exc:
            # pyarrow names the spool file; the caller knows no such path.
            reason = str(exc).replace(str(self.path), "the upload")
            raise InvalidArgument(
                f"not a readable Parquet file ({_shown(reason, 200)}); expected a complete "
                ".parquet file"
            ) from None
        for field in table.schema:
            kind = field.type
            if pa.types.is_nested(kind):
                raise InvalidArgument(
                    f"Parquet column {_shown(field.name)} has nested type {kind}; only flat "
                    "columns (numbers, strings, booleans, dates) can be a dataset"
                )
        return table.combine_chunks()


def _check_names(table: pa.Table, source: Source) -> None:
    seen: set[str] = set()
    for position, column in enumerate(table.column_names, start=1):
        if not column.strip():
            raise InvalidArgument(f"column {position} of the header has no name")
        if column in seen:
            raise InvalidArgument(f"the header names column {_shown(column)} twice")
        seen.add(column)


def _drop_unlabelled(
    table: pa.Table, label_column: str, source: Source
) -> tuple[pa.Table, list[str]]:
    """Rows without a label cannot be learned from: dropped, with a warning; all blank fails."""
    label = _with_nan_as_null(table.column(label_column))
    blank = label.null_count
    if blank == len(label):
        raise InvalidArgument(f"label column {_shown(label_column)} is blank in every row")
    if not blank:
        return table, []
    first = int(np.flatnonzero(label.is_null().to_numpy(zero_copy_only=False))[0])
    kept = table.filter(label.is_valid())
    warning = (
        f"{blank} rows have no label in column {label_column!r} (the first is "
        f"{source.row(first)}) and were left out"
    )
    return kept, [warning]


def _label(
    label: pa.ChunkedArray, task: str, name: str, source: Source
) -> tuple[pa.ChunkedArray, str, list[ValueCount]]:
    """The stored label, the task and, for classification, the classes in sorted order."""
    label = _with_nan_as_null(label)
    if pa.types.is_boolean(label.type) or pa.types.is_dictionary(label.type):
        label = label.cast(pa.string())
    if pa.types.is_string(label.type) or pa.types.is_large_string(label.type):
        _check_no_nul(label, name, source)
        if task in ("regression", "anomaly_detection"):
            numbers = _to_float(label, name, source, "as a regression target")
            return numbers, task, []
        task = "classification"
    elif pa.types.is_integer(label.type) or pa.types.is_floating(label.type):
        values = label.to_numpy().astype(np.float64)
        task = task or layout.infer_task(values)
        if task == "classification":
            if not layout.integral_labels(values):
                raise InvalidArgument(
                    "classification needs whole-number class labels (at most 2**53 in size) "
                    f"or class names; {name} has {_first_not_whole(values)}"
                )
            label = label.cast(pa.int64())
        else:
            label = label.cast(pa.float64())
    else:
        raise InvalidArgument(
            f"label column {_shown(name)} has type {label.type}; labels are numbers or words"
        )
    if task != "classification":
        return label, task, []
    counts = pc.value_counts(label).to_pylist()
    counts.sort(key=lambda item: item["values"])
    if len(counts) < 2:
        raise InvalidArgument(
            f"classification needs at least two classes, but every label in {_shown(name)} is "
            f"{_shown(str(counts[0]['values']))}; for data without classes upload with task "
            "TASK_ANOMALY_DETECTION"
        )
    if len(counts) > MAX_CLASSES:
        raise InvalidArgument(
            f"label column {_shown(name)} has {len(counts)} classes (at most {MAX_CLASSES}); "
            "for numbers, upload with task TASK_REGRESSION"
        )
    return label, task, [ValueCount(str(c["values"]), int(c["counts"])) for c in counts]


def _column(
    array: pa.ChunkedArray, name: str, given: Mapping[str, ColumnKind], source: Source
) -> tuple[pa.ChunkedArray, ColumnInfo, str]:
    """One feature column: converted to its kind's stored type, counted, and any warning."""
    array = _with_nan_as_null(_plain(array))
    _check_no_nul(array, name, source)
    kind = given.get(name)
    note = ""
    if kind is None:
        kind, note = _infer_kind(array, name)
    array = _convert(array, kind, name, source)
    return array, _describe(array, name, kind, given=name in given), note


def _plain(array: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary, date, time, decimal and large types as the few types kinds are made of."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return array.cast(kind.value_type)
    if pa.types.is_large_string(kind):
        return array.cast(pa.string())
    if pa.types.is_decimal(kind):
        return array.cast(pa.float64())
    if pa.types.is_temporal(kind):
        return array.cast(pa.string())
    return array


def _infer_kind(array: pa.ChunkedArray, name: str) -> tuple[ColumnKind, str]:
    valid = len(array) - array.null_count
    if valid == 0 or pa.types.is_null(array.type):
        return "ignored", f"column {name!r} is blank in every row: ignored"
    if pa.types.is_boolean(array.type):
        return "boolean", ""
    if pa.types.is_integer(array.type):
        if ID_NAME.search(name.strip()) and _every_value_differs(array):
            return "ignored", (
                f"column {name!r} is ignored: every value differs, like an id (give it a kind "
                "to use it)"
            )
        return "numeric", ""
    if pa.types.is_floating(array.type):
        return "numeric", ""
    if pa.types.is_string(array.type):
        # Free text shows in any few thousand values; splitting a million costs seconds.
        sample = array.drop_null().slice(0, TEXT_SAMPLE)
        mean_chars = pc.mean(pc.utf8_length(sample)).as_py() or 0.0
        words = pc.list_value_length(pc.utf8_split_whitespace(sample))
        mean_words = pc.mean(words).as_py() or 0.0
        if mean_chars >= TEXT_MEAN_CHARS or mean_words >= TEXT_MEAN_WORDS:
            return "text", ""
        if _every_value_differs(array):
            return "ignored", (
                f"column {name!r} is ignored: every value differs, like a name or an id (give "
                "it a kind to use it)"
            )
        return "categorical", ""
    return "ignored", f"column {name!r} has type {array.type}, which no kind takes: ignored"


def _every_value_differs(array: pa.ChunkedArray) -> bool:
    """No blank and no repeat, with rows enough to tell: a sample answers most columns."""
    if len(array) < MIN_ROWS_FOR_ID or array.null_count:
        return False
    sample = array.slice(0, TEXT_SAMPLE)
    if pc.count_distinct(sample).as_py() < len(sample):
        return False
    return bool(pc.count_distinct(array).as_py() == len(array))


def _convert(array: pa.ChunkedArray, kind: str, name: str, source: Source) -> pa.ChunkedArray:
    if kind == "ignored":
        return array
    if kind == "numeric":
        return _in_float32_range(_to_float(array, name, source, "numeric"), name, source)
    if kind in ("categorical", "text"):
        if pa.types.is_floating(array.type):  # 2.0 -> "2", not "2.0", when whole
            whole = pc.equal(pc.round(array), array)
            if pc.all(pc.fill_null(whole, True)).as_py():
                array = array.cast(pa.int64())
        return array.cast(pa.string()) if not pa.types.is_string(array.type) else array
    if kind == "boolean":
        return _to_bool(array, name, source)
    raise InvalidArgument(f"column {_shown(name)}: kind {kind!r} is not one of {KINDS}")


def _to_float(array: pa.ChunkedArray, name: str, source: Source, what: str) -> pa.ChunkedArray:
    if pa.types.is_boolean(array.type):
        return array.cast(pa.int8()).cast(pa.float64())
    if pa.types.is_string(array.type):
        try:
            array = pc.cast(pc.utf8_trim_whitespace(array), pa.float64())
        except pa.ArrowInvalid:
            row, value = _first_failure(array, float)
            raise InvalidArgument(
                f"column {_shown(name)} cannot be {what}: {source.row(row)} holds {_shown(value)}"
            ) from None
        array = _with_nan_as_null(array)
    try:
        return array.cast(pa.float64())
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(f"column {_shown(name)} cannot be {what}: {exc}") from None


def _in_float32_range(array: pa.ChunkedArray, name: str, source: Source) -> pa.ChunkedArray:
    beyond = pc.greater(pc.abs(array), FLOAT32_MAX)
    if pc.any(beyond).as_py():
        row = int(np.flatnonzero(beyond.to_numpy(zero_copy_only=False))[0])
        raise InvalidArgument(
            f"{source.row(row)}, column {_shown(name)}: {array[row].as_py()!r} is beyond "
            "float32's range (about ±3.4e38): models take numbers as float32"
        )
    return array


def _check_no_nul(array: pa.ChunkedArray, name: str, source: Source) -> None:
    if not pa.types.is_string(array.type):
        return
    nul = pc.match_substring(array, "\x00")
    if pc.any(nul).as_py():
        row = int(np.flatnonzero(pc.fill_null(nul, False).to_numpy(zero_copy_only=False))[0])
        raise InvalidArgument(f"{source.row(row)}, column {_shown(name)} holds a NUL character")


def _to_bool(array: pa.ChunkedArray, name: str, source: Source) -> pa.ChunkedArray:
    if pa.types.is_boolean(array.type):
        return array
    words = pc.utf8_lower(pc.utf8_trim_whitespace(array.cast(pa.string())))
    true, false = pc.is_in(words, pa.array(TRUE_WORDS)), pc.is_in(words, pa.array(FALSE_WORDS))
    bad = pc.and_(pc.is_valid(words), pc.invert(pc.or_(true, false)))
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        value = array[row].as_py()
        raise InvalidArgument(
            f"column {_shown(name)} cannot be boolean: {source.row(row)} holds "
            f"{_shown(str(value))} (booleans are {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})"
        )
    return pc.if_else(pc.is_valid(words), true, pa.scalar(None, pa.bool_()))


def _describe(array: pa.ChunkedArray, name: str, kind: ColumnKind, *, given: bool) -> ColumnInfo:
    info = ColumnInfo(
        name=name,
        kind=kind,
        dtype=_dtype(array.type),
        missing=array.null_count,
        given=given,
    )
    if kind in ("categorical", "boolean"):
        counts = pc.value_counts(array.drop_null()).to_pylist()
        info.distinct = len(counts)
        counts.sort(key=lambda item: (-item["counts"], str(item["values"])))
        info.top = [ValueCount(_text(c["values"]), int(c["counts"])) for c in counts[:TOP_VALUES]]
    elif not pa.types.is_null(array.type):
        info.distinct = pc.count_distinct(array).as_py()
    if kind == "numeric" and info.missing < len(array):
        extremes = pc.min_max(array).as_py()
        info.minimum, info.maximum = float(extremes["min"]), float(extremes["max"])
    return info


def _write(root: Path, name: str, table: pa.Table, info: layout.DatasetInfo) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if (root / name).exists():
        raise AlreadyExists(f"dataset {name!r} already exists; delete it first")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        pq.write_table(table, staging / layout.TABLE_FILE)
        info.fingerprint = layout.file_fingerprint(staging / layout.TABLE_FILE)
        info.size_bytes = (staging / layout.TABLE_FILE).stat().st_size
        info.created_at = datetime.now(UTC).isoformat()
        (staging / layout.INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
        try:
            os.replace(staging, root / name)
        except OSError:
            if (root / name).exists():  # a concurrent upload of the same name won
                raise AlreadyExists(f"dataset {name!r} already exists; delete it first") from None
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_table(directory: Path) -> pa.Table:
    """A stored table dataset, as ingestion wrote it."""
    return pq.read_table(directory / layout.TABLE_FILE)


# -- small helpers -------------------------------------------------------------------------


def _with_nan_as_null(array: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_floating(array.type):
        return pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)
    return array


def _dtype(kind: pa.DataType) -> str:
    if pa.types.is_floating(kind):
        return "float64"
    if pa.types.is_integer(kind):
        return "int64"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_null(kind):
        return "null"
    return "string"


def _first_failure(array: pa.ChunkedArray, parse: Any) -> tuple[int, str]:
    """The first non-missing value `parse` refuses (error path only: one cell at a time)."""
    for row, value in enumerate(array.to_pylist()):
        if value is None:
            continue
        try:
            parse(value)
        except (TypeError, ValueError):
            return row, str(value)
    return 0, ""


def _first_not_whole(values: np.ndarray) -> str:
    whole = np.isfinite(values) & (np.abs(values) <= layout.MAX_CLASS_LABEL)
    whole[whole] = np.equal(np.mod(values[whole], 1), 0)
    return str(values[~whole][0]) if (~whole).any() else ""


def _first_not_utf8(array: pa.ChunkedArray) -> int:
    for row, value in enumerate(array.to_pylist()):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return row
    return 0


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shown(text: str, limit: int = SHOWN) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _listed(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(_shown(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
