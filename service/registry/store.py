"""The model registry: <root>/<name>/<version>/{model.onnx, manifest.json} + a SQLite index.

Publishing renames a complete staging directory into place, so a crash never leaves a
half-written version visible; the index is reconciled with the directories on open, so a
crash between the rename and the index insert loses nothing either. tests/test_faults.py
kills a real server at both points (PARADIGM_FAULT_INJECT, below) and checks that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from service.errors import (
    InvalidArgument,
    NotFound,
    storage_error,
)
from service.registry.manifest import MODEL_FILE, Manifest

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
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

# Test-only: tests/test_faults.py sets PARADIGM_FAULT_INJECT=<point> (for example
# "publish:after-rename") on a server subprocess, which then SIGKILLs itself at that point,
# so that a crash lands exactly where the recovery code must cope with it. Nobody sets it
# in production; reading one variable is nothing beside a publish's fsyncs.
FAULT_VARIABLE = "PARADIGM_FAULT_INJECT"


def fault_point(point: str) -> None:
    """Test-only crash point: see FAULT_VARIABLE."""
    if os.environ.get(FAULT_VARIABLE) == point:
        log.warning("%s=%s: killing this process on purpose", FAULT_VARIABLE, point)
        os.kill(os.getpid(), signal.SIGKILL)


_MAX_VERSION_DIGITS = 18


def check_version(name: str, version: str) -> None:
    """NotFound for a version no model can have: the registry numbers versions 1, 2, ...

    Checked before the registry sees it: "²" passes str.isdigit() but not int(), and 30
    digits overflow SQLite's integers; both used to end as INTERNAL.
    """
    if version and not (
        version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS
    ):
        raise NotFound(
            f"model {name!r} has no version {version!r}: versions are whole numbers "
            "like '1'; leave it empty for the latest"
        )


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name):  # \Z: a trailing newline is not a name
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
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            # SQLite opens an unwritable database read-only without a word, and removing
            # stale staging ignores errors: without this probe a read-only data directory
            # would start "fine" and fail at the first publish.
            _probe_writable(self.staging_dir)
            self._db = sqlite3.connect(root / "registry.sqlite3", check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._reconcile()
        except (OSError, sqlite3.Error) as exc:
            error = storage_error(exc, f"cannot write to {root}")
            if error is None:
                raise
            raise error from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def on_change(self, listener: ChangeListener) -> None:
        """Calls listener(event, name, versions) after versions are published or deleted."""
        self._listeners.append(listener)

    def new_staging_dir(self, prefix: str) -> Path:
        path = self.staging_dir / f"{prefix}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            error = storage_error(exc, "cannot start the job")
            if error is None:
                raise
            raise error from exc
        return path

    def publish(
        self,
        name: str,
        staging: Path,
        amend: Callable[[Manifest], None] | None = None,
        *,
        job_id: str = "",
    ) -> Manifest:
        """Moves a complete staging directory (model.onnx + manifest.json) into place.

        `amend` may complete the manifest once its version is known, before it is written.
        A failed write (disk full, read-only) raises the caller's error and leaves every
        earlier version as it was; the caller removes the staging directory.
        """
        validate_model_name(name)
        try:
            return self._publish(name, staging, amend, job_id)
        except (OSError, sqlite3.Error) as exc:
            error = storage_error(exc, f"could not publish model {name!r}")
            if error is None:
                raise
            raise error from exc

    def _publish(
        self,
        name: str,
        staging: Path,
        amend: Callable[[Manifest], None] | None,
        job_id: str,
    ) -> Manifest:
        manifest = Manifest.read(staging)
        model_file = staging / MODEL_FILE
        with self._lock:
            row = self._db.execute(
                "SELECT next_version FROM model_names WHERE name = ?", (name,)
            ).fetchone()
            version = int(row[0]) if row else 1
            manifest.name = name
            manifest.version = str(version)
            manifest.job_id = job_id
            manifest.checksum = sha256_file(model_file)
            manifest.onnx_bytes = model_file.stat().st_size
            manifest.created_at = manifest.created_at or datetime.now(UTC).isoformat()
            if amend is not None:
                amend(manifest)
            manifest.write(staging)
            target = self.models_dir / name / str(version)
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_tree(staging)
            fault_point("publish:before-rename")
            os.rename(staging, target)
            try:
                _fsync_directory(target.parent)
                fault_point("publish:after-rename")
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
            except BaseException:
                # Not indexed, so not published: move it back for the caller to remove,
                # or the next publish of this name would collide with it.
                try:
                    os.rename(target, staging)
                except OSError:
                    log.exception("could not withdraw %s; re-indexed at next start", target)
                raise
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
        check_version(name, version)
        with self._lock:
            if version:
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
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        with self._lock, self._db:
            indexed = {
                (name, str(version))
                for name, version in self._db.execute("SELECT name, version FROM models")
            }
            on_disk: set[tuple[str, str]] = set()
            highest: dict[str, int] = {}
            for version_dir in self.models_dir.glob("*/*"):
                name, version = version_dir.parent.name, version_dir.name
                if not version.isdigit():
                    continue
                # Any numbered directory, servable or not, keeps its number from reuse.
                highest[name] = max(highest.get(name, 0), int(version))
                if not (version_dir / MODEL_FILE).exists():
                    continue
                key = (name, version)
                if key not in indexed:
                    try:
                        manifest = Manifest.read(version_dir)
                    except (OSError, ValueError, KeyError, TypeError) as exc:
                        log.error("not serving %s: unreadable manifest (%s)", version_dir, exc)
                        continue
                    self._db.execute(
                        "INSERT INTO models (name, version, manifest) VALUES (?, ?, ?)",
                        (name, int(version), manifest.to_json()),
                    )
                    log.warning("re-indexed %s version %s found on disk", *key)
                on_disk.add(key)
            for name, version in indexed - on_disk:
                self._db.execute(
                    "DELETE FROM models WHERE name = ? AND version = ?", (name, int(version))
                )
                log.warning("dropped index entry %s version %s: files are gone", name, version)
            tops = self._db.execute("SELECT name, MAX(version) FROM models GROUP BY name")
            for name, top in tops.fetchall():
                highest[name] = max(highest.get(name, 0), int(top))
            for name, top in highest.items():
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


def _fsync_directory(directory: Path) -> None:
    """Makes a rename into directory durable (the entry lives in the directory's data)."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _probe_writable(directory: Path) -> None:
    probe = directory / f".probe-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    probe.unlink()
