"""The one datatype table and the one NodeArg -> TensorSpec conversion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from service.datatypes import (
    BY_ORT_TYPE,
    DATATYPES,
    WIRE_DTYPES,
    NotATensor,
    datatype_of,
    tensor_spec,
)
from service.registry.manifest import TensorSpec


@dataclass
class Node:
    name: str
    type: str
    shape: list[int | str | None] | None


def test_every_datatype_round_trips_through_numpy_and_ort() -> None:
    assert sorted(DATATYPES) == sorted(
        ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
         "FP16", "FP32", "FP64", "BYTES"]
    )  # fmt: skip
    for name, datatype in DATATYPES.items():
        assert BY_ORT_TYPE[datatype.ort_type] is datatype
        assert datatype_of(np.empty(1, dtype=datatype.dtype)) == name
        assert WIRE_DTYPES[name].itemsize == (datatype.size or WIRE_DTYPES[name].itemsize)
    assert DATATYPES["BYTES"].size == 0 and DATATYPES["FP16"].contents_field is None
    assert DATATYPES["BYTES"].config_type == "TYPE_STRING"


def test_tensor_spec_makes_free_dims_minus_one() -> None:
    node = Node("x", "tensor(float)", ["batch", 4, None, -3])
    assert tensor_spec(node) == TensorSpec("x", "FP32", (-1, 4, -1, -1))
    assert tensor_spec(Node("s", "tensor(string)", None)) == TensorSpec("s", "BYTES", ())


@pytest.mark.parametrize(
    ("type_", "says"),
    [("seq(map(int64,tensor(float)))", "zipmap=False"), ("tensor(bfloat16)", "no OIP v2")],
)
def test_tensor_spec_refuses_what_no_tensor_carries(type_: str, says: str) -> None:
    with pytest.raises(NotATensor, match=r"'out'.*" + says.replace("(", r"\(")):
        tensor_spec(Node("out", type_, [-1]))
