"""A cascade's calibration rows: the held-out rows of a dataset, as a model takes them.

Runs in a spawned worker (entry.run_calibration_rows) because reading a table needs pyarrow
and the split needs scikit-learn. It redoes the training jobs' own split
(training_data.split with the manifest's seed and fraction), so the rows are ones that
neither model of the cascade was trained on, and writes them as an .npz of plain arrays
(text as unicode, never pickled) for the serving process to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import layout
from service.datasets.schema import ColumnInfo
from service.errors import InvalidArgument
from service.training.spec import CalibrationRowsSpec

LABELS = "__labels__"


def write_rows(spec: CalibrationRowsSpec) -> dict[str, Any]:
    """Writes the held-out rows to spec.out_path; returns how many."""
    from service.worker import training_data

    dataset_dir = Path(spec.dataset_dir)
    info = layout.read_info(dataset_dir)
    if info.is_images:
        # Image models take the raw pixels (their front end is inside the graph).
        images, y = layout.load_arrays(dataset_dir)
        class_values = np.array([str(c["value"]) for c in info.classes])
        _, test_rows, _, y_test = training_data.split(
            np.arange(len(y)), y.astype(np.int64), "classification", spec.test_fraction,
            spec.split_seed,
        )  # fmt: skip
        feeds = {"input": images[test_rows]}
        labels = class_values[y_test]
    elif info.is_table:
        from service.worker import columns as table_columns
        from service.worker.datasets import tabular

        table = tabular.load_table(dataset_dir)
        raw = table_columns.read_columns(table, [ColumnInfo.from_dict(c) for c in info.columns])
        label = table.column(info.label_column).to_numpy(zero_copy_only=False)
        class_values, y = np.unique(label, return_inverse=True)
        _, test_rows, _, y_test = training_data.split(
            np.arange(len(y)), y.astype(np.int64), "classification", spec.test_fraction,
            spec.split_seed,
        )  # fmt: skip
        rows = raw.take(test_rows)
        feeds = {"input": rows.matrix()} if spec.inputs == ["input"] else rows.feeds()
        labels = np.array([str(v) for v in class_values[y_test]])
    else:
        X, y = layout.load_arrays(dataset_dir)
        y = training_data.targets(y, "classification")
        _, X_test, _, y_test = training_data.split(
            X, y, "classification", spec.test_fraction, spec.split_seed
        )
        feeds = {"input": X_test}
        labels = np.array([str(int(v)) for v in y_test])
    if set(feeds) != set(spec.inputs):
        raise InvalidArgument(
            f"dataset {info.name!r} gives inputs {sorted(feeds)}, but the models take "
            f"{sorted(spec.inputs)}"
        )
    if len(labels) > spec.max_rows:
        chosen = np.sort(np.random.default_rng(0).choice(len(labels), spec.max_rows, False))
        feeds = {name: array[chosen] for name, array in feeds.items()}
        labels = labels[chosen]
    arrays = {
        name: (array.astype(str) if array.dtype == object else array)
        for name, array in feeds.items()
    }
    arrays[LABELS] = labels
    with open(spec.out_path, "wb") as out:
        np.savez(out, **arrays)  # type: ignore[arg-type]
    return {"rows": len(labels)}
