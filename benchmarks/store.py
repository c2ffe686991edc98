"""Feature store benchmarks (issue 5), measured on the Wikipedia embeddings.

Measures (one function per measurement, all merged into one JSON object):

* :func:`codec_quality` -- for each storage codec (``float16``, ``int8``; see
  :mod:`streamer.store.quant`): ``<codec>_size_ratio`` = float32 vector bytes / codec
  vector bytes (int8 includes its 4-byte scale), and ``<codec>_recall_at_10_drop`` =
  1 - recall@10 of exact cosine neighbours computed on the decoded vectors against the
  float32 ground truth. Two query sets, both searching the item vectors as the kinded
  index does (DESIGN §3): every item (self excluded), and a seeded sample of users; the
  headline ``*_recall_at_10_drop`` is the worse of the two.

The embeddings are the declared ``wiki-cooc`` type trained in-process on the whole
Wikipedia stream (``load_events("wikipedia")``, batches of 1000 events), then
``Embeddings.from_learner``. Data is read from ``$STREAMER_DATA_DIR`` (see
:mod:`streamer.datasets`), never copied into the project.

Usage: ``python benchmarks/store.py --json`` (prints one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streamer.bench.embeddings import Embeddings  # noqa: E402
from streamer.datasets import load_events  # noqa: E402
from streamer.learn.base import EventBatch  # noqa: E402
from streamer.learn.registry import build_learner  # noqa: E402
from streamer.store.quant import dequantize, quantize, vector_nbytes  # noqa: E402
from streamer.topology import find_type  # noqa: E402
from topologies import TOPOLOGIES  # noqa: E402

TARGETS = {"int8_size_ratio": (">=", 3.5), "int8_recall_at_10_drop": ("<=", 0.01)}


def wiki_embeddings(type_name: str = "wiki-cooc", batch: int = 1000) -> Embeddings:
    """Train the declared type ``type_name`` on the Wikipedia stream and return its vectors.

    Returns
    -------
    Embeddings
        Every published entity (``u:`` users and ``i:`` items), float32 ``(n, dim)``.
    """
    spec = find_type(TOPOLOGIES, type_name)
    learner = build_learner(spec.algorithm, spec.params)
    events = list(load_events("wikipedia"))
    for s in range(0, len(events), batch):
        chunk = events[s:s + batch]
        learner.learn_many(EventBatch.from_rows(
            ((e.user_id, e.item_id, e.weight, e.ts) for e in chunk), first_offset=s))
    return Embeddings.from_learner(learner)


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


def check_targets(result: dict[str, object]) -> dict[str, bool]:
    """Return, for each key of :data:`TARGETS` present in ``result``, whether it is met."""
    met = {}
    for key, (op, bound) in TARGETS.items():
        if key in result:
            value = float(result[key])  # type: ignore[arg-type]
            met[key] = value >= bound if op == ">=" else value <= bound
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--type", default="wiki-cooc", help="declared type to train")
    parser.add_argument("--user-queries", type=int, default=10_000,
                        help="users sampled as queries (all if fewer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "store",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m_before": os.getloadavg()[0],
        "params": vars(args),
    }
    t0 = time.perf_counter()
    emb = wiki_embeddings(args.type)
    result["train_s"] = time.perf_counter() - t0
    result.update(codec_quality(emb, user_queries=args.user_queries, seed=args.seed))
    result["targets_met"] = check_targets(result)
    result["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
