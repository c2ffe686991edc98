"""Contract checks of :class:`~streamer.index.base.VectorIndex` under concurrent use.

Split from :mod:`streamer.checks.indexes` (which yields them too): readers, writers and
an index's own background maintenance at the same time, against the exact oracle.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from streamer.checks.indexes import (
    IndexFactory,
    _assert_well_formed,
    _check,
    _gaussian,
    _ids,
    _ids_of,
    _unit,
)
from streamer.index.base import VectorIndex
from streamer.index.exact import ExactIndex


def check_concurrent_queries_during_upserts(make: IndexFactory, tmp: Path) -> None:
    """Check readers querying while a writer upserts/deletes/folds never crash or see bad ids.

    Two reader threads run ``knn``/``knn_batch``/``get`` while one writer thread runs a
    few hundred mutations; a permanently deleted id must never come back after its
    delete returned, and every answer must be well formed.
    """
    dim = 16
    idx = make(dim=dim)
    rng = np.random.default_rng(14)
    stable, doomed = _ids(400, "i:s"), _ids(150, "i:d")
    idx.upsert(stable + doomed, _gaussian(rng, 550, dim))
    fresh = _ids(600, "i:n")
    universe = set(stable) | set(doomed) | set(fresh)
    deleted: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        wrng = np.random.default_rng(15)
        try:
            for step in range(600):
                chosen = [stable[j] for j in wrng.choice(400, 3, replace=False)]
                chosen.append(fresh[step])
                idx.upsert(chosen, _gaussian(wrng, 4, dim))
                if step % 4 == 0 and len(deleted) < len(doomed):
                    victim = doomed[len(deleted)]
                    idx.delete([victim])
                    deleted.append(victim)
                if step % 97 == 0:
                    idx.fold()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def reader(seed: int) -> None:
        rrng = np.random.default_rng(seed)
        count = 0
        try:
            while not done.is_set() or count < 300:
                gone = set(deleted[: len(deleted)])
                if count % 3 == 0:
                    answers = idx.knn_batch(_gaussian(rrng, 2, dim), 10)
                else:
                    answers = [idx.knn(_gaussian(rrng, 1, dim)[0], 10)]
                for answer in answers:
                    _assert_well_formed(answer, 10)
                    assert len(answer) == 10
                    assert set(_ids_of(answer)) <= universe, answer
                    assert not set(_ids_of(answer)) & gone, "a deleted id came back"
                if count % 10 == 0:
                    _, mask = idx.get(stable[:20])
                    assert mask.all()
                count += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(100 + j,)) for j in range(2)
    ]
    for t in threads:
        t.start()
    _join_and_reraise(threads, errors, timeout_s=300)
    assert len(idx) == len(stable) + len(doomed) - len(deleted) + 600
    _check(idx)


def _assert_same_as_oracle(idx: VectorIndex, oracle: ExactIndex, pool: list[str]) -> None:
    """Assert the same live ids and vectors, and that a query for everything returns them."""
    assert len(idx) == len(oracle)
    got, mask = idx.get(pool)
    want, want_mask = oracle.get(pool)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(got, want, atol=1e-6)
    q = _unit(np.linspace(-1.0, 1.0, idx.dim, dtype=np.float32) + 0.1)
    answer = idx.knn(q, max(1, len(oracle)))
    _assert_well_formed(answer, max(1, len(oracle)))
    truth = dict(oracle.knn(q, max(1, len(oracle))))
    assert set(_ids_of(answer)) == set(truth), "live set differs from the oracle's"
    for entity, score in answer:  # every id answers with its latest vector
        assert abs(score - truth[entity]) < 1e-5, (entity, score, truth[entity])
    _check(idx)


def check_concurrent_writers_match_oracle(make: IndexFactory, tmp: Path) -> None:
    """Check writers, readers and (background) maintenance together never break the contract.

    Two writer threads upsert and delete their own ids (applying each operation to the
    index, then to the oracle) while two readers query, read and check the internal
    invariants non-stop. At all times: answers are well formed, ``k`` long, never hold
    a deleted id, and a writer's fresh vector is visible to its very next ``get`` and
    ``knn``. At each quiescent point (writers paused, maintenance possibly running) and
    at the end, the index holds exactly the oracle's ids and vectors.
    """
    dim, n_writers, rounds, ops = 8, 2, 4, 50
    idx, oracle = make(dim=dim), ExactIndex(dim)
    rng = np.random.default_rng(17)
    stable = _ids(20, "i:s")
    gone = _ids(30, "u:gone")
    pools = [_ids(40, f"i:w{w}-") + _ids(20, f"u:w{w}-") for w in range(n_writers)]
    first = _gaussian(rng, 50, dim)
    for target in (idx, oracle):
        target.upsert(stable + gone, first)
    idx.delete(gone)
    oracle.delete(gone)
    universe = set(stable).union(*pools)
    pause = threading.Barrier(n_writers + 1)
    finished = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        wrng, pool = np.random.default_rng(100 + w), pools[w]
        try:
            for _ in range(rounds):
                for _ in range(ops):
                    chosen = [pool[j] for j in wrng.choice(len(pool), int(wrng.integers(1, 7)),
                                                           replace=False)]
                    if wrng.random() < 0.35:
                        idx.delete(chosen)
                        oracle.delete(chosen)
                        continue
                    v = _gaussian(wrng, len(chosen), dim)
                    idx.upsert(chosen, v)
                    oracle.upsert(chosen, v)
                    got, mask = idx.get(chosen)
                    assert mask.all()
                    np.testing.assert_allclose(got, _unit(v), atol=1e-6)
                    assert idx.knn(v[0], 1)[0][0] == chosen[0], "fresh vector not visible"
                pause.wait(120)  # quiescent point: the main thread checks
                pause.wait(120)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            pause.abort()

    def reader(seed: int) -> None:
        rrng, count = np.random.default_rng(seed), 0
        try:
            while not finished.is_set():
                answer = idx.knn(_gaussian(rrng, 1, dim)[0], 10)
                _assert_well_formed(answer, 10)
                assert len(answer) == 10
                assert set(_ids_of(answer)) <= universe and not set(_ids_of(answer)) & set(gone)
                if count % 5 == 0:
                    assert idx.get(stable)[1].all()
                    _check(idx)
                count += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    threads += [threading.Thread(target=reader, args=(200 + r,)) for r in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(rounds):
            pause.wait(120)
            _assert_same_as_oracle(idx, oracle, stable + gone + [e for p in pools for e in p])
            pause.wait(120)
    except threading.BrokenBarrierError:
        pass  # a writer failed: its error is raised below
    except BaseException:
        pause.abort()  # release the writers, then report this failure
        raise
    finally:
        finished.set()
        for t in threads:
            t.join(timeout=120)
    _join_and_reraise(threads, errors, timeout_s=0)  # already joined: check and re-raise
    everything = stable + gone + [e for p in pools for e in p]
    _assert_same_as_oracle(idx, oracle, everything)
    assert idx.wait_idle(120)
    _assert_same_as_oracle(idx, oracle, everything)
    idx.fold()
    _assert_same_as_oracle(idx, oracle, everything)


def _join_and_reraise(threads: list[threading.Thread], errors: list[BaseException],
                      *, timeout_s: float) -> None:
    """Join ``threads`` (``timeout_s`` wall s each); fail if one hung; re-raise the first error."""
    for t in threads:
        t.join(timeout=timeout_s)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    if errors:
        raise errors[0]
