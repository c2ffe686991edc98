"""Temporal link prediction (TGB protocol) of every declared type and the baselines.

Usage::

    python benchmarks/linkpred.py --json [--dataset wikipedia|collegemsg|enron|all]
                                  [--per-event] [--batch-size 200] [--k 10]
                                  [--edgebank-window test_span|tgb] [--types a,b]

Prints one JSON object: for one data set, :func:`streamer.bench.linkpred.run_linkpred`'s
result (test metrics at the top level, ``"validation"`` beside them, per-scorer wall
seconds under ``"seconds"``) plus ``total_s`` and ``peak_rss_mb``; for ``--dataset all``,
``{"datasets": {name: result}, "total_s": ..., "peak_rss_mb": ...}``. Without ``--json``
a table per data set (validation MRR, test MRR, Recall@10, repeat/new MRR).

``--per-event`` scores each timestamp's events knowing every earlier event (the
information regime of the DyGLib-evaluated models on the TGB leaderboard); it is about
10x slower than batches of 200 (about 5 min on Wikipedia on 2 busy cores).

The data (research-only, never copied into the project) is read from
``$STREAMER_DATA_DIR`` (default ``../shared/data`` relative to the project root).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time

from streamer.bench.linkpred import LINKPRED_DATASETS, run_linkpred
from streamer.bench.results import json_safe
from topologies import TOPOLOGIES


def table(out: dict) -> str:
    k = out["details"]["k"]
    rows = [f"{out['dataset']} ({out['protocol']})",
            f"{'name':18s} {'val MRR':>8s} {'MRR':>8s} {f'R@{k}':>8s} {'MRR rep':>8s} "
            f"{'MRR new':>8s} {'val new':>8s}"]
    for n in out["types"] + out["baselines"]:
        vals = (out["validation"]["mrr"][n], out["mrr"][n], out[f"recall_at_{k}"][n],
                out["mrr_repeat"][n], out["mrr_new"][n], out["validation"]["mrr_new"][n])
        rows.append(f"{n:18s} " + " ".join(
            f"{'nan':>8s}" if v is None or math.isnan(v) else f"{v:8.4f}" for v in vals))
    d = out["details"]
    rows.append(f"selected on validation: {d['selected']}; seconds: {d['seconds']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="wikipedia",
                    choices=[*LINKPRED_DATASETS, "all"])
    ap.add_argument("--per-event", action="store_true")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--edgebank-window", default="test_span", choices=["test_span", "tgb"])
    ap.add_argument("--types", default="", help="comma-separated type names (default: all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    types = list(TOPOLOGIES)
    if args.types:
        wanted = args.types.split(",")
        unknown = sorted(set(wanted) - {t.name for t in types})
        if unknown:
            ap.error(f"unknown type(s) {unknown}; declared: {[t.name for t in types]}")
        types = [t for t in types if t.name in wanted]
    names = list(LINKPRED_DATASETS) if args.dataset == "all" else [args.dataset]
    t0 = time.perf_counter()
    results = {}
    for name in names:
        t = time.perf_counter()
        out = run_linkpred(name, types, batch_size=args.batch_size, k=args.k,
                           per_event=args.per_event, edgebank_window=args.edgebank_window)
        out["total_s"] = round(time.perf_counter() - t, 2)
        results[name] = out
        if not args.json:
            print(table(out), flush=True)
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if len(names) == 1:
        report = {**results[names[0]], "peak_rss_mb": rss}
    else:
        report = {"datasets": results, "total_s": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": rss}
    if args.json:
        print(json.dumps(json_safe(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
