"""Aliases in the registry, on SQLite and on the real PostgreSQL the tests start: the
metadata contract, the registry's rules (names, delete with force), the serving index's
resolution, and a change seen by a second registry on the same database by refresh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.registry.aliases import Shadow
from service.registry.artifacts import LocalArtifacts
from service.registry.metadata import MetadataStore, PostgresMetadata, SqliteMetadata
from service.registry.store import Change, ModelRegistry
from service.serving.index import ModelIndex
from tests.postgres import PostgresCluster
from tests.test_shared_registry import manifest, stage


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], MetadataStore]]:
    opened: list[MetadataStore] = []
    if request.param == "sqlite":
        path = tmp_path / "registry.sqlite3"

        def make() -> MetadataStore:
            opened.append(SqliteMetadata(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("postgres").create_database("aliases")

        def make() -> MetadataStore:
            opened.append(PostgresMetadata(url))
            return opened[-1]

    yield make
    for store in opened:
        store.close()


def test_alias_contract(open_store: Callable[[], MetadataStore]) -> None:
    store = open_store()
    for version in ("1", "2"):
        store.insert(manifest("m", version))
    store.insert(manifest("other", "1"))
    assert store.aliases() == [] and store.alias_history("m") == []

    marker = store.generation()
    evidence = {"gates": {"parity": "passed"}}
    first = store.set_alias("m", "champion", "1", evidence)
    assert store.generation() != marker
    assert (first.version, first.previous, first.evidence) == ("1", "", evidence)
    moved = store.set_alias("m", "champion", "2", {"why": "better"}, expected="1")
    assert (moved.version, moved.previous) == ("2", "1")
    store.set_alias("other", "champion", "1", {})
    store.set_alias("m", "canary", "1", {})
    assert [(a.name, a.alias, a.version) for a in store.aliases()] == [
        ("m", "canary", "1"), ("m", "champion", "2"), ("other", "champion", "1"),
    ]  # fmt: skip
    assert [a.alias for a in store.aliases("m")] == ["canary", "champion"]

    # Checked and set at once: a promotion checked against version 1 cannot land on 2.
    with pytest.raises(FailedPrecondition, match="moved while the promotion was checked"):
        store.set_alias("m", "champion", "1", {}, expected="1")
    with pytest.raises(NotFound, match="no version '9'"):
        store.set_alias("m", "champion", "9", {})

    odd = store.set_alias("m", "odd", "1", {"r2": float("nan"), "figures": [float("inf"), 1.0]})
    assert store.alias_history("m", "odd")[0].evidence == {"r2": None, "figures": [None, 1.0]}
    assert odd.evidence == {"r2": None, "figures": [None, 1.0]}
    store.delete_alias("m", "odd", {})
    removed = store.delete_alias("m", "canary", {"reason": "rollout done"})
    assert removed is not None and (removed.version, removed.previous) == ("", "1")
    assert store.delete_alias("m", "canary", {}) is None

    # Unforced, an alias refuses the delete in its own transaction; forced, the aliases
    # go with the version, on record.
    with pytest.raises(FailedPrecondition, match=r"alias 'champion' -> version 2"):
        store.delete("m", ["1", "2"], force=False)
    assert store.versions("m") == ["1", "2"]
    assert [a.alias for a in store.delete("m", ["2"])] == ["champion"]
    assert [a.alias for a in store.aliases("m")] == []
    history = store.alias_history("m")
    assert [(e.alias, e.version, e.previous) for e in history] == [
        ("champion", "1", ""), ("champion", "2", "1"), ("canary", "1", ""), ("odd", "1", ""),
        ("odd", "", "1"), ("canary", "", "1"), ("champion", "", "2"),
    ]  # fmt: skip
    assert history[-1].evidence == {"reason": "its version was deleted (force)"}
    assert [e.version for e in store.alias_history("m", "champion")] == ["1", "2", ""]
    # Another connection sees the same.
    assert [a.alias for a in open_store().aliases("other")] == ["champion"]


def publish(registry: ModelRegistry, name: str) -> str:
    return registry.publish(name, stage(registry, b"onnx")).version


def test_registry_rules_and_the_index(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    for _ in range(3):
        publish(registry, "m")
    index = ModelIndex(registry)
    for bad in ("latest", "LATEST", "7", "-x", "", "a b", "x" * 65):
        with pytest.raises(InvalidArgument):
            registry.set_alias("m", bad, "1")
    registry.set_alias("m", "champion", "2")
    registry.set_alias("m", "shadow", "champion")  # an alias of an alias is its version
    registry.set_alias("m", "newest", "latest")
    assert registry.known_aliases() == {"m": {"champion": "2", "shadow": "2", "newest": "3"}}
    assert index.resolve("m", "champion") == "2"  # heard at once, no query
    assert index.resolve("m", "latest") == index.resolve("m") == "3"
    assert registry.get("m", "champion").version == "2"
    assert registry.get("m", "latest").version == "3"
    assert index.served() == [("m", "3"), ("m", "2")]  # the latest, then what aliases add
    with pytest.raises(NotFound, match=r"no version or alias 'gold'.*aliases: \['champion'"):
        index.resolve("m", "gold")
    with pytest.raises(NotFound, match="no version or alias 'gold'"):
        registry.get("m", "gold")
    with pytest.raises(NotFound, match="model 'nobody' not found"):
        index.resolve("nobody", "champion")

    with pytest.raises(FailedPrecondition, match=r"alias 'champion' -> version 2.*force"):
        registry.delete("m", "2")
    with pytest.raises(FailedPrecondition, match="'shadow'"):
        registry.delete("m")  # every version: refused while any is aliased
    assert registry.versions("m") == ["1", "2", "3"]
    assert registry.delete("m", "2", force=True) == ["2"]
    assert registry.known_aliases() == {"m": {"newest": "3"}}
    with pytest.raises(NotFound, match="no version or alias 'champion'"):
        index.resolve("m", "champion")
    registry.delete_alias("m", "newest")
    assert index.aliases("m") == {}
    with pytest.raises(NotFound, match="no alias 'newest'"):
        registry.delete_alias("m", "newest")
    registry.close()


def test_alias_survives_a_restart(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    publish(registry, "m")
    registry.set_alias("m", "champion", "1", {"note": "kept"})
    registry.close()
    reopened = ModelRegistry(tmp_path)
    assert ModelIndex(reopened).resolve("m", "champion") == "1"
    assert reopened.alias_history("m")[0].evidence == {"note": "kept"}
    reopened.close()


def test_a_second_registry_hears_alias_changes_by_refresh(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    url, shared = postgres.create_database("alias-pair"), tmp_path / "shared"
    a, b = (
        ModelRegistry(tmp_path / data, PostgresMetadata(url), LocalArtifacts(shared))
        for data in ("a", "b")
    )
    try:
        publish(a, "m")
        publish(a, "m")
        b.announce(b.refresh())
        index = ModelIndex(b)
        a.set_alias("m", "champion", "1")
        assert a.refresh() == []  # its own change was announced when it happened
        changes = b.refresh()
        assert changes == [Change("aliased", "m", ["champion"])]
        b.announce(changes)
        assert index.resolve("m", "champion") == "1"
        a.set_alias("m", "champion", "2")
        b.announce(b.refresh())
        assert index.resolve("m", "champion") == "2"
        a.delete("m", "2", force=True)
        changes = b.refresh()
        assert changes == [Change("deleted", "m", ["2"]), Change("aliased", "m", ["champion"])]
        b.announce(changes)
        assert index.aliases("m") == {}
        assert b.refresh() == []
    finally:
        a.close()
        b.close()


def test_shadow_contract(open_store: Callable[[], MetadataStore]) -> None:
    store = open_store()
    store.insert(manifest("m", "1"))
    store.insert(manifest("s", "1"))
    with pytest.raises(NotFound, match="no alias 'champion' to shadow"):
        store.set_shadow(Shadow("m", "champion", "s", "", 1.0))
    store.set_alias("m", "champion", "1", {})
    marker = store.generation()
    made = store.set_shadow(Shadow("m", "champion", "s", "1", 0.25))
    assert store.generation() != marker and made.updated_at
    replaced = store.set_shadow(Shadow("m", "champion", "s", "", 0.5))
    assert [(x.shadow, x.shadow_version, x.sample_rate) for x in store.shadows()] == [
        ("s", "", 0.5)
    ]
    assert open_store().shadows() == [replaced]  # a second connection sees it
    assert store.clear_shadow("m", "champion") and not store.clear_shadow("m", "champion")
    store.set_shadow(Shadow("m", "champion", "s", "", 1.0))
    store.delete_alias("m", "champion", {})  # the shadow goes with its alias
    assert store.shadows() == []
    store.set_alias("m", "champion", "1", {})
    store.set_shadow(Shadow("m", "champion", "s", "", 1.0))
    store.delete("m", ["1"], force=True)  # and with its alias's version
    assert store.shadows() == []


def test_a_second_registry_sees_a_shadow_by_refresh(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    url, shared = postgres.create_database("shadow-pair"), tmp_path / "shared"
    a, b = (
        ModelRegistry(tmp_path / data, PostgresMetadata(url), LocalArtifacts(shared))
        for data in ("a", "b")
    )
    try:
        publish(a, "m")
        a.set_alias("m", "champion", "1")
        b.announce(b.refresh())
        a.set_shadow(Shadow("m", "champion", "m", "1", 0.5))
        assert b.shadow_of("m", "champion") is None
        b.announce(b.refresh())
        shadow = b.shadow_of("m", "champion")
        assert shadow is not None and shadow.sample_rate == 0.5
        a.clear_shadow("m", "champion")
        b.announce(b.refresh())
        assert b.shadow_of("m", "champion") is None
    finally:
        a.close()
        b.close()
