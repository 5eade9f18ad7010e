"""The data plane's in-memory index of model versions, kept current by registry events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.errors import NotFound
from service.registry.manifest import MODEL_FILE, Manifest
from service.registry.store import ModelRegistry
from service.serving.index import ModelIndex


def publish(registry: ModelRegistry, name: str) -> str:
    staging = registry.new_staging_dir("test")
    Manifest(
        name=name, version="", paradigm="classical", algorithm="x", task="", inputs=[], outputs=[]
    ).write(staging)
    (staging / MODEL_FILE).write_bytes(b"not read by the index")
    return registry.publish(name, staging).version


def test_versions_follow_publishes_and_deletes(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    publish(registry, "before")  # known from the start, without a query
    index = ModelIndex(registry)
    assert index.versions("before") == ["1"] and index.resolve("before") == "1"
    for _ in range(3):
        publish(registry, "m")
    assert index.versions("m") == ["1", "2", "3"]
    assert index.resolve("m") == "3" and index.resolve("m", "2") == "2"
    assert index.resolve("m", "02") == "2"  # read as the number, as the registry does
    registry.delete("m", "3")
    assert index.resolve("m") == "2"
    registry.delete("m")
    assert index.versions("m") == []
    assert index.latest() == [("before", "1")]
    registry.close()


def test_a_publish_in_another_thread_is_known_when_it_returns(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    index = ModelIndex(registry)
    published: list[str] = []
    thread = threading.Thread(target=lambda: published.append(publish(registry, "t")))
    thread.start()
    thread.join(30)
    assert index.resolve("t") == published[0] == "1"
    registry.close()


def test_unknown_names_and_versions_are_answered_from_memory(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    publish(registry, "m")
    index = ModelIndex(registry)
    registry.close()  # any query now would fail: the answers below come from memory
    with pytest.raises(NotFound, match=r"^model 'nobody' not found$"):
        index.resolve("nobody")
    with pytest.raises(NotFound, match=r"^model 'm' has no version '9'; versions: \['1'\]$"):
        index.resolve("m", "9")
    with pytest.raises(NotFound, match="versions are whole numbers"):
        index.resolve("m", "x1")
