"""Feature table throughput and latency (RocksDB backend, memory twin for reference).

Measures:
* commit throughput for batches of ``--batch`` feature records (dim ``--dim``) plus the
  same number of ~``--state-bytes`` learner state records and one offset per batch;
* ``get_many(--k)`` latency percentiles on the loaded table, after a memtable flush;
* codec and FeatureRecord costs per record.

Usage: ``python benchmarks/table.py --json`` (prints one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from streamer.store import codec
from streamer.store.base import FeatureRecord, FeatureTable
from streamer.store.memory import MemoryFeatureTable
from streamer.store.rocks import RocksFeatureTable


def _batches(args: argparse.Namespace, rng: np.random.Generator) -> list[tuple[dict, dict, dict]]:
    out = []
    for b in range(args.batches):
        ids = rng.integers(0, args.universe, size=args.batch)
        vecs = rng.standard_normal((args.batch, args.dim)).astype(np.float32)
        feats = {
            f"i:{int(i)}": FeatureRecord(v, 1.7e9 + b, b + 1, 1)
            for i, v in zip(ids, vecs, strict=True)
        }
        state_ids = rng.integers(0, args.universe, size=args.batch)
        payload = rng.bytes(args.state_bytes)
        state = {b"row:%d" % int(i): payload for i in state_ids}
        out.append((feats, state, {("engagements", b % 4): b}))
    return out


def _commit_stats(table: FeatureTable, batches: list[tuple[dict, dict, dict]]) -> dict[str, float]:
    times = []
    n_feat = n_state = n_bytes = 0
    for feats, state, offsets in batches:
        t0 = time.perf_counter()
        table.commit(feats, state, offsets)
        times.append(time.perf_counter() - t0)
        n_feat += len(feats)
        n_state += len(state)
        n_bytes += sum(len(v) for v in state.values()) + len(feats) * codec.record_size(table.dim)
    total = sum(times)
    arr = np.array(times) * 1e3
    return {
        "feature_records_per_s": n_feat / total,
        "state_records_per_s": n_state / total,
        "batches_per_s": len(batches) / total,
        "mb_per_s": n_bytes / total / 1e6,
        "commit_ms_p50": float(np.percentile(arr, 50)),
        "commit_ms_p99": float(np.percentile(arr, 99)),
    }


def _get_many_stats(
    table: FeatureTable, universe: int, k: int, queries: int, rng: np.random.Generator
) -> dict[str, float]:
    lat = []
    found = 0
    for _ in range(queries):
        ids = [f"i:{int(i)}" for i in rng.integers(0, universe, size=k)]
        t0 = time.perf_counter()
        got = table.get_many(ids)
        lat.append(time.perf_counter() - t0)
        found += sum(g is not None for g in got)
    us = np.array(lat) * 1e6
    return {
        "get_many_k": k,
        "get_many_us_p50": float(np.percentile(us, 50)),
        "get_many_us_p99": float(np.percentile(us, 99)),
        "get_many_hit_ratio": found / (queries * k),
    }


def _codec_stats(dim: int) -> dict[str, float]:
    vec = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    rec = FeatureRecord(vec, 1.7e9, 3, 1)
    value = codec.encode_record(rec)
    n = 50_000
    return {
        "encode_us": timeit.timeit(lambda: codec.encode_record(rec), number=n) / n * 1e6,
        "decode_us": timeit.timeit(lambda: codec.decode_record(value, dim), number=n) / n * 1e6,
        "feature_record_init_us": timeit.timeit(lambda: FeatureRecord(vec, 1.7e9, 3, 1), number=n)
        / n
        * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--state-bytes", type=int, default=1024)
    parser.add_argument("--universe", type=int, default=100_000, help="distinct entity ids")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    batches = _batches(args, rng)
    result: dict[str, object] = {
        "benchmark": "feature_table",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": os.getloadavg()[0],  # other work on the machine skews timings
        "params": vars(args),
        "codec": _codec_stats(args.dim),
    }
    with tempfile.TemporaryDirectory() as tmp:
        with RocksFeatureTable(Path(tmp) / "t", args.dim) as table:
            result["rocks_commit"] = _commit_stats(table, batches)
            result["rocks_get_many_memtable"] = _get_many_stats(
                table, args.universe, args.k, args.queries, rng
            )
            table._db.flush()  # noqa: SLF001 - measure reads from SST files too
            result["rocks_get_many_flushed"] = _get_many_stats(
                table, args.universe, args.k, args.queries, rng
            )
            t0 = time.perf_counter()
            result["rocks_count"] = table.count()
            result["rocks_count_s"] = time.perf_counter() - t0
    with MemoryFeatureTable(args.dim) as mem:
        result["memory_commit"] = _commit_stats(mem, batches)
        result["memory_get_many"] = _get_many_stats(mem, args.universe, args.k, args.queries, rng)
    result["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
