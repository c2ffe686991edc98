"""The worker's snapshot/benchmark scheduler on a real engine and RocksDB table (no Kafka).

The worker wiring (faust, the ``benchmarks`` topic) is covered by
``tests/integration/test_bench_worker.py``; here the scheduler's own rules: when it
snapshots, what it records, per-batch predict-then-learn scores, drift alerts, restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.engine import Engine, RawMessage, open_engine
from streamer.errors import ConfigError
from streamer.events.deadletter import MemoryDeadLetters
from streamer.scheduler import BenchScheduler, parse_task, read_results
from streamer.settings import BenchSettings, Settings
from streamer.snapshot import SnapshotStore
from streamer.topology import TopologySpec
from streamer.types import ManualClock

NOW = 1_700_000_000.0
SPEC = TopologySpec(name="sched-cooc", algorithm="cooc",
                    params={"dim": 16, "half_life_s": 86_400.0, "seed": 3})


def _messages(n: int, seed: int = 0, start: int = 0) -> list[RawMessage]:
    """Users 0..59 each prefer one of 6 item clusters; one partition, offsets from start."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        user = int(rng.integers(0, 60))
        item = (user % 6) * 20 + int(rng.integers(0, 20))
        doc = {"user_id": str(user), "item_id": str(item), "action": "click",
               "ts": NOW - 100_000 + i, "event_id": f"e{i}"}
        out.append(RawMessage(value=json.dumps(doc).encode(), topic="eng", partition=0,
                              offset=i))
    return out


def _run(tmp: Path, bench: BenchSettings, msgs: list[RawMessage], *, batch: int = 200,
         emitted: list | None = None) -> tuple[Engine, BenchScheduler]:
    store = SnapshotStore(tmp / "snaps", SPEC, clock=ManualClock(NOW))
    sched = BenchScheduler(SPEC, bench, store, emit=None if emitted is None else emitted.append,
                           clock=ManualClock(NOW))
    eng = open_engine(SPEC, state_dir=tmp / "state", dead_letters=MemoryDeadLetters(),
                      clock=ManualClock(NOW), with_index=False, before_learn=sched.before_learn)
    for j in range(0, len(msgs), batch):
        res = eng.process(msgs[j:j + batch])
        sched.after_commit(eng.table, res.accepted, eng.counters["accepted"])
        sched.wait(60)  # deterministic for the test: every due snapshot is taken
    return eng, sched


def test_snapshots_every_n_events_with_results_and_retention(tmp_path):
    emitted: list[dict] = []
    bench = BenchSettings(snapshot_every_events=1000, snapshot_retain=2, tasks=("stability",))
    eng, sched = _run(tmp_path, bench, _messages(4000), emitted=emitted)
    try:
        recs = read_results(sched.results_path)
        assert recs == emitted  # the log and the topic get the same records, in order
        snaps = [r for r in recs if r["kind"] == "snapshot"]
        assert [s["snapshot"] for s in snaps] == ["000001", "000002", "000003", "000004"]
        assert [s["events_applied"] for s in snaps] == [1000, 2000, 3000, 4000]
        assert snaps[-1]["offsets"] == {"eng[0]": 3999}
        assert snaps[-1]["pruned"] == ["000002"]
        assert [s.id for s in sched.store.list()] == ["000003", "000004"]
        results = [r for r in recs if r["kind"] == "result"]
        stab = [r for r in results if r["task"] == "stability"]
        assert len(stab) == 3  # none for the first snapshot (nothing to compare with)
        assert all(0.0 <= r["metrics"]["jaccard_at_10"] <= 1.0 for r in stab)
        preq = [r for r in results if r["task"] == "prequential"]
        assert len(preq) == 4
        # the learner's scores beat popularity on a stream with clear user preferences
        late = preq[-1]
        assert late["metrics"]["mrr"] > late["baselines"]["popularity"]["mrr"] + 0.1
        st = sched.status()
        assert st["snapshots"] == 4 and st["latest_snapshot"] == "000004"
        assert st["scored_batches"] == 19  # every batch but the first (no items known yet)
        assert (sched.store.dir / "drift.json").is_file()
    finally:
        sched.close()
        eng.close()


def test_event_time_schedule(tmp_path):
    # events are 1 event-second apart: a snapshot every 900 event seconds
    bench = BenchSettings(snapshot_every_event_s=900.0, prequential=False)
    eng, sched = _run(tmp_path, bench, _messages(3000), batch=100)
    try:
        snaps = [r for r in read_results(sched.results_path) if r["kind"] == "snapshot"]
        gaps = np.diff([s["event_time"] for s in snaps])
        assert len(snaps) == 3 and np.all(gaps >= 900) and np.all(gaps < 1000)
        assert all(s["trigger"] == "event_time" for s in snaps)
        assert not [r for r in read_results(sched.results_path) if r["kind"] == "result"]
    finally:
        sched.close()
        eng.close()


def test_threshold_alert_is_recorded_once_per_crossing_and_survives_restart(tmp_path):
    drift = {"rules": [{"match": "prequential.mrr", "detectors": [], "min": 0.999}]}
    bench = BenchSettings(snapshot_every_events=1000, drift=drift)
    eng, sched = _run(tmp_path, bench, _messages(2000))
    sched.close()
    eng.close()
    alerts = [r for r in read_results(sched.results_path) if r["kind"] == "alert"]
    assert len(alerts) == 1  # the score stays below the bound: one crossing, one alert
    a = alerts[0]
    assert (a["type"], a["series"], a["detector"]) == ("sched-cooc", "prequential.mrr",
                                                      "threshold")
    assert a["value"] < 0.999 and "\n" not in a["message"]
    # a restarted worker reloads its detectors: still below the bound, no new alert
    eng2, sched2 = _run(tmp_path, bench, _messages(1000, start=2000))
    try:
        alerts = [r for r in read_results(sched2.results_path) if r["kind"] == "alert"]
        assert len(alerts) == 1
        assert len(sched2.status()["active_alerts"]) == 1
    finally:
        sched2.close()
        eng2.close()


def test_a_failing_task_is_recorded_and_the_schedule_goes_on(tmp_path):
    # topic labels come from a data folder that does not exist: the task fails each time
    store = SnapshotStore(tmp_path / "snaps", SPEC)
    bench = BenchSettings(snapshot_every_events=500, tasks=("topic:lastfm-tags",))
    sched = BenchScheduler(SPEC, bench, store, data_dir=tmp_path / "no-data")
    eng = open_engine(SPEC, state_dir=tmp_path / "state", dead_letters=MemoryDeadLetters(),
                      clock=ManualClock(NOW), with_index=False, before_learn=sched.before_learn)
    try:
        msgs = _messages(1000)
        for j in range(0, 1000, 250):
            res = eng.process(msgs[j:j + 250])
            sched.after_commit(eng.table, res.accepted, eng.counters["accepted"])
            sched.wait(60)
        recs = read_results(sched.results_path)
        assert [r["kind"] for r in recs].count("snapshot") == 2
        errors = [r for r in recs if r["kind"] == "error"]
        assert len(errors) == 2 and errors[0]["task"] == "topic"
        assert sched.status()["task_errors"] == 2
    finally:
        sched.close()
        eng.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("stability", ("stability", "")),
    ("metadata:lastfm-asia", ("metadata", "lastfm-asia")),
    ("follow-jaccard:deezer", ("follow-jaccard", "deezer")),
])
def test_parse_task(text, expected):
    assert parse_task(text) == expected


@pytest.mark.parametrize("text", ["linkpred:wikipedia", "stability:x", "metadata", "nope"])
def test_parse_task_rejects(text):
    with pytest.raises(ConfigError) as e:
        parse_task(text)
    assert "\n" not in str(e.value)


def test_bad_drift_config_is_refused_before_any_event(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", SPEC)
    bench = BenchSettings(snapshot_every_events=10,
                          drift={"rules": [{"match": "x", "min": 2, "max": 1}]})
    with pytest.raises(ConfigError, match="min must be < max"):
        BenchScheduler(SPEC, bench, store)


def test_type_defaults_and_env_overrides(monkeypatch):
    monkeypatch.setenv("STREAMER_BENCH__SNAPSHOT_RETAIN", "4")
    s = Settings()
    b = s.bench_for({"snapshot_every_events": 100, "snapshot_retain": 9,
                     "tasks": ["stability"]})
    assert (b.snapshot_every_events, b.snapshot_retain, b.tasks) == (100, 4, ("stability",))
    with pytest.raises(ConfigError, match="snapshot_every_events"):
        s.bench_for({"snapshot_every_events": -1})
    assert not s.bench_for({"snapshot_every_events": 0}).enabled  # 0 switches it off
