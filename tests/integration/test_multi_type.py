"""Several embedding types from one stream, and transfer, on real Kafka (issue 3, parts 4-5).

One produce of the Wikipedia stream; a ``wiki-cooc`` and a ``wiki-sgns`` worker run side
by side as two processes on the same input topic and state dir (each its own consumer
group, RocksDB path, web port and output topic); one ``streamer serve`` answers neighbour
queries for both. Then a third type, a copy of ``wiki-sgns`` under another name, starts
through the real CLI with ``--init-from wiki-sgns`` and publishes the transferred vectors
before it consumes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamer.client import Client
from streamer.datasets import load_wire
from streamer.kafka_io import TopicSpec, consume_all, end_offsets, ensure_topics, produce_events
from streamer.learn.base import OnlineLearner
from streamer.learn.registry import get_algorithm
from streamer.store import codec
from streamer.store.rocks import RocksFeatureTable
from streamer.testing.procs import ServeProcess, WorkerProcess
from streamer.topology import find_type
from streamer.transfer import table_path
from topologies import TOPOLOGIES

pytestmark = pytest.mark.integration

TYPES = ("wiki-cooc", "wiki-sgns")
# The workers catch up on a produced stream: wait up to 0.5 s to fill a 2,000-event batch
# (the 50 ms default is tuned for freshness at a steady rate, not for catch-up; fewer,
# fuller batches mean fewer commits and fewer re-published vectors on 2 cores)
CATCH_UP = {"STREAMER_WORKER__BATCH_WITHIN_S": "0.5"}
WARM = "wiki-sgns-warm"  # declared only inside the third worker's process (see _WARM_CLI)

# The real CLI, with one more declared type: a copy of wiki-sgns under another name.
_WARM_CLI = f"""
import dataclasses, sys
import topologies
from topologies.skipgram import WIKI_SGNS
warm = dataclasses.replace(WIKI_SGNS, name={WARM!r}, description="test: warm-started copy")
topologies.TOPOLOGIES = (*topologies.TOPOLOGIES, warm)
sys.argv = ["streamer", *sys.argv[1:]]
from streamer.cli import main
main()
"""


@dataclasses.dataclass
class Produced:
    prefix: str
    total: int
    user_counts: collections.Counter


@dataclasses.dataclass
class Table:
    path: Path
    features: dict  # id -> FeatureRecord
    offsets: dict
    manifest: dict


@pytest.fixture(scope="module")
def produced(kafka_bootstrap: str) -> Produced:
    prefix = f"multi-{uuid.uuid4().hex[:8]}."
    valid = list(load_wire("wikipedia"))
    assert len(valid) == 157_474
    # the topics both workers use are created up front: two workers starting at once
    # would otherwise race to create the shared dead-letter topic
    keep = {"retention.ms": "-1"}
    ensure_topics(kafka_bootstrap, {
        f"{prefix}engagements": TopicSpec(partitions=4, configs=keep),
        f"{prefix}engagements.deadletter": TopicSpec(partitions=4, configs=keep),
    })
    n = produce_events(kafka_bootstrap, f"{prefix}engagements", valid, rate=None)
    assert n == len(valid)
    counts = collections.Counter(f"u:{key.decode()}" for key, _v, _ts in valid)
    return Produced(prefix=prefix, total=n, user_counts=counts)


def _read_table(state: Path, prefix: str, type_name: str) -> Table:
    spec = find_type(TOPOLOGIES, type_name)
    path = table_path(spec, state_dir=state, path_prefix=prefix)
    t = RocksFeatureTable(path, dim=int(spec.params["dim"]), read_only=True)
    try:
        return Table(path=path, features=dict(t.iter_features()), offsets=t.offsets(),
                     manifest=json.loads(t.get_meta("manifest") or b"{}"))
    finally:
        t.close()


def _group(prefix: str, type_name: str) -> str:
    return f"{prefix}{find_type(TOPOLOGIES, type_name).app_id}"


@pytest.fixture(scope="module")
def side_by_side(produced: Produced, kafka_bootstrap: str, tmp_path_factory) -> dict:
    state = tmp_path_factory.mktemp("state")
    workers = {
        t: WorkerProcess(t, bootstrap=kafka_bootstrap, state_dir=state, prefix=produced.prefix,
                         group=_group(produced.prefix, t), log_path=state / f"{t}.log",
                         extra_env=CATCH_UP)
        for t in TYPES
    }
    for w in workers.values():
        w.start()
    rcs: dict[str, int] = {}
    try:
        metrics = {t: w.wait_applied(produced.total, timeout_s=400)
                   for t, w in workers.items()}
        ports = {t: w.port for t, w in workers.items()}
    finally:
        for t, w in workers.items():
            rcs[t] = w.stop()
    for t, w in workers.items():
        assert rcs[t] == 0, f"{t} did not shut down cleanly:\n{w.tail_log()}"
    tables = {t: _read_table(state, produced.prefix, t) for t in TYPES}
    return {"state": state, "metrics": metrics, "tables": tables, "ports": ports}


def test_both_types_applied_every_event_exactly_once(side_by_side, produced):
    for t in TYPES:
        m = side_by_side["metrics"][t]
        assert m["type"] == t
        assert m["accepted"] == produced.total and m["rejected"] == 0
        offs = side_by_side["tables"][t].offsets
        assert sum(o + 1 for o in offs.values()) == produced.total
        assert len(offs) == 4


def test_the_two_workers_share_no_state_group_port_or_output_topic(side_by_side, produced,
                                                                    kafka_bootstrap):
    tables = side_by_side["tables"]
    paths = {t: tables[t].path for t in TYPES}
    assert len(set(paths.values())) == 2
    assert all(p.parent == side_by_side["state"] for p in paths.values())
    assert {t: tables[t].manifest["name"] for t in TYPES} == {t: t for t in TYPES}
    groups = {_group(produced.prefix, t) for t in TYPES}
    assert len(groups) == 2
    assert all((side_by_side["state"] / "faust" / g).is_dir() for g in groups)
    assert len(set(side_by_side["ports"].values())) == 2
    topics = {t: f"{produced.prefix}{find_type(TOPOLOGIES, t).output_topic}" for t in TYPES}
    assert len(set(topics.values())) == 2
    for t, topic in topics.items():
        assert sum(end_offsets(kafka_bootstrap, topic).values()) >= len(tables[t].features)


def test_each_table_holds_every_user_with_its_update_count(side_by_side, produced):
    keeps_counts = {t: get_algorithm(find_type(TOPOLOGIES, t).algorithm).update_counts
                    is not OnlineLearner.update_counts for t in TYPES}
    assert keeps_counts["wiki-cooc"]
    for t in TYPES:
        feats = side_by_side["tables"][t].features
        users = {k: r.update_count for k, r in feats.items() if k.startswith("u:")}
        assert users.keys() == produced.user_counts.keys(), t
        if keeps_counts[t]:
            assert users == dict(produced.user_counts), t
        items = [k for k in feats if k.startswith("i:")]
        assert len(items) >= 900, (t, len(items))  # Wikipedia: 1,000 pages
        dim = int(find_type(TOPOLOGIES, t).params["dim"])
        assert all(r.dim == dim and np.isfinite(r.vector).all() for r in feats.values())


def test_neighbour_queries_work_for_both_types_through_one_serve(side_by_side, produced,
                                                                 kafka_bootstrap, tmp_path):
    with ServeProcess(*TYPES, bootstrap=kafka_bootstrap, prefix=produced.prefix,
                      log_path=tmp_path / "serve.log") as srv:
        for t in TYPES:
            srv.wait_caught_up(t, expected=len(side_by_side["tables"][t].features),
                               timeout_s=120)
        with Client(srv.url) as c:
            for t in TYPES:
                feats = side_by_side["tables"][t].features
                pages = sorted(k for k in feats if k.startswith("i:"))
                page = pages[len(pages) // 2]
                res = c.neighbours(t, page, k=10, kind="item")
                assert len(res) == 10, t
                assert all(i.startswith("i:") and i != page for i, _ in res), t
                scores = [s for _, s in res]
                assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True), t
                user = max(produced.user_counts, key=produced.user_counts.__getitem__)
                items = c.neighbours(t, user, k=10, kind="item")
                assert len(items) == 10 and all(i.startswith("i:") for i, _ in items), t
                scores = [s for _, s in items]
                assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True), t
                got = c.get(t, [page])[0]
                assert got["found"]
                assert np.array_equal(np.asarray(got["vector"], np.float32),
                                      feats[page].vector), t


def test_init_from_wiki_sgns_warm_starts_a_new_type(side_by_side, produced, kafka_bootstrap):
    state = side_by_side["state"]
    source = side_by_side["tables"]["wiki-sgns"].features
    w = WorkerProcess(WARM, bootstrap=kafka_bootstrap, state_dir=state, prefix=produced.prefix,
                      group=f"{produced.prefix}streamer-{WARM}-v1", log_path=state / "warm.log",
                      command=[sys.executable, "-c", _WARM_CLI, "worker", "--type", WARM,
                               "--init-from", "wiki-sgns"]).start()
    try:
        deadline = time.monotonic() + 120
        m = None
        while time.monotonic() < deadline:  # warm-started, then consuming
            assert w.alive(), w.tail_log()
            m = w.metrics()
            if m and m["offsets"]:
                break
            time.sleep(0.2)
        assert m and m["offsets"], w.tail_log()
    finally:
        rc = w.stop()
    assert rc == 0, w.tail_log()
    assert m["init_from"] == {"source": "wiki-sgns", "source_version": 1,
                              "source_algorithm": "sgns", "offered": len(source),
                              "ids": len(source)}
    assert f"init-from wiki-sgns v1: {len(source)} of {len(source)} ids" in w.tail_log(200)
    # the transferred vectors went out first, before any event's update
    topic = f"{produced.prefix}embeddings.{WARM}.v1"
    first: dict[str, object] = {}
    for rec in consume_all(kafka_bootstrap, topic, timeout_s=60):
        first.setdefault(rec.key.decode(), rec.value)
    assert first.keys() >= source.keys()
    for k, rec in source.items():
        got = codec.decode_record(first[k], rec.dim)
        assert got.update_count == 0, k
        assert got.vector.tobytes() == rec.vector.tobytes(), k

    # a restart with the same flag does not re-apply, and reports the first warm start
    w.start()
    try:
        deadline = time.monotonic() + 120
        while (m2 := w.metrics()) is None:  # faust is up (and handles SIGTERM)
            assert w.alive(), w.tail_log()
            assert time.monotonic() < deadline, w.tail_log()
            time.sleep(0.2)
    finally:
        rc = w.stop()
    assert rc == 0, w.tail_log()
    assert "init-from wiki-sgns: skipped, wiki-sgns-warm already has state" in w.tail_log(400)
    assert m2["init_from"] == m["init_from"]
