"""Offline, in-process runner of the static tasks (topic, metadata, follow-Jaccard, stability).

:func:`run_task` streams a data set through a fresh learner of each declared embedding
type (algorithm and params from its :class:`~streamer.topology.TopologySpec`), in
micro-batches, exactly as a worker would apply them (one partition, action weights from
the spec), then evaluates the resulting :class:`~streamer.bench.embeddings.Embeddings`
with :mod:`streamer.bench.tasks`. No Kafka, no faust.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.bench.embeddings import Embeddings
from streamer.bench.graphs import edge_key
from streamer.bench.results import TaskResult
from streamer.bench.tasks import (
    follow_jaccard,
    load_graph,
    load_task_labels,
    stability,
    task_needs,
    topic,
)
from streamer.bench.tasks import metadata as metadata_task
from streamer.datasets import load_events
from streamer.errors import BadRequest
from streamer.events.decode import to_batch
from streamer.events.schema import EngagementEvent
from streamer.learn.registry import build_learner
from streamer.topology import TopologySpec, find_type
from streamer.types import user_key

__all__ = ["HOLDOUT_FRAC", "held_out_edges", "run_task", "stream_embeddings"]

HOLDOUT_FRAC = 0.2
"""Fraction of a follow graph's edges kept out of the stream for follow-Jaccard."""

_METRICS = {"topic": ("accuracy", "macro_f1"), "metadata": ("accuracy", "macro_f1"),
            "follow-jaccard": ("spearman",),
            "stability": ("jaccard_at_10", "procrustes_distance", "n_common")}


def held_out_edges(dataset: str, *, seed: int = 0, frac: float = HOLDOUT_FRAC,
                   data_dir: str | os.PathLike[str] | None = None,
                   ) -> tuple[npt.NDArray[np.int64], set[tuple[str, str]]]:
    """Return the follow-graph edges the follow-Jaccard protocol keeps out of the stream.

    Parameters
    ----------
    dataset
        ``"lastfm-asia"`` or ``"deezer"``.
    seed, frac
        :meth:`~streamer.bench.graphs.FriendGraph.split` of the full graph.
    data_dir
        Data folder.

    Returns
    -------
    held_out, keys
        Shape ``(k, 2)`` node indices into ``load_graph(dataset).nodes`` (for
        :func:`~streamer.bench.tasks.follow_jaccard`), and the raw-id keys
        ``edge_key(a, b)`` a producer skips (both directions of each edge).

    Raises
    ------
    ConfigError
        If the data set is not a follow-graph stream.
    """
    needs = task_needs("follow-jaccard", dataset)
    if not needs.holdout:
        from streamer.errors import ConfigError

        msg = (f"data set {dataset!r} has no edges in its stream to hold out; "
               "held-out edges exist for: lastfm-asia, deezer")
        raise ConfigError(msg)
    graph = load_graph(dataset, data_dir)
    _train, held = graph.split(frac, seed)
    return held, graph.edge_keys(held)


def _specs(types: Sequence[str | TopologySpec] | None,
           specs: Sequence[TopologySpec] | None) -> list[TopologySpec]:
    if specs is None:
        from streamer.registry import declared_types, first_versions

        specs = first_versions(declared_types())
    specs = tuple(specs)
    if types is None:
        return list(specs)
    return [t if isinstance(t, TopologySpec) else find_type(specs, t) for t in types]


def stream_embeddings(
    spec: TopologySpec,
    events: Sequence[EngagementEvent],
    *,
    batch_size: int = 2000,
    cuts: Sequence[int] = (),
) -> list[Embeddings]:
    """Learn ``events`` with a fresh learner of ``spec`` and return its embeddings.

    Parameters
    ----------
    spec
        Embedding type: ``build_learner(spec.algorithm, spec.params)``; event weights
        are ``event.weight * spec.action_weights[event.action]``.
    events
        Events in stream order; all go to partition 0, offsets are row numbers.
    batch_size
        Events per ``learn_many`` call (>= 1).
    cuts
        Event counts after which to take an extra snapshot (batches are cut there).

    Returns
    -------
    list of Embeddings
        One per cut (in order) and the final one last.

    Raises
    ------
    BadRequest
        If ``batch_size < 1``.
    ConfigError
        If the spec's algorithm/params are invalid or an action has no weight.
    """
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size!r}"
        raise BadRequest(msg)
    learner = build_learner(spec.algorithm, spec.params)
    bounds = sorted({*range(0, len(events), batch_size), *(c for c in cuts
                                                          if 0 < c < len(events))})
    bounds.append(len(events))
    snaps: list[Embeddings] = []
    want = set(cuts)
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        learner.learn_many(to_batch(events[s:e], 0, range(s, e), spec.action_weights))
        if e in want and e < len(events):
            snaps.append(Embeddings.from_learner(learner))
    snaps.append(Embeddings.from_learner(learner))
    return snaps


def _random_embeddings(users: Sequence[str], dim: int, seed: int) -> Embeddings:
    vecs = np.random.default_rng(seed).standard_normal((len(users), dim)).astype(np.float32)
    return Embeddings(tuple(user_key(u) for u in users), vecs)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def run_task(
    task: str,
    dataset: str,
    types: Sequence[str | TopologySpec] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    batch_size: int = 2000,
    specs: Sequence[TopologySpec] | None = None,
    snapshots: int = 4,
) -> dict[str, Any]:
    """Stream ``dataset`` through each embedding type and evaluate ``task``.

    Parameters
    ----------
    task
        ``"topic"``, ``"metadata"``, ``"follow-jaccard"`` or ``"stability"``.
    dataset
        A data set the task accepts (:func:`~streamer.bench.tasks.task_needs`).
    types
        Types to run: names looked up in ``specs``, or :class:`TopologySpec` objects used
        as they are (default: every spec).
    data_dir
        Data folder (default :func:`streamer.datasets.data_dirs`).
    seed
        Seeds the held-out split, CV folds, pair sampling and random baselines.
    batch_size
        Events per ``learn_many`` call.
    specs
        The declared types (default: the lowest declared version of each type); pass
        modified specs to compare parameters.
    snapshots
        ``stability`` only: snapshots taken at evenly spaced event counts (``>= 2``, the
        last at the end of the stream); the metrics are those of the last consecutive
        pair, the series is in ``results[type]["details"]["series"]``.

    Returns
    -------
    dict
        JSON-ready. One key per metric (``accuracy``/``macro_f1``, ``spearman``, or the
        stability metrics) mapping every type name, and the baselines (``majority``,
        ``random``), to its value; ``n`` (examples of the baseline run: every labelled
        user / pairs over every graph node), ``n_by_type``, ``seconds`` (per type:
        stream + evaluate, wall seconds), ``results`` (each type's
        :meth:`TaskResult.to_json`, which also holds the baselines on exactly that
        type's users/pairs), ``task``, ``dataset``, ``seed``, ``events`` (streamed) and
        ``held_out_edges`` (follow graphs).

        Top-level baselines are computed once, independent of any type, on every
        eligible user (labelled users; graph nodes) with seeded random vectors of the
        largest dimension among the types; with full coverage they match the per-type
        ones up to the random draw.

    Raises
    ------
    ConfigError
        If the task/data-set pair makes no sense, a type is unknown (``UnknownType``)
        or a file is missing.
    BadRequest
        If ``snapshots < 2`` for stability, or as the task functions.
    """
    needs = task_needs(task, dataset)
    chosen = _specs(types, specs)
    if task == "stability" and snapshots < 2:
        msg = f"stability needs snapshots >= 2, got {snapshots!r}"
        raise BadRequest(msg)
    events = list(load_events(dataset, data_dir))
    out: dict[str, Any] = {"task": task, "dataset": dataset, "seed": seed}
    held = None
    if needs.holdout:
        held, keys = held_out_edges(dataset, seed=seed, data_dir=data_dir)
        events = [e for e in events if edge_key(e.user_id, e.item_id) not in keys]
        out["held_out_edges"] = int(len(held))
    out["events"] = len(events)
    cuts = ([round(len(events) * j / snapshots) for j in range(1, snapshots)]
            if task == "stability" else [])
    results: dict[str, TaskResult] = {}
    seconds: dict[str, float] = {}
    dims = [64]
    for spec in chosen:
        t0 = time.perf_counter()
        snaps = stream_embeddings(spec, events, batch_size=batch_size, cuts=cuts)
        results[spec.name] = _evaluate(task, dataset, snaps, held, seed, data_dir)
        seconds[spec.name] = round(time.perf_counter() - t0, 2)
        dims.append(snaps[-1].dim)
    base = _baselines(task, dataset, max(dims[1:] or dims), held, seed, data_dir)
    for metric in _METRICS[task]:
        row = {name: r.metrics[metric] for name, r in results.items()}
        if base is not None:
            if "majority" in base.baselines:
                row["majority"] = base.baselines["majority"][metric]
            row["random"] = base.metrics[metric]
        out[metric] = row
    out["n"] = base.n if base is not None else None
    out["n_by_type"] = {name: r.n for name, r in results.items()}
    out["seconds"] = seconds
    out["results"] = {name: r.to_json() for name, r in results.items()}
    return _finite(out)


def _evaluate(task: str, dataset: str, snaps: list[Embeddings],
              held: npt.NDArray[np.int64] | None, seed: int,
              data_dir: str | os.PathLike[str] | None) -> TaskResult:
    emb = snaps[-1]
    if task == "topic":
        return topic(emb, dataset, seed=seed, data_dir=data_dir)
    if task == "metadata":
        return metadata_task(emb, dataset, seed=seed, data_dir=data_dir)
    if task == "follow-jaccard":
        return follow_jaccard(emb, load_graph(dataset, data_dir), held_out=held, seed=seed,
                              dataset=dataset)
    series = [stability(a, b, seed=seed) for a, b in zip(snaps[:-1], snaps[1:], strict=True)]
    last = series[-1]
    return TaskResult("stability", dataset, last.metrics, {}, last.n,
                      {**last.details, "series": [s.to_json()["metrics"] for s in series]})


def _baselines(task: str, dataset: str, dim: int, held: npt.NDArray[np.int64] | None,
               seed: int, data_dir: str | os.PathLike[str] | None) -> TaskResult | None:
    """Evaluate seeded random vectors for every eligible user (None for stability)."""
    if task in ("topic", "metadata"):
        users = sorted(load_task_labels(task, dataset, data_dir))
        emb = _random_embeddings(users, dim, seed + 1)
        fn = topic if task == "topic" else metadata_task
        return fn(emb, dataset, seed=seed, data_dir=data_dir)
    if task == "follow-jaccard":
        graph = load_graph(dataset, data_dir)
        emb = _random_embeddings(graph.nodes, dim, seed + 1)
        return follow_jaccard(emb, graph, held_out=held, seed=seed, dataset=dataset,
                              baselines=False)
    return None
