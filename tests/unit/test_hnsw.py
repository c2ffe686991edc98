"""HnswIndex internals: labels, delta buffer, coalescing, tombstones, rebuilds, persistence.

The behaviour every index shares is in tests/contract/test_indexes.py; this file pins
what is specific to the hnswlib adaptor (DESIGN §4), always against the exact oracle.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ConfigError, StateError
from streamer.index.exact import ExactIndex
from streamer.index.hnsw import HnswIndex


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"i:{j}" for j in range(start, start + n)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


def _vectors(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


def _same_answers(a, b, queries, k) -> None:
    for got, want in zip(a.knn_batch(queries, k), b.knn_batch(queries, k), strict=True):
        assert [e for e, _ in got] == [e for e, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_update_marks_old_label_deleted_and_uses_a_fresh_one(rng):
    idx = HnswIndex(8, delta_max=1)
    idx.upsert(_ids(10), _vectors(rng, 10))
    assert idx._label_of["i:3"] == 3
    idx.upsert(["i:3"], _vectors(rng, 1))
    assert idx._label_of["i:3"] == 10
    assert 3 not in idx._id_of
    stats = idx.stats()
    assert (stats.live, stats.graph, stats.tombstones) == (10, 10, 1)
    assert idx._graph.element_count == 11
    idx._check_invariants()


def test_fresh_vectors_wait_in_the_delta_buffer_until_delta_max(rng):
    idx = HnswIndex(8, delta_max=5)
    x = _vectors(rng, 5)
    idx.upsert(_ids(3), x[:3])
    assert (idx.stats().delta, idx.stats().graph) == (3, 0)
    assert idx._graph.element_count == 0
    assert idx.knn(x[1], 1)[0][0] == "i:1"  # answered from the buffer
    idx.upsert(_ids(2, 3), x[3:])
    assert (idx.stats().delta, idx.stats().graph) == (0, 5)
    assert idx.knn(x[4], 1)[0][0] == "i:4"  # answered from the graph
    idx._check_invariants()


def test_repeated_updates_of_one_id_insert_only_the_latest(rng):
    idx = HnswIndex(8, delta_max=100)
    versions = _vectors(rng, 5)
    for v in versions:
        idx.upsert(["i:x"], v[None, :])
    assert idx.stats().delta == 1
    idx.fold()
    assert idx._graph.element_count == 1
    assert idx.stats().tombstones == 0
    np.testing.assert_allclose(
        idx.get(["i:x"])[0][0], versions[-1] / np.linalg.norm(versions[-1]), atol=1e-6
    )


def test_upserting_an_unchanged_vector_creates_no_tombstone(rng):
    idx = HnswIndex(8, delta_max=1, tombstone_ratio=None)
    x = _vectors(rng, 20)
    idx.upsert(_ids(20), x)
    labels = dict(idx._label_of)
    idx.upsert(_ids(20), x)
    idx.upsert(_ids(20), x * 4.0)  # exact rescaling: the same normalised vector
    assert idx.stats().tombstones == 0
    assert idx._label_of == labels
    x[4] += 1.0
    idx.upsert(_ids(20), x)
    assert idx.stats().tombstones == 1


def test_rebuild_runs_when_tombstones_pass_the_ratio(rng):
    idx, oracle = HnswIndex(8, delta_max=1, tombstone_ratio=0.2), ExactIndex(8)
    x = _vectors(rng, 100)
    for target in (idx, oracle):
        target.upsert(_ids(100), x)
    y = _vectors(rng, 24)
    for target in (idx, oracle):
        target.upsert(_ids(24), y)  # 24 / 124 slots: below 0.2
    assert idx.stats().tombstones == 24
    for target in (idx, oracle):
        target.delete(_ids(2, 50))  # 26 / 124 > 0.2: rebuilt, tombstones gone
    stats = idx.stats()
    assert (stats.tombstones, stats.graph) == (0, 98)
    assert idx._graph.element_count == 98 and idx._next_label == 98
    idx._check_invariants()
    _same_answers(idx, oracle, _vectors(rng, 10), 5)


def test_no_automatic_rebuild_when_the_ratio_is_none(rng):
    idx = HnswIndex(8, delta_max=1, tombstone_ratio=None)
    idx.upsert(_ids(50), _vectors(rng, 50))
    idx.delete(_ids(40))
    assert idx.stats().tombstones == 40
    idx.rebuild()
    assert idx.stats().tombstones == 0 and len(idx) == 10
    idx._check_invariants()


def test_capacity_grows_geometrically(rng):
    idx = HnswIndex(8, delta_max=1, initial_capacity=10)
    idx.upsert(_ids(10), _vectors(rng, 10))
    assert idx.stats().capacity == 10
    idx.upsert(_ids(1, 10), _vectors(rng, 1))
    assert idx.stats().capacity == 20
    idx.upsert(_ids(25, 11), _vectors(rng, 25))
    assert idx.stats().capacity == 40
    assert len(idx) == 36


def test_k_above_the_live_graph_count_with_tombstones(rng):
    # hnswlib itself raises when asked for more results than live elements.
    idx, oracle = HnswIndex(8, delta_max=1, tombstone_ratio=None), ExactIndex(8)
    x = _vectors(rng, 20)
    for target in (idx, oracle):
        target.upsert(_ids(20), x)
        target.delete(_ids(15))
    answer = idx.knn(x[0], 10)
    assert len(answer) == 5
    _same_answers(idx, oracle, x[:5], 10)


def test_large_exclusions_are_compensated(rng):
    idx, oracle = HnswIndex(8, delta_max=1), ExactIndex(8)
    x = _vectors(rng, 60)
    for target in (idx, oracle):
        target.upsert(_ids(60), x)
    skip = set(_ids(50))
    for q in _vectors(rng, 5):
        got = idx.knn(q, 10, exclude=skip)
        assert sorted(e for e, _ in got) == sorted(_ids(10, 50))
        assert [e for e, _ in got] == [e for e, _ in oracle.knn(q, 10, exclude=skip)]


class _UnfillableGraph:
    """Wraps an hnswlib index whose ``knn_query`` always fails, as a cut graph does."""

    def __init__(self, graph) -> None:
        self._graph = graph

    def knn_query(self, *args, **kwargs):
        raise RuntimeError("Cannot return the results in a contiguous 2D array.")

    def __getattr__(self, name):
        return getattr(self._graph, name)


def test_queries_hnswlib_cannot_fill_are_answered_exactly(rng):
    idx, oracle = HnswIndex(8, delta_max=1), ExactIndex(8)
    x = _vectors(rng, 40)
    for target in (idx, oracle):
        target.upsert(_ids(40), x)
    idx._graph = _UnfillableGraph(idx._graph)
    queries = _vectors(rng, 3)
    _same_answers(idx, oracle, queries, 7)
    assert idx.exact_fallbacks == 3


def test_rebuild_concurrent_with_writes_ends_like_the_oracle(rng):
    idx, oracle = HnswIndex(8, delta_max=16, tombstone_ratio=None), ExactIndex(8)
    x = _vectors(rng, 300)
    for target in (idx, oracle):
        target.upsert(_ids(300), x)
    idx.fold()
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        wrng = np.random.default_rng(7)
        try:
            for step in range(300):
                chosen = [f"i:{j}" for j in wrng.choice(320, 4, replace=False)]
                if step % 3 == 2:
                    idx.delete(chosen)
                    oracle.delete(chosen)
                else:
                    v = _vectors(wrng, 4)
                    idx.upsert(chosen, v)
                    oracle.upsert(chosen, v)
        except BaseException as exc:
            errors.append(exc)
        finally:
            writing.clear()

    thread = threading.Thread(target=writer)
    thread.start()
    rebuilds = 0
    while writing.is_set() or rebuilds < 2:
        idx.rebuild()
        rebuilds += 1
    thread.join(timeout=120)
    assert not thread.is_alive() and not errors, errors
    idx._check_invariants()
    pool = _ids(320)
    got, mask = idx.get(pool)
    want, want_mask = oracle.get(pool)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(idx) == len(oracle)


def test_writes_during_a_rebuild_are_kept(rng, monkeypatch):
    idx, oracle = HnswIndex(8, delta_max=4, tombstone_ratio=None), ExactIndex(8)
    x = _vectors(rng, 40)
    for target in (idx, oracle):
        target.upsert(_ids(40), x)
    started, release = threading.Event(), threading.Event()
    new_graph = idx._new_graph

    def slow_new_graph(capacity):
        started.set()
        assert release.wait(30)
        return new_graph(capacity)

    monkeypatch.setattr(idx, "_new_graph", slow_new_graph)
    thread = threading.Thread(target=idx.rebuild)
    thread.start()
    assert started.wait(30)
    # the rebuild is building without the lock: queries and writes go on
    y, z = _vectors(rng, 10), _vectors(rng, 3)
    for target in (idx, oracle):
        target.upsert(_ids(10), y)  # graph copies dropped, 10 > delta_max: fold deferred
        target.delete(_ids(5, 20))
        target.upsert(_ids(3, 100), z)
    assert idx.stats().delta == 13
    _same_answers(idx, oracle, _vectors(rng, 5), 8)
    release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    stats = idx.stats()
    assert stats.delta == 0 and stats.tombstones == 15  # replayed on the new graph
    idx._check_invariants()
    _same_answers(idx, oracle, _vectors(rng, 5), 8)


def test_same_seed_and_history_give_identical_answers(rng):
    x, q = _vectors(rng, 500, 16), _vectors(rng, 20, 16)
    a, b = HnswIndex(16, seed=5, delta_max=50), HnswIndex(16, seed=5, delta_max=50)
    for target in (a, b):
        for start in range(0, 500, 50):
            target.upsert(_ids(50, start), x[start : start + 50])
        target.delete(_ids(30))
    assert a.knn_batch(q, 10) == b.knn_batch(q, 10)


def test_manifest_keeps_parameters_hnswlib_does_not_save(rng, tmp_path: Path):
    idx = HnswIndex(8, m=8, ef_construction=50, ef_search=77, delta_max=10, seed=3)
    idx.upsert(_ids(25), _vectors(rng, 25))
    idx.upsert(_ids(2), _vectors(rng, 2))
    idx.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "hnsw" and manifest["space"] == "cosine"
    assert manifest["params"]["ef_search"] == 77 and manifest["params"]["m"] == 8
    assert manifest["tombstones"] == 2
    assert sorted(manifest["labels"]) == sorted(idx._label_of)
    assert manifest["delta_ids"] == idx._delta_ids
    loaded = HnswIndex.load(tmp_path)
    assert loaded._graph.ef == 77  # hnswlib alone would come back with ef=10
    assert (loaded.m, loaded.ef_construction, loaded.seed, loaded.delta_max) == (8, 50, 3, 10)
    assert loaded._next_label == idx._next_label


def _tamper(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_refuses_inconsistent_or_foreign_state(rng, tmp_path: Path):
    idx = HnswIndex(8, delta_max=1)
    idx.upsert(_ids(10), _vectors(rng, 10))
    idx.upsert(_ids(1), _vectors(rng, 1))
    good = json.loads(json.dumps(idx._label_of))
    cases = {
        "tombstones": {"tombstones": 5},
        "format": {"format_version": 99},
        "kind": {"kind": "exact"},
        "labels": {"labels": {**good, "i:0": 1}},
        "delta": {"delta_ids": ["i:zz"]},
    }
    for name, change in cases.items():
        target = tmp_path / name
        idx.save(target)
        _tamper(target, **change)
        with pytest.raises(StateError):
            HnswIndex.load(target)
    with pytest.raises(StateError, match="manifest"):
        HnswIndex.load(tmp_path / "nothing-here")
    ExactIndex(8).save(tmp_path / "exact")
    with pytest.raises(StateError, match="kind"):
        HnswIndex.load(tmp_path / "exact")
    (tmp_path / "tombstones" / "graph.bin").unlink()
    _tamper(tmp_path / "tombstones", tombstones=1)
    with pytest.raises(StateError, match="graph"):
        HnswIndex.load(tmp_path / "tombstones")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"m": 1},
        {"ef_search": 0},
        {"ef_search": True},
        {"delta_max": 0},
        {"initial_capacity": 0},
        {"tombstone_ratio": 0.0},
        {"tombstone_ratio": 1.5},
        {"tombstone_ratio": float("nan")},
        {"num_threads": 0},
        {"seed": -1},
    ],
)
def test_constructor_rejects_bad_parameters(kwargs):
    args = {"dim": 4, **kwargs}
    with pytest.raises(ConfigError):
        HnswIndex(**args)
