"""What a table dataset's columns are and how training uses them.

Standard library only: the serving process reads schemas (listing, `datasets show`, request
validation) and worker processes write them (ingestion) and train on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from service.errors import InvalidArgument

ColumnKind = Literal["numeric", "categorical", "boolean", "text", "ignored"]
KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical", "boolean", "text", "ignored")
#: The kinds a model takes as inputs.
MODEL_KINDS: frozenset[str] = frozenset({"numeric", "categorical", "boolean", "text"})
#: Values counted in `top` for categorical and boolean columns.
TOP_VALUES = 10


@dataclass
class ValueCount:
    value: str
    count: int


@dataclass
class ColumnInfo:
    """One column of a stored table: its kind, stored type and what ingestion counted."""

    name: str
    kind: ColumnKind
    #: Stored type: "float64", "int64", "string" or "bool".
    dtype: str
    missing: int = 0
    distinct: int = 0
    top: list[ValueCount] = field(default_factory=list)
    #: The kind was given at upload (True) or inferred (False).
    given: bool = False
    minimum: float = 0.0
    maximum: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnInfo:
        values = dict(data)
        values["top"] = [ValueCount(**item) for item in values.get("top", [])]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_column_kinds(given: Mapping[str, str]) -> dict[str, ColumnKind]:
    """Checks user-given kinds by name; InvalidArgument names the bad one."""
    kinds: dict[str, ColumnKind] = {}
    for column, kind in given.items():
        if not column:
            raise InvalidArgument("a column kind was given for an empty column name")
        if kind not in KINDS:
            raise InvalidArgument(
                f"column {column!r}: kind {kind!r} is not one of {', '.join(KINDS)}"
            )
        kinds[column] = kind  # type: ignore[assignment]
    return kinds


def model_columns(columns: list[ColumnInfo]) -> list[ColumnInfo]:
    """The columns a model of this table takes as inputs, in file order."""
    return [column for column in columns if column.kind in MODEL_KINDS]
