"""The latency table cache: what a table is keyed by, where it lives, and when it is rebuilt."""

from __future__ import annotations

import json

import pytest

from edgecompress.latency.graph import Node, OpGraph
from edgecompress.latency.table import Entry, LatencyTable, TableKey, cache_root


def _key(**changes) -> TableKey:
    base = {
        "device": "desktop",
        "runtime": "litert",
        "runtime_version": "ai-edge-litert 2.3.0",
        "threads": 2,
        "cpu_model": "Some CPU",
        "isa_flags": ("avx2", "fma"),
    }
    return TableKey(**{**base, **changes})


def _entry(ms: float) -> Entry:
    return Entry(
        label="conv", p50_ms=ms, rounds_p50_ms=[ms, ms * 1.1], runs=60, measured="2026-12-04T00:00:00"
    )


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("EDGECOMPRESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "edgecompress"


@pytest.mark.parametrize(
    "change",
    [
        {"runtime_version": "ai-edge-litert 2.4.0"},
        {"threads": 4},
        {"isa_flags": ("avx2", "fma", "avx512_vnni")},
        {"cpu_model": "Another CPU"},
        {"runtime": "openvino"},
    ],
)
def test_what_the_timings_depend_on_is_in_the_file_name(change):
    assert _key().file_name() != _key(**change).file_name()
    assert _key(isa_flags=("fma", "avx2")).file_name() == _key().file_name()  # flag order does not matter


def test_a_table_round_trips_and_a_new_one_says_why(tmp_path):
    table, note = LatencyTable.open(_key(), tmp_path)
    assert table.entries == {} and "no latency table" in note
    table.entries["abc"] = _entry(0.5)
    path = table.save(tmp_path)
    assert path == tmp_path / "latency" / "desktop" / _key().file_name()
    again, note = LatencyTable.open(_key(), tmp_path)
    assert note == "" and again.entries["abc"].p50_ms == 0.5 and again.created == table.created
    fresh, note = LatencyTable.open(_key(), tmp_path, fresh=True)
    assert fresh.entries == {} and "--recalibrate" in note


def test_another_runtime_version_is_rebuilt_with_a_note_naming_the_cached_one(tmp_path):
    old = LatencyTable.open(_key(runtime_version="ai-edge-litert 2.2.0"), tmp_path)[0]
    old.entries["abc"] = _entry(0.5)
    old.save(tmp_path)
    table, note = LatencyTable.open(_key(), tmp_path)
    assert table.entries == {}
    assert "building one" in note and _key(runtime_version="ai-edge-litert 2.2.0").file_name() in note


def test_an_unreadable_or_foreign_table_is_rebuilt(tmp_path):
    path = LatencyTable.path_for(_key(), tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    table, note = LatencyTable.open(_key(), tmp_path)
    assert table.entries == {} and "unreadable" in note
    stored = LatencyTable.open(_key(), tmp_path)[0]
    stored.entries["abc"] = _entry(1.0)
    data = json.loads(stored.model_dump_json())
    data["version"] = 999
    path.write_text(json.dumps(data))
    table, note = LatencyTable.open(_key(), tmp_path)
    assert table.entries == {} and "another version" in note


def test_graph_keys_are_stable_and_distinguish_what_is_measured():
    conv = Node.make("c", "conv2d", out_channels=16, kernel=(3, 3), padding=(1, 1, 1, 1))
    a = OpGraph((1, 8, 8, 4), (conv,), label="first")
    b = OpGraph((1, 8, 8, 4), (conv,), label="second")
    assert a.key() == b.key()  # the label is not measured
    assert a.key() != OpGraph((1, 8, 8, 8), (conv,)).key()
    int8 = Node.make("c", "conv2d", out_channels=16, kernel=(3, 3), padding=(1, 1, 1, 1), precision="int8")
    assert a.key() != OpGraph((1, 8, 8, 4), (int8,)).key()
    assert a.key() != OpGraph((1, 8, 8, 4), (conv,), input_precision="int8").key()
    with pytest.raises(ValueError, match="unknown op"):
        Node.make("x", "conv3d")
    with pytest.raises(ValueError, match="takes no attr"):
        Node.make("x", "relu", kernel=3)
    with pytest.raises(ValueError, match="not earlier nodes"):
        OpGraph((1, 4), (Node.make("x", "relu", "y"),))
