"""Contract checks every :class:`~streamer.index.base.VectorIndex` must pass (CONVENTIONS C3).

River-style ``yield_checks``: each check is a plain function ``check(make, tmp)`` where
``make(dim=...)`` builds a fresh, empty index and ``tmp`` is a scratch directory. The
contract tests run every factory (exact, HNSW with several buffer sizes, the per-kind
router over each) against every check. The oracle is :class:`ExactIndex`.

The checks that run readers, writers and background maintenance concurrently live in
:mod:`streamer.checks.index_concurrency`; :func:`yield_checks` yields them too.

All ids used here are namespaced (``i:...``, ``u:...``) so the same checks run over
:class:`~streamer.index.kinded.KindedIndex`. Every random source is a seeded
``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from streamer.errors import BadRequest, DimensionMismatch, InvalidVector, StreamerError
from streamer.index.base import VectorIndex, load_index
from streamer.index.exact import ExactIndex
from streamer.types import Matrix

IndexFactory = Callable[..., VectorIndex]
"""``make(dim=...) -> VectorIndex``: a fresh, empty index."""

Check = Callable[[IndexFactory, Path], None]


def _ids(n: int, prefix: str = "i:", start: int = 0) -> list[str]:
    return [f"{prefix}{j}" for j in range(start, start + n)]


def _gaussian(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    return rng.standard_normal((n, dim)).astype(np.float32)


def _unit(x: Matrix) -> Matrix:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _ids_of(answer: list[tuple[str, float]]) -> list[str]:
    return [e for e, _ in answer]


def _assert_well_formed(answer: list[tuple[str, float]], k: int) -> None:
    assert len(answer) <= k
    ids = _ids_of(answer)
    assert len(set(ids)) == len(ids), f"duplicate ids in {answer}"
    scores = [s for _, s in answer]
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in scores), scores
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), scores


def recall_at_k(
    index: VectorIndex, oracle: VectorIndex, queries: Matrix, k: int
) -> float:
    """Mean fraction of the oracle's top-``k`` ids that ``index`` also returns.

    Parameters
    ----------
    index, oracle
        Indexes holding the same vectors (``oracle`` exact).
    queries
        Shape ``(m, dim)`` float32.
    k
        Neighbours per query.

    Returns
    -------
    float
        Recall@k in ``[0, 1]`` (the standard ANN-benchmarks definition).
    """
    got = index.knn_batch(queries, k)
    want = oracle.knn_batch(queries, k)
    hits = [
        len(set(_ids_of(g)) & set(_ids_of(w))) / max(1, len(w))
        for g, w in zip(got, want, strict=True)
    ]
    return float(np.mean(hits))


def _check(idx: VectorIndex) -> None:
    idx._check_invariants()


# --------------------------------------------------------------------------- checks


def check_upsert_is_idempotent(make: IndexFactory, tmp: Path) -> None:
    """Check upserting the same ids and vectors twice leaves the same index."""
    rng = np.random.default_rng(1)
    idx = make(dim=8)
    ids, x = _ids(40), _gaussian(rng, 40, 8)
    idx.upsert(ids, x)
    assert idx.wait_idle(60)
    first = idx.knn_batch(x[:5], 5)
    idx.upsert(ids, x)
    assert idx.wait_idle(60)
    assert len(idx) == 40
    vectors, mask = idx.get(ids)
    assert mask.all()
    np.testing.assert_allclose(vectors, _unit(x), atol=1e-6)
    assert [_ids_of(a) for a in idx.knn_batch(x[:5], 5)] == [_ids_of(a) for a in first]
    _check(idx)


def check_each_vector_finds_itself(make: IndexFactory, tmp: Path) -> None:
    """Check every stored vector is its own nearest neighbour with score ~1."""
    rng = np.random.default_rng(2)
    idx = make(dim=8)
    ids, x = _ids(50, "u:"), _gaussian(rng, 50, 8)
    idx.upsert(ids, x)
    for entity, row in zip(ids, x, strict=True):
        (best, score), = idx.knn(row, 1)
        assert best == entity
        assert abs(score - 1.0) < 1e-5
    _check(idx)


def check_update_moves_vector_at_once(make: IndexFactory, tmp: Path) -> None:
    """Check an update is visible to the very next query, before and after a fold."""
    rng = np.random.default_rng(3)
    idx = make(dim=16)
    ids, x = _ids(200), _gaussian(rng, 200, 16)
    idx.upsert(ids, x)
    moved = [ids[j] for j in range(0, 200, 5)]
    old = x[::5]
    for round_ in range(3):  # the last write of each id wins, also when buffered twice
        new = _gaussian(rng, len(moved), 16)
        idx.upsert(moved, new)
        if round_ == 2:
            idx.fold()
        for entity, v_new, v_old in zip(moved, new, old, strict=True):
            (best, score), = idx.knn(v_new, 1)
            assert best == entity, f"round {round_}: {entity} not found at its new place"
            assert abs(score - 1.0) < 1e-5
            everything = dict(idx.knn(v_old, len(idx)))
            expected = float(_unit(v_old) @ _unit(v_new))
            assert abs(everything[entity] - expected) < 1e-4, "old vector still answers"
        got, mask = idx.get(moved)
        assert mask.all()
        np.testing.assert_allclose(got, _unit(new), atol=1e-6)
    assert len(idx) == 200
    _check(idx)


def check_delete_hides(make: IndexFactory, tmp: Path) -> None:
    """Check deleted ids vanish from answers, ``in``, ``get``, ``len``; unknown ids are ignored."""
    rng = np.random.default_rng(4)
    idx = make(dim=8)
    ids, x = _ids(120), _gaussian(rng, 120, 8)
    idx.upsert(ids[:100], x[:100])
    idx.fold()
    idx.upsert(ids[100:], x[100:])  # these may still be buffered
    gone = ids[::3]
    idx.delete([*gone, "i:never-there", "u:nobody"])
    idx.delete(gone[:5])  # deleting again is a no-op
    assert len(idx) == 120 - len(gone)
    assert all(e not in idx for e in gone)
    assert all(e in idx for e in ids if e not in set(gone))
    _, mask = idx.get(gone)
    assert not mask.any()
    for row in x[::7]:
        answer = idx.knn(row, 200)
        assert len(answer) == len(idx)
        assert not set(_ids_of(answer)) & set(gone)
    idx.upsert(gone[:4], x[:4])  # a deleted id can come back
    assert all(e in idx for e in gone[:4])
    assert idx.knn(x[0], 1)[0][0] == ids[0]
    _check(idx)


def check_k_larger_than_live_count(make: IndexFactory, tmp: Path) -> None:
    """Check ``k`` is clamped to what exists (minus exclusions); an empty index answers []."""
    rng = np.random.default_rng(5)
    idx = make(dim=4)
    q = _gaussian(rng, 1, 4)[0]
    assert idx.knn(q, 10) == []
    assert idx.knn_batch(_gaussian(rng, 3, 4), 10) == [[], [], []]
    ids, x = _ids(5), _gaussian(rng, 5, 4)
    idx.upsert(ids, x)
    answer = idx.knn(q, 50)
    _assert_well_formed(answer, 50)
    assert sorted(_ids_of(answer)) == sorted(ids)
    assert len(idx.knn(q, 50, exclude=ids[:2])) == 3
    assert idx.knn(q, 50, exclude=ids) == []
    idx.fold()
    idx.delete(ids[:4])
    assert _ids_of(idx.knn(q, 3)) == [ids[4]]
    _check(idx)


def check_exclude_works(make: IndexFactory, tmp: Path) -> None:
    """Check excluded ids never come back and the answer is still ``k`` long (vs the oracle)."""
    rng = np.random.default_rng(6)
    idx, oracle = make(dim=8), ExactIndex(8)
    ids, x = _ids(50), _gaussian(rng, 50, 8)
    for target in (idx, oracle):
        target.upsert(ids[:30], x[:30])
    idx.fold()
    for target in (idx, oracle):
        target.upsert(ids[30:], x[30:])
    for q in _gaussian(rng, 10, 8):
        top = _ids_of(oracle.knn(q, 6))
        skip = {top[0], top[2], top[5], "i:not-there"}
        answer = idx.knn(q, 6, exclude=skip)
        _assert_well_formed(answer, 6)
        assert len(answer) == 6
        assert not set(_ids_of(answer)) & skip
        assert _ids_of(answer) == _ids_of(oracle.knn(q, 6, exclude=skip))
    batch = idx.knn_batch(x[:4], 3, exclude=ids[:4])
    assert all(not set(_ids_of(a)) & set(ids[:4]) and len(a) == 3 for a in batch)
    _check(idx)


def check_invalid_input_rejected_without_change(make: IndexFactory, tmp: Path) -> None:
    """Check bad ids, shapes and vectors raise the right error, name the culprit, change nothing."""
    rng = np.random.default_rng(7)
    dim = 6
    idx = make(dim=dim)
    ids, x = _ids(20), _gaussian(rng, 20, dim)
    idx.upsert(ids, x)
    assert idx.wait_idle(60)  # background maintenance must not move things meanwhile
    q = _gaussian(rng, 1, dim)[0]
    before = (len(idx), idx.get(ids)[0].copy(), idx.knn(q, 5), idx.stats())
    good = _gaussian(rng, 1, dim)
    nan = good.copy()
    nan[0, 2] = np.nan
    inf = good.copy()
    inf[0, 0] = np.inf
    cases: list[tuple[object, object, type[StreamerError], str]] = [
        (["i:new", "i:0"], np.vstack([good, good])[:, : dim - 1], DimensionMismatch, str(dim)),
        (["i:new"], good[0], DimensionMismatch, str(dim)),
        (["i:new", "i:bad"], np.vstack([good, nan]), InvalidVector, "i:bad"),
        (["i:new", "i:bad"], np.vstack([good, inf]), InvalidVector, "i:bad"),
        (["i:new", "i:bad"], np.vstack([good, np.zeros((1, dim))]), InvalidVector, "i:bad"),
        (["i:new", "i:0", "i:new"], np.vstack([good] * 3), BadRequest, "i:new"),
        (["i:new", ""], np.vstack([good] * 2), BadRequest, "''"),
        (["i:new", 3], np.vstack([good] * 2), BadRequest, "3"),
        ("i:new", good, BadRequest, "str"),
        (["i:new", "i:0"], good, BadRequest, "2 ids"),
        (["i:new"], [["a"] * dim], BadRequest, "real numbers"),
    ]
    for bad_ids, bad_vectors, error, fragment in cases:
        try:
            idx.upsert(bad_ids, bad_vectors)  # type: ignore[arg-type]
        except error as exc:
            assert fragment in str(exc), f"{error.__name__} message {exc} lacks {fragment!r}"
        else:
            msg = f"upsert({bad_ids!r}) did not raise {error.__name__}"
            raise AssertionError(msg)
    query_cases: list[tuple[Callable[[], object], type[StreamerError]]] = [
        (lambda: idx.knn(q, 0), BadRequest),
        (lambda: idx.knn(q, -3), BadRequest),
        (lambda: idx.knn(q, 2.5), BadRequest),  # type: ignore[arg-type]
        (lambda: idx.knn(q, True), BadRequest),
        (lambda: idx.knn(q[:-1], 3), DimensionMismatch),
        (lambda: idx.knn(np.full(dim, np.nan, np.float32), 3), InvalidVector),
        (lambda: idx.knn(np.zeros(dim, np.float32), 3), InvalidVector),
        (lambda: idx.knn(q, 3, exclude="i:0"), BadRequest),
        (lambda: idx.knn_batch(q, 3), DimensionMismatch),
        (lambda: idx.knn_batch(np.vstack([q, np.zeros(dim)]), 3), InvalidVector),
        (lambda: idx.delete("i:0"), BadRequest),
        (lambda: idx.get("i:0"), BadRequest),
    ]
    for call, error in query_cases:
        try:
            call()
        except error:
            pass
        else:
            msg = f"expected {error.__name__}"
            raise AssertionError(msg)
    assert idx.wait_idle(60)
    assert len(idx) == before[0]
    assert "i:new" not in idx and "i:bad" not in idx
    np.testing.assert_array_equal(idx.get(ids)[0], before[1])
    assert idx.knn(q, 5) == before[2]
    assert idx.stats() == before[3]
    _check(idx)


def check_get_returns_unit_vectors(make: IndexFactory, tmp: Path) -> None:
    """Check ``get`` returns fresh unit-norm copies, zero rows and a False mask for misses."""
    rng = np.random.default_rng(8)
    idx = make(dim=5)
    x = _gaussian(rng, 3, 5) * np.array([[1e-3], [1.0], [1e30]], np.float32)
    idx.upsert(["i:a", "u:b", "i:c"], x.astype(np.float64))
    vectors, mask = idx.get(["i:c", "i:missing", "i:a", "i:a"])
    assert vectors.dtype == np.float32 and vectors.shape == (4, 5)
    assert mask.tolist() == [True, False, True, True]
    np.testing.assert_allclose(vectors[[0, 2]], _unit(x[[2, 0]].astype(np.float64)), atol=1e-6)
    assert not vectors[1].any()
    vectors[:] = 0.0  # a copy: the index is unaffected
    np.testing.assert_allclose(idx.get(["i:a"])[0][0], _unit(x[0]), atol=1e-6)
    empty, empty_mask = idx.get([])
    assert empty.shape == (0, 5) and empty_mask.shape == (0,)
    _check(idx)


def check_knn_batch_matches_knn(make: IndexFactory, tmp: Path) -> None:
    """Check ``knn_batch`` gives, row by row, what ``knn`` gives."""
    rng = np.random.default_rng(9)
    idx = make(dim=8)
    idx.upsert(_ids(60), _gaussian(rng, 60, 8))
    assert idx.wait_idle(60)
    qs = _gaussian(rng, 12, 8)
    batch = idx.knn_batch(qs, 7, exclude=["i:1", "i:2"])
    for q, answer in zip(qs, batch, strict=True):
        single = idx.knn(q, 7, exclude=["i:1", "i:2"])
        assert _ids_of(answer) == _ids_of(single)
        np.testing.assert_allclose([s for _, s in answer], [s for _, s in single], atol=1e-5)


def check_save_load_same_answers(make: IndexFactory, tmp: Path) -> None:
    """Check a saved and reloaded index answers and evolves like the original."""
    rng = np.random.default_rng(10)
    idx = make(dim=12)
    ids, x = _ids(300), _gaussian(rng, 300, 12)
    idx.upsert(ids, x)
    idx.fold()
    idx.upsert(ids[:20], _gaussian(rng, 20, 12))  # buffered updates are saved too
    idx.delete(ids[280:])
    assert idx.wait_idle(60)  # nothing moves between save and the comparisons
    idx.save(tmp / "index")
    loaded = type(idx).load(tmp / "index")
    generic = load_index(tmp / "index")
    assert type(generic) is type(idx)
    qs = _gaussian(rng, 30, 12)
    want = idx.knn_batch(qs, 10)
    for other in (loaded, generic):
        _check(other)
        assert len(other) == len(idx) and other.dim == idx.dim
        assert other.stats() == idx.stats()
        np.testing.assert_array_equal(other.get(ids)[0], idx.get(ids)[0])
        got = other.knn_batch(qs, 10)
        assert [_ids_of(a) for a in got] == [_ids_of(a) for a in want]
    more_ids, more = _ids(50, start=1000), _gaussian(rng, 50, 12)
    for target in (idx, loaded):
        target.upsert(more_ids, more)
        target.delete(ids[:10])
        target.fold()  # a background original folds on its own schedule: align them
    assert len(loaded) == len(idx)
    np.testing.assert_array_equal(loaded.get(ids + more_ids)[0], idx.get(ids + more_ids)[0])
    assert [_ids_of(a) for a in loaded.knn_batch(qs, 10)] == [
        _ids_of(a) for a in idx.knn_batch(qs, 10)
    ]
    _check(loaded)


def check_capacity_growth(make: IndexFactory, tmp: Path) -> None:
    """Check inserting past the default initial capacity (1024) keeps every vector findable."""
    rng = np.random.default_rng(11)
    idx = make(dim=8)
    n = 2500
    ids, x = _ids(n), _gaussian(rng, n, 8)
    for start in range(0, n, 100):
        idx.upsert(ids[start : start + 100], x[start : start + 100])
    idx.fold()
    stats = idx.stats()
    assert len(idx) == n and stats.live == n
    assert stats.capacity >= stats.graph + stats.tombstones
    assert stats.capacity >= n or stats.delta > 0
    for j in range(0, n, 50):
        assert idx.knn(x[j], 1)[0][0] == ids[j]
    _check(idx)


def check_recall_vs_exact(make: IndexFactory, tmp: Path) -> None:
    """Check recall@10 >= 0.95 vs the exact oracle: 5000 random 32-d vectors, 20% then updated."""
    rng = np.random.default_rng(12)
    n, dim = 5000, 32
    idx, oracle = make(dim=dim), ExactIndex(dim)
    ids, x = _ids(n), _gaussian(rng, n, dim)
    for start in range(0, n, 500):
        for target in (idx, oracle):
            target.upsert(ids[start : start + 500], x[start : start + 500])
    updated = rng.choice(n, n // 5, replace=False)
    new = _gaussian(rng, len(updated), dim)
    for start in range(0, len(updated), 100):
        chunk = [ids[j] for j in updated[start : start + 100]]
        for target in (idx, oracle):
            target.upsert(chunk, new[start : start + 100])
    assert len(idx) == n
    queries = np.vstack([_gaussian(rng, 150, dim), new[:50]])
    recall = recall_at_k(idx, oracle, queries, 10)
    assert recall >= 0.95, f"recall@10 = {recall:.3f} < 0.95"
    _check(idx)


def check_matches_oracle_after_random_ops(make: IndexFactory, tmp: Path) -> None:
    """Check a random history of upserts, deletes and folds ends in the oracle's state.

    With at most 50 live ids the HNSW search (``ef`` 64) is exhaustive, so answers
    must match exactly.
    """
    rng = np.random.default_rng(13)
    dim = 8
    idx, oracle = make(dim=dim), ExactIndex(dim)
    pool = _ids(25, "i:") + _ids(25, "u:")
    for step in range(150):
        op = rng.random()
        chosen = [pool[j] for j in rng.choice(len(pool), int(rng.integers(1, 8)), replace=False)]
        if op < 0.6:
            v = _gaussian(rng, len(chosen), dim)
            idx.upsert(chosen, v)
            oracle.upsert(chosen, v)
        elif op < 0.9:
            idx.delete(chosen)
            oracle.delete(chosen)
        else:
            idx.fold()
        if step % 10 == 9:
            assert len(idx) == len(oracle)
            got, mask = idx.get(pool)
            want, want_mask = oracle.get(pool)
            np.testing.assert_array_equal(mask, want_mask)
            np.testing.assert_allclose(got, want, atol=1e-6)
            q = _gaussian(rng, 1, dim)[0]
            a, b = idx.knn(q, 5), oracle.knn(q, 5)
            assert _ids_of(a) == _ids_of(b), (a, b)
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
            _check(idx)


def check_close_and_context_manager(make: IndexFactory, tmp: Path) -> None:
    """Check ``close`` is idempotent, the context manager closes, and a closed index still works.

    After ``close`` (background work stopped) upserts, deletes, folds and queries keep
    matching the oracle; ``wait_idle`` answers True at once.
    """
    rng = np.random.default_rng(16)
    oracle = ExactIndex(6)
    ids, x = _ids(30) + _ids(10, "u:"), _gaussian(rng, 40, 6)
    with make(dim=6) as idx:
        idx.upsert(ids, x)
        oracle.upsert(ids, x)
    idx.close()
    assert idx.wait_idle(5)
    y = _gaussian(rng, 20, 6)
    for target in (idx, oracle):
        target.upsert(ids[:20], y)
        target.delete(ids[30:35])
    idx.fold()
    idx.rebuild()
    assert len(idx) == len(oracle) == 35
    np.testing.assert_allclose(idx.get(ids)[0], oracle.get(ids)[0], atol=1e-6)
    for q in _gaussian(rng, 5, 6):
        assert _ids_of(idx.knn(q, 5)) == _ids_of(oracle.knn(q, 5))
    _check(idx)


def yield_checks(make: IndexFactory) -> Iterator[Check]:
    """Yield every contract check that applies to indexes built by ``make``.

    Parameters
    ----------
    make
        ``make(dim=...) -> VectorIndex``.
    """
    yield check_upsert_is_idempotent
    yield check_each_vector_finds_itself
    yield check_update_moves_vector_at_once
    yield check_delete_hides
    yield check_k_larger_than_live_count
    yield check_exclude_works
    yield check_invalid_input_rejected_without_change
    yield check_get_returns_unit_vectors
    yield check_knn_batch_matches_knn
    yield check_save_load_same_answers
    yield check_capacity_growth
    yield check_recall_vs_exact
    yield check_matches_oracle_after_random_ops
    yield check_close_and_context_manager
    from streamer.checks.index_concurrency import (  # imports this module's helpers
        check_concurrent_queries_during_upserts,
        check_concurrent_writers_match_oracle,
    )

    yield check_concurrent_queries_during_upserts
    yield check_concurrent_writers_match_oracle
