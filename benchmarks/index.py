"""Live index benchmark: insert / update rates, query latency and recall@k (DESIGN §4).

Scenario (defaults: 100k x 64 vectors, k=10, 1000 queries):

1. insert every vector into an empty ``HnswIndex`` (capacity grows from 1024);
2. query the clean graph: per-query latency p50/p99 and recall@k vs ``ExactIndex``;
3. update enough ids (through the delta buffer and its folds) that tombstones make up
   30% of the graph's slots, automatic rebuilds off; query again;
4. buffer ``--delta-updates`` more updates without folding; query again (graph + delta);
5. fold, ``rebuild()``; query again.

Data: ``--data clustered`` (default) draws points around 1000 random centres, closer
to real embeddings (low intrinsic dimension); ``--data gaussian`` is i.i.d. standard
normal, the worst case for any graph index (recall and insert rate both drop).
Queries are fresh draws from the same distribution.

Wall time comes from ``time.perf_counter`` (measurement only). Prints a table, or one
JSON object with ``--json`` (also written to ``--out`` when given).

    python benchmarks/index.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from streamer.index.exact import ExactIndex
from streamer.index.hnsw import HnswIndex


def _progress(phase: str, seconds: float) -> None:
    print(f"{phase}: {seconds:.1f} s", file=sys.stderr, flush=True)


def _ids(rows: np.ndarray) -> list[str]:
    return [f"i:{j}" for j in rows.tolist()]


def _query_stats(
    index: HnswIndex, oracle: ExactIndex, queries: np.ndarray, k: int
) -> dict[str, float]:
    latencies = np.empty(len(queries))
    answers = []
    for j, q in enumerate(queries):
        start = time.perf_counter()
        answers.append(index.knn(q, k))
        latencies[j] = time.perf_counter() - start
    truth = oracle.knn_batch(queries, k)
    recall = np.mean(
        [
            len({e for e, _ in got} & {e for e, _ in want}) / len(want)
            for got, want in zip(answers, truth, strict=True)
        ]
    )
    stats = index.stats()
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 4),
        "mean_ms": round(float(latencies.mean()) * 1e3, 4),
        f"recall_at_{k}": round(float(recall), 4),
        "live": stats.live,
        "graph": stats.graph,
        "delta": stats.delta,
        "tombstones": stats.tombstones,
        "tombstone_share_of_slots": round(
            stats.tombstones / max(1, stats.graph + stats.tombstones), 4
        ),
        "exact_fallbacks": index.exact_fallbacks,
    }


def _sampler(args: argparse.Namespace, rng: np.random.Generator):
    dim = args.dim
    if args.data == "gaussian":
        return lambda m: rng.standard_normal((m, dim)).astype(np.float32)
    centres = rng.standard_normal((args.clusters, dim))

    def clustered(m: int) -> np.ndarray:
        picked = centres[rng.integers(0, args.clusters, m)]
        return (picked + args.spread * rng.standard_normal((m, dim))).astype(np.float32)

    return clustered


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(args.seed)
    n, dim, k = args.n, args.dim, args.k
    sample = _sampler(args, rng)
    data = sample(n)
    queries = sample(args.queries)
    all_ids = _ids(np.arange(n))
    index = HnswIndex(
        dim,
        m=args.m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        delta_max=args.delta_max,
        tombstone_ratio=None,  # the scenario controls rebuilds itself
        num_threads=args.threads,
        seed=args.seed + 1,
    )
    oracle = ExactIndex(dim, initial_capacity=n)
    oracle.upsert(all_ids, data)
    report: dict[str, object] = {
        "benchmark": "index",
        "params": {
            "n": n, "dim": dim, "k": k, "queries": args.queries, "m": args.m,
            "ef_construction": args.ef_construction, "ef_search": args.ef_search,
            "delta_max": args.delta_max, "num_threads": args.threads, "seed": args.seed,
            "data": args.data,
            "clusters": args.clusters if args.data == "clustered" else None,
            "spread": args.spread if args.data == "clustered" else None,
        },
        "env": {
            "hnswlib": metadata.version("hnswlib"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }

    start = time.perf_counter()
    for s in range(0, n, args.insert_batch):
        index.upsert(all_ids[s : s + args.insert_batch], data[s : s + args.insert_batch])
    index.fold()
    seconds = time.perf_counter() - start
    _progress("insert", seconds)
    report["insert"] = {"vectors": n, "seconds": round(seconds, 3), "per_s": round(n / seconds)}
    report["query_clean"] = _query_stats(index, oracle, queries, k)

    # tombstones t of (n + t) slots = share  ->  t = n * share / (1 - share)
    n_updates = min(n, round(n * args.tombstone_share / (1 - args.tombstone_share)))
    order = rng.permutation(n)
    pick = np.concatenate([order, rng.permutation(n)])[:n_updates]
    # distinct ids per batch (a batch may not repeat an id); ids may be updated twice overall
    fresh = sample(n_updates)
    start = time.perf_counter()
    for s in range(0, n_updates, args.update_batch):
        rows = pick[s : s + args.update_batch]
        index.upsert(_ids(rows), fresh[s : s + args.update_batch])
    index.fold()
    seconds = time.perf_counter() - start
    _progress("update", seconds)
    report["update"] = {
        "vectors": n_updates,
        "batch": args.update_batch,
        "seconds": round(seconds, 3),
        "per_s": round(n_updates / seconds),
        "path": f"delta buffer (delta_max={args.delta_max}) + fold: mark_deleted + fresh label",
    }
    for s in range(0, n_updates, 50_000):
        oracle.upsert(_ids(pick[s : s + 50_000]), fresh[s : s + 50_000])
    report["query_tombstones"] = _query_stats(index, oracle, queries, k)

    extra = rng.choice(n, min(args.delta_updates, args.delta_max - 1), replace=False)
    extra_vectors = sample(len(extra))
    index.upsert(_ids(extra), extra_vectors)
    oracle.upsert(_ids(extra), extra_vectors)
    report["query_tombstones_plus_delta"] = _query_stats(index, oracle, queries, k)

    index.fold()
    start = time.perf_counter()
    index.rebuild()
    _progress("rebuild", time.perf_counter() - start)
    report["rebuild"] = {"seconds": round(time.perf_counter() - start, 3), "live": len(index)}
    report["query_after_rebuild"] = _query_stats(index, oracle, queries, k)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--delta-max", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="hnswlib threads for add_items")
    parser.add_argument("--insert-batch", type=int, default=10_000)
    parser.add_argument("--update-batch", type=int, default=100)
    parser.add_argument("--tombstone-share", type=float, default=0.3)
    parser.add_argument("--delta-updates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("clustered", "gaussian"), default="clustered")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="within-cluster std")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        print(text)
    else:
        for section, values in report.items():
            print(f"{section}: {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
