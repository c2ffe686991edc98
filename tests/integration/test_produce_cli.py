"""`streamer produce --file` and `--dataset` through the CLI, against real Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from streamer.kafka_io import consume_all

pytestmark = pytest.mark.integration


def _cli(bootstrap: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": bootstrap, "STREAMER_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_produce_file_keeps_every_line_key_and_event_time(kafka_bootstrap, tmp_path):
    prefix = f"pf-{uuid.uuid4().hex[:8]}."
    lines = [json.dumps({"user_id": f"u{i % 7}", "item_id": f"i{i}", "action": "click",
                         "ts": 1_600_000_000 + i}) for i in range(50)]
    lines.append('{"user_id": "broken"')  # produced as is; the worker dead-letters it
    # an ISO ts is the event time too; a line without a readable ts keeps its place in
    # event time (the previous line's), so `backfill --until` does not stop on it
    lines.append(json.dumps({"user_id": "iso", "item_id": "i", "action": "click",
                             "ts": "2020-09-13T12:26:41Z"}))
    lines.append(json.dumps({"user_id": "bad", "item_id": "i", "action": "click", "ts": "x"}))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = _cli(kafka_bootstrap, prefix, "produce", "--file", str(path), "--partitions", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": f"{prefix}engagements", "produced": 53}
    recs = consume_all(kafka_bootstrap, f"{prefix}engagements", timeout_s=30)
    assert len(recs) == 53
    by_value = {rec.value: rec for rec in recs}
    for i, line in enumerate(lines[:50]):
        rec = by_value[line.encode()]
        assert rec.key == f"u{i % 7}".encode()
        assert rec.timestamp == (1_600_000_000 + i) * 1000
    assert by_value[lines[50].encode()].timestamp == (1_600_000_000 + 49) * 1000
    assert by_value[lines[51].encode()].timestamp == 1_600_000_001_000
    assert by_value[lines[52].encode()].timestamp == 1_600_000_001_000
    assert {rec.partition for rec in recs} <= {0, 1}


def test_produce_rejects_bad_arguments(kafka_bootstrap, tmp_path):
    r = _cli(kafka_bootstrap, "x.", "produce", "--dataset", "no-such-set")
    assert r.returncode == 2 and "no-such-set" in r.stderr
    r = _cli(kafka_bootstrap, "x.", "produce", "--file", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = _cli(kafka_bootstrap, "x.", "produce", "--dataset", "wikipedia", "--rate", "0")
    assert r.returncode == 2
