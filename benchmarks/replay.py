"""Backfill rate (``streamer backfill``) against a bare consume loop. Prints one JSON object.

    python benchmarks/replay.py --json [--repeats 3] [--types wiki-cooc,wiki-sgns]

Uses STREAMER_KAFKA_BOOTSTRAP, or starts ``scripts/kafka-local`` on a spare port
(``STREAMER_BENCH_KAFKA_PORT``, default 49292; stopped at the end). The 157,474
Wikipedia events are produced once into a fresh 4-partition topic. For each type and
repeat, in turn:

* ``raw_consume_events_per_s``: a bare confluent-kafka loop over the whole topic with
  the backfill's own consumer settings (:func:`streamer.backfill.consumer_config`, a
  fresh group, ``assign()`` from the beginning, ``consume()`` batches), doing nothing per
  record but reading its partition, offset, timestamp, key and value: records / wall
  seconds from the first record received (a ``consume()`` of one record, as in the
  backfill) to the last;
* ``events_per_s``: :func:`streamer.backfill.run_backfill` in this process, ``--from
  earliest --until latest`` into a fresh state dir (a new, empty type version): records
  applied / wall seconds from the first record received to the end of the catch-up
  (its last atomic commit and the publishing sweep of the final vectors, acknowledged).
  The set-up before the first record (registry, topics, table open, the learner's
  compiled-kernel load) is reported apart as ``setup_s``;
* ``ratio`` = ``events_per_s / raw_consume_events_per_s`` of the same repeat.

For context, ``kafka_python_raw_consume_events_per_s`` is ``benchmarks/consume.py``'s
bare kafka-python loop, once (the other client the backfill could use; measured
slower, not used).

An untimed raw pass runs first (``warm_up_raw_consume_events_per_s``): until the
broker's JVM has compiled its fetch path, the first pass is 3-4x slower. Per type the
medians over the repeats are reported, with every run listed, the
backfill's CPU seconds per event (all threads) and the 1-minute load average (this is a
2-core machine: other processes skew wall rates).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _kafka import start_broker, stop_broker  # noqa: E402
from consume import kafka_python_rate  # noqa: E402 - the bare kafka-python loop

from streamer.backfill import consumer_config, resolve_target, run_backfill  # noqa: E402
from streamer.backfill_plan import parse_bound  # noqa: E402
from streamer.datasets import load_wire  # noqa: E402
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events  # noqa: E402
from streamer.settings import Settings  # noqa: E402

PARTITIONS = 4


def raw_consume_rate(bootstrap: str, topic: str, total: int, fetch: int) -> float:
    """Return events/s of a bare consume loop (the backfill's client and settings)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(consumer_config(bootstrap, f"bench-raw-{uuid.uuid4().hex}"))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        n, nbytes, t0 = 0, 0, None
        while n < total:
            # consume(n) waits for n records or the timeout: the clock starts when the
            # first record arrives (one asked for, as the backfill does), and never more
            # than remain are asked for (the last call would wait out its timeout)
            want = 1 if t0 is None else min(fetch, total - n)
            msgs = c.consume(num_messages=want, timeout=1.0)
            if msgs and t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
                m.partition()
                m.offset()
                m.timestamp()
                nbytes += len(m.key() or b"") + len(m.value() or b"")
            n += len(msgs)
        assert t0 is not None and nbytes > 0
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def backfill_once(bootstrap: str, prefix: str, type_name: str, batch: int, total: int
                  ) -> dict[str, float]:
    """Backfill the whole topic into a fresh state dir; return its rates and timings."""
    spec, _ = resolve_target(type_name)
    state = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, state_dir=state)
        c0, t0 = time.process_time(), time.perf_counter()
        s = run_backfill(settings, spec, start=parse_bound("earliest", option="--from"),
                         until=parse_bound("latest", option="--until"), batch=batch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert s.complete and s.applied == total, s
        return {"events_per_s": s.events_per_s, "catch_up_s": s.catch_up_s,
                "setup_s": s.setup_s, "wall_s": wall, "cpu_us_per_event": cpu / total * 1e6,
                "published": s.published}
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    """Fill the topic once, then time the raw loop and the backfill per type and repeat."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", default="wiki-cooc,wiki-sgns")
    ap.add_argument("--batch", type=int, default=None,
                    help="records per engine batch (default: the backfill's default)")
    args = ap.parse_args()
    from streamer.backfill import DEFAULT_BATCH

    batch = args.batch or DEFAULT_BATCH
    bootstrap, started = start_broker("49292")
    try:
        prefix = f"bench-replay-{uuid.uuid4().hex[:8]}."
        topic = f"{prefix}engagements"
        ensure_topics(bootstrap, {topic: TopicSpec(partitions=PARTITIONS,
                                                   configs={"retention.ms": "-1"})})
        total = produce_events(bootstrap, topic, list(load_wire("wikipedia")), rate=None)
        fetch = min(max(batch, 1000), 20_000)  # what the backfill asks per consume()
        # an untimed pass first: the broker's fetch path runs 3-4x slower until its JVM
        # has compiled it (measured here: ~140k records/s on the first pass, ~550k after)
        warm_up = raw_consume_rate(bootstrap, topic, total, fetch)
        from streamer.events.decode import NATIVE_AVAILABLE

        out: dict[str, object] = {"events": total, "partitions": PARTITIONS, "batch": batch,
                                  "client": "confluent-kafka",
                                  "decoder": "native" if NATIVE_AVAILABLE else "python",
                                  "warm_up_raw_consume_events_per_s": round(warm_up),
                                  "kafka_python_raw_consume_events_per_s": round(
                                      kafka_python_rate(bootstrap, topic, total, fetch)),
                                  "types": {}}
        for type_name in args.types.split(","):
            raws, runs = [], []
            for _ in range(args.repeats):
                raws.append(raw_consume_rate(bootstrap, topic, total, fetch))
                runs.append(backfill_once(bootstrap, prefix, type_name, batch, total))
                runs[-1]["load_avg_1m"] = os.getloadavg()[0]
            ratios = [r["events_per_s"] / raw for r, raw in zip(runs, raws, strict=True)]
            out["types"][type_name] = {  # type: ignore[index]
                "events_per_s": round(statistics.median(r["events_per_s"] for r in runs)),
                "raw_consume_events_per_s": round(statistics.median(raws)),
                "ratio": round(statistics.median(ratios), 3),
                "runs": [{**{k: round(v, 3) for k, v in r.items()}, "raw_consume_events_per_s":
                          round(raw), "ratio": round(q, 3)}
                         for r, raw, q in zip(runs, raws, ratios, strict=True)],
            }
        out["load_avg_1m"] = os.getloadavg()[0]
    finally:
        if started:
            gc.collect()  # finalises the backfills' clients before their broker goes
            stop_broker(bootstrap)
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
