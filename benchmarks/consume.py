"""Raw consume rate of the Kafka clients over the Wikipedia topic. Prints one JSON object.

    python benchmarks/consume.py --json

Groundwork for the backfill (issue 6), which must pick kafka-python "or confluent-kafka
where measured faster". Uses STREAMER_KAFKA_BOOTSTRAP, or starts ``scripts/kafka-local``
on a spare port (stopped at the end). One topic holds the 157,474 Wikipedia events in 4
partitions; each client reads all of it from the beginning with its own fresh consumer
group (no offset commits), doing nothing per record but touching its key and value, as
a bare loop would:

* ``kafka_python_events_per_s``: ``KafkaConsumer.poll(max_records=...)`` batches
  (kafka-python, the issue's default client);
* ``confluent_kafka_events_per_s``: ``Consumer.consume(num_messages=...)`` batches
  (librdkafka);
* ``ratio_confluent_over_kafka_python``.

Each client runs ``--repeats`` times (best run reported, all runs listed); the clock is
wall time from the first record (a poll of one record) to the last. The confluent loop
never asks ``consume()`` for more records than remain: it waits for the count or its
timeout, so a loop asking for a whole batch at the end waits out the timeout (before
this was fixed, that second made confluent-kafka look no faster than kafka-python).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _kafka import start_broker, stop_broker  # noqa: E402

from streamer.datasets import load_wire  # noqa: E402
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events  # noqa: E402

PARTITIONS = 4


def kafka_python_rate(bootstrap: str, topic: str, total: int, batch: int) -> float:
    """Return events/s of a bare kafka-python poll loop reading ``total`` records."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex}",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      max_poll_records=batch, fetch_max_bytes=64 * 1024 * 1024,
                      max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        n, nbytes, t0 = 0, 0, None
        while n < total:
            got = c.poll(timeout_ms=1000, max_records=1 if t0 is None else batch)
            if got and t0 is None:
                t0 = time.perf_counter()
            for recs in got.values():
                for r in recs:
                    nbytes += len(r.key or b"") + len(r.value or b"")
                n += len(recs)
        assert t0 is not None and nbytes > 0
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def confluent_rate(bootstrap: str, topic: str, total: int, batch: int) -> float:
    """Return events/s of a bare confluent-kafka consume loop reading ``total`` records."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "enable.partition.eof": False,
                  # as the backfill's (streamer.backfill.consumer_config): the default
                  # 1000 ms made the last records arrive ~0.95 s late in half the runs
                  "fetch.queue.backoff.ms": 10})
    c.subscribe([topic])
    try:
        n, nbytes, t0 = 0, 0, None
        while n < total:
            # consume(n) waits for n records or the timeout: never ask for more than
            # remain (the last call would wait out its 1 s), one at first (the clock)
            msgs = c.consume(num_messages=1 if t0 is None else min(batch, total - n),
                             timeout=1.0)
            if msgs and t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
                nbytes += len(m.key() or b"") + len(m.value() or b"")
            n += len(msgs)
        assert t0 is not None and nbytes > 0
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def main() -> None:
    """Fill the topic once, then time each client ``--repeats`` times."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000, help="records per poll/consume call")
    args = ap.parse_args()
    bootstrap, started = start_broker("49192")
    try:
        topic = f"bench-consume-{uuid.uuid4().hex[:8]}.engagements"
        ensure_topics(bootstrap, {topic: TopicSpec(partitions=PARTITIONS)})
        wire = list(load_wire("wikipedia"))
        total = produce_events(bootstrap, topic, wire, rate=None)
        runs: dict[str, list[float]] = {"kafka_python": [], "confluent_kafka": []}
        for _ in range(args.repeats):
            runs["kafka_python"].append(kafka_python_rate(bootstrap, topic, total, args.batch))
            runs["confluent_kafka"].append(confluent_rate(bootstrap, topic, total, args.batch))
        best = {k: max(v) for k, v in runs.items()}
        out = {
            "events": total, "partitions": PARTITIONS, "batch": args.batch,
            "kafka_python_events_per_s": round(best["kafka_python"]),
            "confluent_kafka_events_per_s": round(best["confluent_kafka"]),
            "ratio_confluent_over_kafka_python": round(
                best["confluent_kafka"] / best["kafka_python"], 3),
            "runs": {k: [round(x) for x in v] for k, v in runs.items()},
            "load_avg_1m": os.getloadavg()[0],
        }
    finally:
        if started:
            stop_broker(bootstrap)
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
