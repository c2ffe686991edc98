"""The engine alone on the Wikipedia stream: ``Engine.process`` rate and CPU per event.

    python benchmarks/engine.py --json [--repeats 3] [--types wiki-cooc,wiki-sgns]
                                        [--batch 50000]

No Kafka: the 157,474 Wikipedia messages are built in memory as a backfill would feed
them (partition by the key's murmur2 like the producer, offsets per partition, event-time
order), then applied in batches to a fresh RocksDB table in a temporary folder, without
a live index or publishing (the backfill's catch-up configuration; the garbage
collector runs between batches only, as there). The learner's compiled kernels are
loaded before timing. Per type and repeat: ``events_per_s`` (wall), ``cpu_us_per_event``
(this thread's CPU time) and ``digest`` (SHA-256 prefix of every feature, state record
and offset at the end: equal digests mean bit-for-bit equal tables, e.g. before and
after an optimisation). Medians over the repeats; every run listed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.backfill import _warm_up, resolve_target  # noqa: E402
from streamer.datasets import load_wire  # noqa: E402
from streamer.engine import RawMessage, open_engine  # noqa: E402
from streamer.events.deadletter import MemoryDeadLetters  # noqa: E402
from streamer.kafka_io import partition_for_key  # noqa: E402
from streamer.types import ManualClock  # noqa: E402

PARTITIONS = 4
NOW_S = 2.0e9  # the decoder's wall clock (far-future rule), fixed: runs are comparable


def messages() -> list[RawMessage]:
    """The Wikipedia stream as raw messages, in event-time order."""
    offsets = [0] * PARTITIONS
    out = []
    for key, value, _ts in sorted(load_wire("wikipedia"), key=lambda r: r[2]):
        p = partition_for_key(key, PARTITIONS)
        out.append(RawMessage(value, "engagements", p, offsets[p]))
        offsets[p] += 1
    return out


def run_once(type_name: str, msgs: list[RawMessage], batch: int) -> dict[str, object]:
    """Apply ``msgs`` to a fresh table of ``type_name``; return rate, CPU and digest."""
    spec, _ = resolve_target(type_name)
    _warm_up(spec)
    state = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    eng = open_engine(spec, state_dir=state, dead_letters=MemoryDeadLetters(),
                      clock=ManualClock(NOW_S), with_index=False)
    try:
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            c0, t0 = time.thread_time(), time.perf_counter()
            for i in range(0, len(msgs), batch):
                eng.process(msgs[i:i + batch])
                gc.collect(1)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        finally:
            gc.enable()
            gc.unfreeze()
        h = hashlib.sha256()
        for entity, rec in eng.table.iter_features():
            h.update(entity.encode())
            h.update(rec.vector.tobytes())
            h.update(repr((rec.updated_at, rec.update_count)).encode())
        for key, value in eng.table.iter_state():
            h.update(key)
            h.update(value)
        h.update(repr(sorted(eng.offsets().items())).encode())
        return {"events_per_s": round(len(msgs) / wall),
                "cpu_us_per_event": round(cpu / len(msgs) * 1e6, 2),
                "digest": h.hexdigest()[:16], "load_avg_1m": os.getloadavg()[0]}
    finally:
        eng.close()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    """Build the stream once, then time each type ``--repeats`` times."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", default="wiki-cooc,wiki-sgns")
    ap.add_argument("--batch", type=int, default=50_000)
    args = ap.parse_args()
    msgs = messages()
    out: dict[str, object] = {"events": len(msgs), "batch": args.batch, "types": {}}
    for type_name in args.types.split(","):
        runs = [run_once(type_name, msgs, args.batch) for _ in range(args.repeats)]
        out["types"][type_name] = {  # type: ignore[index]
            "events_per_s": round(statistics.median(r["events_per_s"] for r in runs)),  # type: ignore[misc]
            "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in runs),  # type: ignore[misc]
            "digests": sorted({str(r["digest"]) for r in runs}),
            "runs": runs,
        }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
