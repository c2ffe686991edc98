"""Detection delay and false alarms of the drift monitor on synthetic shifted streams.

Usage::

    python benchmarks/drift.py --json [--seeds 5] [--batches 600] [--shift-at 300]
                               [--batch-size 200] [--fractions 1.0,0.5,0.25,0.1]
                               [--warmup 50] [--noise-len 10000] [--algo cooc]
                               [--param dim=32 ...]

For each seed, :func:`streamer.testing.driftstream.drift_stream` generates a stationary
stream and, for each shift fraction, the same stream with that fraction of the item ids
remapped from batch ``--shift-at`` on. A learner (``--algo``, real scoring) runs
predict-then-learn over it (:func:`streamer.bench.drift.prequential_series`: all items
ranked, one MRR per mini-batch), and the MRR series feeds a
:class:`~streamer.bench.drift.DriftMonitor` configured with ADWIN only, Page-Hinkley only,
and both (defaults, ``direction="down"``, ``warmup=--warmup``).

Prints one JSON object: per monitor, per shift fraction, the detection delays (batches
from the shift to the first alert at or after it; ``null`` if none before the end), how
many seeds detected it, and false alarms (alerts before the shift); and the false alarms
on the stationary streams (per stream and per 1,000 batches). ``mrr`` gives the mean MRR
before the shift and over the 20 batches after it (the size of the change).
``noise_false_alarms_per_1000`` feeds ``--noise-len`` values of i.i.d. Gaussian noise
(mean 0.5, sd 0.02/0.05/0.1) per seed: false alarms per 1,000 values of each monitor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from streamer.bench.drift import DriftMonitor, prequential_series
from streamer.learn.registry import build_learner
from streamer.testing.driftstream import drift_stream

MONITORS = {"adwin": ["adwin"], "page_hinkley": ["page_hinkley"],
            "both": ["adwin", "page_hinkley"]}


def parse_params(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in pairs:
        key, _, val = kv.partition("=")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def mrr_series(args: argparse.Namespace, params: dict, seed: int,
               fraction: float | None) -> list[float]:
    stream = drift_stream(n_batches=args.batches, batch_size=args.batch_size, seed=seed,
                          shift_at=None if fraction is None else args.shift_at,
                          shift_fraction=fraction or 1.0)
    learner = build_learner(args.algo, {**params, "seed": seed})
    return [s.mrr for s in prequential_series(learner, stream.batches, stream.items)]


def alerts_at(values: list[float], detectors: list[str], warmup: int) -> list[int]:
    mon = DriftMonitor("bench", 1, {"rules": [{"match": "*", "detectors": detectors,
                                               "direction": "down", "warmup": warmup}]})
    for v in values:
        mon.update("prequential.mrr", v)
    return [a.at for a in mon.alerts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=600)
    ap.add_argument("--shift-at", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--fractions", default="1.0,0.5,0.25,0.1")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--noise-len", type=int, default=10_000)
    ap.add_argument("--algo", default="cooc")
    ap.add_argument("--param", action="append", default=[], help="learner param key=JSON")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    params = {"dim": 32, **parse_params(args.param)}
    fractions = [float(f) for f in args.fractions.split(",") if f]
    t0 = time.perf_counter()
    series: dict[str, list[list[float]]] = {"stationary": []}
    for f in fractions:
        series[f"shift_{f:g}"] = []
    for seed in range(args.seeds):
        series["stationary"].append(mrr_series(args, params, seed, None))
        for f in fractions:
            series[f"shift_{f:g}"].append(mrr_series(args, params, seed, f))
    learn_s = time.perf_counter() - t0

    s = args.shift_at
    report: dict[str, object] = {
        "algo": args.algo, "params": params, "seeds": args.seeds, "batches": args.batches,
        "batch_size": args.batch_size, "shift_at": s, "warmup": args.warmup,
        "mrr": {
            key: {"before": round(float(np.mean([v[args.warmup:s] for v in runs])), 4),
                  "after_20": round(float(np.mean([v[s:s + 20] for v in runs])), 4)}
            for key, runs in series.items()
        },
    }
    t1 = time.perf_counter()
    for name, detectors in MONITORS.items():
        out: dict[str, object] = {}
        for key, runs in series.items():
            hits = [alerts_at(v, detectors, args.warmup) for v in runs]
            if key == "stationary":
                fa = [len(h) for h in hits]
                out[key] = {"false_alarms": fa,
                            "per_1000_batches": round(1000 * sum(fa) / (len(runs) * args.batches),
                                                      3)}
                continue
            delays = [next((a - s for a in h if a >= s), None) for h in hits]
            found = [d for d in delays if d is not None]
            out[key] = {
                "delays": delays, "detected": len(found), "of": len(runs),
                "median_delay": statistics.median(found) if found else None,
                "max_delay": max(found) if found else None,
                "false_alarms_before_shift": sum(sum(1 for a in h if a < s) for h in hits),
            }
        report[name] = out
    # False alarms on i.i.d. Gaussian noise around 0.5: how the defaults scale with noise.
    noise: dict[str, object] = {}
    for sd in (0.02, 0.05, 0.1):
        runs = [list(0.5 + sd * np.random.default_rng(seed).standard_normal(args.noise_len))
                for seed in range(args.seeds)]
        noise[f"sd_{sd:g}"] = {
            name: round(1000 * sum(len(alerts_at(v, dets, 0)) for v in runs)
                        / (len(runs) * args.noise_len), 3)
            for name, dets in MONITORS.items()}
    report["noise_false_alarms_per_1000"] = noise
    report["learn_and_score_s"] = round(learn_s, 1)
    report["monitor_s"] = round(time.perf_counter() - t1, 2)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
