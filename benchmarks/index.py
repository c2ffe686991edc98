"""Live index benchmarks: churn, insert speed, and a streaming update load (DESIGN §4).

Three scenarios (``--scenario``), each printing a table or one JSON object (``--json``,
also written to ``--out``). Wall time comes from ``time.perf_counter`` (measurement
only); every random draw comes from a seeded ``numpy.random.Generator``.

``churn`` (default; 100k x 64, k=10, 1000 queries):

1. insert every vector into an empty ``HnswIndex`` (capacity grows from 1024);
2. query the clean graph: per-query latency p50/p99 and recall@k vs ``ExactIndex``;
3. update enough ids (through the delta buffer and its folds) that tombstones make up
   30% of the graph's slots, automatic rebuilds off; query again;
4. buffer ``--delta-updates`` more updates without folding; query again (graph + delta);
5. fold, ``rebuild()``; query again.

``insert`` (50k vectors): raw hnswlib ``add_items`` speed for every combination of
``--dims`` (64, 128), ``--ef-constructions`` (200, 100) and ``--thread-counts`` (1, 2):
one bulk insert of ``n - 5000`` vectors, then 5000 more in 64-vector steps (the size of
a background fold step), and recall@10 at ``--ef-search`` on the result.

``streaming`` (10k ids x 128, 200k upserts in batches of 2000, ``delta_max`` 4096 so the
hot set fits in the buffer, hard cap 4x that): ids are drawn Zipf-like
(``p ~ rank^-zipf``, ``--zipf`` 1.1) so the same few thousand ids come back again and
again; duplicates within a batch are coalesced (the last draw wins), each drawn id's
vector drifts (``--drift``). Batches are paced to ``--rate`` upserts/s (0: as fast as
possible) while a query thread runs ``knn(k=10)`` at ``--qps``. Reported per ``--modes``
(``background`` and ``sync``): upsert call p50/p99/max ms, query p50/p99/max ms during
the stream, the delta size over time (how far the graph is behind), fold/rebuild
counters, and recall@10 vs ``ExactIndex`` at the end of the stream and after a drain.

Measured here (hnswlib 0.8.0, 2 cores shared with other jobs; JSON in ``benchmarks/out``):

* ``insert --n 100000`` (one thread): 64-d 2.5k/s at ``ef_construction`` 200 vs 4.8k/s
  at 100, 128-d 1.5k/s vs 2.9k/s, same recall@10 (0.993/0.9935; 1.0); two threads
  1.7-2.3x faster on an idle machine. Hence the index defaults ``ef_construction=100``,
  ``num_threads=1``.
* ``streaming`` defaults (10k/s upserts, ~3.4k vector changes/s, 200 queries/s):
  background: upsert call p50 5.4 / p99 13.9 ms, query p50 1.3 / p99 9.3 / max 21 ms,
  delta held at ~4.2k (max 5.4k), 8 rebuilds, no backpressure, recall@10 0.989;
  sync: upsert p99 1388 ms, query max 1113 ms (folds and rebuilds inside calls), and
  the stream fell behind (9.1k/s). Background with ``--delta-max 1024``: 5 backpressure
  folds, upsert p99 58 ms.

Data: ``--data clustered`` (default) draws points around 1000 random centres, closer
to real embeddings (low intrinsic dimension); ``--data gaussian`` is i.i.d. standard
normal, the worst case for any graph index (recall and insert rate both drop).
Queries are fresh draws from the same distribution.

    python benchmarks/index.py --json
    python benchmarks/index.py --scenario insert --json
    python benchmarks/index.py --scenario streaming --json --out benchmarks/out/streaming.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import hnswlib
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


def _env() -> dict[str, object]:
    return {
        "hnswlib": metadata.version("hnswlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _percentiles(seconds: list[float] | np.ndarray) -> dict[str, float]:
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        return {"count": 0}
    return {
        "count": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def _recall(got: list, want: list) -> float:
    return round(float(np.mean([
        len({e for e, _ in g} & {e for e, _ in w}) / max(1, len(w))
        for g, w in zip(got, want, strict=True)
    ])), 4)


def _sampler(args: argparse.Namespace, rng: np.random.Generator):
    dim = args.dim
    if args.data == "gaussian":
        return lambda m: rng.standard_normal((m, dim)).astype(np.float32)
    centres = rng.standard_normal((args.clusters, dim))

    def clustered(m: int) -> np.ndarray:
        picked = centres[rng.integers(0, args.clusters, m)]
        return (picked + args.spread * rng.standard_normal((m, dim))).astype(np.float32)

    return clustered


def run_churn(args: argparse.Namespace) -> dict[str, object]:
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
        "scenario": "churn",
        "params": {
            "n": n, "dim": dim, "k": k, "queries": args.queries, "m": args.m,
            "ef_construction": args.ef_construction, "ef_search": args.ef_search,
            "delta_max": args.delta_max, "num_threads": args.threads, "seed": args.seed,
            "data": args.data,
            "clusters": args.clusters if args.data == "clustered" else None,
            "spread": args.spread if args.data == "clustered" else None,
        },
        "env": _env(),
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




def run_insert(args: argparse.Namespace) -> dict[str, object]:
    """Raw hnswlib ``add_items`` speed per (dim, ef_construction, num_threads)."""
    n, tail, step = args.n, 5000, 64
    rows = []
    for dim in args.dims:
        rng = np.random.default_rng(args.seed)
        sample = _sampler(argparse.Namespace(**{**vars(args), "dim": dim}), rng)
        data = sample(n)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        queries = sample(200)
        truth = ExactIndex(dim, initial_capacity=n)
        truth.upsert(_ids(np.arange(n)), data)
        want = truth.knn_batch(queries, 10)
        for efc in args.ef_constructions:
            for threads in args.thread_counts:
                graph = hnswlib.Index(space="ip", dim=dim)
                graph.init_index(max_elements=n, M=args.m, ef_construction=efc,
                                 random_seed=args.seed + 1)
                graph.set_ef(args.ef_search)
                bulk = n - tail
                start = time.perf_counter()
                graph.add_items(data[:bulk], np.arange(bulk), num_threads=threads)
                bulk_s = time.perf_counter() - start
                start = time.perf_counter()
                for s in range(bulk, n, step):
                    e = min(n, s + step)
                    graph.add_items(data[s:e], np.arange(s, e), num_threads=threads)
                step_s = time.perf_counter() - start
                labels, _ = graph.knn_query(queries / np.linalg.norm(queries, axis=1,
                                                                     keepdims=True), k=10)
                got = [[(f"i:{j}", 0.0) for j in row] for row in labels.tolist()]
                rows.append({
                    "dim": dim, "ef_construction": efc, "num_threads": threads,
                    "bulk_per_s": round(bulk / bulk_s),
                    f"steps_of_{step}_per_s": round(tail / step_s),
                    "recall_at_10": _recall(got, want),
                })
                _progress(f"insert dim={dim} efc={efc} threads={threads}", bulk_s + step_s)
    return {
        "benchmark": "index", "scenario": "insert",
        "params": {"n": n, "m": args.m, "ef_search": args.ef_search, "data": args.data,
                   "seed": args.seed},
        "env": _env(), "results": rows,
    }


def _zipf_batches(args: argparse.Namespace, rng: np.random.Generator):
    """Yield ``(rows, draws)``: distinct id rows of one batch (last draw wins) and its size."""
    weights = 1.0 / np.arange(1, args.n + 1) ** args.zipf
    p = weights / weights.sum()
    ranked = rng.permutation(args.n)  # which id has which popularity rank
    for start in range(0, args.upserts, args.batch):
        size = min(args.batch, args.upserts - start)
        draws = ranked[rng.choice(args.n, size, p=p)]
        _, last = np.unique(draws[::-1], return_index=True)
        yield draws[::-1][np.sort(last)], size


def _stream_once(args: argparse.Namespace, background: bool) -> dict[str, object]:
    rng = np.random.default_rng(args.seed)
    sample = _sampler(args, rng)
    current = sample(args.n)
    all_ids = _ids(np.arange(args.n))
    query_pool = sample(2000)
    index = HnswIndex(
        args.dim, m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
        delta_max=args.delta_max, delta_cap=args.delta_cap, num_threads=args.threads,
        initial_capacity=args.n, background=background, seed=args.seed + 1,
        max_pause_s=args.max_pause_s,
    )
    oracle = ExactIndex(args.dim, initial_capacity=args.n)
    start = time.perf_counter()
    for s in range(0, args.n, args.batch):
        index.upsert(all_ids[s : s + args.batch], current[s : s + args.batch])
    index.fold()
    preload_s = time.perf_counter() - start
    oracle.upsert(all_ids, current)

    stop = threading.Event()
    query_s: list[float] = []

    def query_loop() -> None:
        qrng = np.random.default_rng(args.seed + 7)
        interval = 1.0 / args.qps if args.qps > 0 else 0.0
        while not stop.is_set():
            q = query_pool[int(qrng.integers(len(query_pool)))]
            t = time.perf_counter()
            index.knn(q, 10)
            query_s.append(time.perf_counter() - t)
            if interval:
                time.sleep(max(0.0, interval - (time.perf_counter() - t)))

    querier = threading.Thread(target=query_loop, name="bench-queries")
    upsert_s: list[float] = []
    timeline: list[dict[str, float]] = []
    changed = 0
    querier.start()
    begin = time.perf_counter()
    sent = 0
    for rows, size in _zipf_batches(args, rng):
        current[rows] += args.drift * rng.standard_normal((len(rows), args.dim)).astype(
            np.float32)
        ids = _ids(rows)
        t = time.perf_counter()
        index.upsert(ids, current[rows])
        upsert_s.append(time.perf_counter() - t)
        oracle.upsert(ids, current[rows])
        changed += len(rows)
        sent += size
        st = index.stats()
        timeline.append({"t_s": round(time.perf_counter() - begin, 2), "delta": st.delta,
                         "graph": st.graph, "tombstones": st.tombstones})
        if args.rate > 0:
            time.sleep(max(0.0, begin + sent / args.rate - time.perf_counter()))
    stream_s = time.perf_counter() - begin
    stop.set()
    querier.join()
    queries = sample(args.queries)
    recall_end = _recall(index.knn_batch(queries, 10), oracle.knn_batch(queries, 10))
    end_stats = index.stats()
    start = time.perf_counter()
    index.fold()
    index.wait_idle()
    drain_s = time.perf_counter() - start
    recall_drained = _recall(index.knn_batch(queries, 10), oracle.knn_batch(queries, 10))
    maint = index.maintenance_stats()
    index.close()
    deltas = np.array([p["delta"] for p in timeline])
    samples = timeline[:: max(1, len(timeline) // 20)]
    if samples[-1] is not timeline[-1]:
        samples.append(timeline[-1])
    return {
        "mode": "background" if background else "sync",
        "preload_s": round(preload_s, 2),
        "stream_s": round(stream_s, 2),
        "upserts_per_s": round(sent / stream_s),
        "vector_changes_per_s": round(changed / stream_s),
        "distinct_ids_per_batch": round(changed / len(upsert_s), 1),
        "upsert_call": _percentiles(upsert_s),
        "query_during_stream": _percentiles(query_s),
        "delta": {"max": int(deltas.max()), "mean": round(float(deltas.mean())),
                  "p99": int(np.percentile(deltas, 99)), "end": end_stats.delta},
        "tombstones_end": end_stats.tombstones,
        "recall_at_10_end": recall_end,
        "recall_at_10_after_drain": recall_drained,
        "drain_s": round(drain_s, 2),
        "maintenance": {"folds": maint.folds, "folded": maint.folded,
                        "backpressure_folds": maint.backpressure_folds,
                        "rebuilds": maint.rebuilds, "fold_rate_per_s": maint.fold_rate_per_s},
        "timeline": samples,
    }


def run_streaming(args: argparse.Namespace) -> dict[str, object]:
    """Zipf-like re-upserts of the same ids, paced, with queries running meanwhile."""
    runs = []
    for mode in args.modes:
        runs.append(_stream_once(args, background=mode == "background"))
        _progress(f"streaming {mode}", runs[-1]["stream_s"])  # type: ignore[arg-type]
    return {
        "benchmark": "index", "scenario": "streaming",
        "params": {"ids": args.n, "dim": args.dim, "upserts": args.upserts,
                   "batch": args.batch, "zipf": args.zipf, "drift": args.drift,
                   "rate": args.rate, "qps": args.qps, "m": args.m,
                   "ef_construction": args.ef_construction, "ef_search": args.ef_search,
                   "delta_max": args.delta_max, "delta_cap": args.delta_cap,
                   "max_pause_s": args.max_pause_s,
                   "num_threads": args.threads, "data": args.data, "seed": args.seed},
        "env": _env(), "runs": runs,
    }


SCENARIOS = {"churn": run_churn, "insert": run_insert, "streaming": run_streaming}
DEFAULTS = {  # per scenario: n, dim, delta_max
    "churn": (100_000, 64, 1024),
    "insert": (50_000, 64, 1024),
    "streaming": (10_000, 128, 4096),
}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="churn")
    parser.add_argument("--n", type=int, help="vectors/ids (default per scenario)")
    parser.add_argument("--dim", type=int, help="dimension (default per scenario)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--delta-max", type=int, help="default per scenario")
    parser.add_argument("--threads", type=int, default=1, help="hnswlib threads for add_items")
    parser.add_argument("--insert-batch", type=int, default=10_000)
    parser.add_argument("--update-batch", type=int, default=100)
    parser.add_argument("--tombstone-share", type=float, default=0.3)
    parser.add_argument("--delta-updates", type=int, default=1000)
    parser.add_argument("--dims", type=_ints, default=[64, 128], help="insert: e.g. 64,128")
    parser.add_argument("--ef-constructions", type=_ints, default=[200, 100])
    parser.add_argument("--thread-counts", type=_ints, default=[1, 2])
    parser.add_argument("--upserts", type=int, default=200_000, help="streaming: total draws")
    parser.add_argument("--batch", type=int, default=2000, help="streaming: draws per upsert")
    parser.add_argument("--zipf", type=float, default=1.1, help="streaming: popularity skew")
    parser.add_argument("--drift", type=float, default=0.3, help="streaming: update noise std")
    parser.add_argument("--rate", type=float, default=10_000, help="streaming: upserts/s (0=max)")
    parser.add_argument("--qps", type=float, default=200, help="streaming: query rate")
    parser.add_argument("--delta-cap", type=int, help="streaming: hard cap (4x delta_max)")
    parser.add_argument("--max-pause-s", type=float, default=0.005,
                        help="streaming: background fold step target (wall s)")
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["background", "sync"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("clustered", "gaussian"), default="clustered")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="within-cluster std")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    n, dim, delta_max = DEFAULTS[args.scenario]
    args.n = args.n or n
    args.dim = args.dim or dim
    args.delta_max = args.delta_max or delta_max
    report = SCENARIOS[args.scenario](args)
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
