"""Which model versions exist, in memory: the data plane's answer to "is there such a model?"

Built from the registry's own record of its versions (no query) and kept current by its
change events: publishes and deletes of this server as they happen, in whichever thread
made them, and those of other replicas as the registry's poll finds them. So a request for
a name nobody published is answered NOT_FOUND without a round trip to SQLite, PostgreSQL or
the file system, and "the latest version" costs a dict lookup.
"""

from __future__ import annotations

import threading

from service.errors import NotFound
from service.registry.aliases import LATEST, is_alias_name
from service.registry.store import ModelRegistry, check_version, no_alias


class ModelIndex:
    """(name, version) of every published version; reads from the loop, writes from any
    thread (a publish runs in a worker thread and tells its listeners there)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated in place: readers on the loop take no lock.
        self._versions: dict[str, tuple[str, ...]] = {}
        # name -> {alias: version}; replaced per name, never mutated in place.
        self._aliases: dict[str, dict[str, str]] = {}
        with self._lock:
            # Listening before the snapshot, under the lock: a change made meanwhile waits
            # for the snapshot and is applied on top of it, so none is lost.
            registry.on_change(self._changed)
            registry.on_alias_change(self._aliases_changed)
            self._aliases = registry.known_aliases()
            by_name: dict[str, set[str]] = {}
            for name, version in registry.known_versions():
                by_name.setdefault(name, set()).add(version)
            for name, versions in by_name.items():
                self._versions[name] = _ordered(versions)

    def resolve(self, name: str, version: str = "") -> str:
        """The version a request for (name, version) means: the latest when version is
        empty or "latest", the version an alias points at. NotFound, worded as the
        registry words it, when there is none."""
        versions = self._versions.get(name, ())
        if version in versions:  # the usual request: a known version, or the latest
            return version
        if (not version or version == LATEST) and versions:
            return versions[-1]
        aliases = self._aliases.get(name, {})
        aliased = aliases.get(version)
        if aliased is not None and aliased in versions:
            return aliased
        if version == LATEST or is_alias_name(version):
            if versions:
                raise NotFound(no_alias(name, version, list(versions), list(aliases)))
            raise NotFound(f"model {name!r} not found")
        check_version(name, version)
        # "007" is version 7, as the registry reads it.
        if version and str(int(version)) in versions:
            return str(int(version))
        if versions:
            raise NotFound(f"model {name!r} has no version {version!r}; versions: {list(versions)}")
        raise NotFound(f"model {name!r} not found")

    def versions(self, name: str) -> list[str]:
        """The versions of name, oldest first; empty when unknown."""
        return list(self._versions.get(name, ()))

    def aliases(self, name: str) -> dict[str, str]:
        """{alias: version} of name as this server knows them now."""
        return dict(self._aliases.get(name, {}))

    def latest(self) -> list[tuple[str, str]]:
        """(name, latest version) of every name, by name."""
        return [(name, versions[-1]) for name, versions in sorted(self._versions.items())]

    def every_alias(self) -> dict[str, dict[str, str]]:
        """name -> {alias: version} of every name with aliases."""
        return {name: dict(aliases) for name, aliases in self._aliases.items()}

    def served(self) -> list[tuple[str, str]]:
        """(name, version) of what plain requests get: every latest version, then every
        version an alias points at (once each): what is worth loading before traffic."""
        keys = self.latest()
        aliased = sorted(
            (name, version)
            for name, aliases in self._aliases.items()
            for version in aliases.values()
            if version in self._versions.get(name, ())
        )
        return keys + sorted(set(aliased) - set(keys))

    def _changed(self, event: str, name: str, versions: list[str]) -> None:
        with self._lock:
            known = set(self._versions.get(name, ()))
            if event == "published":
                known.update(versions)
            else:
                known.difference_update(versions)
            if known:
                self._versions[name] = _ordered(known)
            else:
                self._versions.pop(name, None)

    def _aliases_changed(self, name: str, aliases: dict[str, str]) -> None:
        with self._lock:
            replaced = dict(self._aliases)
            if aliases:
                replaced[name] = dict(aliases)
            else:
                replaced.pop(name, None)
            self._aliases = replaced


def _ordered(versions: set[str]) -> tuple[str, ...]:
    return tuple(sorted(versions, key=int))
