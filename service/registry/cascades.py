"""Cascades: a cheap model A that answers the rows it is sure of, a costlier model B for the
rest. What a cascade is (its two stages, its threshold and the calibration curve that chose
it) and where it is kept: a small SQLite table of its own in the data directory, beside the
registry, so that it survives a restart and every serving worker of `--workers N` reads the
same cascades.

Versioned like models: creating a name again, or recalibrating it, stores a new version;
the newest is what the bare name serves. Standard library only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import FailedPrecondition, NotFound

CASCADES_FILE = "cascades.sqlite"


@dataclass(frozen=True)
class CurvePoint:
    """The cascade at one threshold on A's top probability, on the calibration rows."""

    threshold: float
    #: Share of rows sent on to B (A's top probability below the threshold).
    escalated: float
    accuracy: float
    #: Expected cost per 1 000 predictions: A on every row, B on the escalated ones.
    dollars_per_1k: float
    device_seconds_per_1k: float
    joules_per_1k: float
    #: Share of rows the cascade answers as B alone would (1 where it escalates them all).
    agreement: float = 1.0


@dataclass(frozen=True)
class StageCost:
    """One stage's serving cost per 1 000 predictions, as the ledger charged a probe of it
    on the calibration rows."""

    dollars_per_1k: float
    device_seconds_per_1k: float
    joules_per_1k: float
    batch_size: int


@dataclass(frozen=True)
class Cascade:
    """One version of a cascade: its stages (pinned versions), threshold and calibration."""

    name: str
    version: str
    first: str
    first_version: str
    then: str
    then_version: str
    #: What the threshold was chosen for: a target accuracy, or a cost cap (0 = not set).
    target_accuracy: float
    max_dollars_per_1k: float
    threshold: float
    #: Whether the target (or cap) was met on the calibration rows; when not, the threshold
    #: is the closest the curve came (the most accurate point, or the cheapest).
    target_met: bool
    dataset: str
    calibration_rows: int
    #: The chosen point, and A alone (threshold 0) and B alone on the same rows.
    chosen: CurvePoint
    first_alone: CurvePoint
    then_alone: CurvePoint
    first_cost: StageCost
    then_cost: StageCost
    curve: list[CurvePoint] = field(default_factory=list)
    #: The goal "within this much of B's accuracy" as asked (-1: another goal); the
    #: target_accuracy above is what it resolved to on the calibration rows.
    accuracy_within_then: float = -1.0
    #: The chosen threshold on rows the calibration did not see (the other half of the
    #: held-out split): accuracy, escalated share, and A and B alone there.
    evaluation: dict[str, float] = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Cascade:
        data: dict[str, Any] = json.loads(text)
        for key in ("chosen", "first_alone", "then_alone"):
            data[key] = CurvePoint(**data[key])
        for key in ("first_cost", "then_cost"):
            data[key] = StageCost(**data[key])
        data["curve"] = [CurvePoint(**point) for point in data["curve"]]
        return cls(**data)


class CascadeStore:
    """Cascade versions in <data_dir>/cascades.sqlite; thread-safe, one short transaction
    per call (readers in other worker processes see each commit)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / CASCADES_FILE
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cascades (name TEXT NOT NULL, version INTEGER NOT "
                "NULL, body TEXT NOT NULL, PRIMARY KEY (name, version))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS cascade_aliases (name TEXT NOT NULL, alias TEXT NOT "
                "NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL, "
                "PRIMARY KEY (name, alias))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=30, isolation_level="IMMEDIATE")

    def add(self, cascade: Cascade) -> Cascade:
        """Stores `cascade` as the name's next version and returns it numbered."""
        with self._lock, self._connect() as db:
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM cascades WHERE name = ?", (cascade.name,)
            ).fetchone()
            numbered = Cascade(
                **{
                    **cascade.__dict__,
                    "version": str(latest + 1),
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
            db.execute(
                "INSERT INTO cascades (name, version, body) VALUES (?, ?, ?)",
                (cascade.name, latest + 1, numbered.to_json()),
            )
        return numbered

    def all(self) -> list[Cascade]:
        """Every version of every cascade, by name then version."""
        with self._lock, self._connect() as db:
            rows = db.execute("SELECT body FROM cascades ORDER BY name, version").fetchall()
        return [Cascade.from_json(body) for (body,) in rows]

    def get(self, name: str, version: str = "") -> Cascade:
        """The version (the newest when empty); NotFound otherwise."""
        versions = [c for c in self.all() if c.name == name]
        if not versions:
            raise NotFound(f"cascade {name!r} not found")
        if not version:
            return versions[-1]
        for cascade in versions:
            if cascade.version == version:
                return cascade
        raise NotFound(
            f"cascade {name!r} has no version {version!r}; it has {[c.version for c in versions]}"
        )

    def delete(self, name: str, version: str = "") -> list[str]:
        """Deletes one version, or every version when empty; the versions deleted."""
        self.get(name, version)  # NotFound first
        with self._lock, self._connect() as db:
            if version:
                db.execute(
                    "DELETE FROM cascades WHERE name = ? AND version = ?", (name, int(version))
                )
                # Its aliases go with it: a later version may reuse the number.
                db.execute(
                    "DELETE FROM cascade_aliases WHERE name = ? AND version = ?",
                    (name, int(version)),
                )
                return [version]
            rows = db.execute("SELECT version FROM cascades WHERE name = ?", (name,)).fetchall()
            db.execute("DELETE FROM cascades WHERE name = ?", (name,))
            db.execute("DELETE FROM cascade_aliases WHERE name = ?", (name,))
        return [str(v) for (v,) in rows]

    def set_alias(self, name: str, alias: str, version: str) -> tuple[str, str, str]:
        """Points a cascade's alias at a version (a number, "latest" or "" for the newest,
        or another alias); (version, previous version or "", when)."""
        target = self._resolve(name, version)
        at = datetime.now(UTC).isoformat()
        with self._lock, self._connect() as db:
            row = db.execute(
                "SELECT version FROM cascade_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
            db.execute(
                "INSERT INTO cascade_aliases (name, alias, version, updated_at) VALUES "
                "(?, ?, ?, ?) ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, "
                "updated_at = excluded.updated_at",
                (name, alias, int(target), at),
            )
        return target, str(row[0]) if row else "", at

    def delete_alias(self, name: str, alias: str) -> str | None:
        """Removes a cascade's alias; the version it pointed at, None when there was none."""
        with self._lock, self._connect() as db:
            row = db.execute(
                "DELETE FROM cascade_aliases WHERE name = ? AND alias = ? RETURNING version",
                (name, alias),
            ).fetchone()
        return str(row[0]) if row else None

    def aliases(self) -> dict[str, dict[str, str]]:
        """name -> {alias: version} of every cascade alias whose version still exists."""
        with self._lock, self._connect() as db:
            rows = db.execute(
                "SELECT a.name, a.alias, a.version FROM cascade_aliases a JOIN cascades c "
                "ON a.name = c.name AND a.version = c.version ORDER BY a.name, a.alias"
            ).fetchall()
        by_name: dict[str, dict[str, str]] = {}
        for name, alias, version in rows:
            by_name.setdefault(name, {})[alias] = str(version)
        return by_name

    def _resolve(self, name: str, version: str) -> str:
        versions = [c.version for c in self.all() if c.name == name]
        if not versions:
            raise NotFound(f"cascade {name!r} not found")
        if not version or version == "latest":
            return versions[-1]
        if version.isdigit() and str(int(version)) in versions:
            return str(int(version))
        aliased = self.aliases().get(name, {}).get(version)
        if aliased is not None:
            return aliased
        raise NotFound(f"cascade {name!r} has no version or alias {version!r}; it has {versions}")

    def refuse_deleting_stages(self, name: str, versions: list[str]) -> None:
        """FailedPrecondition naming the cascades whose stages are among these versions of
        name: the registry asks before a delete without force (a forced delete leaves the
        cascade, which then answers NOT_FOUND naming the missing stage)."""
        doomed = set(versions)
        using = [
            cascade for cascade in self.all()
            if (cascade.first == name and cascade.first_version in doomed)
            or (cascade.then == name and cascade.then_version in doomed)
        ]  # fmt: skip
        if using:
            named = ", ".join(f"{c.name!r} version {c.version}" for c in using)
            raise FailedPrecondition(
                f"model {name!r} version(s) {sorted(doomed, key=int)} serve in cascade "
                f"{named}: delete the cascade first, or delete with force"
            )
