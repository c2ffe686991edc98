"""Feature table throughput and latency (RocksDB backend, memory twin for reference).

Measures:
* commit throughput for batches of ``--batch`` feature records (dim ``--dim``) plus the
  same number of ~``--state-bytes`` learner state records and one offset per batch;
* ``get_many(--k)`` latency percentiles on the loaded table, after a memtable flush;
* codec and FeatureRecord costs per record (per storage codec: ``codec_by_storage``);
* ``disk_bytes_per_entity``: for each vector storage codec (``float32``, ``float16``,
  ``int8``; :mod:`streamer.store.quant`), the on-disk size per entity of a RocksDB feature
  table holding the ``wiki-cooc`` embeddings (the declared type trained in-process on
  the first ``--disk-events`` Wikipedia events, batches of 1000, every published user and
  item): SST bytes of the ``features`` column family after a flush and a full
  compaction, divided by the entity count, beside the record value size
  (:func:`streamer.store.codec.record_size`) and the mean key size. Data comes from
  ``$STREAMER_DATA_DIR`` (:mod:`streamer.datasets`); ``--disk-events 0`` skips it.

Usage: ``python benchmarks/table.py --json`` (prints one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streamer.bench.embeddings import Embeddings  # noqa: E402
from streamer.datasets import load_events  # noqa: E402
from streamer.errors import ConfigError  # noqa: E402
from streamer.learn.base import EventBatch  # noqa: E402
from streamer.learn.registry import build_learner  # noqa: E402
from streamer.store import codec  # noqa: E402
from streamer.store.base import FeatureRecord, FeatureTable  # noqa: E402
from streamer.store.memory import MemoryFeatureTable  # noqa: E402
from streamer.store.quant import CODECS, Codec  # noqa: E402
from streamer.store.rocks import RocksFeatureTable  # noqa: E402
from streamer.topology import find_type  # noqa: E402
from topologies import TOPOLOGIES  # noqa: E402


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


def _codec_stats(dim: int, storage: Codec = "float32", n: int = 50_000) -> dict[str, float]:
    vec = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    rec = FeatureRecord(vec, 1.7e9, 3, 1)
    value = codec.encode_record(rec, storage)
    batch = [rec] * 1000
    return {
        "record_bytes": len(value),
        "encode_us": timeit.timeit(lambda: codec.encode_record(rec, storage), number=n) / n * 1e6,
        "encode_batch_of_1000_us_per_record": timeit.timeit(
            lambda: codec.encode_records(batch, storage), number=max(n // 1000, 1)
        ) / max(n // 1000, 1) / 1000 * 1e6,
        "decode_us": timeit.timeit(lambda: codec.decode_record(value, dim), number=n) / n * 1e6,
        "feature_record_init_us": timeit.timeit(lambda: FeatureRecord(vec, 1.7e9, 3, 1), number=n)
        / n
        * 1e6,
    }


def wiki_embeddings(n_events: int, type_name: str = "wiki-cooc",
                    batch: int = 1000) -> tuple[Embeddings, int]:
    """Train the declared type on the first ``n_events`` Wikipedia events.

    Returns
    -------
    Embeddings, int
        Every published entity's float32 ``(n, dim)`` vector, and the type's version.

    Raises
    ------
    ConfigError
        If the data set is not found.
    """
    spec = find_type(TOPOLOGIES, type_name)
    learner = build_learner(spec.algorithm, spec.params)
    events = load_events("wikipedia")
    for s in range(0, n_events, batch):
        chunk = [e for _, e in zip(range(batch), events, strict=False)]
        if not chunk:
            break
        learner.learn_many(EventBatch.from_rows(
            ((e.user_id, e.item_id, e.weight, e.ts) for e in chunk), first_offset=s))
    return Embeddings.from_learner(learner), spec.version


def disk_bytes_per_entity(emb: Embeddings, version: int, tmp: Path) -> dict[str, object]:
    """On-disk bytes per entity of a RocksDB feature table of ``emb``, per storage codec.

    Every vector is committed (batches of 1000, ``updated_at`` 0), the memtables are
    flushed and the ``features`` column family fully compacted (one sorted run, no
    overwritten versions), then RocksDB's ``rocksdb.total-sst-files-size`` of that
    column family is divided by the entity count. The ``features`` column family is
    stored uncompressed (see :mod:`streamer.store.rocks`), so the SST size is values +
    keys + block and index overhead.
    """
    out: dict[str, object] = {"entities": len(emb), "dim": emb.dim}
    keys = [e.encode() for e in emb.ids]
    out["key_bytes_mean"] = float(np.mean([len(k) for k in keys]))
    for name in CODECS:
        with RocksFeatureTable(tmp / f"disk-{name}", emb.dim, codec=name) as t:
            for s in range(0, len(emb), 1000):
                t.commit({e: FeatureRecord(v, 0.0, 1, version)
                          for e, v in zip(emb.ids[s:s + 1000], emb.vectors[s:s + 1000],
                                          strict=True)}, {}, {})
            cf = t._cf_features  # noqa: SLF001 - the features column family's own size
            cf.flush()
            cf.compact_range(None, None)
            sst = int(cf.property_int_value("rocksdb.total-sst-files-size"))
            count = t.count()
        out[name] = {
            "sst_bytes": sst,
            "sst_bytes_per_entity": sst / count,
            "record_bytes": codec.record_size(emb.dim, name),
        }
    f32 = out["float32"]["sst_bytes"]  # type: ignore[index]
    for name in CODECS:
        out[name]["size_ratio_vs_float32"] = f32 / out[name]["sst_bytes"]  # type: ignore[index]
    return out


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
    parser.add_argument("--disk-events", type=int, default=157_474,
                        help="Wikipedia events for the per-codec disk size (0: skip)")
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
        "codec_by_storage": {name: _codec_stats(args.dim, name, 20_000) for name in CODECS},
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
    if args.disk_events > 0:
        try:
            emb, version = wiki_embeddings(args.disk_events)
        except ConfigError as exc:
            result["disk_bytes_per_entity"] = {"skipped": str(exc)}
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result["disk_bytes_per_entity"] = {
                    "type": "wiki-cooc", "events": args.disk_events,
                    **disk_bytes_per_entity(emb, version, Path(tmp)),
                }
    result["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
