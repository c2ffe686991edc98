"""Feature store benchmarks (issue 5), measured on the Wikipedia embeddings.

Measures (one function per measurement, all merged into one JSON object):

* :func:`codec_quality` -- for each storage codec (``float16``, ``int8``; see
  :mod:`streamer.store.quant`): ``<codec>_size_ratio`` = float32 vector bytes / codec
  vector bytes (int8 includes its 4-byte scale), and ``<codec>_recall_at_10_drop`` =
  1 - recall@10 of exact cosine neighbours computed on the decoded vectors against the
  float32 ground truth. Two query sets, both searching the item vectors as the kinded
  index does (DESIGN §3): every item (self excluded), and a seeded sample of users; the
  headline ``*_recall_at_10_drop`` is the worse of the two.

* :func:`latency` -- wall latency (``time.perf_counter_ns``, after warm-up) of a batch
  get of ``GET_IDS = 100`` distinct ids drawn uniformly (seeded) from every stored
  entity, so users and items appear in proportion (8,227 : 1,000 here):

  - ``get100_*_ms_inprocess``: :meth:`RocksFeatureTable.get_many` on a fresh RocksDB
    table (temp dir) holding every entity's record, after a memtable flush (SST reads
    through the block cache); ``*_inprocess_memtable`` is the same before the flush;
  - ``get100_*_ms_served``: :meth:`ServedType.get_many`, what the HTTP routes read;
  - ``get100_*_ms_http``: ``POST /v1/types/<type>/embeddings`` with ``{"ids": [...]}``
    through one keep-alive ``httpx.Client`` over loopback, against the real app under
    uvicorn in a subprocess (``benchmarks/_store_server.py``: ``streamer serve``'s app
    fed from an ``.npz`` instead of Kafka); time = request sent to whole body received;
  - ``get100_*_ms_client``: the same through :meth:`streamer.client.Client.get` (which
    also decodes the JSON).

  Each is reported as p50/p90/p99/p99.9/max/mean in milliseconds. The first answer of
  every path is checked against the committed records (all found, exact float32
  vectors). Timings need an otherwise idle machine: the load average is recorded
  before and after, and on 2 busy cores scheduler preemption alone puts ~4-5 ms into
  the p99 of sub-millisecond calls.

The embeddings are the declared ``wiki-cooc`` type trained in-process on the whole
Wikipedia stream (``load_events("wikipedia")``, batches of 1000 events); the stored
records carry the learner's per-id event time and update count, as the engine writes
them. Data is read from ``$STREAMER_DATA_DIR`` (see :mod:`streamer.datasets`), never
copied into the project. ``targets_met`` says which of :data:`TARGETS` are met.

Usage: ``python benchmarks/store.py --json`` (prints one JSON object; about 1 min on 2
cores; ``--quick`` for a smoke run, ``--no-http`` / ``--no-codec`` to skip parts).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks._store_server import build_served, write_npz  # noqa: E402
from streamer.bench.embeddings import Embeddings  # noqa: E402
from streamer.client import Client  # noqa: E402
from streamer.datasets import load_events  # noqa: E402
from streamer.learn.base import EventBatch, OnlineLearner  # noqa: E402
from streamer.learn.registry import build_learner  # noqa: E402
from streamer.store.base import FeatureRecord  # noqa: E402
from streamer.store.quant import dequantize, quantize, vector_nbytes  # noqa: E402
from streamer.store.rocks import RocksFeatureTable  # noqa: E402
from streamer.testing.procs import free_port  # noqa: E402
from streamer.topology import find_type  # noqa: E402
from topologies import TOPOLOGIES  # noqa: E402

TARGETS = {
    "int8_size_ratio": (">=", 3.5),
    "int8_recall_at_10_drop": ("<=", 0.01),
    "get100_p99_ms_inprocess": ("<=", 1.0),
    "get100_p99_ms_http": ("<=", 5.0),
}
GET_IDS = 100
"""Ids per batch get in the latency measurements (the ``get100`` of the metric names)."""


def wiki_learner(type_name: str = "wiki-cooc", batch: int = 1000) -> OnlineLearner:
    """Train the declared type ``type_name`` on the whole Wikipedia stream, in batches."""
    spec = find_type(TOPOLOGIES, type_name)
    learner = build_learner(spec.algorithm, spec.params)
    events = list(load_events("wikipedia"))
    for s in range(0, len(events), batch):
        chunk = events[s:s + batch]
        learner.learn_many(EventBatch.from_rows(
            ((e.user_id, e.item_id, e.weight, e.ts) for e in chunk), first_offset=s))
    return learner


def wiki_embeddings(type_name: str = "wiki-cooc", batch: int = 1000) -> Embeddings:
    """Train the declared type ``type_name`` on the Wikipedia stream and return its vectors.

    Returns
    -------
    Embeddings
        Every published entity (``u:`` users and ``i:`` items), float32 ``(n, dim)``.
    """
    return Embeddings.from_learner(wiki_learner(type_name, batch))


def _unit(m: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


def exact_topk(
    queries: npt.NDArray[np.float32], base: npt.NDArray[np.float32], k: int,
    exclude: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Exact cosine top-``k`` rows of ``base`` per query row, shape ``(n_queries, k)``.

    ``exclude[j]`` (if given) is a base row never returned for query ``j`` (itself).
    Ties are broken by row number (stable sort), identically for every codec.
    """
    sims = _unit(queries).astype(np.float64) @ _unit(base).astype(np.float64).T
    if exclude is not None:
        sims[np.arange(len(queries)), exclude] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall_at_k(truth: npt.NDArray[np.int64], got: npt.NDArray[np.int64]) -> float:
    """Mean over queries of ``|truth_j & got_j| / k``."""
    k = truth.shape[1]
    return float(np.mean([len(set(t) & set(g)) / k for t, g in zip(truth, got, strict=True)]))


def codec_quality(
    emb: Embeddings, codecs: tuple[str, ...] = ("float16", "int8"), *, k: int = 10,
    user_queries: int = 10_000, seed: int = 0,
) -> dict[str, float | int]:
    """Size ratio and exact-search recall@k drop of each codec against float32.

    Parameters
    ----------
    emb
        The embeddings (users and items).
    codecs
        Codecs to measure.
    k
        Neighbours per query.
    user_queries
        Users sampled (seeded, without replacement) as queries against the items.
    seed
        Seed of the user sample.
    """
    items = emb.kind("i:").vectors
    users = emb.kind("u:").vectors
    rng = np.random.default_rng(seed)
    users = users[np.sort(rng.choice(len(users), min(user_queries, len(users)), replace=False))]
    self_rows = np.arange(len(items))
    truth_items = exact_topk(items, items, k, self_rows)
    truth_users = exact_topk(users, items, k)
    out: dict[str, float | int] = {
        "dim": emb.dim, "n_items": len(items), "n_user_queries": len(users), "k": k,
    }
    for codec in codecs:
        t0 = time.perf_counter()
        items_hat = dequantize(*quantize(items, codec), codec)
        users_hat = dequantize(*quantize(users, codec), codec)
        out[f"{codec}_quantize_s"] = time.perf_counter() - t0
        r_items = recall_at_k(truth_items, exact_topk(items_hat, items_hat, k, self_rows))
        r_users = recall_at_k(truth_users, exact_topk(users_hat, items_hat, k))
        out[f"{codec}_size_ratio"] = vector_nbytes(emb.dim, "float32") / vector_nbytes(
            emb.dim, codec)
        out[f"{codec}_recall_at_10_drop_item_to_item"] = 1.0 - r_items
        out[f"{codec}_recall_at_10_drop_user_to_item"] = 1.0 - r_users
        out[f"{codec}_recall_at_10_drop"] = max(1.0 - r_items, 1.0 - r_users)
        err = np.abs(items_hat - items).max(axis=1) / np.abs(items).max(axis=1).clip(1e-30)
        out[f"{codec}_max_rel_component_error"] = float(err.max())
    return out


def learner_records(learner: OnlineLearner, model_version: int
                    ) -> tuple[list[str], list[FeatureRecord]]:
    """Every published entity of ``learner`` and its record, as the engine builds them.

    ``updated_at`` is the learner's last event time of the id (event seconds; 0.0 if it
    has none), ``update_count`` its event count, as in ``Engine._feature_records``.
    """
    ids = list(learner.entity_ids())
    vecs, found = learner.vectors(ids)
    counts = learner.update_counts(ids)
    last_ts = learner.last_event_ts(ids)
    kept, recs = [], []
    for j, entity in enumerate(ids):
        if not found[j]:
            continue
        ts = float(last_ts[j])
        recs.append(FeatureRecord(vector=vecs[j], updated_at=ts if np.isfinite(ts) else 0.0,
                                  update_count=int(counts[j]), model_version=model_version))
        kept.append(entity)
    return kept, recs


def id_batches(ids: Sequence[str], n: int, size: int = GET_IDS, seed: int = 0
               ) -> list[list[str]]:
    """``n`` batches of ``size`` distinct ids drawn uniformly (seeded) from ``ids``.

    Uniform over all ids, so users and items appear in proportion to their counts.
    """
    rng = np.random.default_rng(seed)
    pool = np.array(ids, dtype=object)
    return [pool[rng.choice(len(pool), size, replace=False)].tolist() for _ in range(n)]


def time_calls(fn: Callable[[list[str]], object], warmup: Sequence[list[str]],
               batches: Sequence[list[str]]) -> npt.NDArray[np.int64]:
    """Call ``fn`` on every warm-up batch, then time it on each batch.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(batches),)`` int64: wall nanoseconds (``time.perf_counter_ns``) of
        each call, in order.
    """
    for b in warmup:
        fn(b)
    out = np.empty(len(batches), np.int64)
    clock = time.perf_counter_ns
    for j, b in enumerate(batches):
        t0 = clock()
        fn(b)
        out[j] = clock() - t0
    return out


def latency_ms(ns: npt.NDArray[np.int64], suffix: str) -> dict[str, float]:
    """``get100_{p50,p90,p99,p999,max,mean}_ms_<suffix>`` of wall nanoseconds ``ns``."""
    ms = ns / 1e6
    out = {f"get100_{name}_ms_{suffix}": float(np.percentile(ms, q))
           for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}
    out[f"get100_max_ms_{suffix}"] = float(ms.max())
    out[f"get100_mean_ms_{suffix}"] = float(ms.mean())
    return out


def _check_records(got: Sequence[FeatureRecord | None], ids: Sequence[str],
                   expected: dict[str, FeatureRecord], where: str) -> None:
    if len(got) != len(ids) or any(
            g is None or g != expected[i] for g, i in zip(got, ids, strict=True)):
        msg = f"{where}: get_many did not return the committed records"
        raise RuntimeError(msg)


def _check_items(items: Sequence[dict], ids: Sequence[str], expected: dict[str, FeatureRecord],
                 dim: int, where: str) -> None:
    """Raise unless ``items`` (the JSON answer) holds every id, found, with its exact vector."""
    if len(items) != len(ids):
        msg = f"{where}: {len(items)} items for {len(ids)} ids"
        raise RuntimeError(msg)
    for item, entity in zip(items, ids, strict=True):
        rec = expected[entity]
        vec = np.asarray(item.get("vector", ()), np.float32)
        if (item.get("id") != entity or item.get("found") is not True or vec.shape != (dim,)
                or not np.array_equal(vec, rec.vector)
                or item.get("update_count") != rec.update_count):
            msg = f"{where}: wrong answer for {entity!r}: {str(item)[:200]}"
            raise RuntimeError(msg)


def _as_stored(rec: FeatureRecord, codec: str) -> FeatureRecord:
    """``rec`` with its vector as a table of ``codec`` gives it back (quantize, dequantize)."""
    if codec == "float32":
        return rec
    vec = dequantize(*quantize(rec.vector[None, :], codec), codec)[0]
    return FeatureRecord(vec, rec.updated_at, rec.update_count, rec.model_version)


def rocks_latency(ids: list[str], records: list[FeatureRecord], warmup: list[list[str]],
                  batches: list[list[str]], workdir: Path, codec: str = "float32",
                  commit_batch: int = 1000) -> dict[str, object]:
    """Batch-get latency of :meth:`RocksFeatureTable.get_many` on a fresh table.

    The table stores vectors with ``codec``; the records are committed in batches of
    ``commit_batch`` (one offset each, as the engine does). Measured twice: with
    everything in the memtable (``_memtable``), then after a memtable flush, reading
    SST blocks through the block cache; the headline ``get100_*_ms_inprocess`` is the
    flushed case (a table that outgrew its memtable or was reopened).
    """
    expected = {i: _as_stored(r, codec) for i, r in zip(ids, records, strict=True)}
    dim = int(records[0].vector.shape[0])
    out: dict[str, object] = {}
    with RocksFeatureTable(workdir / "wiki.rocks", dim, codec=codec) as table:  # type: ignore[arg-type]
        out["table_codec"] = table.codec
        t0 = time.perf_counter()
        for s in range(0, len(ids), commit_batch):
            table.commit(dict(zip(ids[s:s + commit_batch], records[s:s + commit_batch],
                                  strict=True)), {}, {("engagements", 0): s})
        out["rocks_commit_s"] = time.perf_counter() - t0
        _check_records(table.get_many(batches[0]), batches[0], expected, "rocks")
        out.update(latency_ms(time_calls(table.get_many, warmup, batches), "inprocess_memtable"))
        table._db.flush()  # noqa: SLF001 - read from SST files, not the memtable
        _check_records(table.get_many(batches[0]), batches[0], expected, "rocks (flushed)")
        out.update(latency_ms(time_calls(table.get_many, warmup, batches), "inprocess"))
    return out


def served_latency(name: str, version: int, ids: list[str], records: list[FeatureRecord],
                   warmup: list[list[str]], batches: list[list[str]]) -> dict[str, object]:
    """Batch-get latency of :meth:`ServedType.get_many` (what the HTTP routes read)."""
    expected = dict(zip(ids, records, strict=True))
    t0 = time.perf_counter()
    st = build_served(name, version, ids, records)
    out: dict[str, object] = {"served_build_s": time.perf_counter() - t0}
    try:
        _check_records(st.get_many(batches[0]), batches[0], expected, "served")
        out.update(latency_ms(time_calls(st.get_many, warmup, batches), "served"))
    finally:
        st.index.close()
    return out


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"bench server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            raise RuntimeError(msg)
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    msg = f"bench server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}"
    raise RuntimeError(msg)


def http_latency(name: str, version: int, ids: list[str], records: list[FeatureRecord],
                 warmup: list[list[str]], batches: list[list[str]], workdir: Path,
                 ready_timeout_s: float = 120.0) -> dict[str, object]:
    """Latency of ``POST /v1/types/<name>/embeddings`` over loopback HTTP.

    Starts ``benchmarks/_store_server.py`` (the ``streamer serve`` app under uvicorn,
    fed from an ``.npz`` of the records) as a subprocess on a free port, then times each
    request through one keep-alive :class:`httpx.Client` (``_http``: request sent and
    whole body received, not decoded) and through :meth:`streamer.client.Client.get`
    (``_client``: also decodes the JSON). The first answer of each is checked in full
    (every id found, in order, with its exact float32 vector and update count). The
    server process is terminated (SIGTERM, then SIGKILL after 10 s) before returning.

    While timing, this (client) process's heap is frozen out of the cyclic GC
    (``gc.collect(); gc.freeze()``): its trained learner and id lists otherwise cost one
    ~50 ms generation-2 collection inside the series, a pause of the benchmark
    harness, not of the server.
    """
    expected = dict(zip(ids, records, strict=True))
    dim = int(records[0].vector.shape[0])
    npz = workdir / "served.npz"
    write_npz(npz, ids, records)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    argv = [sys.executable, str(Path(__file__).with_name("_store_server.py")), "--npz", str(npz),
            "--type", name, "--version", str(version), "--port", str(port)]
    out: dict[str, object] = {}
    t0 = time.perf_counter()
    with log.open("wb") as log_f:
        proc = subprocess.Popen(argv, stdout=log_f, stderr=subprocess.STDOUT)  # noqa: S603
    gc.collect()
    gc.freeze()
    try:
        _wait_ready(proc, url, log, ready_timeout_s)
        out["http_server_ready_s"] = time.perf_counter() - t0
        path = f"/v1/types/{name}/embeddings"
        bad: list[int] = []
        with httpx.Client(base_url=url, timeout=10.0) as http:
            first = http.post(path, json={"ids": batches[0]})
            first.raise_for_status()
            _check_items(first.json()["items"], batches[0], expected, dim, "http")
            out["http_response_bytes"] = len(first.content)

            def post(b: list[str]) -> None:
                r = http.post(path, json={"ids": b})
                if r.status_code != 200:
                    bad.append(r.status_code)

            out.update(latency_ms(time_calls(post, warmup, batches), "http"))
        with Client(url) as client:
            _check_items(client.get(name, batches[0]), batches[0], expected, dim, "client")
            out.update(latency_ms(time_calls(lambda b: client.get(name, b), warmup, batches),
                                  "client"))
        if bad:
            msg = f"{len(bad)} requests failed, statuses {sorted(set(bad))}"
            raise RuntimeError(msg)
    finally:
        gc.unfreeze()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return out


def check_targets(result: dict[str, object]) -> dict[str, bool]:
    """Return, for each key of :data:`TARGETS` present in ``result``, whether it is met."""
    met = {}
    for key, (op, bound) in TARGETS.items():
        if key in result:
            value = float(result[key])  # type: ignore[arg-type]
            met[key] = value >= bound if op == ">=" else value <= bound
    return met


def _stack_info() -> dict[str, str]:
    """Versions of the serving stack, and what uvicorn's ``auto`` picks (loop, HTTP parser)."""
    from importlib.metadata import version
    from importlib.util import find_spec

    info = {p: version(p) for p in ("fastapi", "starlette", "pydantic", "uvicorn", "httpx",
                                     "rocksdict")}
    info["uvicorn_http"] = "httptools" if find_spec("httptools") else "h11"
    info["uvicorn_loop"] = "uvloop" if find_spec("uvloop") else "asyncio"
    return info


def latency(type_name: str, learner: OnlineLearner, *, batches: int, warmup: int,
            http_requests: int, http_warmup: int, seed: int, http: bool = True,
            codec: str | None = None) -> dict[str, object]:
    """All batch-get latencies (in-process RocksDB, ServedType, HTTP, Python client).

    Parameters
    ----------
    type_name
        Declared type the learner was trained as (name, version and codec come from it).
    learner
        The trained learner; every entity it publishes is stored.
    batches, warmup
        Timed and warm-up batch gets of :data:`GET_IDS` ids, in-process.
    http_requests, http_warmup
        Timed and warm-up requests, for each of raw httpx and the Python client.
    seed
        Seed of the id batches.
    http
        Measure the HTTP part (starts a server subprocess).
    codec
        Storage codec of the RocksDB table (default: the type's ``storage_codec``). The
        served and HTTP paths hold the float32 vectors whatever the codec.
    """
    spec = find_type(TOPOLOGIES, type_name)
    ids, records = learner_records(learner, spec.version)
    n_users = sum(e.startswith("u:") for e in ids)
    drawn = id_batches(ids, warmup + batches, seed=seed)
    out: dict[str, object] = {"latency_settings": {
        "ids_per_get": GET_IDS, "batches": batches, "warmup_batches": warmup,
        "http_requests": http_requests if http else 0, "http_warmup_requests": http_warmup,
        "entities": len(ids), "users": n_users, "items": len(ids) - n_users,
        "dim": int(records[0].vector.shape[0]),
        "spec_storage_codec": spec.storage_codec, "id_seed": seed,
        "clock": "time.perf_counter_ns", "http_client_gc": "frozen while timing",
        **_stack_info(),
    }}
    with tempfile.TemporaryDirectory(prefix="streamer-bench-store-") as tmp:
        work = Path(tmp)
        out.update(rocks_latency(ids, records, drawn[:warmup], drawn[warmup:], work,
                                 codec=codec or spec.storage_codec))
        out.update(served_latency(spec.name, spec.version, ids, records, drawn[:warmup],
                                  drawn[warmup:]))
        if http:
            out.update(http_latency(spec.name, spec.version, ids, records,
                                    drawn[:http_warmup],
                                    drawn[http_warmup:http_warmup + http_requests], work))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--type", default="wiki-cooc", help="declared type to train")
    parser.add_argument("--user-queries", type=int, default=10_000,
                        help="users sampled as queries (all if fewer)")
    parser.add_argument("--batches", type=int, default=5000,
                        help="timed in-process batch gets of 100 ids")
    parser.add_argument("--warmup", type=int, default=500, help="untimed in-process batch gets")
    parser.add_argument("--http-requests", type=int, default=2000,
                        help="timed HTTP requests (each of raw httpx and the Python client)")
    parser.add_argument("--http-warmup", type=int, default=200, help="untimed HTTP requests")
    parser.add_argument("--codec", choices=("float32", "float16", "int8"), default=None,
                        help="storage codec of the RocksDB table in the latency part "
                        "(default: the type's storage_codec)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    parser.add_argument("--no-codec", action="store_true", help="skip the codec measurement")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 500 batches, 200 requests, 1000 user queries "
                        "(below the counts the targets are defined on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.warmup = 500, 50
        args.http_requests, args.http_warmup = 200, 20
        args.user_queries = 1000
    result: dict[str, object] = {
        "benchmark": "store",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": os.getloadavg()[0],
        "params": vars(args),
    }
    t0 = time.perf_counter()
    learner = wiki_learner(args.type)
    emb = Embeddings.from_learner(learner)
    result["train_s"] = time.perf_counter() - t0
    result["loadavg_1m_before_latency"] = os.getloadavg()[0]
    t0 = time.perf_counter()
    result.update(latency(args.type, learner, batches=args.batches, warmup=args.warmup,
                          http_requests=args.http_requests, http_warmup=args.http_warmup,
                          seed=args.seed, http=not args.no_http, codec=args.codec))
    result["latency_s"] = time.perf_counter() - t0
    result["loadavg_1m_after_latency"] = os.getloadavg()[0]
    if not args.no_codec:
        result.update(codec_quality(emb, user_queries=args.user_queries, seed=args.seed))
    result["targets"] = {k: f"{op} {bound}" for k, (op, bound) in TARGETS.items()}
    result["targets_met"] = check_targets(result)
    result["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
