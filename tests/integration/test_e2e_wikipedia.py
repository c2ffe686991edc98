"""Issue 2 acceptance on real Kafka: the Wikipedia stream plus 1,000 malformed messages.

One produce, then (a) an uninterrupted worker run, checked for exactly-once application,
dead letters with reasons, liveness and neighbour queries through `streamer serve`; and
(b) a second run SIGKILLed mid-stream and restarted, whose final feature table and
learner state must equal (a)'s bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamer.client import Client
from streamer.datasets import load_events, load_wire
from streamer.kafka_io import TopicSpec, consume_all, end_offsets, ensure_topics, produce_events
from streamer.store.rocks import RocksFeatureTable
from streamer.testing.badevents import bad_messages
from streamer.testing.procs import ServeProcess, WorkerProcess
from topologies import TOPOLOGIES

pytestmark = pytest.mark.integration

TYPE = "wiki-cooc"
N_BAD = 1000


def mix_in_bad_messages(valid: list, *, n_bad: int, seed: int) -> tuple[list, list]:
    """Return (stream with bad messages inserted at seeded positions, the bad messages).

    A duplicate re-sends an earlier event (same event_id, key and content) 1..2000
    messages after its original, well inside the event-time dedup window, as a producer
    retry would; other bad messages go anywhere.
    """
    originals = list(load_events("wikipedia"))
    bad = bad_messages(n_bad, seed=seed, now_s=time.time(), originals=originals)
    rng = np.random.default_rng(seed)
    n = len(valid)
    inserts: dict[int, list] = collections.defaultdict(list)
    for b in bad:
        if b.kind == "duplicate":
            event_id = json.loads(b.value)["event_id"]
            orig = int(event_id.split(":")[1]) - 1  # wikipedia:<1-based line>
            assert valid[orig][1] == b.value
            pos = min(n, orig + 1 + int(rng.integers(0, 2000)))
        else:
            pos = int(rng.integers(0, n + 1))
        inserts[pos].append((b.key, b.value, b.timestamp_ms))
    out = []
    for i in range(n + 1):
        out.extend(inserts.get(i, ()))
        if i < n:
            out.append(valid[i])
    return out, bad


@dataclasses.dataclass
class Produced:
    prefix: str
    total: int
    user_counts: collections.Counter
    bad: list  # streamer.testing.badevents.BadMessage


@pytest.fixture(scope="module")
def produced(kafka_bootstrap: str) -> Produced:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    valid = list(load_wire("wikipedia"))
    assert len(valid) == 157_474
    messages, bad = mix_in_bad_messages(valid, n_bad=N_BAD, seed=11)
    assert len(bad) == N_BAD
    assert len({b.expected_reason for b in bad}) >= 10
    ensure_topics(kafka_bootstrap, {
        f"{prefix}engagements": TopicSpec(partitions=4, configs={"retention.ms": "-1"}),
    })
    n = produce_events(kafka_bootstrap, f"{prefix}engagements", messages, rate=None)
    assert n == len(valid) + N_BAD
    counts: collections.Counter = collections.Counter()
    for key, _value, _ts in valid:
        counts[f"u:{key.decode()}"] += 1
    return Produced(prefix=prefix, total=n, user_counts=counts, bad=bad)


def _table_snapshot(path: Path, dim: int) -> tuple[dict, dict, dict]:
    t = RocksFeatureTable(path, dim=dim, read_only=True)
    try:
        feats = {k: (r.vector.tobytes(), r.updated_at, r.update_count, r.model_version)
                 for k, r in t.iter_features()}
        state = dict(t.iter_state())
        return feats, state, t.offsets()
    finally:
        t.close()


def _dim() -> int:
    spec = next(s for s in TOPOLOGIES if s.name == TYPE)
    return int(spec.params["dim"])


def _dirname() -> str:
    return next(s for s in TOPOLOGIES if s.name == TYPE).state_dirname


@pytest.fixture(scope="module")
def uninterrupted(produced: Produced, kafka_bootstrap: str, tmp_path_factory) -> dict:
    state = tmp_path_factory.mktemp("run1")
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state, prefix=produced.prefix,
                      group=f"{produced.prefix}g1", log_path=state / "worker.log").start()
    try:
        t0 = time.monotonic()
        metrics = w.wait_applied(produced.total, timeout_s=600)
        elapsed = time.monotonic() - t0
        time.sleep(1.0)
        alive = w.alive()
        metrics = w.metrics()
    finally:
        rc = w.stop()
    assert rc == 0, f"worker did not shut down cleanly on SIGTERM:\n{w.tail_log()}"
    feats, st, offs = _table_snapshot(state / f"{produced.prefix}{_dirname()}", _dim())
    return {"state_dir": state, "metrics": metrics, "alive": alive, "features": feats,
            "state": st, "offsets": offs, "elapsed_s": elapsed}


def test_every_valid_event_applied_exactly_once(uninterrupted, produced):
    feats = uninterrupted["features"]
    got = {k: v[2] for k, v in feats.items() if k.startswith("u:")}
    assert got == dict(produced.user_counts)
    m = uninterrupted["metrics"]
    assert m["accepted"] == sum(produced.user_counts.values())
    assert m["rejected"] == N_BAD
    assert sum(uninterrupted["offsets"].values()) + len(uninterrupted["offsets"]) \
        == produced.total


def test_worker_survives_bad_input(uninterrupted):
    assert uninterrupted["alive"]


def test_every_malformed_message_is_dead_lettered_with_its_reason(uninterrupted, produced,
                                                                  kafka_bootstrap):
    dlq = consume_all(kafka_bootstrap, f"{produced.prefix}engagements.deadletter",
                      timeout_s=30)
    got = collections.Counter()
    for rec in dlq:
        headers = dict(rec.headers)
        got[(rec.value or b"", headers["x-reject-reason"].decode())] += 1
        assert headers["x-source-topic"].decode() == f"{produced.prefix}engagements"
        assert int(headers["x-source-offset"]) >= 0
        assert headers["x-streamer-type"].decode() == "wiki-cooc"
    want = collections.Counter((b.value or b"", b.expected_reason) for b in produced.bad)
    assert got == want
    by_reason = collections.Counter(r for (_v, r) in got.elements())
    assert uninterrupted["metrics"]["rejected_by_reason"] == dict(by_reason)


def test_neighbours_of_a_page_through_serve(uninterrupted, produced, kafka_bootstrap,
                                            tmp_path):
    with ServeProcess(TYPE, bootstrap=kafka_bootstrap, prefix=produced.prefix,
                      log_path=tmp_path / "serve.log") as srv:
        srv.wait_caught_up(TYPE, expected=len(uninterrupted["features"]), timeout_s=120)
        with Client(srv.url) as c:
            pages = sorted(k for k in uninterrupted["features"] if k.startswith("i:"))
            page = pages[len(pages) // 2]
            res = c.neighbours(TYPE, page, k=10, kind="item")
            assert len(res) == 10
            assert all(i.startswith("i:") and i != page for i, _ in res)
            scores = [s for _, s in res]
            assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
            # a user asks for items: one query in the shared space
            user = next(k for k in uninterrupted["features"] if k.startswith("u:"))
            items = c.neighbours(TYPE, user, k=10, kind="item")
            assert len(items) == 10 and all(i.startswith("i:") for i, _ in items)
            got = c.get(TYPE, [page, "i:no-such-page"])
            assert got[0]["found"] and len(got[0]["vector"]) == _dim()
            assert not got[1]["found"]


def test_sigkill_mid_stream_then_restart_ends_in_the_same_state(uninterrupted, produced,
                                                                kafka_bootstrap,
                                                                tmp_path):
    state = tmp_path / "run2"
    state.mkdir()
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state, prefix=produced.prefix,
                      group=f"{produced.prefix}g2", log_path=state / "worker.log").start()
    try:
        deadline = time.monotonic() + 300
        while w.applied() < produced.total * 0.4:
            assert w.alive(), w.tail_log()
            assert time.monotonic() < deadline, "worker too slow"
            time.sleep(0.05)
        w.kill()
        assert not w.alive()
        w.start()
        w.wait_applied(produced.total, timeout_s=600)
    finally:
        w.stop()
    feats, st, offs = _table_snapshot(state / f"{produced.prefix}{_dirname()}", _dim())
    assert offs == uninterrupted["offsets"]
    assert feats.keys() == uninterrupted["features"].keys()
    diff = [k for k in feats if feats[k] != uninterrupted["features"][k]]
    assert diff == [], f"{len(diff)} vectors differ, e.g. {diff[:5]}"
    assert st == uninterrupted["state"]


def test_end_offsets_cover_the_produced_stream(produced, kafka_bootstrap):
    ends = end_offsets(kafka_bootstrap, f"{produced.prefix}engagements")
    assert sum(ends.values()) == produced.total
