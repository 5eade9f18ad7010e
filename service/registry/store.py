"""The model registry: versions of named models, their metadata and their files.

A ModelRegistry composes one MetadataStore (service/registry/metadata.py: SQLite in the data
directory, or PostgreSQL shared by replicas) and one ArtifactStore (service/registry/
artifacts.py: <data_dir>/models, a shared directory, or an S3 bucket). `open_registry`
picks them from the settings.

The default (SQLite + <data_dir>/models) belongs to one server: publishing renames a
complete staging directory into place, so a crash never leaves a half-written version
visible, and the index is reconciled with the directories on open, so a crash between the
rename and the index insert loses nothing either. tests/test_faults.py kills a real server
at both points (PARADIGM_FAULT_INJECT, service/registry/artifacts.py) and checks that.

A shared metadata store is written by several servers, so nothing is reconciled
destructively (a version without a row may be another server's publish in progress). A
publish there reserves its number first (atomic in the database), writes the files, then
inserts the row: the row is the commit point, so a crash leaves at most files nobody
refers to, never a row without files. Each server learns of versions published or deleted
elsewhere by polling `refresh` (service/app.py).
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import (
    InvalidArgument,
    NotFound,
    ParadigmError,
    storage_error,
)
from service.registry.aliases import (
    LATEST,
    Alias,
    AliasEvent,
    Shadow,
    is_alias_name,
    validate_alias,
)
from service.registry.artifacts import FAULT_VARIABLE as FAULT_VARIABLE
from service.registry.artifacts import (
    ArtifactStore,
    LocalArtifacts,
    fault_point,
    open_artifacts,
    sha256_file,
)
from service.registry.manifest import MODEL_FILE, Manifest
from service.registry.metadata import MetadataStore, SqliteMetadata, open_metadata

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")

# (event, name, versions): event is "published" or "deleted".
ChangeListener = Callable[[str, str, list[str]], None]
# (name, {alias: version} as they now stand): after any alias of name was set, moved or
# removed (removed with a deleted version too), here or by another replica.
AliasListener = Callable[[str, dict[str, str]], None]

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


@dataclass(frozen=True)
class Change:
    """Versions of one name that appeared or went away: what listeners are told."""

    event: str  # "published", "deleted", or "aliased"
    name: str
    #: The versions published or deleted; for "aliased", the aliases that changed.
    versions: list[str]


@contextmanager
def _storage_errors(doing: str) -> Iterator[None]:
    """A full or read-only disk as the caller's error (service/errors.storage_error)."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        error = storage_error(exc, doing)
        if error is None:
            raise
        raise error from exc


class ModelRegistry:
    """Versions in a metadata store, their files in an artifact store; thread-safe.

    `ModelRegistry(root)` is the default: SQLite and <root>/models, owned by one server.
    """

    def __init__(
        self,
        root: Path,
        metadata: MetadataStore | None = None,
        artifacts: ArtifactStore | None = None,
        *,
        follower: bool = False,
    ) -> None:
        """follower: another process of this server (the job owner of `--workers N`)
        publishes into these stores; this one only reads them, polls for changes and
        leaves staging and crash repair to the owner."""
        self.root = root
        self._follower = follower
        self.staging_dir = root / "staging"
        self._lock = threading.Lock()  # this server's publishes, one at a time
        # Held while the metadata changes together with _known, and while refresh compares
        # them: a version published or deleted here is never announced twice.
        self._known_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._alias_listeners: list[AliasListener] = []
        self._delete_guards: list[Callable[[str, list[str]], None]] = []
        opened: list[MetadataStore] = []
        try:
            with _storage_errors(f"cannot write to {root}"):
                if not follower:
                    self.staging_dir.mkdir(parents=True, exist_ok=True)
                    # SQLite opens an unwritable database read-only without a word, and
                    # removing stale staging ignores errors: without this probe a read-only
                    # data directory would start "fine" and fail at the first publish.
                    _probe_writable(self.staging_dir)
                self._artifacts = artifacts or LocalArtifacts(root / "models")
                if metadata is None:
                    metadata = SqliteMetadata(root / "registry.sqlite3")
                    opened.append(metadata)
                self._metadata = metadata
                # Staging belongs to this server alone, whatever the stores.
                if not follower:
                    _clear_staging(self.staging_dir)
                if not self.shared and isinstance(self._artifacts, LocalArtifacts):
                    self._reconcile(self._artifacts)
                # The marker before the keys: a change in between is seen again next poll.
                self._marker = self._metadata.generation()
                self._known = self._metadata.keys()
                self._aliases = _alias_map(self._metadata.aliases())
                self._shadows = _shadow_map(self._metadata.shadows())
                # Versions read straight from a shared store before refresh knew them (a
                # replica may load a version published and deleted between two polls):
                # their deletion must be announced all the same, or they stay loaded.
                self._seen: set[tuple[str, str]] = set()
        except BaseException:
            for store in opened:
                store.close()
            raise

    @property
    def shared(self) -> bool:
        """True when other servers (or, for a follower, the owner) publish into the same
        metadata store: changes are found by polling."""
        return self._metadata.shared or self._follower

    def describe(self) -> str:
        return f"metadata in {self._metadata.describe()}, files in {self._artifacts.describe()}"

    def close(self) -> None:
        with self._lock:
            self._metadata.close()

    def on_change(self, listener: ChangeListener) -> None:
        """Calls listener(event, name, versions) after versions are published or deleted."""
        self._listeners.append(listener)

    def guard_deletes(self, guard: Callable[[str, list[str]], None]) -> None:
        """Calls guard(name, versions) before a delete without force; it raises to refuse
        (cascades refuse deleting their stages)."""
        self._delete_guards.append(guard)

    def on_alias_change(self, listener: AliasListener) -> None:
        """Calls listener(name, {alias: version}) after name's aliases changed."""
        self._alias_listeners.append(listener)

    def known_aliases(self) -> dict[str, dict[str, str]]:
        """name -> {alias: version}, from memory (kept current like known_versions)."""
        with self._known_lock:
            return _by_name(self._aliases)

    def shadow_of(self, name: str, alias: str) -> Shadow | None:
        """The alias's shadow as this server knows it now: a dict lookup, for every request
        made through an alias (the map is replaced on change, never mutated in place)."""
        return self._shadows.get((name, alias))

    def shadows(self) -> list[Shadow]:
        """Every alias's shadow as this server knows them now."""
        return list(self._shadows.values())

    def set_shadow(self, shadow: Shadow) -> Shadow:
        """Gives an alias a shadow model; NotFound when the alias or the shadow model is
        unknown (the shadow's version is resolved on each request, so "latest" follows)."""
        validate_model_name(shadow.name)
        validate_alias(shadow.alias)
        validate_model_name(shadow.shadow)
        self.get(shadow.shadow, shadow.shadow_version)
        with self._known_lock:
            stored = self._metadata.set_shadow(shadow)
            self._shadows = _shadow_map(self._metadata.shadows())
        log.info("alias %s of %s shadowed by %s:%s at %.3g", shadow.alias, shadow.name,
                 shadow.shadow, shadow.shadow_version or LATEST, shadow.sample_rate)  # fmt: skip
        self._notify_aliases(shadow.name)
        return stored

    def clear_shadow(self, name: str, alias: str) -> None:
        """Removes an alias's shadow; NotFound when it had none."""
        with self._known_lock:
            had = self._metadata.clear_shadow(name, alias)
            self._shadows = _shadow_map(self._metadata.shadows())
        if not had:
            raise NotFound(f"alias {alias!r} of model {name!r} has no shadow")
        self._notify_aliases(name)

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
        """Publishes a complete staging directory (model.onnx + manifest.json).

        `amend` may complete the manifest once its version is known, before it is written.
        A failed write (disk full, read-only) raises the caller's error and leaves every
        earlier version as it was; the caller removes the staging directory.
        """
        validate_model_name(name)
        with _storage_errors(f"could not publish model {name!r}"):
            return self._publish(name, staging, amend, job_id)

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
            # Shared: the number is claimed in the database before any file is written, so
            # two servers publishing one name never write to the same place. Single-server:
            # the number is taken by the commit itself, and a crash before it reuses it.
            version = (
                self._metadata.reserve_version(name)
                if self.shared
                else self._metadata.next_version(name)
            )
            manifest.name = name
            manifest.version = str(version)
            manifest.job_id = job_id
            manifest.checksum = sha256_file(model_file)
            manifest.onnx_bytes = model_file.stat().st_size
            manifest.created_at = manifest.created_at or datetime.now(UTC).isoformat()
            if amend is not None:
                amend(manifest)
            manifest.write(staging)
            self._artifacts.put(name, str(version), staging)
            try:
                fault_point("publish:after-rename")
                with self._known_lock:
                    self._metadata.insert(manifest)  # the commit point
                    self._known.add((name, str(version)))
            except BaseException:
                self._withdraw(name, str(version), staging)
                raise
        log.info("published %s version %s", name, version)
        self._notify("published", name, [str(version)])
        return manifest

    def _withdraw(self, name: str, version: str, staging: Path) -> None:
        """Not committed, so not published: take the files back."""
        if self.shared:
            # The commit may have landed with its reply lost: removing the files could
            # leave a row without them. Unreferenced files under a reserved number harm
            # nobody (the number is never handed out again).
            log.warning("%s version %s: commit failed; its files stay in %s unreferenced",
                        name, version, self._artifacts.describe())  # fmt: skip
            return
        try:
            # Moved back for the caller to remove, or the next publish of this name would
            # collide with it.
            self._artifacts.withdraw(name, version, staging)
        except (OSError, ParadigmError):
            log.exception("could not withdraw %s version %s; re-indexed at next start",
                          name, version)  # fmt: skip

    def manifests(self, name: str = "", latest_only: bool = False) -> list[Manifest]:
        manifests = self._metadata.manifests(name)
        if latest_only:
            newest: dict[str, Manifest] = {}
            for manifest in manifests:
                newest[manifest.name] = manifest
            manifests = list(newest.values())
        return manifests

    def versions(self, name: str) -> list[str]:
        return self._metadata.versions(name)

    def known_versions(self) -> set[tuple[str, str]]:
        """Every (name, version) this server knows of, from memory: what it published,
        deleted or learnt by `refresh`. Listeners of `on_change` hear of every change to it."""
        with self._known_lock:
            return set(self._known)

    def get(self, name: str, version: str = "") -> Manifest:
        """The named version, or the latest when version is empty or "latest", or the one
        an alias points at; NotFound otherwise."""
        version = self._version_of(name, version)
        manifest = self._metadata.get(name, version)
        if manifest is None:
            known = self.versions(name)
            if known:
                raise NotFound(f"model {name!r} has no version {version!r}; versions: {known}")
            raise NotFound(f"model {name!r} not found")
        key = (manifest.name, manifest.version)
        if self.shared and key not in self._known:
            with self._known_lock:
                if key not in self._known:
                    self._seen.add(key)
        return manifest

    def model_path(self, manifest: Manifest) -> Path:
        """A local model.onnx of the version. May download it (S3): call it off the loop."""
        return self._artifacts.local_path(manifest)

    def is_latest(self, manifest: Manifest) -> bool:
        versions = self.versions(manifest.name)
        return bool(versions) and versions[-1] == manifest.version

    def _version_of(self, name: str, version: str) -> str:
        """A version number ("" for the latest) from a number, "latest" or an alias."""
        if version == LATEST:
            return ""
        if version and is_alias_name(version):
            aliases = self._metadata.aliases(name)
            for alias in aliases:
                if alias.alias == version:
                    return alias.version
            versions = self.versions(name)
            if not versions:
                raise NotFound(f"model {name!r} not found")
            raise NotFound(no_alias(name, version, versions, [a.alias for a in aliases]))
        check_version(name, version)
        return version

    def delete(self, name: str, version: str = "", *, force: bool = False) -> list[str]:
        """Deletes one version, or all of a name; returns the versions removed.

        A version an alias points at is kept (FailedPrecondition naming the alias) unless
        `force`, which removes its aliases with it (recorded in their history)."""
        removed = [self.get(name, version).version] if version else self.versions(name)
        if not removed:
            raise NotFound(f"model {name!r} not found")
        if not force:
            for guard in self._delete_guards:
                guard(name, removed)
        with self._known_lock:
            # The alias check is the store's, in the delete's own transaction: no replica
            # can alias a version between a check here and the delete.
            held = self._metadata.delete(name, removed, force=force)
            self._known.difference_update((name, v) for v in removed)
            gone = {(name, a.alias) for a in held}
            self._aliases = {k: v for k, v in self._aliases.items() if k not in gone}
            self._shadows = {k: v for k, v in self._shadows.items() if k not in gone}
        for v in removed:
            # Index row first, files second: a crash in between leaves only orphan files
            # (which _reconcile re-indexes on a single server) rather than a row whose file
            # is missing.
            try:
                self._artifacts.delete(name, v)
            except ParadigmError as exc:  # deleted all the same: nothing refers to them
                log.warning("deleted %s version %s, but its files stay: %s", name, v, exc)
        log.info("deleted %s versions %s", name, removed)
        self._notify("deleted", name, removed)
        if held:
            log.info("removed aliases %s of %s with their versions", [a.alias for a in held], name)
            self._notify_aliases(name)
        return removed

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        evidence: dict[str, Any] | None = None,
        *,
        expected: str | None = None,
    ) -> AliasEvent:
        """Points alias at a version (a number, "latest", or another alias), recording the
        evidence in its history. `expected`: the version the caller checked the alias at
        ("" for none); FailedPrecondition if it has moved since."""
        validate_model_name(name)
        validate_alias(alias)
        target = self.get(name, version).version
        with self._known_lock:
            event = self._metadata.set_alias(name, alias, target, evidence or {}, expected)
            self._aliases[(name, alias)] = target
        log.info("alias %s of %s: version %s (was %s)", alias, name, target,
                 event.previous or "unset")  # fmt: skip
        self._notify_aliases(name)
        return event

    def delete_alias(
        self, name: str, alias: str, evidence: dict[str, Any] | None = None
    ) -> AliasEvent:
        """Removes an alias (NotFound when there is none), recording why."""
        validate_model_name(name)
        validate_alias(alias)
        with self._known_lock:
            event = self._metadata.delete_alias(name, alias, evidence or {})
            self._aliases.pop((name, alias), None)
            self._shadows = {k: v for k, v in self._shadows.items() if k != (name, alias)}
        if event is None:
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        log.info("alias %s of %s removed (was version %s)", alias, name, event.previous)
        self._notify_aliases(name)
        return event

    def aliases(self, name: str = "") -> list[Alias]:
        """The aliases as they stand in the store (of one name when given)."""
        return self._metadata.aliases(name)

    def alias_history(self, name: str, alias: str = "") -> list[AliasEvent]:
        """Every change of name's aliases (of one when given), oldest first."""
        return self._metadata.alias_history(name, alias)

    def _notify_aliases(self, name: str) -> None:
        current = self.known_aliases().get(name, {})
        for listener in self._alias_listeners:
            listener(name, dict(current))

    def refresh(self) -> list[Change]:
        """Versions published or deleted by other servers since the last look.

        Blocking (one tiny query when nothing changed): call it off the event loop, then
        pass the result to `announce` on the loop. Only one caller at a time.
        """
        marker = self._metadata.generation()
        if marker == self._marker:
            return []
        with self._known_lock:
            current = self._metadata.keys()
            aliases = _alias_map(self._metadata.aliases())
            self._shadows = _shadow_map(self._metadata.shadows())
            appeared = current - self._known
            gone = (self._known | self._seen) - current
            moved = {
                key for key in aliases.keys() | self._aliases.keys()
                if aliases.get(key) != self._aliases.get(key)
            }  # fmt: skip
            self._known, self._seen, self._aliases = current, set(), aliases
        self._marker = marker
        for name, version in gone:
            self._artifacts.forget(name, version)
        return [
            *_group("published", appeared),
            *_group("deleted", gone),
            *_group("aliased", moved, numbered=False),
        ]

    def announce(self, changes: list[Change]) -> None:
        """Tells the listeners of changes found by refresh; a failing listener is logged."""
        for change in changes:
            log.info("%s elsewhere: %s versions %s", change.event, change.name, change.versions)
            if change.event == "aliased":
                current = self.known_aliases().get(change.name, {})
                for alias_listener in self._alias_listeners:
                    try:
                        alias_listener(change.name, dict(current))
                    except Exception:
                        log.exception("registry alias listener failed on %s", change)
                continue
            for listener in self._listeners:
                try:
                    listener(change.event, change.name, change.versions)
                except Exception:
                    log.exception("registry listener failed on %s", change)

    def _notify(self, event: str, name: str, versions: list[str]) -> None:
        for listener in self._listeners:
            listener(event, name, versions)

    def _reconcile(self, artifacts: LocalArtifacts) -> None:
        """Makes the index match the directories after a crash (single-server stores)."""
        artifacts.sweep()
        indexed = self._metadata.keys()
        on_disk: set[tuple[str, str]] = set()
        highest: dict[str, int] = {}
        for version_dir in artifacts.models_dir.glob("*/*"):
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
                # The directory's name is the truth: the row is keyed by where the file is.
                manifest.name, manifest.version = key
                self._metadata.insert(manifest)
                log.warning("re-indexed %s version %s found on disk", *key)
            on_disk.add(key)
        for name, version in indexed - on_disk:
            self._metadata.delete(name, [version])
            log.warning("dropped index entry %s version %s: files are gone", name, version)
        if isinstance(self._metadata, SqliteMetadata):
            for name, top in self._metadata.highest_versions().items():
                highest[name] = max(highest.get(name, 0), top)
        for name, top in highest.items():
            self._metadata.raise_next_version(name, top + 1)


def open_registry(settings: Settings, data_dir: Path, *, follower: bool = False) -> ModelRegistry:
    """The registry the settings describe: registry_url for the metadata, artifacts_url
    (and s3_endpoint_url) for the files; SQLite and <data_dir>/models when both are empty.

    Raises a ParadigmError naming the store when one cannot be reached or used, so that a
    server fails its start with one clear line.
    """
    data_dir = Path(data_dir)
    with _storage_errors(f"cannot write to {data_dir}"):
        data_dir.mkdir(parents=True, exist_ok=True)
        artifacts = open_artifacts(
            settings.artifacts_url,
            data_dir / "models",
            settings.s3_endpoint_url,
            cache_dir=data_dir / "artifact-cache",
        )
        metadata = open_metadata(settings.registry_url, data_dir / "registry.sqlite3")
    try:
        registry = ModelRegistry(data_dir, metadata, artifacts, follower=follower)
    except BaseException:
        metadata.close()
        raise
    if settings.registry_url or settings.artifacts_url:
        log.info("model registry: %s", registry.describe())
    if metadata.shared and not settings.artifacts_url:
        log.warning(
            "registry_url is shared but artifacts_url is empty: model files stay in %s, "
            "where other replicas cannot load them; set artifacts_url to a shared "
            "directory or s3://bucket/prefix",
            data_dir / "models",
        )
    return registry


def _group(event: str, keys: set[tuple[str, str]], *, numbered: bool = True) -> list[Change]:
    by_name: dict[str, list[str]] = {}
    for name, item in keys:
        by_name.setdefault(name, []).append(item)
    return [
        Change(event, name, sorted(items, key=int if numbered else None))
        for name, items in sorted(by_name.items())
    ]


def _alias_map(aliases: list[Alias]) -> dict[tuple[str, str], str]:
    return {(a.name, a.alias): a.version for a in aliases}


def _shadow_map(shadows: list[Shadow]) -> dict[tuple[str, str], Shadow]:
    return {(s.name, s.alias): s for s in shadows}


def _by_name(aliases: dict[tuple[str, str], str]) -> dict[str, dict[str, str]]:
    by_name: dict[str, dict[str, str]] = {}
    for (name, alias), version in aliases.items():
        by_name.setdefault(name, {})[alias] = version
    return by_name


def no_alias(name: str, alias: str, versions: list[str], aliases: list[str] | None = None) -> str:
    """The NotFound message for a version asked for that is neither a number nor an alias."""
    known = f"versions: {versions}" if versions else "no versions"
    if aliases:
        known += f", aliases: {sorted(aliases)}"
    return (
        f"model {name!r} has no version or alias {alias!r}: versions are whole numbers "
        f"like '1', aliases are names set with SetAlias; {known}"
    )


def _clear_staging(staging_dir: Path) -> None:
    for leftover in staging_dir.iterdir():
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _probe_writable(directory: Path) -> None:
    probe = directory / f".probe-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    probe.unlink()
