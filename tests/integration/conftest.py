"""Shared integration fixtures: the Wikipedia stream on real Kafka and one uninterrupted run.

``wiki_produced`` produces the 157,474 Wikipedia events plus 1,000 malformed messages
(seeded positions) once per session into a fresh 4-partition ``engagements`` topic;
``wiki_uninterrupted`` runs one ``wiki-cooc`` worker over it to the end and keeps its
final feature table, learner state and offsets. Tests that crash, restart, replay or
scale out a worker compare their own final table with it, bit for bit.
"""

from __future__ import annotations

import collections
import time
import uuid

import pytest

from streamer.datasets import load_wire
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events
from streamer.testing.procs import WorkerProcess
from tests.integration.wiki import (
    N_BAD,
    WIKI_TYPE,
    Produced,
    mix_in_bad_messages,
    table_snapshot,
    wiki_dim,
    wiki_dirname,
)


@pytest.fixture(scope="session")
def wiki_produced(kafka_bootstrap: str) -> Produced:
    """Produce the Wikipedia stream plus 1,000 bad messages once into ``<prefix>engagements``
    (4 partitions, keyed by user)."""
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


@pytest.fixture(scope="session")
def wiki_uninterrupted(wiki_produced: Produced, kafka_bootstrap: str, tmp_path_factory) -> dict:
    """One uninterrupted ``wiki-cooc`` worker over ``wiki_produced``: its final features,
    state records, offsets, metrics and state dir (the reference for crash tests)."""
    state = tmp_path_factory.mktemp("run1")
    w = WorkerProcess(WIKI_TYPE, bootstrap=kafka_bootstrap, state_dir=state,
                      prefix=wiki_produced.prefix,
                      group=f"{wiki_produced.prefix}g1", log_path=state / "worker.log").start()
    try:
        t0 = time.monotonic()
        metrics = w.wait_applied(wiki_produced.total, timeout_s=600)
        elapsed = time.monotonic() - t0
        time.sleep(1.0)
        alive = w.alive()
        metrics = w.metrics()
    finally:
        rc = w.stop()
    assert rc == 0, f"worker did not shut down cleanly on SIGTERM:\n{w.tail_log()}"
    feats, st, offs = table_snapshot(state / f"{wiki_produced.prefix}{wiki_dirname()}",
                                     wiki_dim())
    return {"state_dir": state, "metrics": metrics, "alive": alive, "features": feats,
            "state": st, "offsets": offs, "elapsed_s": elapsed}


