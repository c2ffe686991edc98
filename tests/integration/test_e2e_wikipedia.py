"""Issue 2 and 6 acceptance on real Kafka: the Wikipedia stream plus 1,000 malformed messages.

One produce, then (a) an uninterrupted worker run, checked for exactly-once application,
dead letters with reasons, liveness and neighbour queries through `streamer serve`;
(b) a second run SIGKILLed at start-up and at 5 seeded random points of the stream and
restarted each time; (c) a third run during which the broker is stopped (keeping its
data) for longer than the worker's session timeout and started again, the worker
recovering by itself. (b) and (c) must end in (a)'s feature table, learner state and
offsets bit for bit, and dead-letter every malformed message at least once.

Order matters: (b) and (c) write to the same dead-letter and output topics as (a), so
they come after the test that checks (a)'s dead letters exactly; each reads only the
records it added (from the end offsets taken before its worker started).
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from streamer.client import Client
from streamer.kafka_io import consume_all, end_offsets
from streamer.store.codec import decode_record
from streamer.testing.procs import ServeProcess, WorkerProcess
from tests.integration.wiki import N_BAD, table_snapshot, wiki_dim, wiki_dirname
from tests.integration.wiki import WIKI_TYPE as TYPE
from topologies import TOPOLOGIES

pytestmark = pytest.mark.integration


def test_every_valid_event_applied_exactly_once(wiki_uninterrupted, wiki_produced):
    feats = wiki_uninterrupted["features"]
    got = {k: v[2] for k, v in feats.items() if k.startswith("u:")}
    assert got == dict(wiki_produced.user_counts)
    m = wiki_uninterrupted["metrics"]
    assert m["accepted"] == sum(wiki_produced.user_counts.values())
    assert m["rejected"] == N_BAD
    assert sum(wiki_uninterrupted["offsets"].values()) + len(wiki_uninterrupted["offsets"]) \
        == wiki_produced.total


def test_worker_survives_bad_input(wiki_uninterrupted):
    assert wiki_uninterrupted["alive"]


def test_every_malformed_message_is_dead_lettered_with_its_reason(wiki_uninterrupted, wiki_produced,
                                                                  kafka_bootstrap):
    dlq = consume_all(kafka_bootstrap, f"{wiki_produced.prefix}engagements.deadletter",
                      timeout_s=30)
    got = collections.Counter()
    for rec in dlq:
        headers = dict(rec.headers)
        got[(rec.value or b"", headers["x-reject-reason"].decode())] += 1
        assert headers["x-source-topic"].decode() == f"{wiki_produced.prefix}engagements"
        assert int(headers["x-source-offset"]) >= 0
        assert headers["x-streamer-type"].decode() == "wiki-cooc"
        assert headers["x-streamer-version"].decode() == "2"
    want = collections.Counter((b.value or b"", b.expected_reason) for b in wiki_produced.bad)
    assert got == want
    by_reason = collections.Counter(r for (_v, r) in got.elements())
    assert wiki_uninterrupted["metrics"]["rejected_by_reason"] == dict(by_reason)


def test_neighbours_of_a_page_through_serve(wiki_uninterrupted, wiki_produced, kafka_bootstrap,
                                            tmp_path):
    with ServeProcess(TYPE, bootstrap=kafka_bootstrap, prefix=wiki_produced.prefix,
                      log_path=tmp_path / "serve.log") as srv:
        srv.wait_caught_up(TYPE, expected=len(wiki_uninterrupted["features"]), timeout_s=120)
        with Client(srv.url) as c:
            pages = sorted(k for k in wiki_uninterrupted["features"] if k.startswith("i:"))
            page = pages[len(pages) // 2]
            res = c.neighbours(TYPE, page, k=10, kind="item")
            assert len(res) == 10
            assert all(i.startswith("i:") and i != page for i, _ in res)
            scores = [s for _, s in res]
            assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
            # a user asks for items: one query in the shared space
            user = next(k for k in wiki_uninterrupted["features"] if k.startswith("u:"))
            items = c.neighbours(TYPE, user, k=10, kind="item")
            assert len(items) == 10 and all(i.startswith("i:") for i, _ in items)
            got = c.get(TYPE, [page, "i:no-such-page"])
            assert got[0]["found"] and len(got[0]["vector"]) == wiki_dim()
            assert not got[1]["found"]


def test_sigkill_at_random_points_then_restart_ends_in_the_same_state(
        wiki_uninterrupted, wiki_produced, kafka_bootstrap, tmp_path):
    """SIGKILL the worker once at start-up and at 5 random points of the stream, restart
    it each time: the final table, learner state and offsets equal the uninterrupted
    run's bit for bit, and every malformed message is dead-lettered at least once."""
    total = wiki_produced.total
    points = _kill_points(np.random.default_rng(KILL_SEED), n=5)
    state = tmp_path / "run2"
    state.mkdir()
    table = state / f"{wiki_produced.prefix}{wiki_dirname()}"
    dlq = f"{wiki_produced.prefix}engagements.deadletter"
    dlq_start = end_offsets(kafka_bootstrap, dlq)
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state,
                      prefix=wiki_produced.prefix,
                      group=f"{wiki_produced.prefix}g2", log_path=state / "worker.log")
    at_kill: list[int] = []
    try:
        # 1. at start-up: as soon as the engine has opened (created) its table, before
        #    the consumer has even joined the group, so before the first batch
        w.start()
        _wait_for(lambda: 'loaded state type="wiki-cooc"' in _read(w.log_path), w,
                  poll_s=0.002, what="the engine to open its table")
        w.kill()
        assert _applied_in_table(table) == 0, "the start-up kill came after a commit"
        # 2. at 5 seeded random points of the stream, each after the previous one
        for f in points:
            w.start()
            target = max(int(f * total), (at_kill[-1] if at_kill else 0) + 1)
            # /metrics scans the table (O(ids)) on the worker's loop: poll gently
            _wait_for(lambda t=target: w.applied() >= t, w, poll_s=0.1,
                      what=f"{target} applied events")
            w.kill()
            assert not w.alive()
            at_kill.append(_applied_in_table(table))
        w.start()
        w.wait_applied(total, timeout_s=600)
    finally:
        w.stop()
    # every kill was mid-stream (some but not all events applied) and later than the last
    assert all(0 < n < total for n in at_kill), (at_kill, total)
    assert at_kill == sorted(set(at_kill)), at_kill
    assert len(at_kill) == len(points)
    feats, st, offs = table_snapshot(table, wiki_dim())
    assert offs == wiki_uninterrupted["offsets"]
    assert feats.keys() == wiki_uninterrupted["features"].keys()
    diff = [k for k in feats if feats[k] != wiki_uninterrupted["features"][k]]
    assert diff == [], f"{len(diff)} vectors differ, e.g. {diff[:5]}"
    assert st == wiki_uninterrupted["state"]
    # dead letters are at-least-once: a kill between their flush and the batch's commit
    # sends them again after the restart; none may be missing
    _assert_each_bad_message_dead_lettered(kafka_bootstrap, dlq, dlq_start, wiki_produced)


def test_broker_restart_mid_stream_the_worker_recovers_by_itself(
        wiki_uninterrupted, wiki_produced, kafka_bootstrap, kafka_local, tmp_path):
    """Stop the broker (keeping its data) while a worker consumes, leave it down longer
    than the worker's session timeout, start it again: the same worker process resumes
    and ends in the uninterrupted run's state, with no dead letter and no published
    vector lost."""
    total = wiki_produced.total
    state = tmp_path / "run3"
    state.mkdir()
    table = state / f"{wiki_produced.prefix}{wiki_dirname()}"
    dlq = f"{wiki_produced.prefix}engagements.deadletter"
    out = f"{wiki_produced.prefix}{_output_topic()}"
    dlq_start = end_offsets(kafka_bootstrap, dlq)
    out_start = end_offsets(kafka_bootstrap, out)
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state,
                      prefix=wiki_produced.prefix,
                      group=f"{wiki_produced.prefix}g3", log_path=state / "worker.log").start()
    try:
        pid = w.proc.pid
        _wait_for(lambda: w.applied() >= total * BROKER_STOP_AT, w, poll_s=0.2,
                  what="the broker stop point")
        kafka_local.stop()
        try:
            time.sleep(BROKER_DOWN_S)
            assert w.alive(), f"worker died while the broker was down:\n{w.tail_log()}"
            at_down = _applied_in_table(table)
        finally:
            kafka_local.start()
        m = w.wait_applied(total, timeout_s=600)
        assert w.alive() and w.proc.pid == pid
        time.sleep(1.0)
        m = w.metrics() or m
    finally:
        rc = w.stop()
    assert rc == 0, f"worker did not shut down cleanly on SIGTERM:\n{w.tail_log()}"
    assert 0 < at_down < total, (at_down, total)
    assert m["producer"]["failed"] == 0, m["producer"]
    feats, st, offs = table_snapshot(table, wiki_dim())
    assert offs == wiki_uninterrupted["offsets"]
    assert feats.keys() == wiki_uninterrupted["features"].keys()
    diff = [k for k in feats if feats[k] != wiki_uninterrupted["features"][k]]
    assert diff == [], f"{len(diff)} vectors differ, e.g. {diff[:5]}"
    assert st == wiki_uninterrupted["state"]
    _assert_each_bad_message_dead_lettered(kafka_bootstrap, dlq, dlq_start, wiki_produced)
    # the compacted output topic: the last vector this worker published per id is the
    # table's final one, for every id of the table
    last: dict[str, bytes] = {}
    for rec in _read_from(kafka_bootstrap, out, out_start):
        last[rec.key().decode()] = rec.value()
    assert last.keys() == feats.keys()
    dim = wiki_dim()
    stale = [k for k, v in last.items()
             if _as_tuple(decode_record(v, dim, key=k)) != feats[k]]
    assert stale == [], f"{len(stale)} published vectors differ from the table: {stale[:5]}"


def test_end_offsets_cover_the_produced_stream(wiki_produced, kafka_bootstrap):
    ends = end_offsets(kafka_bootstrap, f"{wiki_produced.prefix}engagements")
    assert sum(ends.values()) == wiki_produced.total


# -- helpers of the crash and broker-restart tests ----------------------------------------

KILL_SEED = 20_260_606
"""Seed of the SIGKILL points (numpy Generator)."""
BROKER_STOP_AT = 0.3
"""Fraction of the stream applied when the broker is stopped."""
BROKER_DOWN_S = 15.0
"""Wall seconds the broker stays down: longer than the worker's 10 s consumer session
timeout (WorkerProcess) and its changelog's 10 s transaction timeout, so heartbeats and
an open transaction time out while it waits."""


def _kill_points(rng: np.random.Generator, n: int, lo: float = 0.05,
                 hi: float = 0.95) -> list[float]:
    """Return ``n`` sorted fractions of the stream, one uniform draw in each of ``n``
    equal strata of ``[lo, hi]`` (random, yet spread over the whole stream)."""
    edges = np.linspace(lo, hi, n + 1)
    return sorted(float(x) for x in rng.uniform(edges[:-1], edges[1:]))


def _wait_for(cond, w: WorkerProcess, *, poll_s: float, what: str,
              timeout_s: float = 300) -> None:
    """Poll ``cond()`` every ``poll_s`` wall s until true; fail if ``w`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert w.alive(), f"worker died waiting for {what}:\n{w.tail_log()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{w.tail_log()}"
        time.sleep(poll_s)


def _read(path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _applied_in_table(path) -> int:
    """Messages applied according to the table's stored offsets (read-only open; the
    writer may be live or dead): sum over partitions of (last offset + 1)."""
    _feats, _state, offs = table_snapshot(path, wiki_dim())
    return sum(o + 1 for o in offs.values())


def _output_topic() -> str:
    """The compacted ``embeddings.<type>.v<n>`` topic of the type (without the prefix)."""
    spec = next(s for s in TOPOLOGIES if s.name == TYPE)
    return spec.output_topic


def _read_from(bootstrap: str, topic: str, starts: dict[int, int]) -> list:
    """Read ``topic`` from ``starts`` ({partition: offset}) to its current end offsets.

    Returns confluent-kafka messages in (partition, offset) order. No consumer group.
    """
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-e2e-reader",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        c.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in ends])
        pending = {p for p, end in ends.items() if end > starts.get(p, 0)}
        out = []
        deadline = time.monotonic() + 120
        while pending:
            assert time.monotonic() < deadline, f"reading {topic} timed out at {pending}"
            for msg in c.consume(num_messages=10_000, timeout=1.0):
                assert msg.error() is None, msg.error()
                p = msg.partition()
                if msg.offset() < ends[p]:
                    out.append(msg)
                if msg.offset() >= ends[p] - 1:
                    pending.discard(p)
        out.sort(key=lambda m: (m.partition(), m.offset()))
        return out
    finally:
        c.close()


def _assert_each_bad_message_dead_lettered(bootstrap: str, topic: str, starts: dict[int, int],
                                           produced) -> None:
    """Every malformed message is in ``topic`` after ``starts`` at least once, with its
    reason, and nothing else is (dead letters are at-least-once: a crash or a lost broker
    connection after their flush and before the batch's commit sends them again)."""
    got = collections.Counter()
    for msg in _read_from(bootstrap, topic, starts):
        headers = {k: v for k, v in msg.headers()}
        got[(msg.value() or b"", headers["x-reject-reason"].decode())] += 1
    want = collections.Counter((b.value or b"", b.expected_reason) for b in produced.bad)
    assert got.keys() == want.keys()
    short = [k for k, n in want.items() if got[k] < n]
    assert short == [], f"{len(short)} dead letters missing, e.g. {short[:3]}"


def _as_tuple(rec) -> tuple:
    """A FeatureRecord as :func:`table_snapshot` gives it (vector bytes, updated_at,
    update_count, model_version)."""
    return (rec.vector.tobytes(), rec.updated_at, rec.update_count, rec.model_version)
