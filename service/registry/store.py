"""The model registry: <root>/<name>/<version>/{model.onnx, manifest.json} + a SQLite index.

Publishing renames a complete staging directory into place, so a crash never leaves a
half-written version visible; the index is reconciled with the directories on open, so a
crash between the rename and the index insert loses nothing either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from service.errors import InvalidArgument, NotFound
from service.registry.manifest import MODEL_FILE, Manifest

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_names (
    name TEXT PRIMARY KEY,
    next_version INTEGER NOT NULL
);
"""

# (event, name, versions): event is "published" or "deleted".
ChangeListener = Callable[[str, str, list[str]], None]


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            f"model name {name!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """Model versions on disk with a SQLite index; safe to call from several threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.staging_dir = root / "staging"
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "registry.sqlite3", check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._reconcile()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def on_change(self, listener: ChangeListener) -> None:
        """Calls listener(event, name, versions) after versions are published or deleted."""
        self._listeners.append(listener)

    def new_staging_dir(self, prefix: str) -> Path:
        path = self.staging_dir / f"{prefix}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def publish(
        self, name: str, staging: Path, amend: Callable[[Manifest], None] | None = None
    ) -> Manifest:
        """Moves a complete staging directory (model.onnx + manifest.json) into place.

        `amend` may complete the manifest once its version is known, before it is written.
        """
        validate_model_name(name)
        manifest = Manifest.read(staging)
        model_file = staging / MODEL_FILE
        with self._lock:
            row = self._db.execute(
                "SELECT next_version FROM model_names WHERE name = ?", (name,)
            ).fetchone()
            version = int(row[0]) if row else 1
            manifest.name = name
            manifest.version = str(version)
            manifest.checksum = sha256_file(model_file)
            manifest.onnx_bytes = model_file.stat().st_size
            manifest.created_at = manifest.created_at or datetime.now(UTC).isoformat()
            if amend is not None:
                amend(manifest)
            manifest.write(staging)
            target = self.models_dir / name / str(version)
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_tree(staging)
            os.rename(staging, target)
            with self._db:
                self._db.execute(
                    "INSERT INTO models (name, version, manifest) VALUES (?, ?, ?)",
                    (name, version, manifest.to_json()),
                )
                self._db.execute(
                    "INSERT INTO model_names (name, next_version) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET next_version = excluded.next_version",
                    (name, version + 1),
                )
        log.info("published %s version %s", name, version)
        self._notify("published", name, [str(version)])
        return manifest

    def manifests(self, name: str = "", latest_only: bool = False) -> list[Manifest]:
        with self._lock:
            if name:
                rows = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? ORDER BY version", (name,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT manifest FROM models ORDER BY name, version"
                ).fetchall()
        manifests = [Manifest.from_dict(json.loads(row[0])) for row in rows]
        if latest_only:
            newest: dict[str, Manifest] = {}
            for manifest in manifests:
                newest[manifest.name] = manifest
            manifests = list(newest.values())
        return manifests

    def versions(self, name: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version FROM models WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    def get(self, name: str, version: str = "") -> Manifest:
        """The named version, or the latest when version is empty; NotFound otherwise."""
        with self._lock:
            if version:
                if not version.isdigit():
                    raise NotFound(f"model {name!r} has no version {version!r}")
                row = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? AND version = ?",
                    (name, int(version)),
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT manifest FROM models WHERE name = ? ORDER BY version DESC LIMIT 1",
                    (name,),
                ).fetchone()
        if row is None:
            known = self.versions(name)
            if known:
                raise NotFound(f"model {name!r} has no version {version!r}; versions: {known}")
            raise NotFound(f"model {name!r} not found")
        return Manifest.from_dict(json.loads(row[0]))

    def model_path(self, manifest: Manifest) -> Path:
        return self.models_dir / manifest.name / manifest.version / MODEL_FILE

    def is_latest(self, manifest: Manifest) -> bool:
        versions = self.versions(manifest.name)
        return bool(versions) and versions[-1] == manifest.version

    def delete(self, name: str, version: str = "") -> list[str]:
        """Deletes one version, or all of a name; returns the versions removed."""
        removed = [self.get(name, version).version] if version else self.versions(name)
        if not removed:
            raise NotFound(f"model {name!r} not found")
        with self._lock, self._db:
            for v in removed:
                self._db.execute(
                    "DELETE FROM models WHERE name = ? AND version = ?", (name, int(v))
                )
        for v in removed:
            # Index row first, files second: a crash in between leaves only an orphan
            # directory, which _reconcile re-indexes rather than serving a missing file.
            directory = self.models_dir / name / v
            trash = self.staging_dir / f"deleted-{uuid.uuid4().hex[:8]}"
            if directory.exists():
                os.rename(directory, trash)
                shutil.rmtree(trash, ignore_errors=True)
        log.info("deleted %s versions %s", name, removed)
        self._notify("deleted", name, removed)
        return removed

    def _notify(self, event: str, name: str, versions: list[str]) -> None:
        for listener in self._listeners:
            listener(event, name, versions)

    def _reconcile(self) -> None:
        """Makes the index match the directories after a crash; clears stale staging."""
        for leftover in self.staging_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        with self._lock, self._db:
            indexed = {
                (name, str(version))
                for name, version in self._db.execute("SELECT name, version FROM models")
            }
            on_disk: set[tuple[str, str]] = set()
            for model_file in self.models_dir.glob(f"*/*/{MODEL_FILE}"):
                version_dir = model_file.parent
                key = (version_dir.parent.name, version_dir.name)
                if not version_dir.name.isdigit():
                    continue
                on_disk.add(key)
                if key not in indexed:
                    manifest = Manifest.read(version_dir)
                    self._db.execute(
                        "INSERT INTO models (name, version, manifest) VALUES (?, ?, ?)",
                        (key[0], int(key[1]), manifest.to_json()),
                    )
                    log.warning("re-indexed %s version %s found on disk", *key)
            for name, version in indexed - on_disk:
                self._db.execute(
                    "DELETE FROM models WHERE name = ? AND version = ?", (name, int(version))
                )
                log.warning("dropped index entry %s version %s: files are gone", name, version)
            for name, top in self._db.execute(
                "SELECT name, MAX(version) FROM models GROUP BY name"
            ).fetchall():
                self._db.execute(
                    "INSERT INTO model_names (name, next_version) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET next_version = "
                    "MAX(model_names.next_version, excluded.next_version)",
                    (name, top + 1),
                )


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
