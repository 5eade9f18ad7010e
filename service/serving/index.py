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
from service.registry.store import ModelRegistry, check_version


class ModelIndex:
    """(name, version) of every published version; reads from the loop, writes from any
    thread (a publish runs in a worker thread and tells its listeners there)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated in place: readers on the loop take no lock.
        self._versions: dict[str, tuple[str, ...]] = {}
        with self._lock:
            # Listening before the snapshot, under the lock: a change made meanwhile waits
            # for the snapshot and is applied on top of it, so none is lost.
            registry.on_change(self._changed)
            by_name: dict[str, set[str]] = {}
            for name, version in registry.known_versions():
                by_name.setdefault(name, set()).add(version)
            for name, versions in by_name.items():
                self._versions[name] = _ordered(versions)

    def resolve(self, name: str, version: str = "") -> str:
        """The version a request for (name, version) means: the latest when version is
        empty. NotFound, worded as the registry words it, when there is none."""
        versions = self._versions.get(name, ())
        if version in versions:  # the usual request: a known version, or the latest
            return version
        if not version and versions:
            return versions[-1]
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

    def latest(self) -> list[tuple[str, str]]:
        """(name, latest version) of every name, by name."""
        return [(name, versions[-1]) for name, versions in sorted(self._versions.items())]

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


def _ordered(versions: set[str]) -> tuple[str, ...]:
    return tuple(sorted(versions, key=int))
