"""Contract checks every :class:`~streamer.learn.base.OnlineLearner` must pass (river-style).

Usage (CONVENTIONS C3)::

    @pytest.mark.parametrize("check", list(yield_checks(make)), ids=lambda c: c.__name__)
    def test_contract(check):
        check(make)

``make`` is a zero-argument factory returning a *fresh* learner with fixed params and
seed (e.g. ``functools.partial(DecayedCooccurrence, **params)``). Each check raises
``AssertionError`` with a message naming what broke.

Learners whose state is kept per source partition (class attribute
``per_partition_state = True``) are also checked for bitwise independence from the
interleaving of partitions across batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from streamer.learn.base import EventBatch, OnlineLearner
from streamer.types import item_key, user_key

__all__ = ["Check", "LearnerFactory", "make_events", "yield_checks"]

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


def check_no_nan_or_inf(make: LearnerFactory) -> None:
    """Vectors stay finite under extreme weights and event-time gaps."""
    ev = make_events(7, n=200)
    m = make()
    m.learn_many(ev)
    extreme = EventBatch.from_rows([
        ("0", "1", 1e30, 1e12), ("0", "2", 1e-30, 1e12 + 1), ("1", "1", 3e38, 2e12),
        ("2", "3", 1.0, -1e12), ("0", "1", 1.0, 4e12),
    ])
    m.learn_many(extreme)
    ids = _all_ids(ev) + _all_ids(extreme)
    vecs, mask = m.vectors(ids)
    assert np.isfinite(vecs).all(), "a vector has NaN or inf"
    assert not vecs[~mask].any(), "an id without a vector has a non-zero row"
    norms = np.linalg.norm(vecs[mask], axis=1)
    assert (norms > 0).all(), "an id in the mask has a zero vector"


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


def check_long_user_history(make: LearnerFactory) -> None:
    """One user with 100k events: finite vectors, and exact counts if the learner keeps them."""
    n = 100_000
    rng = np.random.default_rng(12)
    items = [str(i) for i in rng.integers(0, 50, n).tolist()]
    ev = EventBatch(["heavy"] * n, items, np.ones(n, np.float32),
                    np.arange(n, dtype=np.float64) * 7.0)
    m = make()
    for s in range(0, n, 10_000):
        m.learn_many(ev.slice(s, s + 10_000))
    vecs, mask = m.vectors(["u:heavy", *sorted({item_key(i) for i in items})])
    assert np.isfinite(vecs).all(), "long history produced NaN/inf"
    if type(m).update_counts is not OnlineLearner.update_counts:
        got = int(m.update_counts(["u:heavy"])[0])
        assert got == n, f"update_counts of a user with {n} events is {got}"


def yield_checks(make: LearnerFactory) -> Iterator[Check]:
    """Yield the checks that apply to the learners ``make`` builds."""
    yield check_seeding_is_idempotent
    yield check_batch_recut_invariance
    if getattr(type(make()), "per_partition_state", False):
        yield check_partition_interleaving_invariance
    yield check_state_records_round_trip
    yield check_state_dict_round_trip
    yield check_changed_is_exact
    yield check_no_nan_or_inf
    yield check_empty_batch
    yield check_unseen_ids_are_masked
    yield check_vectors_are_read_only
    yield check_entity_ids_match_mask
    yield check_long_user_history


def describe(check: Check) -> str:
    """Return a check's name for test ids."""
    return check.__name__

