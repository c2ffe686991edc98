"""HnswIndex internals: labels, delta buffer, coalescing, tombstones, rebuilds, persistence.

The behaviour every index shares is in tests/contract/test_indexes.py; this file pins
what is specific to the hnswlib adaptor (DESIGN §4), always against the exact oracle.
"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from streamer.checks.index_concurrency import check_concurrent_writers_match_oracle
from streamer.errors import ConfigError, StateError
from streamer.index.delta import DeltaBuffer
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


@pytest.mark.parametrize("how", ["rebuilt", "loaded"])
def test_unchanged_vectors_are_recognised_after_a_rebuild_or_a_load(rng, tmp_path, how):
    # fingerprints come from the rebuild's copies, or are unknown after a load (then
    # every candidate is compared exactly with hnswlib's copy)
    idx = HnswIndex(8, delta_max=1, tombstone_ratio=None)
    x = _vectors(rng, 20)
    idx.upsert(_ids(20), x)
    if how == "rebuilt":
        idx.rebuild()
        assert (idx._fp[:20] != 0).all()
    else:
        idx.save(tmp_path)
        idx = HnswIndex.load(tmp_path)
        assert not idx._fp.any()
    idx.upsert(_ids(20), x)
    assert idx.stats().tombstones == 0
    x[[3, 7]] *= -1.0
    idx.upsert(_ids(20), x)
    assert idx.stats().tombstones == 2
    idx._check_invariants()


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


class _GatedGraph:
    """Wraps a new hnswlib graph so its first ``add_items`` waits for ``release``."""

    def __init__(self, graph, started: threading.Event, release: threading.Event) -> None:
        self._graph, self._started, self._release = graph, started, release

    def add_items(self, *args, **kwargs):
        self._started.set()
        assert self._release.wait(30)
        return self._graph.add_items(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._graph, name)


def _gate_new_graphs(idx, monkeypatch, *, before_copy: bool):
    """Make the next rebuild stop before copying vectors out, or after (in add_items)."""
    started, release = threading.Event(), threading.Event()
    new_graph = idx._new_graph

    def gated(capacity):
        if before_copy:
            started.set()
            assert release.wait(30)
            return new_graph(capacity)
        return _GatedGraph(new_graph(capacity), started, release)

    monkeypatch.setattr(idx, "_new_graph", gated)
    return started, release


@pytest.mark.parametrize(("before_copy", "tombstones"), [(True, 0), (False, 15)])
def test_writes_during_a_rebuild_are_kept(rng, monkeypatch, before_copy, tombstones):
    idx, oracle = HnswIndex(8, delta_max=4, tombstone_ratio=None), ExactIndex(8)
    x = _vectors(rng, 40)
    for target in (idx, oracle):
        target.upsert(_ids(40), x)
    started, release = _gate_new_graphs(idx, monkeypatch, before_copy=before_copy)
    thread = threading.Thread(target=idx.rebuild)
    thread.start()
    assert started.wait(30)
    # the rebuild is building without the lock: queries and writes go on
    y, z = _vectors(rng, 10), _vectors(rng, 3)
    for target in (idx, oracle):
        target.upsert(_ids(10), y)  # 10 > delta_max: folded into the old graph at once
        target.delete(_ids(5, 20))
        target.upsert(_ids(3, 100), z)
    assert (idx.stats().delta, idx.stats().graph) == (3, 35)
    assert set(idx._dirty) == set(_ids(10)) | set(_ids(5, 20))
    _same_answers(idx, oracle, _vectors(rng, 5), 8)
    release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    stats = idx.stats()
    # changed before their copy: skipped; after: tombstoned in the new graph. The 10
    # re-folded ids went back to the buffer at the swap and were folded again.
    assert (stats.delta, stats.graph, stats.tombstones) == (0, 38, tombstones)
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
    assert manifest["delta_ids"] == idx._delta.ids
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
        {"delta_max": 8, "delta_cap": 7},
        {"max_pause_s": 0},
        {"max_pause_s": float("inf")},
        {"max_pause_s": True},
    ],
)
def test_constructor_rejects_bad_parameters(kwargs):
    args = {"dim": 4, **kwargs}
    with pytest.raises(ConfigError):
        HnswIndex(**args)


# --------------------------------------------------------------------- delta buffer


def test_delta_buffer_coalesces_swap_removes_and_picks_the_oldest(rng):
    buf = DeltaBuffer(4, capacity=2)
    x = _vectors(rng, 6, 4)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    buf.put(_ids(3), x[:3], seq=1)
    buf.put(_ids(2, 3), x[3:5], seq=2)  # grows past the initial 2 rows
    buf.put(["i:0"], x[5:6], seq=3)  # overwrites in place: still 5 rows
    assert len(buf) == 5 and buf.capacity >= 5
    assert buf.oldest(2) == ["i:1", "i:2"] and buf.oldest(10, max_seq=2) == _ids(4, 1)
    assert buf.remove("i:1") and not buf.remove("i:1")
    assert buf.ids == ["i:0", "i:4", "i:2", "i:3"]  # the last row moved into the hole
    buf.check()
    want = dict(zip(_ids(5), [x[5], x[1], x[2], x[3], x[4]], strict=True))
    np.testing.assert_array_equal(buf.vectors, np.stack([want[e] for e in buf.ids]))
    np.testing.assert_array_equal(buf.seqs, [3, 2, 1, 2])
    q = _vectors(rng, 3, 4)
    np.testing.assert_allclose(buf.scores(q), q @ buf.vectors.T, rtol=1e-6)
    vectors, seqs = buf.take(["i:3", "i:0"])
    np.testing.assert_array_equal(vectors, np.stack([want["i:3"], want["i:0"]]))
    assert seqs.tolist() == [2, 3] and buf.min_seq() == 1
    buf.put(_ids(12, 50), np.repeat(x[:1], 12, axis=0), seq=4)  # 16 rows
    assert buf.capacity == 16
    for entity in list(buf.ids):
        buf.remove(entity)
    buf.compact()  # gives the memory back
    assert buf.capacity == 2 and buf.min_seq() is None and buf.oldest(3) == []


# --------------------------------------------------------------------- background


def _paused(idx, monkeypatch):
    """Hold the maintenance thread before its next unit of work until the event is set."""
    go = threading.Event()
    work = idx._maintain_once

    def gated(maint):
        assert go.wait(30)
        return work(maint)

    monkeypatch.setattr(idx, "_maintain_once", gated)
    return go


def test_background_upserts_buffer_until_the_cap_then_fold_the_oldest(rng, monkeypatch):
    idx, oracle = HnswIndex(8, background=True, delta_max=10, delta_cap=30), ExactIndex(8)
    go = _paused(idx, monkeypatch)
    for start in range(0, 30, 5):  # 30 distinct ids: at the cap, nothing folded
        x = _vectors(rng, 5)
        for target in (idx, oracle):
            target.upsert(_ids(5, start), x)
    assert (idx.stats().delta, idx.stats().graph) == (30, 0)
    assert idx.maintenance_stats().folds == 0
    x = _vectors(rng, 4)
    for target in (idx, oracle):
        target.upsert(_ids(2) + _ids(2, 30), x)  # refresh 2 old ids, add 2: 32 > cap
    assert (idx.stats().delta, idx.stats().graph) == (30, 2)
    assert set(idx._label_of) == {"i:2", "i:3"}  # the two oldest, untouched since
    assert idx.maintenance_stats().backpressure_folds == 1
    _same_answers(idx, oracle, _vectors(rng, 5), 6)
    go.set()
    assert idx.wait_idle(30)
    assert (idx.stats().delta, idx.stats().graph) == (10, 22)
    kept = set(idx._delta.ids)  # the freshest stay: 4 from the last call, 5 + 1 before
    assert kept > set(_ids(2) + _ids(7, 25)) and len(kept & set(_ids(5, 20))) == 1
    idx._check_invariants()
    _same_answers(idx, oracle, _vectors(rng, 5), 6)
    idx.close()


def test_background_fold_and_rebuild_run_in_the_maintenance_thread(rng, monkeypatch):
    threads: list[str] = []
    with HnswIndex(8, background=True, delta_max=100, tombstone_ratio=None) as idx:
        rebuild = idx._rebuild

        def recorded(maint):
            threads.append(threading.current_thread().name)
            rebuild(maint)

        monkeypatch.setattr(idx, "_rebuild", recorded)
        idx.upsert(_ids(60), _vectors(rng, 60))
        assert idx.wait_idle(30) and idx.stats().delta == 60  # below delta_max: no fold
        idx.fold()
        assert (idx.stats().delta, idx.stats().graph) == (0, 60)
        idx.upsert(_ids(20), _vectors(rng, 20))
        idx.fold()
        assert idx.stats().tombstones == 20
        idx.rebuild()
        assert idx.stats().tombstones == 0 and len(idx) == 60
        assert len(threads) == 1 and threads[0] == idx._maint._thread.name
        assert threads[0].startswith("hnsw-maintenance")
        stats = idx.maintenance_stats()
        assert stats.background and stats.rebuilds == 1 and stats.folded == 80
    assert not idx.maintenance_stats().background
    assert not idx._maint._thread.is_alive()
    idx.close()  # idempotent


def test_background_rebuild_blocks_neither_queries_nor_writes(rng, monkeypatch):
    idx = HnswIndex(8, background=True, delta_max=4, tombstone_ratio=None)
    oracle = ExactIndex(8)
    x = _vectors(rng, 40)
    for target in (idx, oracle):
        target.upsert(_ids(40), x)
    idx.fold()
    started, release = _gate_new_graphs(idx, monkeypatch, before_copy=False)
    waiter = threading.Thread(target=idx.rebuild)  # waits for the maintenance thread
    waiter.start()
    assert started.wait(30)  # the new graph's add_items is stuck: the rebuild is mid-build

    def writes_and_queries() -> None:
        wrng = np.random.default_rng(1)
        y, z = _vectors(wrng, 10), _vectors(wrng, 3)
        for target in (idx, oracle):
            target.upsert(_ids(10), y)
            target.delete(_ids(5, 20))
            target.upsert(_ids(3, 100), z)
        _same_answers(idx, oracle, _vectors(wrng, 5), 8)

    worker = threading.Thread(target=writes_and_queries)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "a write or query waited for the rebuild"
    assert idx._rebuilding and idx.stats().delta == 13  # not folded: below delta_cap=16
    release.set()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert idx.wait_idle(30)
    stats = idx.stats()
    assert stats.tombstones == 15 and stats.delta <= 4 and len(idx) == 38
    idx._check_invariants()
    _same_answers(idx, oracle, _vectors(rng, 5), 8)
    idx.close()


def test_background_failure_is_reported_then_maintenance_is_synchronous(
    rng, monkeypatch, caplog
):
    idx, oracle = HnswIndex(8, background=True, delta_max=4), ExactIndex(8)

    def broken(maint):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(idx, "_maintain_once", broken)
    x = _vectors(rng, 6)
    for target in (idx, oracle):
        target.upsert(_ids(6), x)  # 6 > delta_max: the thread is woken and fails
    with pytest.raises(StateError, match="disk on fire"):
        idx.wait_idle(30)
    assert "failed" in caplog.text
    stats = idx.maintenance_stats()
    assert not stats.background and "disk on fire" in (stats.error or "")
    y = _vectors(rng, 4)
    for target in (idx, oracle):
        target.upsert(_ids(4, 6), y)  # synchronous again: 10 >= delta_max folds here
    assert idx.stats().delta == 0 and len(idx) == 10
    _same_answers(idx, oracle, _vectors(rng, 5), 5)


def test_a_dropped_background_index_stops_its_thread(rng):
    idx = HnswIndex(8, background=True, delta_max=2)
    idx.upsert(_ids(5), _vectors(rng, 5))
    thread = idx._maint._thread
    assert thread.is_alive()
    del idx
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_background_hammering_matches_the_oracle_with_rebuilds_in_flight(monkeypatch, tmp_path):
    monkeypatch.setattr(HnswIndex, "rebuild_chunk", 8)  # many short build steps
    made: list[HnswIndex] = []

    def make(dim):
        idx = HnswIndex(dim, background=True, delta_max=4, delta_cap=12, initial_capacity=16,
                        tombstone_ratio=0.1, ef_construction=64, max_pause_s=0.001)
        made.append(idx)
        return idx

    check_concurrent_writers_match_oracle(make, tmp_path)
    (idx,) = made
    stats = idx.maintenance_stats()
    assert stats.rebuilds >= 1 and stats.folds >= 10 and stats.error is None
    idx.close()


def test_load_with_background_starts_a_thread(rng, tmp_path):
    idx = HnswIndex(8, delta_max=4, delta_cap=9, max_pause_s=0.5)
    idx.upsert(_ids(3), _vectors(rng, 3))
    idx.save(tmp_path)
    with HnswIndex.load(tmp_path, background=True) as loaded:
        assert loaded.maintenance_stats().background
        assert (loaded.delta_cap, loaded.max_pause_s) == (9, 0.5)
        loaded.upsert(_ids(3, 3), _vectors(rng, 3))
        loaded.fold()
        assert loaded.stats().delta == 0 and len(loaded) == 6
    assert not HnswIndex.load(tmp_path).maintenance_stats().background
