"""A worker whose batch processing fails exits 1 with a one-line reason (real Kafka).

Before: faust restarted the crashed agent on the same messages forever while /health said
"ok". The failing learner here is a SkipGram whose ``learn_many`` raises after the first
batch; it is declared only inside the worker's own process.
"""

from __future__ import annotations

import itertools
import sys
import uuid

import pytest

from streamer.datasets import load_wire
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events
from streamer.testing.procs import WorkerProcess

pytestmark = pytest.mark.integration

_FAILING_CLI = """
import sys
import topologies
from streamer.learn import registry
from streamer.learn.skipgram import SkipGram
from streamer.topology import TopologySpec

class Failing(SkipGram):
    name = "failing"
    calls = 0
    def learn_many(self, batch):
        Failing.calls += 1
        if Failing.calls > 1:
            raise RuntimeError("boom in learn_many")
        super().learn_many(batch)

registry._BUILTIN["failing"] = Failing
topologies.TOPOLOGIES = (*topologies.TOPOLOGIES, TopologySpec(
    name="wiki-failing", algorithm="failing", params={"dim": 8, "capacity": 4096,
    "noise_table_size": 4096, "seed": 1}, version=1, description="test: fails"))
sys.argv = ["streamer", *sys.argv[1:]]
from streamer.cli import main
main()
"""


def test_a_failing_batch_stops_the_worker_with_status_1(kafka_bootstrap, tmp_path):
    prefix = f"fail-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, {
        f"{prefix}engagements": TopicSpec(partitions=1),
        f"{prefix}engagements.deadletter": TopicSpec(partitions=1),
    })
    # two separate produces far enough apart in the log to land in two batches
    wire = list(itertools.islice(load_wire("wikipedia"), 4000))
    produce_events(kafka_bootstrap, f"{prefix}engagements", wire, rate=None)
    log = tmp_path / "worker.log"
    w = WorkerProcess("wiki-failing", bootstrap=kafka_bootstrap, state_dir=tmp_path / "state",
                      prefix=prefix, group=f"{prefix}streamer-wiki-failing-v1", log_path=log,
                      extra_env={"STREAMER_WORKER__BATCH_MAX": "500",
                                 "STREAMER_ENGAGEMENTS_PARTITIONS": "1"},
                      command=[sys.executable, "-c", _FAILING_CLI, "worker", "--type",
                               "wiki-failing"])
    w.start()
    try:
        assert w.proc is not None
        code = w.proc.wait(180)
    finally:
        if w.alive():
            w.kill()
    text = log.read_text(errors="replace")
    assert code == 1, text[-3000:]
    assert "streamer worker wiki-failing: batch failed: RuntimeError: boom in learn_many" in text
