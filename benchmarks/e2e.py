"""End-to-end worker benchmark on real Kafka (issue 2). Prints one JSON object.

    python benchmarks/e2e.py --json

Uses STREAMER_KAFKA_BOOTSTRAP, or starts `scripts/kafka-local` on a spare port (and stops
it at the end). All numbers come from one run on one pre-filled topic holding the
Wikipedia stream (157,474 events, 4 partitions):

* ``noop_events_per_s``: a faust worker that only decodes and acks (`worker --noop`);
* ``events_per_s``: the real worker (Kafka -> learner -> RocksDB feature table + HNSW index
  + publish to the compacted embeddings topic), first to last batch, wall clock;
* ``freshness_p50_s`` / ``freshness_p99_s``: with the worker caught up and `streamer serve`
  tailing its output, events for new users are produced at a steady 2,000/s; an outside
  client polls the HTTP API until each sampled event's user vector is visible
  (time visible - time sent);
* ``peak_rss_mb``: the real worker process's peak resident memory (psutil samples).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _kafka import start_broker, stop_broker  # noqa: E402

from streamer.datasets import load_wire  # noqa: E402
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events  # noqa: E402
from streamer.testing.procs import ServeProcess, WorkerProcess  # noqa: E402

TYPE = "wiki-cooc"


def _throughput(w: WorkerProcess, total: int, rss: list[float] | None = None) -> float:
    stop = threading.Event()

    def sample() -> None:
        assert w.proc is not None
        p = psutil.Process(w.proc.pid)
        while not stop.is_set():
            try:
                rss.append(p.memory_info().rss / 2**20)  # type: ignore[union-attr]
            except psutil.Error:
                return
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    if rss is not None:
        t.start()
    try:
        m = w.wait_applied(total, timeout_s=900)
    finally:
        stop.set()
    tp = m["throughput"]
    first, last = tp["first_batch_wall_s"], tp["last_batch_wall_s"]
    return tp["messages"] / max(last - first, 1e-9)


def _freshness(boot: str, prefix: str, serve: ServeProcess, seconds: float, rate: float,
               sample_every: int) -> list[float]:
    pages = [f"{p}" for p in range(8228, 9228)]
    sent: dict[str, float] = {}
    lock = threading.Lock()
    n = int(seconds * rate)
    run = uuid.uuid4().hex[:6]

    def messages():  # noqa: ANN202
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            user = f"fresh-{run}-{i}"
            now = time.time()
            value = json.dumps({"user_id": user, "item_id": pages[i % len(pages)],
                                "action": "edit", "ts": now,
                                "event_id": f"fresh:{run}:{i}"}).encode()
            if i % sample_every == 0:
                with lock:
                    sent[f"u:{user}"] = time.monotonic()
            yield user.encode(), value, int(now * 1000)

    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=serve.url, timeout=5) as c:
            while not done.is_set() or len(seen) < len(sent):
                with lock:
                    pending = [u for u in sent if u not in seen][:500]
                if not pending:
                    time.sleep(0.01)
                    if done.is_set() and len(seen) >= len(sent):
                        return
                    continue
                r = c.post(f"/v1/types/{TYPE}/embeddings", json={"ids": pending})
                now = time.monotonic()
                for item in r.json()["items"]:
                    if item["found"]:
                        seen[item["id"]] = now
                time.sleep(0.01)
                if done.is_set() and time.monotonic() > done_at[0] + 30:
                    return

    done_at = [0.0]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    produce_events(boot, f"{prefix}engagements", messages(), rate=None)
    done_at[0] = time.monotonic()
    done.set()
    poller.join(60)
    missing = [u for u in sent if u not in seen]
    if missing:
        print(f"warning: {len(missing)} sampled events never became visible", file=sys.stderr)
    return [seen[u] - sent[u] for u in sent if u in seen]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--fresh-seconds", type=float, default=15.0)
    ap.add_argument("--fresh-rate", type=float, default=2000.0)
    args = ap.parse_args()
    boot, started = start_broker("49092")
    tmp = Path(tempfile.mkdtemp(prefix="streamer-e2e-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    try:
        ensure_topics(boot, {f"{prefix}engagements": TopicSpec(partitions=4,
                                                               configs={"retention.ms": "-1"})})
        total = produce_events(boot, f"{prefix}engagements", load_wire("wikipedia"), rate=None)
        noop = WorkerProcess(TYPE, bootstrap=boot, state_dir=tmp / "noop", prefix=prefix,
                             group=f"{prefix}noop", log_path=tmp / "noop.log", noop=True)
        noop.start()
        try:
            noop_eps = _throughput(noop, total)
        finally:
            noop.stop()
        rss: list[float] = []
        real = WorkerProcess(TYPE, bootstrap=boot, state_dir=tmp / "real", prefix=prefix,
                             group=f"{prefix}real", log_path=tmp / "real.log")
        real.start()
        try:
            eps = _throughput(real, total, rss)
            with ServeProcess(TYPE, bootstrap=boot, prefix=prefix,
                              log_path=tmp / "serve.log") as srv:
                srv.wait_caught_up(TYPE, expected=9227, timeout_s=300)
                lat = _freshness(boot, prefix, srv, args.fresh_seconds, args.fresh_rate,
                                 sample_every=10)
        finally:
            real.stop()
        result = {
            "events": total,
            "noop_events_per_s": round(noop_eps, 1),
            "events_per_s": round(eps, 1),
            "ratio_to_noop": round(eps / noop_eps, 3),
            "freshness_samples": len(lat),
            "freshness_p50_s": round(float(np.percentile(lat, 50)), 4) if lat else None,
            "freshness_p99_s": round(float(np.percentile(lat, 99)), 4) if lat else None,
            "peak_rss_mb": round(max(rss), 1) if rss else None,
            "targets": {"events_per_s": 20000, "ratio_to_noop": 0.5, "freshness_p99_s": 1.0},
        }
        print(json.dumps(result, indent=None if args.json else 2))
    finally:
        if started:
            stop_broker(boot)


if __name__ == "__main__":
    main()
