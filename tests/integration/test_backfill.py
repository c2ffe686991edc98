"""``streamer backfill`` on real Kafka (issue 6, part 1): the CLI as a subprocess.

The Wikipedia stream of ``wiki_produced`` (157,474 events + 1,000 bad messages, 4
partitions) is backfilled into copies of ``wiki-cooc`` and ``wiki-sgns`` declared only
inside the CLI's process (``_CLI``): same algorithm, params, seed and version, but their
own name, so their dead letters, output topic, registry record and consumer group never
mix with the ``wiki-cooc`` workers of test_e2e_wikipedia.py, which counts the shared
dead-letter topic exactly. The learner state does not depend on the name: the copy's
final table must equal the faust worker's (``wiki_uninterrupted``) bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streamer.datasets import load_wire
from streamer.kafka_io import (
    TopicSpec,
    consume_all,
    end_offsets,
    ensure_topics,
    partition_for_key,
    produce_events,
)
from streamer.registry import consumer_lag, publish_records, version_record
from streamer.store.codec import decode_record
from streamer.store.rocks import RocksFeatureTable
from streamer.testing.procs import WorkerProcess, fill_engagements
from streamer.transfer import table_path
from tests.integration.wiki import table_snapshot
from topologies.cooccurrence import WIKI_COOC
from topologies.skipgram import WIKI_SGNS

pytestmark = pytest.mark.integration

DLQ = "engagements.deadletter.backfill-tests"
COOC = dataclasses.replace(WIKI_COOC, name="wiki-cooc-bf", dead_letters=DLQ,
                           description="test copy of wiki-cooc")
SGNS = dataclasses.replace(WIKI_SGNS, name="wiki-sgns-bf", dead_letters=DLQ,
                           description="test copy of wiki-sgns")

# The real CLI, with the two copies declared.
_CLI = f"""
import dataclasses, sys
import topologies
from topologies.cooccurrence import WIKI_COOC
from topologies.skipgram import WIKI_SGNS
topologies.TOPOLOGIES = (
    *topologies.TOPOLOGIES,
    dataclasses.replace(WIKI_COOC, name={COOC.name!r}, dead_letters={DLQ!r},
                        description="test copy of wiki-cooc"),
    dataclasses.replace(WIKI_SGNS, name={SGNS.name!r}, dead_letters={DLQ!r},
                        description="test copy of wiki-sgns"))
sys.argv = ["streamer", *sys.argv[1:]]
from streamer.cli import main
main()
"""


def _env(bootstrap: str, prefix: str, state: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": bootstrap, "STREAMER_TOPIC_PREFIX": prefix,
            "STREAMER_STATE_DIR": str(state), **extra}


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _CLI, "backfill", *args]


def run_backfill(*args: str, bootstrap: str, prefix: str, state: Path, timeout_s: float = 300,
                 **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``streamer backfill ARGS`` to its end; stdout/stderr as text."""
    return subprocess.run(_argv(*args), env=_env(bootstrap, prefix, state, **extra),  # noqa: S603
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def start_backfill(*args: str, bootstrap: str, prefix: str, state: Path, out: Path, err: Path,
                   **extra: str) -> subprocess.Popen[bytes]:
    """Start ``streamer backfill ARGS`` in its own session (stdout/stderr to files)."""
    return subprocess.Popen(_argv(*args), env=_env(bootstrap, prefix, state, **extra),  # noqa: S603
                            stdout=out.open("wb"), stderr=err.open("wb"), start_new_session=True)


def summary_of(stdout: str) -> dict:
    """The ``--json`` summary: the one JSON line on stdout."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def snapshot(spec, state: Path, prefix: str) -> tuple[dict, dict, dict]:
    return table_snapshot(table_path(spec, state_dir=state, path_prefix=prefix),
                          int(spec.params["dim"]))


def wait_for(cond, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 120,
             poll_s: float = 0.1, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"backfill exited ({proc.returncode}) while waiting for {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(poll_s)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    return proc.returncode


def committed(bootstrap: str, group: str, topic: str) -> dict:
    """The consumer group's lag (records) per partition, as `streamer serve` reports it."""
    return consumer_lag(bootstrap, group, topic, timeout_s=5.0)


# --------------------------------------------------------------------------------------
# one uninterrupted backfill of the co-occurrence copy: --from earliest --until latest


@pytest.fixture(scope="module")
def cooc_backfill(wiki_produced, kafka_bootstrap, tmp_path_factory) -> dict:
    prefix = wiki_produced.prefix
    state = tmp_path_factory.mktemp("bf-cooc")
    dlq = f"{prefix}{DLQ}"
    keep = {"retention.ms": "-1"}
    ensure_topics(kafka_bootstrap, {dlq: TopicSpec(partitions=4, configs=keep)})
    dlq_start = end_offsets(kafka_bootstrap, dlq)
    done = run_backfill("--type", COOC.name, "--until", "latest", "--json",
                        bootstrap=kafka_bootstrap, prefix=prefix, state=state)
    assert done.returncode == 0, done.stderr[-3000:]
    feats, st, offs = snapshot(COOC, state, prefix)
    return {"summary": summary_of(done.stdout), "stderr": done.stderr, "features": feats,
            "state": st, "offsets": offs, "dlq_start": dlq_start, "state_dir": state,
            "dlq_end": end_offsets(kafka_bootstrap, dlq)}


def test_a_rerun_that_applies_nothing_publishes_nothing_again(cooc_backfill, wiki_produced,
                                                             kafka_bootstrap):
    out = f"{wiki_produced.prefix}{COOC.output_topic}"
    before = end_offsets(kafka_bootstrap, out)
    assert sum(before.values()) >= cooc_backfill["summary"]["published"] > 0
    assert not cooc_backfill["summary"]["sweep_skipped"]
    done = run_backfill("--type", COOC.name, "--until", "latest", "--json",
                        bootstrap=kafka_bootstrap, prefix=wiki_produced.prefix,
                        state=cooc_backfill["state_dir"])
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary_of(done.stdout)
    assert s["applied"] == 0 and s["complete"] and s["sweep_skipped"] and s["published"] == 0
    assert "not republished" in done.stderr
    assert end_offsets(kafka_bootstrap, out) == before
    assert snapshot(COOC, cooc_backfill["state_dir"], wiki_produced.prefix)[0] == \
        cooc_backfill["features"]


def test_backfill_ends_in_the_worker_table_bit_for_bit(cooc_backfill, wiki_uninterrupted,
                                                       wiki_produced):
    """Co-occurrence state is per partition: the faust worker's arrival order and batch
    cuts do not matter, so a backfill of the whole topic must end in its table."""
    assert cooc_backfill["offsets"] == wiki_uninterrupted["offsets"]
    assert cooc_backfill["features"] == wiki_uninterrupted["features"]
    assert cooc_backfill["state"] == wiki_uninterrupted["state"]
    s = cooc_backfill["summary"]
    assert (s["type"], s["version"], s["mode"]) == (COOC.name, COOC.version, "until")
    assert s["complete"] and not s["interrupted"]
    assert s["applied"] == s["catch_up_applied"] == wiki_produced.total
    assert s["accepted"] == sum(wiki_produced.user_counts.values())
    assert s["rejected"] == len(wiki_produced.bad)
    assert s["rejected_by_reason"] == dict(collections.Counter(
        b.expected_reason for b in wiki_produced.bad))
    assert s["skipped"] == {}
    assert s["events_per_s"] > 0
    for p, part in s["partitions"].items():
        assert part["start"] == 0 and part["applied_to"] == part["stop"] - 1 == part["end"] - 1, p
    # one line naming the target, one for the plan, summary lines; no progress bar (no TTY)
    assert f"backfill target: {COOC.name}.v{COOC.version} (the highest declared version" \
        in cooc_backfill["stderr"]
    assert "\r" not in cooc_backfill["stderr"]


def test_backfill_dead_letters_publishes_and_commits_its_position(
        cooc_backfill, wiki_produced, kafka_bootstrap):
    prefix = wiki_produced.prefix
    # every bad message dead-lettered once, with its reason, by this type
    start, end = cooc_backfill["dlq_start"], cooc_backfill["dlq_end"]
    got = collections.Counter()
    for rec in consume_all(kafka_bootstrap, f"{prefix}{DLQ}", timeout_s=60):
        if not start[rec.partition] <= rec.offset < end[rec.partition]:
            continue
        headers = dict(rec.headers)
        assert headers["x-streamer-type"].decode() == COOC.name
        assert headers["x-streamer-version"].decode() == str(COOC.version)
        got[(rec.value or b"", headers["x-reject-reason"].decode())] += 1
    assert got == collections.Counter((b.value or b"", b.expected_reason)
                                      for b in wiki_produced.bad)
    # each entity's final vector published once at the end of the catch-up
    feats = cooc_backfill["features"]
    assert cooc_backfill["summary"]["published"] == len(feats)
    # the CI builds native/: the stream above went through the native decoder, and the
    # table equals the faust worker's (another test), so both decoders agree end to end
    assert cooc_backfill["summary"]["decoder"] == "native"
    latest: dict[str, bytes] = {}
    for rec in consume_all(kafka_bootstrap, f"{prefix}{COOC.output_topic}", timeout_s=60):
        latest[rec.key.decode()] = rec.value
    assert latest.keys() == feats.keys()
    dim = int(COOC.params["dim"])
    for entity, value in latest.items():
        r = decode_record(value, dim)
        assert (r.vector.tobytes(), r.updated_at, r.update_count, r.model_version) \
            == feats[entity], entity
    # the version's own consumer group holds the final position: no lag
    group = f"{prefix}streamer-{COOC.name}-v{COOC.version}"
    assert cooc_backfill["summary"]["group"] == group
    lag = committed(kafka_bootstrap, group, f"{prefix}engagements")
    assert lag["lag"] == 0, lag


# --------------------------------------------------------------------------------------
# determinism, restart


def test_two_sgns_backfills_of_one_range_are_bitwise_identical(wiki_produced, kafka_bootstrap,
                                                                tmp_path):
    """SGNS shares one model across partitions, so its vectors depend on the order the
    partitions interleave in; the backfill's order depends on the data alone."""
    tables = []
    for run in ("a", "b"):
        state = tmp_path / run
        done = run_backfill("--type", f"{SGNS.name}.v{SGNS.version}", "--until", "latest",
                            "--json", bootstrap=kafka_bootstrap, prefix=wiki_produced.prefix,
                            state=state)
        assert done.returncode == 0, done.stderr[-3000:]
        assert summary_of(done.stdout)["applied"] == wiki_produced.total
        tables.append(snapshot(SGNS, state, wiki_produced.prefix))
    (fa, sa, oa), (fb, sb, ob) = tables
    assert len(fa) > 5_000  # users and pages: not a trivially empty table
    assert oa == ob
    assert fa == fb
    assert sa == sb


def test_sigkill_mid_way_then_restart_ends_in_the_uninterrupted_table(
        cooc_backfill, wiki_produced, kafka_bootstrap, tmp_path):
    prefix = wiki_produced.prefix
    state = tmp_path / "state"
    group = f"{prefix}bf-kill-{uuid.uuid4().hex[:6]}-{{type}}-v{{version}}"
    real_group = group.replace("{type}", COOC.name).replace("{version}", str(COOC.version))
    source = f"{prefix}engagements"
    total = wiki_produced.total
    out, err = tmp_path / "out.json", tmp_path / "err.log"
    proc = start_backfill("--type", COOC.name, "--until", "latest", "--batch", "1000",
                          "--json", bootstrap=kafka_bootstrap, prefix=prefix, state=state,
                          out=out, err=err, STREAMER_CONSUMER_GROUP=group)
    try:
        def past_a_fifth() -> bool:  # read from the group the backfill commits to
            lag = committed(kafka_bootstrap, real_group, source)["lag"]
            return lag is not None and lag < total * 0.8
        wait_for(past_a_fifth, "a fifth of the stream applied", proc, poll_s=0.05, log=err)
        assert proc.poll() is None, "the backfill finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        stop(proc, signal.SIGKILL)
    _, _, at_kill = snapshot(COOC, state, prefix)
    applied = sum(o + 1 for o in at_kill.values())
    assert 0 < applied < total, applied   # killed mid-way, after some batches committed
    done = run_backfill("--type", COOC.name, "--until", "latest", "--batch", "1000", "--json",
                        bootstrap=kafka_bootstrap, prefix=prefix, state=state,
                        STREAMER_CONSUMER_GROUP=group)
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary_of(done.stdout)
    for p, part in s["partitions"].items():  # the restart seeks to the stored offset + 1
        assert part["stored"] == at_kill.get((source, int(p)), -1)
        assert part["start"] == part["stored"] + 1
    assert s["applied"] == total - applied
    feats, st, offs = snapshot(COOC, state, prefix)
    assert offs == cooc_backfill["offsets"]
    assert feats == cooc_backfill["features"]
    assert st == cooc_backfill["state"]


def test_sigterm_stops_a_bounded_backfill_after_a_commit_with_exit_130(
        wiki_produced, kafka_bootstrap, tmp_path):
    prefix = wiki_produced.prefix
    source = f"{prefix}engagements"
    group = f"{prefix}bf-term-{uuid.uuid4().hex[:6]}-{{type}}-v{{version}}"
    real_group = group.replace("{type}", COOC.name).replace("{version}", str(COOC.version))
    out, err = tmp_path / "out.json", tmp_path / "err.log"
    proc = start_backfill("--type", COOC.name, "--until", "latest", "--batch", "1000",
                          "--json", bootstrap=kafka_bootstrap, prefix=prefix,
                          state=tmp_path / "state", out=out, err=err,
                          STREAMER_CONSUMER_GROUP=group)
    try:
        def started() -> bool:  # a group that never committed counts its whole lag
            lag = committed(kafka_bootstrap, real_group, source)["lag"]
            return lag is not None and lag < wiki_produced.total
        wait_for(started, "a first batch committed", proc, poll_s=0.05, log=err)
        rc = stop(proc, signal.SIGTERM)
    finally:
        stop(proc, signal.SIGKILL)
    assert rc == 130, err.read_text()[-3000:]
    s = summary_of(out.read_text())
    assert s["interrupted"] and not s["complete"]
    assert 0 < s["applied"] < wiki_produced.total
    _, _, offs = snapshot(COOC, tmp_path / "state", prefix)
    # what it says it applied is what the table holds: it stopped after a commit
    assert {(source, int(p)): d["applied_to"] for p, d in s["partitions"].items()
            if d["applied_to"] >= 0} == offs
    assert sum(o + 1 for o in offs.values()) == s["applied"]
    assert "SIGTERM: stopping after the current batch commits" in err.read_text()


# --------------------------------------------------------------------------------------
# a time range


FROM_ISO = "2014-01-02T00:00:00Z"
UNTIL_EPOCH = "1388750400"  # 2014-01-03T12:00:00Z: epoch seconds are accepted too


def test_from_and_until_times_pick_the_offsets_of_the_record_timestamps(kafka_bootstrap,
                                                                         tmp_path):
    """On a topic of the first 20,000 Wikipedia events (record timestamp = event time,
    in order), [from, until) holds exactly the events of that time range.

    (On ``wiki_produced`` the bad messages carry timestamps from anywhere in the month,
    so the first record at or after most times is a bad one early in the partition:
    ``offsets_for_times`` answers correctly, but the ranges are not a useful test.)
    """
    prefix = f"bf-range-{uuid.uuid4().hex[:8]}."
    source = f"{prefix}engagements"
    wire = fill_engagements(kafka_bootstrap, prefix, "wikipedia", limit=20_000)
    from_ms, until_ms = 1_388_620_800_000, int(UNTIL_EPOCH) * 1000
    # independently of offsets_for_times: count the produced events per partition
    before: collections.Counter = collections.Counter()
    inside: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    for key, _value, ts in wire:
        p = partition_for_key(key, 4)
        total[p] += 1
        before[p] += ts < from_ms
        inside[p] += from_ms <= ts < until_ms
    assert 5_000 < sum(inside.values()) < 15_000  # a real sub-range
    want = {p: (before[p], before[p] + inside[p]) for p in range(4)}

    done = run_backfill("--type", COOC.name, "--from", FROM_ISO, "--until", UNTIL_EPOCH,
                        "--json", bootstrap=kafka_bootstrap, prefix=prefix,
                        state=tmp_path / "a")
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary_of(done.stdout)
    assert s["start"] == "2014-01-02T00:00:00.000Z" and s["until"] == "2014-01-03T12:00:00.000Z"
    assert {int(p): (d["start"], d["stop"]) for p, d in s["partitions"].items()} == want
    assert s["applied"] == s["accepted"] == sum(inside.values())
    feats, _, offs = snapshot(COOC, tmp_path / "a", prefix)
    assert offs == {(source, p): b - 1 for p, (a, b) in want.items()}
    users = collections.Counter(f"u:{k.decode()}" for k, _v, ts in wire
                                if from_ms <= ts < until_ms)
    assert {k: v[2] for k, v in feats.items() if k.startswith("u:")} == users
    assert s["skipped"] == {}

    # a later --from on the same table leaves a gap: counted per partition and warned
    later_ms = 1_388_793_600_000  # 2014-01-04T00:00:00Z
    gap = collections.Counter(partition_for_key(k, 4) for k, _v, ts in wire
                              if until_ms <= ts < later_ms)
    assert sum(gap.values()) > 0
    done = run_backfill("--type", COOC.name, "--from", "2014-01-04", "--until", "latest",
                        "--json", bootstrap=kafka_bootstrap, prefix=prefix,
                        state=tmp_path / "a")
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary_of(done.stdout)
    assert s["skipped"] == {str(p): n for p, n in sorted(gap.items()) if n}
    assert f"warning: {sum(gap.values())} records between the table's stored offsets" \
        in done.stderr

    # no record at or after --from: every partition starts (and stays) at its end
    done = run_backfill("--type", COOC.name, "--from", "2014-03-01", "--until", "latest",
                        "--json", bootstrap=kafka_bootstrap, prefix=prefix,
                        state=tmp_path / "b")
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary_of(done.stdout)
    assert s["applied"] == 0 and s["complete"]
    assert {int(p): d["start"] for p, d in s["partitions"].items()} == dict(total)


# --------------------------------------------------------------------------------------
# follow mode


def test_without_until_it_follows_the_live_stream_until_sigterm(kafka_bootstrap, tmp_path):
    prefix = f"bf-follow-{uuid.uuid4().hex[:8]}."
    source = f"{prefix}engagements"
    first = fill_engagements(kafka_bootstrap, prefix, "wikipedia", limit=3000)
    out, err = tmp_path / "out.json", tmp_path / "err.log"
    proc = start_backfill("--type", COOC.name, "--json", bootstrap=kafka_bootstrap,
                          prefix=prefix, state=tmp_path / "state", out=out, err=err)
    group = f"{prefix}streamer-{COOC.name}-v{COOC.version}"
    try:
        wait_for(lambda: "following the live stream" in err.read_text(errors="replace"),
                 "the end of the catch-up", proc, log=err)
        more = list(load_wire("wikipedia"))[3000:4000]
        assert produce_events(kafka_bootstrap, source, more, rate=None) == 1000
        wait_for(lambda: committed(kafka_bootstrap, group, source)["lag"] == 0
                 and sum(end_offsets(kafka_bootstrap, source).values()) == 4000,
                 "the new events applied", proc, log=err)
        assert proc.poll() is None
        rc = stop(proc, signal.SIGTERM)
    finally:
        stop(proc, signal.SIGKILL)
    assert rc == 0, err.read_text()[-3000:]
    s = summary_of(out.read_text())
    assert (s["mode"], s["until"], s["interrupted"]) == ("follow", None, True)
    assert s["catch_up_applied"] == 3000 and s["applied"] == s["accepted"] == 4000
    feats, _, offs = snapshot(COOC, tmp_path / "state", prefix)
    counts = collections.Counter(f"u:{k.decode()}" for k, _v, _t in [*first, *more])
    assert {k: v[2] for k, v in feats.items() if k.startswith("u:")} == counts
    parts = collections.Counter(partition_for_key(k, 4) for k, _v, _t in [*first, *more])
    assert offs == {(source, p): n - 1 for p, n in parts.items()}


# --------------------------------------------------------------------------------------
# bad arguments: one line, exit 2


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--type", "no-such-type"], "unknown embedding type 'no-such-type'; declared types:"),
    (["--type", f"{COOC.name}.v7"], f"unknown version 7 of type '{COOC.name}'"),
    (["--type", COOC.name, "--from", "yesterday"],
     "--from 'yesterday' is not a valid start; expected 'earliest', an ISO-8601 time"),
    (["--type", COOC.name, "--until", "2014-02-30"], "--until '2014-02-30' is not a valid stop"),
    (["--type", COOC.name, "--from", "2014-01-09", "--until", "2014-01-02T00:00:00Z"],
     "--until 2014-01-02T00:00:00.000Z is not later than --from 2014-01-09T00:00:00.000Z"),
    (["--type", COOC.name, "--batch", "0"], "--batch 0; expected an integer from 1 to"),
    (["--type", COOC.name, "--batch", "1000001"],
     "--batch 1000001; expected an integer from 1 to 1,000,000"),
])
def test_bad_arguments_are_one_line_errors(args, expected, kafka_bootstrap, tmp_path):
    if "--until" not in args:
        args = [*args, "--until", "latest"]
    done = run_backfill(*args, bootstrap=kafka_bootstrap, prefix="bf-args.", state=tmp_path)
    assert expected in _one_line_error(done)


def test_a_retired_version_is_refused(kafka_bootstrap, tmp_path):
    prefix = f"bf-retired-{uuid.uuid4().hex[:8]}."
    publish_records(kafka_bootstrap, f"{prefix}registry",
                    [version_record(COOC, "retired", now=time.time(), by="test")])
    done = run_backfill("--type", COOC.name, "--until", "latest", bootstrap=kafka_bootstrap,
                        prefix=prefix, state=tmp_path)
    line = _one_line_error(done)
    assert f"{COOC.name}.v{COOC.version} is retired" in line
    assert not table_path(COOC, state_dir=tmp_path, path_prefix=prefix).exists()


def test_a_running_worker_of_the_version_holds_its_table(kafka_bootstrap, tmp_path):
    prefix = f"bf-locked-{uuid.uuid4().hex[:8]}."
    fill_engagements(kafka_bootstrap, prefix, "wikipedia", limit=2000)
    state = tmp_path / "state"
    worker = WorkerProcess(COOC.name, bootstrap=kafka_bootstrap, state_dir=state, prefix=prefix,
                           group=f"{prefix}streamer-{COOC.name}-v{COOC.version}",
                           log_path=tmp_path / "worker.log",
                           command=[sys.executable, "-c", _CLI, "worker", "--type", COOC.name])
    worker.start()
    try:
        worker.wait_applied(2000, timeout_s=120)
        done = run_backfill("--type", COOC.name, "--until", "latest",
                            bootstrap=kafka_bootstrap, prefix=prefix, state=state)
        line = _one_line_error(done)
        assert f"{COOC.name}.v{COOC.version} is in use" in line and "RocksDB lock" in line
        assert worker.alive()
    finally:
        assert worker.stop() == 0, worker.tail_log()
    # the worker's table is intact and still its own
    t = RocksFeatureTable(table_path(COOC, state_dir=state, path_prefix=prefix),
                          dim=int(COOC.params["dim"]), read_only=True)
    try:
        assert sum(o + 1 for o in t.offsets().values()) == 2000
    finally:
        t.close()
