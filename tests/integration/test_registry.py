"""The registry on real Kafka: versions side by side, promote, retire, freshness, TTL.

A plug-in distribution (tests/plugins/example_plugin, installed into a temp site dir
the way pip would, on ``PYTHONPATH`` of every subprocess) declares ``demo-cooc`` v2
(int8 storage, a 5,000 event-second TTL) beside the built-in v1. Two real workers
learn the first 12,000 LastFM Asia events into both versions; a real ``streamer
serve`` serves both; the CLI promotes v2 and retires v1, and the server's answers for
``demo-cooc`` switch. Checked on the way: ``streamer types`` statuses, ``created_at``,
consumer lag, the int8 vectors against the float32 ones, TTL expiry, 410 for a retired
version, and a worker refusing to run a retired version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamer.client import Client
from streamer.testing.procs import ServeProcess, WorkerProcess, fill_engagements
from tests.plugins.install import EXAMPLE_SRC, install_distribution

pytestmark = pytest.mark.integration

N_EVENTS = 12_000
TTL_S = 5_000.0


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)


def _until(fn, timeout_s: float = 30.0, what: str = "condition"):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.3)
    msg = f"timed out waiting for {what}; last: {last!r}"
    raise AssertionError(msg)


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory) -> dict:
    prefix = f"reg-{uuid.uuid4().hex[:8]}."
    state = tmp_path_factory.mktemp("state")
    site = tmp_path_factory.mktemp("site")
    install_distribution(EXAMPLE_SRC, site)
    assert len(fill_engagements(kafka_bootstrap, prefix, "lastfm-asia", limit=N_EVENTS)) == N_EVENTS
    extra = {"PYTHONPATH": str(site), "STREAMER_WORKER__BATCH_WITHIN_S": "0.3",
             "STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS": "0"}
    workers = {v: WorkerProcess(f"demo-cooc.v{v}", bootstrap=kafka_bootstrap, state_dir=state,
                                prefix=prefix, group=f"{prefix}streamer-demo-cooc-v{v}",
                                log_path=state / f"worker-v{v}.log", extra_env=extra)
               for v in (1, 2)}
    env = {**workers[1].env}
    env.pop("STREAMER_CONSUMER_GROUP")  # the CLI computes each version's own group
    env["STREAMER_CONSUMER_GROUP"] = f"{prefix}streamer-{{type}}-v{{version}}"
    before = _cli("types", "--json", env=env)
    for w in workers.values():
        w.start()
    try:
        for w in workers.values():
            w.wait_applied(N_EVENTS, timeout_s=240)
        serve = ServeProcess("demo-cooc", bootstrap=kafka_bootstrap, prefix=prefix,
                             log_path=state / "serve.log")
        serve.env.update(PYTHONPATH=str(site))
        with serve:
            yield {"prefix": prefix, "env": env, "before": before, "serve": serve,
                   "workers": workers, "state": state, "bootstrap": kafka_bootstrap}
    finally:
        for w in workers.values():
            if w.alive():
                w.stop()


def _types(world: dict) -> dict[str, dict]:
    res = _cli("types", "list", "--json", env=world["env"])
    assert res.returncode == 0, res.stderr
    return {t["ref"]: t for t in json.loads(res.stdout)["types"]}


def test_declared_versions_side_by_side_before_any_decision(world):
    res = world["before"]
    assert res.returncode == 0, res.stderr
    got = {t["ref"]: t for t in json.loads(res.stdout)["types"]}
    assert got["demo-cooc.v1"]["status"] == "live"
    assert got["demo-cooc.v2"]["status"] == "candidate"
    assert got["demo-cooc.v2"]["storage_codec"] == "int8"
    assert got["demo-cooc.v2"]["ttl_s"] == TTL_S
    assert got["example-type.v1"]["owner"] == "example-plugin"  # a plug-in's own type
    # each worker recorded when its version first ran
    now = _types(world)
    assert now["demo-cooc.v1"]["created_at"] > 1.7e9
    assert now["demo-cooc.v2"]["created_at"] > 1.7e9


def test_serve_answers_name_with_the_live_version_and_name_vn_with_that_one(world):
    s = world["serve"]
    for ref in ("demo-cooc.v1", "demo-cooc.v2"):
        s.wait_caught_up(ref, 1000, timeout_s=120)
    with Client(s.url) as c:
        entries = {e["ref"]: e for e in c.types()}
        assert entries["demo-cooc.v1"]["status"] == "live"
        assert entries["demo-cooc.v2"]["status"] == "candidate"
        # int8 storage: the v2 vectors are v1's within one quantisation step
        ids = [f"u:{i}" for i in range(50)] + [f"i:{i}" for i in range(50)]
        v1 = {r["id"]: r for r in c.get("demo-cooc.v1", ids, include_expired=True)}
        v2 = {r["id"]: r for r in c.get("demo-cooc.v2", ids, include_expired=True)}
    both = [i for i in ids if v1[i]["found"] and v2[i]["found"]]
    assert len(both) > 50
    a = np.array([v1[i]["vector"] for i in both], dtype=np.float32)
    b = np.array([v2[i]["vector"] for i in both], dtype=np.float32)
    step = np.abs(a).max(axis=1, keepdims=True) / 127.0
    assert np.all(np.abs(a - b) <= step * 0.5 + 1e-6)
    assert not np.array_equal(a, b)


def test_ttl_reports_stale_ids_as_expired_never_fresh(world):
    s = world["serve"]
    s.wait_caught_up("demo-cooc.v2", 1000, timeout_s=120)
    ids = [f"u:{i}" for i in range(1000)]
    with Client(s.url) as c:
        items = c.get("demo-cooc.v2", ids)
        watermark = c.types()  # the type's watermark is its last event time
    wm = next(e for e in watermark if e["ref"] == "demo-cooc.v2")["last_event_ts"]
    found = [r for r in items if r["found"]]
    expired = [r for r in found if r["status"] == "expired"]
    fresh = [r for r in found if r["status"] == "fresh"]
    assert expired and fresh
    assert all(wm - r["updated_at"] > TTL_S and r["vector"] is None for r in expired)
    assert all(wm - r["updated_at"] <= TTL_S and r["vector"] is not None for r in fresh)


def test_lag_is_zero_once_the_workers_caught_up(world):
    def lag() -> dict | None:
        res = _cli("types", "describe", "demo-cooc.v1", "--json", env=world["env"])
        assert res.returncode == 0, res.stderr
        d = json.loads(res.stdout)
        return d if d["freshness"].get("lag") == 0 else None

    d = _until(lag, 60, "lag 0")
    assert d["freshness"]["group"] == f"{world['prefix']}streamer-demo-cooc-v1"


def test_a_second_worker_of_a_running_version_is_refused_at_start(world):
    """Not a consumer-group member that crash-loops on the RocksDB lock while half the
    partitions stall: a one-line refusal before joining the group."""
    running = world["workers"][2]
    assert running.alive()
    env = {**running.env, "STREAMER_WORKER__WEB_PORT": "0"}
    res = _cli("worker", "--type", "demo-cooc.v2", env=env)
    assert res.returncode == 2, res.stderr
    assert "demo-cooc.v2 already has a worker using" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert running.alive()


def test_promote_switches_readers_and_retire_takes_the_old_version_out(world):
    s, env = world["serve"], world["env"]
    s.wait_caught_up("demo-cooc.v2", 1000, timeout_s=120)
    res = _cli("types", "promote", "demo-cooc.v2", env=env)
    assert res.returncode == 0, res.stderr
    with Client(s.url) as c:
        _until(lambda: c.types() and next(e for e in c.types() if e["ref"] == "demo-cooc.v2")[
            "status"] == "live", 30, "v2 live")
        assert c.get("demo-cooc", ["u:0"])[0] == c.get("demo-cooc.v2", ["u:0"])[0]
        assert (c.neighbours("demo-cooc", "u:0", k=5)
                == c.neighbours("demo-cooc.v2", "u:0", k=5))
    assert _types(world)["demo-cooc.v1"]["status"] == "candidate"

    # the live version cannot be retired; the old one can
    res = _cli("types", "retire", "demo-cooc.v2", env=env)
    assert res.returncode == 2 and "is the live version" in res.stderr
    res = _cli("types", "retire", "demo-cooc.v1", env=env)
    assert res.returncode == 0, res.stderr
    assert _types(world)["demo-cooc.v1"]["status"] == "retired"
    import httpx

    def gone() -> bool:
        r = httpx.get(f"{s.url}/v1/types/demo-cooc.v1/neighbours/u:0")
        return r.status_code == 410 and "retired" in r.json()["error"]

    _until(gone, 30, "410 for the retired version")
    # a worker refuses to run a retired version (one line, exit 2)
    w = world["workers"][1]
    w.stop()
    res = _cli("worker", "--type", "demo-cooc.v1", env=w.env)
    assert res.returncode == 2
    assert "demo-cooc.v1 is retired" in res.stderr
    d = json.loads(_cli("types", "describe", "demo-cooc", "--json", env=env).stdout)
    assert d["version"] == 2
    assert d["versions"] == [{"version": 1, "status": "retired"},
                             {"version": 2, "status": "live"}]


def test_bad_references_get_one_line(world):
    env = world["env"]
    for args, text in [
        (["types", "describe", "nope"], "unknown embedding type 'nope'"),
        (["types", "describe", "demo-cooc.v9"], "unknown version 9 of type 'demo-cooc'"),
        (["types", "promote", "demo-cooc"], "promote needs a version"),
        (["types", "describe", "Demo"], "expected NAME or NAME.vN"),
        (["types", "promote", "wiki-sgns.v1"], "wiki-sgns.v1 has published no vectors yet "
         f"(topic {world['prefix']}embeddings.wiki-sgns.v1 does not exist); backfill it first"),
    ]:
        res = _cli(*args, env=env)
        assert res.returncode == 2, (args, res.stderr)
        assert text in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_promote_force_switches_to_a_version_that_has_published_nothing(world):
    res = _cli("types", "promote", "wiki-sgns.v1", "--force", env=world["env"])
    assert res.returncode == 0, res.stderr
    assert _types(world)["wiki-sgns.v1"]["status"] == "live"


def test_state_files_are_per_version(world):
    state: Path = world["state"]
    assert (state / "demo-cooc.v1").is_dir() or any(state.glob("*demo-cooc.v1"))
    assert (state / "demo-cooc.v2").is_dir() or any(state.glob("*demo-cooc.v2"))
