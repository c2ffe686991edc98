"""Issue 2 acceptance on real Kafka: the Wikipedia stream plus 1,000 malformed messages.

One produce, then (a) an uninterrupted worker run, checked for exactly-once application,
dead letters with reasons, liveness and neighbour queries through `streamer serve`; and
(b) a second run SIGKILLed mid-stream and restarted, whose final feature table and
learner state must equal (a)'s bit for bit.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from streamer.client import Client
from streamer.kafka_io import consume_all, end_offsets
from streamer.testing.procs import ServeProcess, WorkerProcess
from tests.integration.wiki import N_BAD, table_snapshot, wiki_dim, wiki_dirname
from tests.integration.wiki import WIKI_TYPE as TYPE

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


def test_sigkill_mid_stream_then_restart_ends_in_the_same_state(wiki_uninterrupted, wiki_produced,
                                                                kafka_bootstrap,
                                                                tmp_path):
    state = tmp_path / "run2"
    state.mkdir()
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state,
                      prefix=wiki_produced.prefix,
                      group=f"{wiki_produced.prefix}g2", log_path=state / "worker.log").start()
    try:
        deadline = time.monotonic() + 300
        while w.applied() < wiki_produced.total * 0.4:
            assert w.alive(), w.tail_log()
            assert time.monotonic() < deadline, "worker too slow"
            time.sleep(0.05)
        w.kill()
        assert not w.alive()
        w.start()
        w.wait_applied(wiki_produced.total, timeout_s=600)
    finally:
        w.stop()
    feats, st, offs = table_snapshot(state / f"{wiki_produced.prefix}{wiki_dirname()}",
                                     wiki_dim())
    assert offs == wiki_uninterrupted["offsets"]
    assert feats.keys() == wiki_uninterrupted["features"].keys()
    diff = [k for k in feats if feats[k] != wiki_uninterrupted["features"][k]]
    assert diff == [], f"{len(diff)} vectors differ, e.g. {diff[:5]}"
    assert st == wiki_uninterrupted["state"]


def test_end_offsets_cover_the_produced_stream(wiki_produced, kafka_bootstrap):
    ends = end_offsets(kafka_bootstrap, f"{wiki_produced.prefix}engagements")
    assert sum(ends.values()) == wiki_produced.total
