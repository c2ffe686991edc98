"""Pure parts of ``streamer backfill``: time bounds, offset choice, deterministic merge order.

No Kafka here: :class:`CatchUp` is fed fake messages shaped like confluent-kafka's.
The integration tests (tests/integration/test_backfill.py) run the real thing.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from streamer.backfill import resolve_target
from streamer.backfill_plan import (
    LOOKAHEAD,
    Bound,
    CatchUp,
    OrderedMerge,
    PartitionPlan,
    check_range,
    merge_keys,
    parse_bound,
    plan_offsets,
)
from streamer.errors import BadRequest, UnknownType
from streamer.topology import TopologySpec

# --------------------------------------------------------------------------------------
# time bounds


@pytest.mark.parametrize(("text", "ms"), [
    ("2014-01-01T00:00:00Z", 1_388_534_400_000),
    ("2014-01-01T00:00:00", 1_388_534_400_000),          # no offset: UTC
    ("2014-01-01", 1_388_534_400_000),                   # date only
    ("2014-01-01T02:00:00+02:00", 1_388_534_400_000),    # same instant
    ("2014-01-01T00:00:00.0015Z", 1_388_534_400_002),    # rounded up to the ms
    ("1388534400", 1_388_534_400_000),                   # epoch seconds
    ("1388534400.5", 1_388_534_400_500),
    ("1388534400.0001", 1_388_534_400_001),              # rounded up, exactly (Decimal)
    (" 0 ", 0),
])
def test_times_parse_to_event_ms(text, ms):
    assert parse_bound(text, option="--from") == Bound("time", ms)
    assert parse_bound(text, option="--until") == Bound("time", ms)


def test_keywords_belong_to_their_option():
    assert parse_bound("earliest", option="--from") == Bound("earliest")
    assert parse_bound("latest", option="--until") == Bound("latest")
    with pytest.raises(BadRequest, match="--from 'latest'.*expected 'earliest'"):
        parse_bound("latest", option="--from")
    with pytest.raises(BadRequest, match="--until 'earliest'.*expected 'latest'"):
        parse_bound("earliest", option="--until")


@pytest.mark.parametrize("text", ["yesterday", "", "2014-13-01", "-5", "1969-12-31T23:59:59Z",
                                  "nan", "inf", "1e3", "2014-01-01T25:00", "20140101x"])
def test_bad_times_are_one_line_errors_naming_value_and_forms(text):
    with pytest.raises(BadRequest) as info:
        parse_bound(text, option="--from")
    msg = str(info.value)
    assert "\n" not in msg
    assert f"--from {text!r}" in msg
    assert "ISO-8601" in msg and "epoch seconds" in msg


@pytest.mark.parametrize(("text", "hint"), [("1389312000000", True), ("253402300800", True),
                                            ("1000000000000000", False)])
def test_times_past_the_year_9999_are_one_line_errors(text, hint):
    for option in ("--from", "--until"):
        with pytest.raises(BadRequest) as info:
            parse_bound(text, option=option)  # type: ignore[arg-type]
        msg = str(info.value)
        assert "\n" not in msg and f"{option} {text!r} is after 9999-12-31" in msg
        assert ("epoch milliseconds?" in msg) == hint
        assert "epoch seconds" in msg
    assert str(parse_bound("253402300799", option="--from")) == "9999-12-31T23:59:59.000Z"


def test_a_plain_number_is_epoch_seconds_not_a_basic_iso_date():
    assert parse_bound("20140101", option="--from") == Bound("time", 20_140_101_000)


def test_bound_prints_as_utc_iso():
    assert str(parse_bound("1388534400.25", option="--from")) == "2014-01-01T00:00:00.250Z"
    assert str(Bound("latest")) == "latest"


def test_range_must_move_forward():
    a = parse_bound("2014-01-05", option="--from")
    b = parse_bound("2014-01-02", option="--until")
    with pytest.raises(BadRequest, match="--until .* is not later than --from"):
        check_range(a, b)
    with pytest.raises(BadRequest):
        check_range(a, Bound("time", a.ms))
    check_range(b, Bound("time", a.ms))          # forward: fine
    check_range(Bound("earliest"), b)
    check_range(a, Bound("latest"))
    check_range(a, None)                          # follow mode


# --------------------------------------------------------------------------------------
# start and stop offsets


BEGIN = {0: 0, 1: 5, 2: 0}
END = {0: 100, 1: 50, 2: 0}


def test_earliest_to_latest_covers_every_partition():
    plan = plan_offsets([0, 1, 2], begin=BEGIN, end=END, stored={}, from_offsets=None,
                        until_offsets=None)
    assert [(pl.start, pl.stop, pl.todo) for pl in plan.values()] == \
        [(0, 100, 100), (5, 50, 45), (0, 0, 0)]


def test_restart_resumes_after_the_stored_offset():
    plan = plan_offsets([0, 1, 2], begin=BEGIN, end=END, stored={0: 41, 1: 49},
                        from_offsets=None, until_offsets=None)
    assert (plan[0].start, plan[0].stored) == (42, 41)
    assert plan[1].todo == 0 and plan[1].start == 50


def test_from_time_uses_the_broker_answer_and_none_means_the_end():
    plan = plan_offsets([0, 1, 2], begin=BEGIN, end=END, stored={0: 10},
                        from_offsets={0: 30, 1: None, 2: None}, until_offsets=None)
    assert plan[0].start == 30        # from beats stored + 1
    assert plan[1].start == 50 and plan[1].todo == 0
    plan = plan_offsets([0], begin=BEGIN, end=END, stored={0: 60},
                        from_offsets={0: 30}, until_offsets=None)
    assert plan[0].start == 61        # stored + 1 beats from


def test_until_time_stops_before_the_first_record_at_or_after_it():
    plan = plan_offsets([0, 1], begin=BEGIN, end=END, stored={1: 30},
                        from_offsets=None, until_offsets={0: 70, 1: 20})
    assert (plan[0].start, plan[0].stop, plan[0].todo) == (0, 70, 70)
    assert plan[1].todo == 0          # the table is already past the stop
    plan = plan_offsets([0], begin=BEGIN, end=END, stored={}, from_offsets=None,
                        until_offsets={0: None})
    assert plan[0].stop == 100        # no record at/after until: the end offset


def test_records_deleted_by_retention_start_at_the_beginning():
    plan = plan_offsets([1], begin={1: 20}, end={1: 50}, stored={1: 3}, from_offsets=None,
                        until_offsets=None)
    assert plan[1].start == 20


# --------------------------------------------------------------------------------------
# deterministic merge


def _reference(parts: dict[int, list[int]], lookahead: int = LOOKAHEAD
               ) -> list[tuple[int, int]]:
    """The k-way merge of the partitions' heads by (key, partition) (heapq.merge), a
    record's key being the smallest timestamp of it and its next lookahead-1 records,
    computed here by brute force."""
    its = []
    for p, ts in sorted(parts.items()):
        keys = [min(ts[o:o + lookahead]) for o in range(len(ts))]
        its.append([(k, p, o) for o, k in enumerate(keys)])
    return [(p, o) for _k, p, o in heapq.merge(*its)]


def _random_parts(rng: np.random.Generator) -> dict[int, list[int]]:
    k = int(rng.integers(1, 5))
    # timestamps mostly increase but with ties and out-of-order records (bad clocks)
    return {p: [int(x) for x in np.cumsum(rng.integers(-3, 6, size=int(rng.integers(0, 30))))]
            for p in range(k)}


def _stream(merge: OrderedMerge, parts: dict[int, list[int]], rng: np.random.Generator
            ) -> list[tuple[int, int]]:
    """Feed the records in random interleavings and chunk sizes; collect the releases."""
    pos = dict.fromkeys(parts, 0)
    out: list[tuple[int, int]] = []
    for p, ts in parts.items():
        if not ts:
            merge.close(p)
    while any(pos[p] < len(ts) for p, ts in parts.items()):
        p = int(rng.choice([q for q, ts in parts.items() if pos[q] < len(ts)]))
        n = int(rng.integers(1, 6))
        chunk = range(pos[p], min(pos[p] + n, len(parts[p])))
        merge.extend(p, [(p, o) for o in chunk], [parts[p][o] for o in chunk])
        pos[p] = chunk.stop
        if pos[p] == len(parts[p]):
            merge.close(p)
        out += merge.pop_ready()
    out += merge.pop_ready()
    assert merge.finished
    return out


@pytest.mark.parametrize("lookahead", [1, 3, LOOKAHEAD])
def test_merge_order_is_the_head_merge_whatever_the_fetch_chunks(lookahead):
    rng = np.random.default_rng(3)
    for _ in range(400):
        parts = _random_parts(rng)
        want = _reference(parts, lookahead)
        assert _stream(OrderedMerge(parts, lookahead=lookahead), parts, rng) == want
        assert _stream(OrderedMerge(parts, lookahead=lookahead), parts, rng) == want


def test_merge_keys_match_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(200):
        ts = rng.integers(0, 50, size=int(rng.integers(0, 20)))
        w = int(rng.integers(1, 6))
        assert merge_keys(ts, w).tolist() == [int(min(ts[j:j + w])) for j in range(len(ts))]


def test_a_record_stamped_in_the_future_does_not_hold_back_its_partition():
    # partition 0 has a bad record stamped at 10_000 among records at 1..20
    parts = {0: [1, 10_000, 3, 5, 7, 9, 11, 13, 15, 17, 19], 1: list(range(2, 21, 2))}
    order = _stream(OrderedMerge(parts), parts, np.random.default_rng(0))
    assert order == _reference(parts)
    times = [parts[p][o] for p, o in order if (p, o) != (0, 1)]
    assert times == sorted(times)                 # the valid records stay in time order
    raw = _reference(parts, lookahead=1)           # keyed by the raw timestamp instead
    assert raw[-9:] == [(0, o) for o in range(2, 11)]  # partition 0's rest waits for all


def test_merge_is_memoryless_so_a_restart_continues_the_same_order():
    rng = np.random.default_rng(4)
    for _ in range(300):
        parts = _random_parts(rng)
        full = _reference(parts)
        cut = int(rng.integers(0, len(full) + 1))
        # what a table holds after the first `cut` records: a position per partition
        done = {p: max((o + 1 for q, o in full[:cut] if q == p), default=0) for p in parts}
        rest = {p: ts[done[p]:] for p, ts in parts.items()}
        resumed = [(p, o + done[p]) for p, o in _stream(OrderedMerge(rest), rest, rng)]
        assert _reference(rest) == [(p, o - done[p]) for p, o in full[cut:]]
        assert resumed == full[cut:]


def test_merge_waits_for_every_open_partition():
    m = OrderedMerge([0, 1, 2], lookahead=1)
    m.extend(0, ["a"], [5])
    m.extend(1, ["b"], [1])
    assert m.pop_ready() == []                 # partition 2 has given nothing yet
    m.extend(2, ["c"], [9])
    assert m.pop_ready() == ["b"]              # 1 may still give a record at 1..5
    m.extend(1, ["b2"], [7])
    assert m.pop_ready() == ["a"]              # every open partition is now past 5
    m.close(0)
    assert m.pop_ready() == ["b2"]
    m.close(1)
    assert m.pop_ready() == ["c"]              # its own partition never holds it back
    assert not m.finished
    m.close(2)
    assert m.finished and m.pending == 0


def test_merge_waits_for_the_look_ahead_until_a_partition_closes():
    m = OrderedMerge([0, 1], lookahead=3)
    m.extend(0, ["a0", "a1"], [1, 2])
    m.extend(1, ["b0", "b1", "b2"], [5, 6, 7])
    assert m.pop_ready() == []            # a0's key needs a third record of partition 0
    m.close(0)                            # ... or the end of partition 0
    assert m.pop_ready() == ["a0", "a1", "b0"]
    assert m.pending == 2                 # b1, b2 still wait for their successors
    m.close(1)
    assert m.pop_ready() == ["b1", "b2"]


def test_merge_refuses_records_of_a_closed_partition():
    m = OrderedMerge([0])
    m.close(0)
    with pytest.raises(ValueError, match="closed"):
        m.extend(0, ["x"], [1])
    with pytest.raises(ValueError, match="timestamps"):
        OrderedMerge([1]).extend(1, ["x", "y"], [1])


# --------------------------------------------------------------------------------------
# catch-up batches from polled messages


@dataclass
class FakeMessage:
    """The part of confluent_kafka.Message that a catch-up reads."""

    p: int
    o: int
    ts: int
    err: object | None = None

    def error(self) -> object | None:
        return self.err

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def value(self) -> bytes:
        return f"{self.p}/{self.o}".encode()


def _polls(logs: dict[int, list[int]], starts: dict[int, int], rng: np.random.Generator,
           ) -> list[list[FakeMessage]]:
    """Split each partition's records from its start into random polls, interleaved."""
    queues = {p: [FakeMessage(p, o, t) for o, t in enumerate(ts)][starts[p]:]
              for p, ts in logs.items()}
    polls: list[list[FakeMessage]] = []
    while any(queues.values()):
        poll: list[FakeMessage] = []
        for p in rng.permutation(list(queues)):
            n = int(rng.integers(0, 8))
            poll += queues[int(p)][:n]
            del queues[int(p)][:n]
        polls.append(poll)
    return polls


def _run(cu: CatchUp, polls: list[list[FakeMessage]]) -> list[list[tuple[int, int]]]:
    batches = []
    it = iter(polls)
    while not cu.done:
        chunk = cu.next_batch()
        if chunk is not None:
            batches.append([(m.partition, m.offset) for m in chunk])
            continue
        cu.feed(next(it))
    return batches


def test_catch_up_batches_depend_on_the_data_not_on_the_polls():
    rng = np.random.default_rng(5)
    logs = {p: [int(x) for x in np.cumsum(rng.integers(0, 4, size=40))] for p in range(3)}
    plan = plan_offsets(logs, begin=dict.fromkeys(logs, 0), end=dict.fromkeys(logs, 40),
                        stored={1: 9}, from_offsets=None, until_offsets={0: 30, 1: None,
                                                                         2: 25})
    starts = {p: pl.start for p, pl in plan.items()}
    first = _run(CatchUp("t", plan, 7), _polls(logs, starts, rng))
    for _ in range(20):
        assert _run(CatchUp("t", plan, 7), _polls(logs, starts, rng)) == first
    flat = list(itertools.chain.from_iterable(first))
    assert [len(b) for b in first[:-1]] == [7] * (len(first) - 1) and 1 <= len(first[-1]) <= 7
    assert sorted(flat) == sorted((p, o) for p, pl in plan.items()
                                  for o in range(pl.start, pl.stop))
    want = _reference({p: logs[p][plan[p].start:plan[p].stop] for p in logs})
    assert flat == [(p, o + plan[p].start) for p, o in want]


def test_catch_up_hands_out_ready_records_early_on_request_in_the_same_order():
    rng = np.random.default_rng(9)
    logs = {p: [int(x) for x in np.cumsum(rng.integers(0, 4, size=60))] for p in range(3)}
    plan = plan_offsets(logs, begin=dict.fromkeys(logs, 0), end=dict.fromkeys(logs, 60),
                        stored={}, from_offsets=None, until_offsets=dict.fromkeys(logs))
    starts = {p: pl.start for p, pl in plan.items()}
    flat = list(itertools.chain.from_iterable(
        _run(CatchUp("t", plan, 180), _polls(logs, starts, rng))))
    early_seen = 0
    for _ in range(10):
        cu = CatchUp("t", plan, 40)
        batches = []
        for poll in _polls(logs, starts, rng):
            cu.feed(poll)
            while (chunk := cu.next_batch()) is not None:
                assert len(chunk) == 40 or cu.done
                batches.append(chunk)
            if rng.random() < 0.5 and (chunk := cu.next_batch(at_least=4)) is not None:
                assert 4 <= len(chunk) < 40
                batches.append(chunk)
                early_seen += 1
        while (chunk := cu.next_batch()) is not None:
            batches.append(chunk)
        assert cu.done
        assert [(m.partition, m.offset) for b in batches for m in b] == flat
    assert early_seen > 0
    empty = CatchUp("t", plan, 40)
    assert empty.next_batch(at_least=1) is None  # nothing ready: nothing handed out


def test_catch_up_keeps_records_past_the_stop_only_when_following():
    plan = {0: PartitionPlan(0, 0, 10, -1, 0, 3), 1: PartitionPlan(1, 0, 0, -1, 0, 0)}
    poll = [FakeMessage(0, o, o) for o in range(6)] + [FakeMessage(1, 0, 2)]
    keep = CatchUp("t", plan, 100, keep_overflow=True)
    closed, errors = keep.feed(poll)
    assert closed == [0] and errors == []
    assert [m.offset for m in keep.next_batch()] == [0, 1, 2]
    assert keep.done
    assert [(m.partition, m.offset) for ms in keep.overflow.values() for m in ms] == \
        [(0, 3), (0, 4), (0, 5), (1, 0)]
    drop = CatchUp("t", plan, 100)
    drop.feed(poll)
    assert not any(drop.overflow.values())


def test_catch_up_says_how_many_records_are_still_on_their_way():
    plan = {0: PartitionPlan(0, 0, 10, 3, 4, 10), 1: PartitionPlan(1, 0, 5, -1, 0, 5),
            2: PartitionPlan(2, 0, 7, 6, 7, 7)}
    cu = CatchUp("t", plan, 100)
    assert cu.expected() == 6 + 5          # partition 2 has nothing to do
    cu.feed([FakeMessage(0, o, o) for o in range(4, 8)] + [FakeMessage(1, 0, 0)])
    assert cu.expected() == 2 + 4
    cu.feed([FakeMessage(1, o, o) for o in range(1, 5)])
    assert cu.expected() == 2 and not cu.is_open(1)
    cu.feed([FakeMessage(0, 8, 8), FakeMessage(0, 9, 9)])
    assert cu.expected() == 0
    assert len(cu.next_batch()) == 11 and cu.done


def test_catch_up_hands_error_events_to_the_caller():
    plan = {0: PartitionPlan(0, 0, 2, -1, 0, 2)}
    cu = CatchUp("t", plan, 10)
    closed, errors = cu.feed([FakeMessage(0, 0, 1), FakeMessage(0, -1, 0, err="transport")])
    assert errors == ["transport"] and closed == []
    assert not cu.done and cu.next_batch() is None
    assert cu.feed([FakeMessage(0, 1, 1)]) == ([0], [])
    assert [m.value for m in cu.next_batch()] == [b"0/0", b"0/1"]


# --------------------------------------------------------------------------------------
# target resolution


SPECS = (
    TopologySpec(name="a", algorithm="cooc", version=1),
    TopologySpec(name="a", algorithm="cooc", version=3),
    TopologySpec(name="b", algorithm="cooc", version=2),
)


def test_bare_name_is_the_highest_declared_version_and_says_so():
    spec, note = resolve_target("a", SPECS)
    assert (spec.name, spec.version) == ("a", 3)
    assert "a.v3" in note and "highest declared version" in note and "\n" not in note
    spec, note = resolve_target("a.v1", SPECS)
    assert spec.version == 1 and note == "backfill target: a.v1"


def test_unknown_types_and_versions_list_what_is_declared():
    with pytest.raises(UnknownType, match="declared types: a, b"):
        resolve_target("zz", SPECS)
    with pytest.raises(UnknownType, match=r"declared versions: \[1, 3\]"):
        resolve_target("a.v2", SPECS)
    with pytest.raises(BadRequest):
        resolve_target("A_B", SPECS)


# --------------------------------------------------------------------------------------
# garbage collection around the catch-up


def test_the_collector_is_off_during_the_catch_up_and_restored_after():
    import gc
    import weakref

    from streamer.backfill import _collect, _gc_between_batches

    class Node:
        pass

    assert gc.isenabled()
    with _gc_between_batches():
        assert not gc.isenabled()
        a = Node()
        a.self = a                # a cycle left behind by "a batch"
        ref = weakref.ref(a)
        del a
        assert ref() is not None  # no automatic collection inside a batch
        _collect()
        assert ref() is None      # swept between batches
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_catch_up_status_lines_without_a_terminal_every_interval():
    import io

    from rich.console import Console

    from streamer.backfill import Progress
    from streamer.cli_backfill import _Lines

    now = [100.0]
    out = io.StringIO()
    lines = _Lines(Console(file=out, width=200), every_s=10.0, clock=lambda: now[0])

    def progress(applied: int, phase: str = "catch-up") -> Progress:
        return Progress(phase=phase, applied=applied, accepted=applied, rejected=0,  # type: ignore[arg-type]
                        total=1000, lag=1000 - applied, elapsed_s=now[0] - 100.0)

    lines.update(progress(10))  # before the first interval: nothing
    now[0] = 110.0
    lines.update(progress(400))
    now[0] = 115.0
    lines.update(progress(600))  # within the interval: nothing
    now[0] = 121.0
    lines.update(progress(900, "follow"))  # the follow phase has its own status lines
    lines.update(progress(800))
    got = out.getvalue().splitlines()
    assert got == ["catch-up: 400 of 1,000 records applied (40%), 40 events/s, lag 600",
                   "catch-up: 800 of 1,000 records applied (80%), 38 events/s, lag 200"]
