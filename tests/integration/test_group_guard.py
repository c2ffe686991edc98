"""A worker never skips records its table lacks because its consumer group is ahead.

faust resumes at the group's committed offsets. A backfill into *another* state dir
commits the version's group to the end of the topic; a worker on a fresh state dir
(nothing to restore: a backfill writes no changelog) would then start at the end and
skip all history while reporting no lag (found in the issue 6 user trial). It must
refuse, in one line, exit 2; a worker on the backfill's own state dir runs on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from streamer.testing.procs import WorkerProcess, fill_engagements

pytestmark = pytest.mark.integration


def test_a_worker_behind_its_group_refuses_and_one_on_the_backfilled_table_runs(
        kafka_bootstrap, tmp_path):
    prefix = f"guard-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}g"
    wire = fill_engagements(kafka_bootstrap, prefix, "wikipedia", limit=3000)
    env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "STREAMER_TOPIC_PREFIX": prefix, "STREAMER_STATE_DIR": str(tmp_path / "bf"),
           "STREAMER_CONSUMER_GROUP": group}
    done = subprocess.run([sys.executable, "-m", "streamer", "backfill", "--type", "wiki-cooc",  # noqa: S603
                           "--until", "latest", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr

    fresh = WorkerProcess("wiki-cooc", bootstrap=kafka_bootstrap, state_dir=tmp_path / "fresh",
                          prefix=prefix, group=group, log_path=tmp_path / "fresh.log").start()
    assert fresh.proc is not None
    try:
        rc = fresh.proc.wait(120)
    finally:
        if fresh.alive():
            fresh.kill()
    log = fresh.tail_log(200)
    assert rc == 2, log
    assert "ahead of this worker's table" in log and "--reset-offsets" in log, log

    same = WorkerProcess("wiki-cooc", bootstrap=kafka_bootstrap, state_dir=tmp_path / "bf",
                         prefix=prefix, group=group, log_path=tmp_path / "same.log").start()
    try:
        m = same.wait_applied(len(wire), timeout_s=120)
        time.sleep(2.0)
        assert same.alive(), same.tail_log()
        assert m["accepted"] == len(wire)  # the backfill's counters: nothing re-applied
    finally:
        assert same.stop() == 0, same.tail_log()


def test_a_backfill_of_a_topic_nobody_produced_to_is_refused_and_creates_nothing(
        kafka_bootstrap, tmp_path):
    from streamer.kafka_io import topic_partition_counts

    prefix = f"typo-{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "STREAMER_TOPIC_PREFIX": prefix, "STREAMER_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "streamer", "backfill", "--type", "wiki-cooc",  # noqa: S603
                           "--until", "latest", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"topic '{prefix}engagements' does not exist" in done.stderr
    # one error line (after the one-line note naming the target version)
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")] == [
        done.stderr.strip().splitlines()[-1]], done.stderr
    made = topic_partition_counts(kafka_bootstrap, [f"{prefix}engagements",
                                                    f"{prefix}embeddings.wiki-cooc.v2"])
    assert made == {}
