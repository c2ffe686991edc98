"""Throughput and prequential quality of the decayed co-occurrence learner.

Usage::

    python benchmarks/cooc.py --json [--data PATH] [--batch 1000] [--partitions 1]
                              [--param half_life_s=3600 --param window=10 ...]

Prints one JSON object: ``events_per_s`` (learn_many + changed() + vectors(changed) per
1000-event batch over the whole stream), ``batch_p99_ms``, the same with
``state_changes()`` added per batch (what a worker's flush needs), ``peak_rss_mb``, and the
predict-then-learn metrics on the last 15% (batches of 200, all items as candidates):
``recall_at_10``, ``mrr`` (with repeat/new splits) and the same for popularity baselines.

The data (research-only, never copied into the project) is read from ``--data`` or
``$STREAMER_DATA_DIR/temporal-streams/ml_wikipedia.txt`` (default
``../shared/data`` relative to the project root).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from streamer.eval.prequential import Popularity, prequential
from streamer.learn.base import EventBatch
from streamer.learn.registry import get_algorithm

ROOT = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    base = Path(os.environ.get("STREAMER_DATA_DIR", ROOT.parent / "shared" / "data"))
    return base / "temporal-streams" / "ml_wikipedia.txt"


def load_stream(path: Path, partitions: int = 1) -> EventBatch:
    """Read ``src dst ts`` rows; partition events by user (stable hash of the id)."""
    raw = np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2), ndmin=2)
    users = [str(u) for u in raw[:, 0].tolist()]
    items = [str(i) for i in raw[:, 1].tolist()]
    n = len(raw)
    parts = (raw[:, 0] % partitions).astype(np.int32)
    offsets = np.zeros(n, np.int64)
    for p in range(partitions):
        sel = parts == p
        offsets[sel] = np.arange(int(sel.sum()))
    return EventBatch(users, items, np.ones(n, np.float32), raw[:, 2].astype(np.float64),
                      parts, offsets, ["edit"] * n)


def parse_params(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in pairs:
        key, _, val = kv.partition("=")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def batches(stream: EventBatch, size: int):
    for s in range(0, len(stream), size):
        yield stream.slice(s, s + size)


def throughput(algo: str, params: dict[str, object], stream: EventBatch, size: int,
               with_state: bool = False) -> dict:
    cls = get_algorithm(algo)
    warm = cls(**params)  # compile / load the numba cache outside the timing
    warm.learn_many(stream.slice(0, 50))
    warm.vectors(list(warm.changed()))
    learner = cls(**params)
    times = []
    n_vec = n_rec = rec_bytes = 0
    t0 = time.perf_counter()
    for b in batches(stream, size):
        s = time.perf_counter()
        learner.learn_many(b)
        ch = sorted(learner.changed())
        vecs, mask = learner.vectors(ch)
        n_vec += int(mask.sum())
        if with_state:
            recs = learner.state_changes()
            n_rec += len(recs)
            rec_bytes += sum(len(k) + len(v or b"") for k, v in recs.items())
        times.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    if with_state:
        return {"events_per_s_with_state_changes": round(len(stream) / total, 1),
                "batch_p99_ms_with_state_changes": round(1e3 * float(np.percentile(times, 99)), 3),
                "state_records": n_rec, "state_mb": round(rec_bytes / 2**20, 1)}
    return {
        "events": len(stream),
        "events_per_s": round(len(stream) / total, 1),
        "batch_p50_ms": round(1e3 * float(np.percentile(times, 50)), 3),
        "batch_p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
        "vectors_published": n_vec,
        "entities": len(learner.entity_ids()),
    }


def quality(algo: str, params: dict[str, object], stream: EventBatch, eval_frac: float) -> dict:
    cands = sorted(set(stream.item_ids), key=lambda x: (len(x), x))
    start = int(round((1 - eval_frac) * len(stream)))
    out: dict[str, object] = {"eval_events": len(stream) - start, "candidates": len(cands)}
    res = prequential(get_algorithm(algo)(**params), batches(stream, 1000), cands, eval_from=start)
    out.update({"recall_at_10": res.recall_at_k, "mrr": res.mrr,
                "recall_at_10_repeat": res.recall_repeat, "recall_at_10_new": res.recall_new,
                "mrr_repeat": res.mrr_repeat, "mrr_new": res.mrr_new,
                "repeat_fraction": res.n_repeat / max(res.n_events, 1)})
    baselines = (("popularity", Popularity()), ("popularity_decayed_1d", Popularity(86_400.0)))
    for name, base in baselines:
        r = prequential(base, batches(stream, 1000), cands, eval_from=start)
        out[f"{name}_recall_at_10"] = r.recall_at_k
        out[f"{name}_mrr"] = r.mrr
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--algo", default="cooc")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--eval-frac", type=float, default=0.15)
    ap.add_argument("--param", action="append", default=[], help="constructor param key=JSON")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    params = parse_params(args.param)
    stream = load_stream(args.data, args.partitions)
    report: dict[str, object] = {"algo": args.algo, "params": params, "data": args.data.name,
                                 "batch": args.batch, "partitions": args.partitions}
    if not args.skip_speed:
        report.update(throughput(args.algo, params, stream, args.batch))
        report.update(throughput(args.algo, params, stream, args.batch, with_state=True))
    if not args.skip_quality:
        report.update(quality(args.algo, params, stream, args.eval_frac))
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>32}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
