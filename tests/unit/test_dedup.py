"""Deduplicator: event-time window semantics, eviction, and exactly-once state records."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamer.errors import ConfigError, StateError
from streamer.events.dedup import Deduplicator
from streamer.events.schema import EngagementEvent


def ev(ts: float, event_id: str | None = "e1", user: str = "u") -> EngagementEvent:
    return EngagementEvent(user, "i", "click", ts, event_id=event_id)


def test_repeat_within_window_is_duplicate_only_on_the_same_partition():
    d = Deduplicator(60.0)
    assert d.check(ev(100.0), 0) is False
    assert d.check(ev(100.0), 0) is True
    assert d.check(ev(100.0), 1) is False   # same id, other partition: not a duplicate
    assert d.check(ev(100.0, "e2"), 0) is False


def test_events_without_id_are_never_duplicates():
    d = Deduplicator(60.0)
    assert [d.check(ev(100.0, None), 0) for _ in range(3)] == [False, False, False]
    assert len(d) == 0
    assert d.watermark(0) == 100.0


def test_window_boundary_is_inclusive_in_event_time():
    d = Deduplicator(10.0)
    d.check(ev(100.0), 0)
    assert d.check(ev(110.0), 0) is True        # ts - t0 == window
    assert d.check(ev(95.0), 0) is True         # earlier copy (t0 kept at 100)
    d2 = Deduplicator(10.0)
    d2.check(ev(100.0), 0)
    assert d2.check(ev(110.5), 0) is False      # past the window: a new event...
    assert d2.check(ev(115.0), 0) is True       # ...which is now the remembered one


def test_duplicate_does_not_refresh_t0():
    d = Deduplicator(10.0)
    d.check(ev(100.0), 0)
    assert d.check(ev(108.0), 0) is True
    assert d.check(ev(111.0), 0) is False       # 111 - 100 > 10 although 111 - 108 < 10


def test_eviction_follows_the_watermark_not_the_wall_clock():
    d = Deduplicator(10.0)
    d.check(ev(100.0, "a"), 0)
    d.check(ev(105.0, "b"), 0)
    d.check(ev(108.0, "c"), 1)
    assert len(d) == 3
    d.state_changes()
    d.check(ev(112.0, None), 0)                 # watermark 112: "a" (t0 100) out
    assert d.state_dict()[0]["ids"] == {"b": 105.0}
    assert d.state_dict()[1]["ids"] == {"c": 108.0}   # other partition untouched
    changes = d.state_changes()
    assert changes == {b"dedup/0/e/a": None, b"dedup/0/w": struct.pack(">d", 112.0)}
    assert d.check(ev(112.0, "a"), 0) is False  # forgotten: a new event
    assert d.state_changes() == {b"dedup/0/e/a": struct.pack(">d", 112.0)}


def test_late_event_beyond_the_window_is_not_remembered():
    d = Deduplicator(10.0)
    d.check(ev(200.0, "x"), 0)
    assert d.check(ev(100.0, "late"), 0) is False
    assert d.check(ev(100.0, "late"), 0) is False
    assert "late" not in d.state_dict()[0]["ids"]


def test_memory_stays_bounded_on_a_long_stream():
    d = Deduplicator(100.0)
    for i in range(20_000):
        d.check(ev(float(i), f"id{i}"), i % 4)
    # ids within 100 s of each partition's watermark: 101 per partition at most
    assert len(d) <= 4 * 26
    assert all(len(h) <= 30 for h in d._expiry.values())  # noqa: SLF001


def test_state_keys_and_values_layout():
    d = Deduplicator(5.0, key_prefix=b"X/")
    d.check(ev(1.5, "a/b é"), 3)
    assert d.state_changes() == {
        "X/3/e/a/b é".encode(): struct.pack(">d", 1.5),
        b"X/3/w": struct.pack(">d", 1.5),
    }
    assert d.state_changes() == {}


def test_load_ignores_foreign_records_and_rejects_malformed_ones():
    d = Deduplicator(5.0)
    d.load_state_records([(b"learner/x", b"whatever"), (b"dedup/0/w", struct.pack(">d", 3.0))])
    assert d.watermark(0) == 3.0
    for key, value in [(b"dedup/zz/w", struct.pack(">d", 1.0)), (b"dedup/0/w", b"short"),
                       (b"dedup/0/q/x", struct.pack(">d", 1.0)), (b"dedup/0", b"12345678")]:
        with pytest.raises(StateError, match="malformed dedup state record"):
            Deduplicator(5.0).load_state_records([(key, value)])


@pytest.mark.parametrize("window", [-1.0, float("nan"), float("inf"), True, "10"])
def test_bad_window_is_a_config_error(window):
    with pytest.raises(ConfigError, match="window_s"):
        Deduplicator(window)


def test_bad_prefix_is_a_config_error():
    with pytest.raises(ConfigError, match="key_prefix"):
        Deduplicator(1.0, key_prefix=b"")


# ------------------------------------------------------------------ oracle + round trip
def oracle(events: list[tuple[int, float, str | None]], window: float) -> list[bool]:
    """Brute-force statement of the documented semantics (no heaps, no eviction)."""
    wm: dict[int, float] = {}
    rec: dict[tuple[int, str], float] = {}
    out = []
    for part, ts, eid in events:
        wm[part] = max(wm.get(part, ts), ts)
        if eid is None:
            out.append(False)
            continue
        t0 = rec.get((part, eid))
        if t0 is not None and wm[part] - t0 <= window and ts - t0 <= window:
            out.append(True)
            continue
        out.append(False)
        if wm[part] - ts <= window:
            rec[(part, eid)] = ts
    return out


stream = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 60).map(float),
              st.none() | st.sampled_from(["a", "b", "c", "d"])),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(events=stream, window=st.sampled_from([0.0, 3.0, 10.0, 25.0]),
       cut=st.integers(0, 80), flush_every=st.integers(1, 7))
def test_matches_oracle_and_restores_from_records(events, window, cut, flush_every):
    live = Deduplicator(window)
    store: dict[bytes, bytes] = {}

    def flush() -> None:
        for k, v in live.state_changes().items():
            if v is None:
                store.pop(k, None)
            else:
                store[k] = v

    verdicts = []
    cut = min(cut, len(events))
    for i, (part, ts, eid) in enumerate(events[:cut]):
        verdicts.append(live.check(ev(ts, eid), part))
        if i % flush_every == 0:
            flush()
    flush()
    restored = Deduplicator(window)
    restored.load_state_records(sorted(store.items()))
    assert restored.state_dict() == live.state_dict()
    for part, ts, eid in events[cut:]:
        a, b = live.check(ev(ts, eid), part), restored.check(ev(ts, eid), part)
        assert a == b
        verdicts.append(a)
    assert verdicts == oracle(events, window)
    assert restored.state_dict() == live.state_dict()


def test_replay_with_random_times_matches_oracle():
    rng = np.random.default_rng(7)
    events = [(int(rng.integers(4)), float(t), f"e{int(rng.integers(300))}")
              for t in np.cumsum(rng.exponential(1.0, 5_000)) - rng.uniform(0, 20, 5_000)]
    d = Deduplicator(30.0)
    assert [d.check(ev(ts, eid), p) for p, ts, eid in events] == oracle(events, 30.0)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 2), st.floats(0.0, 50.0), st.sampled_from(
    [None, "a", "b", "c", "d"])), max_size=60), window=st.sampled_from([0.0, 3.0, 10.0]),
       cut=st.integers(0, 60))
def test_check_many_equals_check_per_event(rows, window, cut):
    one, many = Deduplicator(window_s=window), Deduplicator(window_s=window)
    verdicts = [one.check(ev(t, e), p) for p, t, e in rows]
    dups: list[int] = []
    for lo, hi in ((0, cut), (cut, len(rows))):  # two batches: state carries over
        part = rows[lo:hi]
        got = many.check_many([p for p, _, _ in part], [t for _, t, _ in part],
                              [e for _, _, e in part])
        dups += [lo + j for j in got]
    assert dups == [i for i, v in enumerate(verdicts) if v]
    assert many.state_dict() == one.state_dict()
    assert many.state_changes() == one.state_changes()
    def heaps(d: Deduplicator) -> dict[int, list[tuple[float, str]]]:
        return {p: h.entries() for p, h in d._expiry.items() if h}  # noqa: SLF001

    assert heaps(many) == heaps(one)  # same evictions still to come


def _flush_into(d: Deduplicator, store: dict[bytes, bytes]) -> None:
    """Apply ``d.state_changes()`` to ``store`` and check it then holds the whole state."""
    for key, value in d.state_changes().items():
        if value is None:
            assert key in store, "a delete of a key that was never written"
            del store[key]
        else:
            store[key] = value
    assert store == _full_records(d)


def _full_records(d: Deduplicator) -> dict[bytes, bytes]:
    """Every record the state has, encoded from scratch (what the store must hold)."""
    out = {}
    for p, part in d.state_dict().items():
        for event_id, t0 in part["ids"].items():  # type: ignore[union-attr]
            out[b"dedup/%d/e/%s" % (p, event_id.encode())] = struct.pack(">d", t0)
        if part["watermark"] is not None:
            out[b"dedup/%d/w" % p] = struct.pack(">d", part["watermark"])
    return out


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 1), st.floats(0.0, 40.0),
                                           st.sampled_from([None, "a", "b", "c"])),
                                 max_size=15), max_size=6),
       window=st.sampled_from([0.0, 2.0, 8.0]), reload_at=st.integers(0, 6))
def test_state_changes_keep_a_store_equal_to_the_state(batches, window, reload_at):
    d = Deduplicator(window_s=window)
    store: dict[bytes, bytes] = {}
    for b, rows in enumerate(batches):
        if b == reload_at:  # a restart: the state comes back from the store
            d = Deduplicator(window_s=window)
            d.load_state_records(store.items())
        d.check_many([p for p, _, _ in rows], [t for _, t, _ in rows], [e for _, _, e in rows])
        _flush_into(d, store)


def test_an_id_that_comes_and_goes_between_two_flushes_writes_nothing():
    d = Deduplicator(window_s=5.0)
    d.check(ev(0.0, "kept"), 0)
    assert set(d.state_changes()) == {b"dedup/0/e/kept", b"dedup/0/w"}
    d.check(ev(1.0, "brief"), 0)
    d.check(ev(20.0, None), 0)  # evicts both
    assert d.state_changes() == {b"dedup/0/e/kept": None,
                                 b"dedup/0/w": struct.pack(">d", 20.0)}


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(
    st.integers(0, 2), st.floats(0.0, 60.0),
    st.none() | st.integers(0, 400).map(lambda i: f"e{i}")), max_size=40), max_size=6),
       window=st.sampled_from([0.0, 3.0, 10.0, 25.0]), reload_at=st.integers(0, 6))
def test_vectorised_batches_equal_the_event_by_event_loop(batches, window, reload_at):
    # the vectorised path is forced for every batch (it needs 64 events otherwise); it
    # declines batches that may hold a duplicate, which then take the loop
    import unittest.mock

    import streamer.events.dedup as dedup_mod

    one, many = Deduplicator(window_s=window), Deduplicator(window_s=window)
    store_one: dict[bytes, bytes] = {}
    store_many: dict[bytes, bytes] = {}
    fast = 0
    for b, rows in enumerate(batches):
        if b == reload_at:  # a restart of the batched one from its store
            many = Deduplicator(window_s=window)
            many.load_state_records(store_many.items())
        verdicts = [one.check(ev(t, e), p) for p, t, e in rows]
        with unittest.mock.patch.object(dedup_mod, "_FAST_MIN", 1):
            before = many.state_dict()
            took = bool(rows) and many._check_new_ids(  # noqa: SLF001
                [p for p, _, _ in rows], [t for _, t, _ in rows], [e for _, _, e in rows])
            if not took:
                assert many.state_dict() == before  # declined: nothing changed
                got = many.check_many([p for p, _, _ in rows], [t for _, t, _ in rows],
                                      [e for _, _, e in rows])
            else:
                got = []
                fast += 1
        assert got == [i for i, v in enumerate(verdicts) if v]
        assert many.state_dict() == one.state_dict()
        for d, store in ((one, store_one), (many, store_many)):
            _flush_into(d, store)
        assert {p: h.entries() for p, h in many._expiry.items() if h} == \
            {p: h.entries() for p, h in one._expiry.items() if h}  # noqa: SLF001
    event(f"vectorised batches: {min(fast, 3)}")


def test_check_many_takes_the_vectorised_path_on_a_large_batch_of_new_ids():
    rng = np.random.default_rng(3)
    n = 5_000
    parts = rng.integers(0, 4, n).tolist()
    ts = (np.cumsum(rng.exponential(1.0, n)) - rng.uniform(0, 30, n)).tolist()
    ids = [None if i % 7 == 0 else f"e{i}" for i in range(n)]
    a, b = Deduplicator(40.0), Deduplicator(40.0)
    assert a._check_new_ids(parts, ts, ids)  # noqa: SLF001 - the batch qualifies
    assert b.check_many(parts[:1], ts[:1], ids[:1]) == []  # one event: the loop
    b2 = Deduplicator(40.0)
    assert [b2.check(ev(t, e), p) for p, t, e in zip(parts, ts, ids, strict=True)] == [False] * n
    assert a.state_dict() == b2.state_dict() and a.state_changes() == b2.state_changes()
    # a repeat makes the batch decline the vectorised path and take the loop
    again = ids[:100] + ids[:10]
    assert not a._check_new_ids(parts[:110], ts[:110], again)  # noqa: SLF001
