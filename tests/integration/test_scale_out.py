"""Scale-out on real Kafka: two wiki-cooc workers share 4 partitions, one is SIGKILLed.

Worker A starts alone and owns all 4 partitions of the Wikipedia stream; worker B (same
consumer group, its own state dir, as on another machine) joins and takes two of them
over from the changelog; B is SIGKILLed mid-stream; after the group's session timeout
A gets B's partitions back, restores their state from the changelog (B's progress) and
finishes. A's final feature table, learner state and offsets must equal the
single-worker run's (``wiki_uninterrupted``) bit for bit: keyed state moved with its
partitions both ways and nothing was lost or applied twice.
"""

from __future__ import annotations

import time

import pytest

from streamer.testing.procs import WorkerProcess
from tests.integration.wiki import WIKI_TYPE, table_snapshot, wiki_dim, wiki_dirname

pytestmark = pytest.mark.integration


def _wait(cond, what: str, workers: list[WorkerProcess], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        for w in workers:
            assert w.alive(), f"worker died while waiting for {what}:\n{w.tail_log()}"
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}:\n" + "\n---\n".join(w.tail_log(30) for w in workers))
        time.sleep(0.2)


def _rebalances(w: WorkerProcess) -> list[dict]:
    m = w.metrics() or {}
    return m.get("throughput", {}).get("rebalances", [])


def _processed(w: WorkerProcess) -> int:
    m = w.metrics() or {}
    return m.get("throughput", {}).get("messages", 0)


def test_two_workers_one_killed_the_survivor_ends_in_the_single_worker_table(
        wiki_produced, wiki_uninterrupted, kafka_bootstrap, tmp_path):
    prefix = wiki_produced.prefix
    group = f"{prefix}scale"
    a = WorkerProcess(WIKI_TYPE, bootstrap=kafka_bootstrap, state_dir=tmp_path / "a",
                      prefix=prefix, group=group, log_path=tmp_path / "a.log",
                      extra_env={"STREAMER_WORKER__BATCH_MAX": "1000"})
    b = WorkerProcess(WIKI_TYPE, bootstrap=kafka_bootstrap, state_dir=tmp_path / "b",
                      prefix=prefix, group=group, log_path=tmp_path / "b.log",
                      extra_env={"STREAMER_WORKER__BATCH_MAX": "1000"})
    total = wiki_produced.total
    try:
        a.start()
        _wait(lambda: a.applied() > total * 0.05, "A to apply 5%", [a])
        b.start()
        # B joins: the group rebalances and B takes partitions over from the changelog
        _wait(lambda: any(r["restored"] for r in _rebalances(b)), "B to take over", [a, b])
        took = sorted({p for r in _rebalances(b) for p in r["restored"]})
        assert took and len(took) < 4, took
        _wait(lambda: _processed(b) > 8000, "B to process 8,000 messages", [a, b])
        applied_before_kill = a.applied()
        assert applied_before_kill < total, "A finished before B was killed"
        b.kill()
        n_before = len(_rebalances(a))
        # after the session timeout A gets B's partitions back, from B's changelog
        _wait(lambda: any(set(r["restored"]) & set(took) for r in _rebalances(a)[n_before:]),
              "A to take B's partitions back", [a])
        a.wait_applied(total, timeout_s=600)
        time.sleep(1.0)
        # A restores those of B's partitions B moved forward (a partition B never
        # advanced is as far in A's own table, and kept)
        back = {p for r in _rebalances(a)[n_before:] for p in r["restored"]}
        assert back and back <= set(took), (back, took)
    finally:
        rc = a.stop()
        if b.alive():
            b.stop()
    assert rc == 0, a.tail_log()
    feats, state, offs = table_snapshot(tmp_path / "a" / f"{prefix}{wiki_dirname()}",
                                        wiki_dim())
    assert offs == wiki_uninterrupted["offsets"]
    assert feats.keys() == wiki_uninterrupted["features"].keys()
    diff = [k for k in feats if feats[k] != wiki_uninterrupted["features"][k]]
    assert diff == [], f"{len(diff)} of {len(feats)} records differ, e.g. {diff[:5]}"

    def no_counters(st: dict) -> dict:
        # accepted/rejected counters are per worker (each counts its own batches)
        return {k: v for k, v in st.items() if not k.startswith(b"C/")}

    assert no_counters(state) == no_counters(wiki_uninterrupted["state"])
