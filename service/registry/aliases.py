"""Aliases: names like "champion" for one version of a model, moved on evidence.

An alias stands wherever a version does (ModelInfer, ModelMetadata, ModelReady, GetModel,
...). Every change is kept in the alias history with the evidence that justified it (JSON:
the gates checked and their figures, or why it was removed). Pure standard library: the
metadata stores and the serving index share these types.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from service.errors import FailedPrecondition, InvalidArgument, NotFound

#: Always the highest version; no alias may take its name.
LATEST = "latest"
# A letter first: an alias is never read as a version number.
ALIAS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}\Z")


def validate_alias(alias: str) -> str:
    if alias.lower() == LATEST:
        raise InvalidArgument(
            f"alias {alias!r} is reserved: 'latest' always means the highest version"
        )
    if not ALIAS_PATTERN.match(alias):
        raise InvalidArgument(
            f"alias {alias!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter (a number would read as a version)"
        )
    return alias


def is_alias_name(text: str) -> bool:
    """Whether text could name an alias (so a request for it is a question about one)."""
    return bool(ALIAS_PATTERN.match(text)) and text.lower() != LATEST


@dataclass(frozen=True)
class Alias:
    """One alias as it stands now."""

    name: str
    alias: str
    version: str
    #: ISO 8601, UTC: when it last moved here.
    updated_at: str


@dataclass(frozen=True)
class AliasEvent:
    """One change of an alias: set, moved, or removed (version "")."""

    name: str
    alias: str
    #: The version it points at after the change; "" when it was removed.
    version: str
    #: The version it pointed at before; "" when it was new.
    previous: str
    at: str
    evidence: dict[str, Any] = field(default_factory=dict)


def encode_evidence(evidence: dict[str, Any] | None) -> str:
    """Strict JSON: a NaN or infinite figure (an r2 of a constant target) is stored as null."""
    return json.dumps(_finite(evidence or {}), sort_keys=True, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def decode_evidence(text: str | None) -> dict[str, Any]:
    decoded = json.loads(text) if text else {}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def aliased_refusal(name: str, held: list[Alias]) -> FailedPrecondition:
    """The refusal of a delete (without force) of versions aliases point at."""
    serving = ", ".join(f"{a.alias!r} -> version {a.version}" for a in held)
    return FailedPrecondition(
        f"model {name!r} is served under alias {serving}: move or delete the alias first, "
        "or delete with force"
    )


@dataclass(frozen=True)
class Shadow:
    """A second model an alias's traffic is also run through, off the request's path, to
    compare it with the alias's own model on live requests."""

    name: str
    alias: str
    #: The shadow model's name, and its version: a number, "" (the latest) or an alias.
    shadow: str
    shadow_version: str
    #: The share of the alias's requests also sent to the shadow, in (0, 1].
    sample_rate: float
    updated_at: str = ""


def no_alias_to_shadow(name: str, alias: str) -> NotFound:
    return NotFound(f"model {name!r} has no alias {alias!r} to shadow: set the alias first")
