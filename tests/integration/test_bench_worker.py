"""Scheduled snapshots, benchmark tasks and drift alerts in a real worker on real Kafka.

The LastFM Asia follow stream (55,612 events) goes through a ``demo-cooc`` worker that
snapshots every 15,000 events, keeps 2 snapshots, runs ``stability``,
``metadata:lastfm-asia`` and ``follow-jaccard:lastfm-asia`` on each, and watches the
metadata accuracy with an impossible bound (so an alert must fire). Checked: the records
in the ``benchmarks`` topic (snapshots, results with baselines, the alert), the snapshot
folders and retention, an on-demand ``streamer snapshot`` while the worker runs,
``streamer bench --check`` (exit 3 with the alert, 0 for a type without alerts),
``streamer bench report``, and the API's ``/v1/types/demo-cooc/benchmarks`` and
``/v1/alerts`` through ``streamer serve``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from streamer.kafka_io import consume_all
from streamer.testing.procs import ServeProcess, WorkerProcess, fill_engagements

pytestmark = pytest.mark.integration

TYPE = "demo-cooc"
EVERY = 15_000
TASKS = ["stability", "metadata:lastfm-asia", "follow-jaccard:lastfm-asia"]
DRIFT = {"rules": [
    {"match": "metadata/lastfm-asia.accuracy", "detectors": [], "min": 0.99},
    {"match": "*", "detectors": ["adwin", "page_hinkley"], "warmup": 5},
]}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory) -> dict:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    state = tmp_path_factory.mktemp("state")
    total = len(fill_engagements(kafka_bootstrap, prefix, "lastfm-asia"))
    assert total == 55_612
    env = {
        "STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS": str(EVERY),
        "STREAMER_BENCH__SNAPSHOT_RETAIN": "2",
        "STREAMER_BENCH__TASKS": json.dumps(TASKS),
        "STREAMER_BENCH__DRIFT": json.dumps(DRIFT),
        "STREAMER_WORKER__BATCH_WITHIN_S": "0.5",
    }
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state, prefix=prefix,
                      group=f"{prefix}streamer-{TYPE}-v1", log_path=state / "worker.log",
                      extra_env=env)
    cli_env = {**w.env}
    w.start()
    try:
        # an on-demand snapshot while the worker consumes (a secondary reader)
        deadline = time.monotonic() + 120
        while w.applied() < 5_000 and time.monotonic() < deadline:
            assert w.alive(), w.tail_log()
            time.sleep(0.3)
        manual = _cli("snapshot", TYPE, "--json", env=cli_env)
        metrics = w.wait_bench_idle(2, metrics=w.wait_applied(total, timeout_s=300))
        rc = w.stop()
    finally:
        if w.alive():
            w.kill()
    assert rc == 0, w.tail_log()
    records = [(r.key.decode(), json.loads(r.value))
               for r in consume_all(kafka_bootstrap, f"{prefix}benchmarks")]
    return {"prefix": prefix, "state": state, "env": cli_env, "metrics": metrics,
            "records": records, "manual": manual, "total": total, "worker": w}


def test_worker_publishes_snapshots_results_and_the_alert(run):
    recs = [r for k, r in run["records"] if k == TYPE]
    assert len(recs) == len(run["records"])  # keyed by type
    snaps = [r for r in recs if r["kind"] == "snapshot"]
    # one per EVERY events; a snapshot due while the previous one's tasks still run is
    # deferred, and several due at once (a worker catching up) become one
    assert 2 <= len(snaps) <= run["total"] // EVERY
    assert all(s["trigger"] == "events" for s in snaps)
    applied = [s["events_applied"] for s in snaps]
    assert applied[0] >= EVERY and all(b - a >= EVERY for a, b in itertools.pairwise(applied))
    for s in snaps:
        assert s["type"] == TYPE and s["n_users"] > 0 and s["dim"] == 64
        # the vectors are the state after exactly the offsets in the manifest
        assert sum(o + 1 for o in s["offsets"].values()) == s["events_applied"]
    results = [r for r in recs if r["kind"] == "result"]
    by_task: dict[str, list[dict]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    assert sorted(by_task) == ["follow-jaccard", "metadata", "prequential", "stability"]
    assert len(by_task["metadata"]) == len(snaps) == len(by_task["follow-jaccard"])
    assert len(by_task["stability"]) == len(snaps) - 1  # none for the first
    last = by_task["metadata"][-1]
    assert last["dataset"] == "lastfm-asia"
    assert last["metrics"]["accuracy"] > last["baselines"]["majority"]["accuracy"] + 0.1
    assert last["metrics"]["accuracy"] > last["baselines"]["random"]["accuracy"] + 0.1
    fj = by_task["follow-jaccard"][-1]
    assert fj["metrics"]["spearman"] > fj["baselines"]["random"]["spearman"]
    alerts = [r for r in recs if r["kind"] == "alert"]
    assert any(a["series"] == "metadata/lastfm-asia.accuracy" and a["detector"] == "threshold"
               for a in alerts), alerts
    assert not [r for r in recs if r["kind"] == "error"]
    b = run["metrics"]["bench"]
    assert b["task_errors"] == 0 and b["snapshots"] == len(snaps) and b["scored_batches"] > 0


def test_snapshot_folders_retention_and_on_demand_snapshot(run):
    assert run["manual"].returncode == 0, run["manual"].stderr
    manual = json.loads(run["manual"].stdout)
    assert manual["trigger"] == "cli" and manual["n_entities"] > 0
    folder = run["state"] / "snapshots" / f"{run['prefix']}{TYPE}.v1"
    kept = sorted(p.name for p in folder.iterdir() if p.name.isdigit())
    scheduled = sum(1 for _k, r in run["records"] if r["kind"] == "snapshot")
    assert len(kept) == 2  # retention 2, after the scheduled + 1 manual snapshots
    assert kept[-1] == f"{scheduled + 1:06d}"
    listed = _cli("snapshot", TYPE, "--list", "--json", env=run["env"])
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == kept


def test_bench_check_and_report(run, tmp_path):
    check = _cli("bench", "--check", "--type", TYPE, env=run["env"])
    assert check.returncode == 3, check.stderr
    assert "metadata/lastfm-asia.accuracy" in check.stderr
    nothing = _cli("bench", "--check", "--type", "wiki-cooc", env=run["env"])
    assert nothing.returncode == 2, nothing.stderr  # a gate with nothing to read fails
    assert "no benchmark results" in nothing.stderr
    report = _cli("bench", "report", TYPE, "--out", str(tmp_path / "rep"), env=run["env"])
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    pngs = list((tmp_path / "rep").glob("*.png"))
    assert pngs and all(p.name in html for p in pngs)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_api_serves_benchmarks_and_alerts(run, kafka_bootstrap, tmp_path):
    scheduled = sum(1 for _k, r in run["records"] if r["kind"] == "snapshot")
    with ServeProcess(TYPE, bootstrap=kafka_bootstrap, prefix=run["prefix"],
                      log_path=tmp_path / "serve.log") as srv:
        deadline = time.monotonic() + 60
        body: dict = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                        f"{srv.url}/v1/types/{TYPE}/benchmarks", timeout=2) as r:
                    body = json.loads(r.read())
                if len(body.get("snapshots", [])) >= scheduled and body.get("alerts"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert len(body["snapshots"]) == scheduled, body.keys()
        assert {"metadata:lastfm-asia", "stability", "prequential",
                "follow-jaccard:lastfm-asia"} <= set(body["latest"])
        with urllib.request.urlopen(f"{srv.url}/v1/alerts", timeout=5) as r:  # noqa: S310
            alerts = json.loads(r.read())
        assert any(a["series"] == "metadata/lastfm-asia.accuracy" for a in alerts["open"])
        try:
            urllib.request.urlopen(f"{srv.url}/v1/types/nope/benchmarks", timeout=5)  # noqa: S310
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 404

