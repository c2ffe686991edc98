"""Contract checks every :class:`~streamer.learn.base.OnlineLearner` must pass (river-style).

Usage (CONVENTIONS C3)::

    @pytest.mark.parametrize("check", list(yield_checks(make)), ids=lambda c: c.__name__)
    def test_contract(check):
        check(make)

``make`` is a zero-argument factory returning a *fresh* learner with fixed params and
seed (e.g. ``functools.partial(DecayedCooccurrence, **params)``). Each check raises
``AssertionError`` with a message naming what broke.

What is checked, for every learner: bitwise determinism under a seed and under any
re-cutting of the same events into batches; ``state_changes`` records and
``state_dict`` round trips that continue bitwise identically; an exact ``changed()``;
finite vectors under extreme weights (float32 max, subnormal) and event-time gaps of
~1e13 s both ways; empty batches; unseen ids; read-only ``vectors()``; ``entity_ids()``
agreeing with the mask; ``learn_many`` leaving its batch untouched and accepting
read-only arrays; very long sessions (3,000 distinct items in a row; one item 3,500
times); one user with 10^5 events. Optional checks, chosen by :func:`yield_checks`:

* ``per_partition_state = True`` on the class: bitwise independence from how
  partitions interleave across batches;
* a factory accepting an integer ``seed`` keyword (a ``functools.partial`` of a class
  with a ``seed`` parameter): another seed gives other vectors (``make(seed=s + 1)``);
* an overridden ``warm_start``: transfer sets vectors, reports and persists them
  exactly, refuses a learner that has learned events (``StateError``) and wrong shapes
  (``DimensionMismatch``).

Every check except the 10^5-event one runs in well under a second on small inputs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from streamer.errors import DimensionMismatch, StateError
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.types import item_key, user_key

__all__ = ["Check", "LearnerFactory", "describe", "make_events", "yield_checks"]

LearnerFactory = Callable[[], OnlineLearner]
Check = Callable[[LearnerFactory], None]


def make_events(
    seed: int,
    n: int = 600,
    *,
    n_users: int = 25,
    n_items: int = 40,
    n_partitions: int = 3,
    t0: float = 1_700_000_000.0,
) -> EventBatch:
    """Return a seeded synthetic stream in event-time order with some disorder.

    Users are spread over partitions by id (a user's events stay in one partition, as
    with Kafka keys); item ids overlap user ids (``"3"`` is both), ts advances by
    exponential gaps (mean 10 s) with a few events up to 60 s late; weights in
    ``[0.5, 3)``; per-partition offsets count from 0.

    Returns
    -------
    EventBatch
        ``n`` events over ``n_partitions`` partitions.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    # items: Zipf-ish popularity so that some items are frequent
    items = np.minimum(rng.zipf(1.6, n) - 1, n_items - 1)
    ts = t0 + np.cumsum(rng.exponential(10.0, n))
    late = rng.random(n) < 0.05
    ts[late] -= rng.uniform(0, 60, late.sum())
    parts = (users % n_partitions).astype(np.int32)
    offsets = np.zeros(n, np.int64)
    for p in range(n_partitions):
        sel = parts == p
        offsets[sel] = np.arange(int(sel.sum()))
    return EventBatch(
        [str(u) for u in users.tolist()], [str(i) for i in items.tolist()],
        rng.uniform(0.5, 3.0, n).astype(np.float32), ts.astype(np.float64), parts, offsets,
        ["click"] * n,
    )


def _concat(parts: list[EventBatch]) -> EventBatch:
    return EventBatch(
        [u for p in parts for u in p.user_ids], [i for p in parts for i in p.item_ids],
        np.concatenate([p.weights for p in parts]) if parts else np.zeros(0, np.float32),
        np.concatenate([p.ts for p in parts]) if parts else np.zeros(0, np.float64),
        np.concatenate([p.partitions for p in parts]) if parts else np.zeros(0, np.int32),
        np.concatenate([p.offsets for p in parts]) if parts else np.zeros(0, np.int64),
        [a for p in parts for a in p.actions],
    )


def _take(batch: EventBatch, idx: np.ndarray) -> EventBatch:
    return EventBatch(
        [batch.user_ids[k] for k in idx.tolist()], [batch.item_ids[k] for k in idx.tolist()],
        batch.weights[idx], batch.ts[idx], batch.partitions[idx], batch.offsets[idx],
        [batch.actions[k] for k in idx.tolist()],
    )


def _random_cuts(batch: EventBatch, seed: int) -> list[EventBatch]:
    rng = np.random.default_rng(seed)
    n = len(batch)
    k = int(rng.integers(1, max(2, n // 20)))
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(k, n - 1), replace=False)) if n > 1 else []
    bounds = [0, *np.asarray(cuts).tolist(), n]
    return [batch.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _interleave(batch: EventBatch, seed: int) -> EventBatch:
    """Return the same events with partitions interleaved differently (each keeps its order)."""
    rng = np.random.default_rng(seed)
    queues = {int(p): list(np.flatnonzero(batch.partitions == p))
              for p in np.unique(batch.partitions)}
    order: list[int] = []
    while queues:
        p = list(queues)[int(rng.integers(len(queues)))]
        take = int(rng.integers(1, 30))
        q = queues[p]
        order.extend(q[:take])
        del q[:take]
        if not q:
            del queues[p]
    return _take(batch, np.asarray(order, np.int64))


def _all_ids(batch: EventBatch) -> list[str]:
    return sorted({user_key(u) for u in batch.user_ids} | {item_key(i) for i in batch.item_ids})


def _assert_same_state(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], what: str) -> None:
    assert set(a) == set(b), f"{what}: state_dict keys differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape and x.dtype == y.dtype, (
            f"{what}: state_dict[{k!r}] is {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (
            f"{what}: state_dict[{k!r}] differs")


def _assert_same_vectors(a: OnlineLearner, b: OnlineLearner, ids: list[str], what: str) -> None:
    va, ma = a.vectors(ids)
    vb, mb = b.vectors(ids)
    assert np.array_equal(ma, mb), f"{what}: masks differ for {np.asarray(ids)[ma != mb][:5]}"
    bad = np.flatnonzero((va != vb).any(axis=1))
    assert len(bad) == 0, f"{what}: vectors differ bitwise for {[ids[k] for k in bad[:5]]}"
    assert a.entity_ids() == b.entity_ids(), f"{what}: entity_ids() differ"


def _learn_all(make: LearnerFactory, batches: list[EventBatch]) -> OnlineLearner:
    m = make()
    for b in batches:
        m.learn_many(b)
    return m


def check_seeding_is_idempotent(make: LearnerFactory) -> None:
    """Two learners from the same factory fed the same batches end bitwise equal."""
    ev = make_events(1)
    a = _learn_all(make, [ev])
    b = _learn_all(make, [ev])
    _assert_same_state(a.state_dict(), b.state_dict(), "same seed")
    _assert_same_vectors(a, b, _all_ids(ev), "same seed")


def check_batch_recut_invariance(make: LearnerFactory) -> None:
    """Re-cutting the same event sequence into other batches gives bitwise the same state."""
    ev = make_events(2)
    ref = _learn_all(make, [ev])
    for seed in range(3):
        other = _learn_all(make, _random_cuts(ev, seed))
        _assert_same_state(ref.state_dict(), other.state_dict(), f"re-cut {seed}")
        _assert_same_vectors(ref, other, _all_ids(ev), f"re-cut {seed}")
    single = _learn_all(make, [ev.slice(k, k + 1) for k in range(len(ev))])
    _assert_same_state(ref.state_dict(), single.state_dict(), "one event per batch")


def check_partition_interleaving_invariance(make: LearnerFactory) -> None:
    """Per-partition learners: another interleaving of partitions gives bitwise the same state."""
    ev = make_events(3, n_partitions=4)
    ref = _learn_all(make, [ev])
    for seed in range(3):
        shuffled = _interleave(ev, seed)
        other = _learn_all(make, _random_cuts(shuffled, seed + 10))
        _assert_same_state(ref.state_dict(), other.state_dict(), f"interleaving {seed}")
        _assert_same_vectors(ref, other, _all_ids(ev), f"interleaving {seed}")


def _apply_records(store: dict[bytes, bytes], changes: Mapping[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        assert isinstance(k, bytes), f"state_changes key {k!r} is not bytes"
        if v is None:
            store.pop(k, None)
        else:
            assert isinstance(v, bytes), f"state_changes value for {k!r} is not bytes or None"
            store[k] = v


def _check_continues_identically(a: OnlineLearner, b: OnlineLearner, rest: EventBatch,
                                 ids: list[str], what: str) -> None:
    _assert_same_state(a.state_dict(), b.state_dict(), f"{what} (after load)")
    _assert_same_vectors(a, b, ids, f"{what} (after load)")
    a.changed()
    b.changed()
    for part in _random_cuts(rest, 5):
        a.learn_many(part)
        b.learn_many(part)
        ca, cb = a.changed(), b.changed()
        assert ca == cb, f"{what}: changed() differs after reload: {sorted(ca ^ cb)[:5]}"
    _assert_same_state(a.state_dict(), b.state_dict(), f"{what} (continued)")
    _assert_same_vectors(a, b, ids, f"{what} (continued)")


def check_state_records_round_trip(make: LearnerFactory) -> None:
    """state_changes() records, reloaded into a fresh learner, continue bitwise identically."""
    ev = make_events(4)
    half = len(ev) // 2
    a = make()
    store: dict[bytes, bytes] = {}
    for part in _random_cuts(ev.slice(0, half), 7):
        a.learn_many(part)
        _apply_records(store, a.state_changes())
    assert store, "state_changes() returned no records after learning events"
    b = make()
    b.load_state_records(list(store.items()))
    _check_continues_identically(a, b, ev.slice(half, len(ev)), _all_ids(ev), "state records")
    # an incremental flush after reload carries what changed since the reload
    _apply_records(store, a.state_changes())
    c = make()
    c.load_state_records(list(store.items()))
    _assert_same_state(a.state_dict(), c.state_dict(), "state records (second flush)")
    assert a.state_changes() == {}, "state_changes() is not empty right after a flush"


def check_state_dict_round_trip(make: LearnerFactory) -> None:
    """load_state_dict(state_dict()) into a fresh learner continues bitwise identically."""
    ev = make_events(5)
    half = len(ev) // 2
    a = _learn_all(make, [ev.slice(0, half)])
    b = make()
    b.load_state_dict(a.state_dict())
    _check_continues_identically(a, b, ev.slice(half, len(ev)), _all_ids(ev), "state_dict")


def check_changed_is_exact(make: LearnerFactory) -> None:
    """Check that changed() returns exactly the ids whose vector (or presence) changed bitwise."""
    ev = make_events(6)
    ids = _all_ids(ev)
    m = make()
    m.changed()
    before, bmask = (np.array(x) for x in m.vectors(ids))
    for part in _random_cuts(ev, 11):
        m.learn_many(part)
        got = m.changed()
        after, amask = (np.array(x) for x in m.vectors(ids))
        diff = (amask != bmask) | (after != before).any(axis=1)
        want = {ids[k] for k in np.flatnonzero(diff)}
        assert got == want, (f"changed() is not exact: extra {sorted(got - want)[:5]}, "
                             f"missing {sorted(want - got)[:5]}")
        assert m.changed() == set(), "changed() did not reset"
        before, bmask = after, amask


def _assert_mask_consistent(m: OnlineLearner, ids: list[str], what: str) -> None:
    """Finite vectors, zero rows exactly where the mask is False, entity_ids() agrees."""
    vecs, mask = m.vectors(ids)
    assert vecs.shape == (len(ids), m.dim) and vecs.dtype == np.float32, (
        f"{what}: vectors() returned {vecs.dtype}{vecs.shape}, expected float32 "
        f"({len(ids)}, {m.dim})")
    bad = np.flatnonzero(~np.isfinite(vecs).all(axis=1))
    assert len(bad) == 0, f"{what}: NaN/inf in the vectors of {[ids[k] for k in bad[:5]]}"
    bad = np.flatnonzero(~mask & vecs.any(axis=1))
    assert len(bad) == 0, (
        f"{what}: ids without a vector (mask False) have non-zero rows: "
        f"{[ids[k] for k in bad[:5]]}")
    bad = np.flatnonzero(mask & ~vecs.any(axis=1))
    assert len(bad) == 0, (
        f"{what}: ids in the mask have all-zero vectors: {[ids[k] for k in bad[:5]]}")
    listed = set(m.entity_ids()) & set(ids)
    masked = {ids[k] for k in np.flatnonzero(mask)}
    assert listed == masked, (
        f"{what}: entity_ids() disagrees with the mask: listed only {sorted(listed - masked)[:5]}, "
        f"masked only {sorted(masked - listed)[:5]}")


def check_no_nan_or_inf(make: LearnerFactory) -> None:
    """Vectors stay finite under extreme weights (float32 max, subnormal) and ts gaps.

    Event-time gaps of ~1e13 s both ways (far-future events, then events 1e13 s late),
    repeated timestamps, and entities whose only events have a subnormal weight.
    """
    ev = make_events(7, n=200)
    m = make()
    m.learn_many(ev)
    extreme = EventBatch.from_rows([
        ("0", "1", 1e30, 1e12), ("0", "2", 1e-30, 1e12 + 1), ("1", "1", 3e38, 2e12),
        ("2", "3", 1.0, -1e12), ("0", "1", 1.0, 4e12),
    ])
    m.learn_many(extreme)
    f32 = np.finfo(np.float32)
    sub = float(np.float32(1e-45))  # the smallest positive (subnormal) float32
    tiny, big = float(f32.tiny), float(f32.max)
    fringe = EventBatch.from_rows([
        ("only-sub", "sub-item", sub, 5e12), ("only-sub", "sub-item", sub, 5e12),
        ("only-tiny", "tiny-item", tiny, 5e12), ("0", "1", big, 5e12), ("0", "1", big, 5e12),
        ("0", "2", sub, -5e12), ("1", "2", big, -5e12), ("0", "3", 1.0, 5e12 + 1e-3),
        ("3", "1", big, 5e12 + 1e-3), ("3", "4", sub, 5e12 + 1e-3),
    ])
    m.learn_many(fringe)
    ids = sorted(set(_all_ids(ev) + _all_ids(extreme) + _all_ids(fringe)))
    _assert_mask_consistent(m, ids, "extreme weights/ts")
    m.learn_many(make_events(70, n=100))  # ordinary events after the extremes
    _assert_mask_consistent(m, ids, "ordinary events after extreme weights/ts")


def check_empty_batch(make: LearnerFactory) -> None:
    """Check that an empty batch changes nothing."""
    ev = make_events(8, n=100)
    m = _learn_all(make, [ev])
    m.changed()
    before = m.state_dict()
    m.learn_many(EventBatch.empty())
    assert m.changed() == set(), "an empty batch changed vectors"
    _assert_same_state(before, m.state_dict(), "empty batch")


def check_unseen_ids_are_masked(make: LearnerFactory) -> None:
    """Unknown ids get mask False and zero rows; known ones are unit-free of NaN."""
    m = make()
    vecs, mask = m.vectors(["u:nobody", "i:nothing"])
    assert vecs.shape == (2, m.dim) and vecs.dtype == np.float32, f"bad shape/dtype {vecs.shape}"
    assert not mask.any() and not vecs.any(), "unseen ids on a fresh learner have vectors"
    m.learn_many(make_events(9, n=50))
    vecs, mask = m.vectors(["u:nobody", "i:nothing", "x-not-namespaced"])
    assert not mask.any() and not vecs.any(), "unseen ids have vectors after learning"


def check_vectors_are_read_only(make: LearnerFactory) -> None:
    """vectors() hands out arrays the caller cannot write into."""
    ev = make_events(10, n=50)
    m = _learn_all(make, [ev])
    vecs, _ = m.vectors(_all_ids(ev))
    try:
        vecs[0, 0] = 1.0
    except ValueError:
        return
    msg = "vectors() returned a writable array"
    raise AssertionError(msg)


def check_entity_ids_match_mask(make: LearnerFactory) -> None:
    """entity_ids() lists exactly the ids whose mask is True, deterministically ordered."""
    ev = make_events(11)
    m = _learn_all(make, [ev])
    ids = _all_ids(ev)
    _, mask = m.vectors(ids)
    listed = m.entity_ids()
    assert set(listed) == {ids[k] for k in np.flatnonzero(mask)}, "entity_ids() != masked ids"
    assert listed == m.entity_ids(), "entity_ids() order is not deterministic"


def _assert_counts(m: OnlineLearner, want: dict[str, int], what: str, *,
                   only_held: bool) -> None:
    """update_counts is exact for the ids in ``want``, if the learner keeps counts.

    With ``only_held``, ids without a vector are skipped (a learner may evict stale ids
    and forget them).
    """
    if type(m).update_counts is OnlineLearner.update_counts:
        return
    keys = list(want)
    mask = m.vectors(keys)[1] if only_held else np.ones(len(keys), np.bool_)
    got = m.update_counts(keys).tolist()
    for key, held, g in zip(keys, mask.tolist(), got, strict=True):
        assert not held or g == want[key], (
            f"{what}: update_counts({key!r}) is {g}, expected {want[key]} events")


def _assert_changed_from_fresh(m: OnlineLearner, what: str) -> None:
    """On a learner that was fresh at its last changed() call: changed() == entity_ids()."""
    got, listed = m.changed(), set(m.entity_ids())
    assert got == listed, (
        f"{what}: changed() after learning from scratch is not exactly the ids with a "
        f"vector: extra {sorted(got - listed)[:5]}, missing {sorted(listed - got)[:5]}")


def check_long_sessions(make: LearnerFactory) -> None:
    """Very long unbroken sessions: thousands of distinct items, and one item on repeat.

    User ``binge`` engages 3,000 distinct items 2 s apart; user ``loop`` engages one item
    3,000 times 1 s apart, then 500 more times at one identical ts. Vectors stay finite,
    the mask, ``entity_ids()`` and ``changed()`` agree, and ``update_counts`` (if kept)
    is exact for the users still held (a learner may evict ``binge`` once it is stale).
    """
    n_binge, n_loop, n_burst = 3_000, 3_000, 500
    t0 = 1_700_000_000.0
    binge = EventBatch(["binge"] * n_binge, [f"b{k}" for k in range(n_binge)],
                       np.ones(n_binge, np.float32), t0 + 2.0 * np.arange(n_binge))
    t1 = t0 + 2.0 * n_binge
    loop_ts = np.concatenate([t1 + np.arange(n_loop, dtype=np.float64),
                              np.full(n_burst, t1 + n_loop)])
    loop = EventBatch(["loop"] * (n_loop + n_burst), ["x"] * (n_loop + n_burst),
                      np.ones(n_loop + n_burst, np.float32), loop_ts)
    m = make()
    m.changed()
    for ev in (binge, loop):
        for s in range(0, len(ev), 1_000):
            m.learn_many(ev.slice(s, s + 1_000))
    ids = sorted(set(_all_ids(binge)) | set(_all_ids(loop)))
    _assert_mask_consistent(m, ids, "long sessions")
    _assert_changed_from_fresh(m, "long sessions")
    _assert_counts(m, {"u:binge": n_binge, "u:loop": n_loop + n_burst}, "long sessions",
                   only_held=True)


def check_long_user_history(make: LearnerFactory) -> None:
    """One user with 100k events over 50 items: finite vectors, consistent mask, exact counts."""
    n = 100_000
    rng = np.random.default_rng(12)
    items = [str(i) for i in rng.integers(0, 50, n).tolist()]
    ev = EventBatch(["heavy"] * n, items, np.ones(n, np.float32),
                    np.arange(n, dtype=np.float64) * 7.0)
    m = make()
    m.changed()
    for s in range(0, n, 10_000):
        m.learn_many(ev.slice(s, s + 10_000))
    _assert_mask_consistent(m, _all_ids(ev), "100k-event user")
    _assert_changed_from_fresh(m, "100k-event user")
    _assert_counts(m, {"u:heavy": n}, "100k-event user", only_held=False)


def _batch_columns(b: EventBatch) -> dict[str, object]:
    return {"user_ids": list(b.user_ids), "item_ids": list(b.item_ids),
            "weights": np.array(b.weights), "ts": np.array(b.ts),
            "partitions": np.array(b.partitions), "offsets": np.array(b.offsets),
            "actions": list(b.actions)}


def check_learn_many_does_not_mutate_batch(make: LearnerFactory) -> None:
    """learn_many leaves its batch untouched and accepts read-only arrays (np.frombuffer)."""
    ev = make_events(17, n=300)
    want = _batch_columns(ev)
    m = make()
    m.learn_many(ev)
    got = _batch_columns(ev)
    for col, w in want.items():
        g = got[col]
        same = np.array_equal(g, w) if isinstance(w, np.ndarray) else g == w
        assert same, f"learn_many mutated its input batch (column {col!r})"
    cols = _batch_columns(make_events(18, n=300))
    for col in ("weights", "ts", "partitions", "offsets"):
        cols[col].flags.writeable = False  # type: ignore[union-attr]
    frozen = EventBatch(**cols)  # type: ignore[arg-type]
    try:
        make().learn_many(frozen)
    except Exception as exc:
        msg = f"learn_many failed on a batch with read-only arrays: {type(exc).__name__}: {exc}"
        raise AssertionError(msg) from exc


def _seed_of(make: LearnerFactory) -> int | None:
    """Return the integer ``seed`` keyword ``make`` accepts (bound or default), else None."""
    try:
        p = inspect.signature(make).parameters.get("seed")
    except (TypeError, ValueError):
        return None
    if p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
        return None
    v = p.default
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def check_seed_changes_vectors(make: LearnerFactory) -> None:
    """Seeded learners: another seed gives other vectors for most ids (the seed is used).

    Runs only when ``make`` accepts a ``seed`` keyword (e.g. a ``functools.partial`` of
    a class with a ``seed`` parameter); it is called as ``make(seed=seed + 1)``.
    """
    seed = _seed_of(make)
    assert seed is not None, "check_seed_changes_vectors needs a factory with a seed keyword"
    other = seed + 1
    ev = make_events(13, n=300)
    a = _learn_all(make, [ev])
    b = _learn_all(functools.partial(make, seed=other), [ev])
    ids = _all_ids(ev)
    va, ma = a.vectors(ids)
    vb, mb = b.vectors(ids)
    both = ma & mb
    assert both.any(), f"no id has a vector under both seed={seed} and seed={other}"
    differ = (va[both] != vb[both]).any(axis=1)
    assert differ.mean() > 0.5, (
        f"seed={seed} and seed={other} give bitwise-identical vectors for "
        f"{int((~differ).sum())} of {int(both.sum())} ids: the seed has (almost) no effect")


def _supports_warm_start(m: OnlineLearner) -> bool:
    return type(m).warm_start is not OnlineLearner.warm_start


def _warm_vectors(dim: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _expect_raises(exc_type: type[BaseException], fn: Callable[[], object], what: str) -> None:
    try:
        fn()
    except exc_type:
        return
    except Exception as exc:
        msg = f"{what}: raised {type(exc).__name__}: {exc}, expected {exc_type.__name__}"
        raise AssertionError(msg) from exc
    msg = f"{what}: did not raise {exc_type.__name__}"
    raise AssertionError(msg)


def check_warm_start_round_trip(make: LearnerFactory) -> None:
    """Warm start gives the ids vectors, reports them exactly, and persists them.

    A fresh learner warm-started with random vectors for some ids (a third of the ids
    of the events that follow, plus two ids no event names): each id gets a finite
    vector pointing the given way (cosine > 0.99), the return value counts them,
    ``changed()`` is exactly those ids, ``state_changes()`` is non-empty, and a fresh
    learner loaded from the records has the same ``state_dict`` and vectors and
    continues bitwise identically on events.
    """
    ev = make_events(15, n=300)
    warm = [*_all_ids(ev)[::3], "u:warm-only", "i:warm-only"]
    m = make()
    given = _warm_vectors(m.dim, len(warm), 15)
    store: dict[bytes, bytes] = {}
    m.changed()
    _apply_records(store, m.state_changes())
    done = m.warm_start(warm, given)
    vecs, mask = m.vectors(warm)
    missing = [warm[k] for k in np.flatnonzero(~mask)]
    assert not missing, f"warm_start: ids without a vector afterwards: {missing[:5]}"
    assert done == len(warm), f"warm_start returned {done!r}, but {len(warm)} ids got a vector"
    assert np.isfinite(vecs).all(), "warm_start produced NaN/inf"
    cos = (vecs * given).sum(axis=1) / (
        np.linalg.norm(vecs, axis=1) * np.linalg.norm(given, axis=1))
    off = [warm[k] for k in np.flatnonzero(~(cos > 0.99))]
    assert not off, f"warm_start: vectors do not point the given way for {off[:5]}"
    got = m.changed()
    assert got == set(warm), (f"changed() after warm_start: extra {sorted(got - set(warm))[:5]}, "
                              f"missing {sorted(set(warm) - got)[:5]}")
    changes = m.state_changes()
    assert changes, "state_changes() is empty after warm_start"
    _apply_records(store, changes)
    b = make()
    b.load_state_records(list(store.items()))
    ids = sorted(set(_all_ids(ev)) | set(warm))
    _check_continues_identically(m, b, ev, ids, "warm start records")


def check_warm_start_needs_fresh_learner(make: LearnerFactory) -> None:
    """warm_start after events raises StateError and changes nothing."""
    ev = make_events(16, n=100)
    m = _learn_all(make, [ev])
    m.changed()
    before = m.state_dict()
    ids = _all_ids(ev)[:4]
    _expect_raises(StateError, lambda: m.warm_start(ids, _warm_vectors(m.dim, 4, 16)),
                   "warm_start on a learner that has learned events")
    assert m.changed() == set(), "a refused warm_start changed vectors"
    _assert_same_state(before, m.state_dict(), "refused warm_start")


def check_warm_start_rejects_bad_shape(make: LearnerFactory) -> None:
    """warm_start with vectors not shaped (len(ids), dim) raises DimensionMismatch, no change."""
    m = make()
    fresh = m.state_dict()
    ids = ["u:a", "i:b", "i:c"]
    d = m.dim
    for shape in ((3, d + 1), (4, d), (2, d), (3 * d,), (1, 3, d)):
        vecs = np.ones(shape, np.float32)
        _expect_raises(DimensionMismatch, lambda v=vecs: m.warm_start(ids, v),
                       f"warm_start with vectors of shape {shape} for {len(ids)} ids, dim {d}")
    assert m.changed() == set(), "a refused warm_start changed vectors"
    assert m.entity_ids() == [], f"a refused warm_start created ids {m.entity_ids()[:5]}"
    _assert_same_state(fresh, m.state_dict(), "refused warm_start")


def yield_checks(make: LearnerFactory) -> Iterator[Check]:
    """Yield the checks that apply to the learners ``make`` builds.

    Parameters
    ----------
    make
        Zero-argument factory of fresh, identically configured learners.

    Yields
    ------
    Check
        Every general check; plus the partition-interleaving check if the class sets
        ``per_partition_state = True``; the seed check if ``make`` accepts an integer
        ``seed`` keyword; the warm-start checks if the class overrides
        :meth:`~streamer.learn.base.OnlineLearner.warm_start`.
    """
    probe = make()
    yield check_seeding_is_idempotent
    if _seed_of(make) is not None:
        yield check_seed_changes_vectors
    yield check_batch_recut_invariance
    if getattr(type(probe), "per_partition_state", False):
        yield check_partition_interleaving_invariance
    yield check_state_records_round_trip
    yield check_state_dict_round_trip
    yield check_changed_is_exact
    yield check_no_nan_or_inf
    yield check_empty_batch
    yield check_unseen_ids_are_masked
    yield check_vectors_are_read_only
    yield check_entity_ids_match_mask
    yield check_learn_many_does_not_mutate_batch
    yield check_long_sessions
    yield check_long_user_history
    if _supports_warm_start(probe):
        yield check_warm_start_round_trip
        yield check_warm_start_needs_fresh_learner
        yield check_warm_start_rejects_bad_shape


def describe(check: Check) -> str:
    """Return a check's name for test ids."""
    return check.__name__
