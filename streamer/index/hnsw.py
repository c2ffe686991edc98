"""Live cosine ANN index over hnswlib, with an exact delta buffer (DESIGN §4, CONVENTIONS C10).

hnswlib (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search
using Hierarchical Navigable Small World graphs", IEEE TPAMI 2018; library docs at
github.com/nmslib/hnswlib) gives fast queries but is awkward to keep live:

* labels are integers: the adaptor owns a ``str id <-> int label`` map;
* capacity is fixed at ``init_index``: grown geometrically with ``resize_index``;
* re-adding an existing label is 5-8x slower than inserting a fresh one, so an update
  marks the old label deleted and inserts the new vector under a fresh label; the
  tombstones are counted and the graph is rebuilt from the live vectors past a ratio;
* ``add_items`` must not run concurrently with ``knn_query`` (hnswlib README: "thread-safe
  with other add_items calls, but not with knn_query"): a readers-writer lock;
* ``knn_query`` raises when it cannot return ``k`` results: ``k`` is clamped to the
  live count, and a query the graph cannot fill is answered exactly;
* ``ef`` is not saved by ``save_index``: it lives in ``manifest.json``.

Fresh vectors first land in an exact **delta buffer** (:mod:`streamer.index.delta`),
so an update is visible to the very next query; queries merge the graph's answer with
exact scores over the buffer. Moving buffered vectors into the graph ("folding") and
rebuilding the graph happen either synchronously inside the call that crosses a
threshold (the default) or, with ``background=True``, in a maintenance thread
(:mod:`streamer.index.maintenance`) that never holds the lock for longer than one short
step, so upserts and queries are not stalled by folds or rebuilds.

Insertion speed (hnswlib 0.8.0, M=16, 100k clustered vectors, 2 cores shared with
other jobs; ``benchmarks/index.py --scenario insert --n 100000``, saved in
``benchmarks/out/index-insert.json``), one thread: 64-d 2.5k/s with
``ef_construction=200`` vs 4.8k/s with 100, 128-d 1.5k/s vs 2.9k/s (in 64-vector fold
steps: 2.0k vs 3.3k/s and 1.3k vs 3.2k/s), for the same recall@10 at ``ef_search=64``
(0.993 vs 0.9935 at 64-d, 1.0 at 128-d; on i.i.d. gaussian 64-d data, the worst case,
0.66 vs 0.64 at 30k). Inserts are this index's bottleneck under streaming updates, so
``ef_construction`` defaults to 100. Two hnswlib threads made inserts 1.7-2.3x faster
on the otherwise idle machine, but folds then take both cores from the consumer or
server they share it with, so ``num_threads`` defaults to 1.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from importlib import metadata
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError
from streamer.index.base import (
    IndexStats,
    Neighbours,
    VectorIndex,
    check_positive_int,
    clip_score,
    fraction_or_none,
    top_k_rows,
    validate_exclude,
    validate_ids,
    validate_k,
    validate_queries,
    validate_query,
    validate_vectors,
)
from streamer.index.delta import DeltaBuffer
from streamer.index.hnsw_maint import (
    HnswMaintenance,
    MaintenanceStats,
    fingerprint_multipliers,
    fingerprints,
)
from streamer.index.maintenance import Maintainer
from streamer.index.rwlock import RWLock
from streamer.types import EntityId, Matrix, Vector

log = logging.getLogger(__name__)

_HNSW_SPACE = "ip"  # vectors are unit-normalised by us, so inner product == cosine

__all__ = ["HnswIndex", "MaintenanceStats"]


def _hnswlib_version() -> str:
    try:
        return metadata.version("hnswlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored builds
        return "unknown"


class HnswIndex(HnswMaintenance, VectorIndex):
    """Cosine k-NN over an hnswlib graph plus an exact buffer of fresh vectors.

    Parameters
    ----------
    dim
        Vector dimension, ``>= 1``.
    m
        HNSW graph degree ``M`` (memory and build time grow with it), ``>= 2``.
    ef_construction
        Candidate list size while inserting (build quality), ``>= 1``. 100 inserts about
        twice as fast as hnswlib's default of 200 for the same recall@10 on clustered
        data (see the module docstring).
    ef_search
        Candidate list size while querying (recall/latency knob), ``>= 1``; hnswlib
        searches with ``max(ef_search, k)``. Persisted in the manifest.
    initial_capacity
        Graph slots allocated up front; grows geometrically (doubling).
    seed
        hnswlib's ``random_seed`` for level assignment (synchronous builds are
        deterministic for a given seed and history when ``num_threads == 1``).
    delta_max
        Target size of the exact delta buffer. Synchronous mode folds the whole buffer
        when it reaches ``delta_max``; background mode folds the ids that have been
        quiet the longest until at most ``delta_max`` remain (hot ids stay buffered,
        where re-updating them creates no tombstones): under streaming updates, make it
        at least the hot set (the ids updated within a few seconds); a 16k buffer still
        costs well under a millisecond per query.
    tombstone_ratio
        Rebuild the graph from the live vectors when tombstones exceed this fraction of
        the graph's slots in use; ``None`` disables automatic rebuilds.
    num_threads
        Threads hnswlib uses for folds, rebuilds and ``knn_batch``.
    background
        Run folds and rebuilds in a daemon maintenance thread (see Notes). Call
        :meth:`close` (or use the index as a context manager) to stop it.
    delta_cap
        Background mode's hard cap on the buffer (default ``4 * delta_max``): an upsert
        that leaves more buffered folds the oldest excess itself before returning
        (backpressure when the stream outruns hnswlib). Must be ``>= delta_max``.
    max_pause_s
        Background mode: wall seconds a fold step aims to hold the write lock; steps are
        sized from the measured insert rate (8 to 4096 vectors).

    Attributes
    ----------
    exact_fallbacks
        Queries hnswlib could not fill even with a wider search, answered by brute
        force over the graph's live vectors (a lower bound under concurrent queries;
        logged at 1, 2, 4, ...). Non-zero means the graph is in poor shape.

    Raises
    ------
    ConfigError
        A parameter out of range.

    Notes
    -----
    Thread safety: queries (``knn``, ``knn_batch``), ``get``, ``len``, ``in``,
    ``stats`` and ``save`` take a shared lock and run concurrently with each other;
    ``upsert``, ``delete`` and every fold step take it exclusively. At every moment
    each live id's latest vector is either in the graph or in the buffer (never both),
    so answers are always complete, never repeat an id and never show a deleted one.

    Synchronous mode (default): the upsert or delete that crosses ``delta_max`` folds
    the buffer in its own call (one ``add_items``, blocking queries for about
    ``delta_max / insert rate`` seconds), and the one that crosses ``tombstone_ratio``
    rebuilds in the calling thread (the build itself runs without the lock).

    Background mode: upserts and deletes only touch the buffer and the maps (plus the
    backpressure above); the thread folds in steps of about ``max_pause_s`` and
    rebuilds by copying the live vectors out under the shared lock in chunks, building
    the new graph without any lock (folding overflow into the old graph between chunks)
    and swapping it in under a short exclusive section. Ids whose graph copy changed
    during the build are tombstoned in the new graph; those folded into the old graph
    meanwhile go back to the buffer. :meth:`fold` and :meth:`rebuild` ask the thread
    and wait; :meth:`wait_idle` waits until it has nothing to do. If the thread fails,
    the error is logged, :meth:`wait_idle` raises it, and the index falls back to
    synchronous maintenance (as it does after :meth:`close`).

    Examples
    --------
    >>> import numpy as np
    >>> idx = HnswIndex(dim=2, initial_capacity=8)
    >>> idx.upsert(["i:x", "i:y"], np.array([[1, 0], [0, 1]], np.float32))
    >>> idx.upsert(["i:x"], np.array([[0, 1]], np.float32))  # visible at once
    >>> [e for e, _ in idx.knn(np.array([0.0, 1.0], np.float32), k=2)]
    ['i:x', 'i:y']
    >>> with HnswIndex(dim=2, delta_max=1, background=True) as bg:
    ...     bg.upsert(["i:x", "i:y"], np.array([[1, 0], [0, 1]], np.float32))
    ...     bg.fold()  # waits for the maintenance thread
    ...     (bg.stats().graph, bg.stats().delta)
    (2, 0)
    """

    rebuild_chunk = 1024
    """Vectors copied out (under the shared lock, ~12 ms) and inserted per rebuild step."""

    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef_construction: int = 100,
        ef_search: int = 64,
        initial_capacity: int = 1024,
        seed: int = 100,
        delta_max: int = 1024,
        tombstone_ratio: float | None = 0.2,
        num_threads: int = 1,
        background: bool = False,
        delta_cap: int | None = None,
        max_pause_s: float = 0.005,
    ) -> None:
        self._dim = check_positive_int("dim", dim)
        self.m = check_positive_int("m", m, 2)
        self.ef_construction = check_positive_int("ef_construction", ef_construction)
        self.ef_search = check_positive_int("ef_search", ef_search)
        self.initial_capacity = check_positive_int("initial_capacity", initial_capacity)
        self.seed = check_positive_int("seed", seed, 0)
        self.delta_max = check_positive_int("delta_max", delta_max)
        self.tombstone_ratio = fraction_or_none("tombstone_ratio", tombstone_ratio)
        self.num_threads = check_positive_int("num_threads", num_threads)
        cap = 4 * self.delta_max if delta_cap is None else delta_cap
        self.delta_cap = check_positive_int("delta_cap", cap, self.delta_max)
        if isinstance(max_pause_s, bool) or not isinstance(max_pause_s, int | float) or not (
            0 < max_pause_s < float("inf")
        ):
            msg = f"max_pause_s must be a positive number of seconds, got {max_pause_s!r}"
            raise ConfigError(msg)
        self.max_pause_s = float(max_pause_s)

        self._lock = RWLock()
        self._graph = self._new_graph(self.initial_capacity)
        self._label_of: dict[EntityId, int] = {}  # ids whose current vector is in the graph
        self._id_of: dict[int, EntityId] = {}  # live labels only
        self._next_label = 0
        self._tombstones = 0
        self._delta = DeltaBuffer(self._dim, max(16, min(self.delta_max, 4096)))
        self._seq = 0  # upsert calls so far: the delta buffer's sequence numbers
        self._rebuilding = False
        self._dirty: dict[EntityId, int] | None = None  # during a rebuild: see _rebuild
        self._fold_rate = 2000.0
        self._fp_mult = fingerprint_multipliers(self._dim)
        self._fp = np.zeros(self.initial_capacity, np.uint64)  # per label; 0 = unknown
        self._counts = {"folds": 0, "folded": 0, "backpressure_folds": 0, "rebuilds": 0}
        self.exact_fallbacks = 0
        self._maint: Maintainer | None = None
        if background:
            self._start_background()

    def _start_background(self) -> None:
        self._maint = Maintainer(self, name=f"hnsw-maintenance-{id(self):x}")

    def __repr__(self) -> str:
        return (
            f"HnswIndex(dim={self._dim}, m={self.m}, ef_search={self.ef_search}, "
            f"graph={len(self._label_of)}, delta={len(self._delta)}, "
            f"tombstones={self._tombstones}, background={self._background})"
        )

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def _background(self) -> bool:
        return self._maint is not None and self._maint.active

    def _new_graph(self, capacity: int) -> hnswlib.Index:
        graph = hnswlib.Index(space=_HNSW_SPACE, dim=self._dim)
        graph.init_index(
            max_elements=capacity,
            M=self.m,
            ef_construction=self.ef_construction,
            random_seed=self.seed,
        )
        self._configure(graph)
        return graph

    def _configure(self, graph: hnswlib.Index) -> None:
        # hnswlib uses max(ef, k) per query, so ef is set once; changing it per query
        # would race between concurrent readers.
        graph.set_ef(self.ef_search)
        graph.set_num_threads(self.num_threads)

    # ------------------------------------------------------------------ mutations

    def upsert(self, ids: Sequence[EntityId], vectors: Matrix) -> None:
        """Insert or replace vectors, visible to the next query; see :meth:`VectorIndex.upsert`.

        An id whose graph copy holds exactly the new (normalised) vector is left alone,
        so replaying the same vectors creates no tombstones. Otherwise its graph copy
        (if any) is marked deleted and the vector goes to the delta buffer, where a
        later upsert of the same id overwrites it (only the latest is ever inserted).
        In background mode this never folds, except past ``delta_cap`` (backpressure).

        Raises
        ------
        BadRequest, DimensionMismatch, InvalidVector
            As :meth:`VectorIndex.upsert`; nothing changes on error.
        """
        keys = validate_ids(ids, unique=True)
        unit = validate_vectors(keys, vectors, self._dim)
        if not keys:
            return
        background = self._background
        with self._lock.write():
            self._seq += 1
            keep = np.ones(len(keys), np.bool_)
            in_graph = [j for j, e in enumerate(keys) if e in self._label_of]
            if in_graph:
                for j in self._unchanged_locked(keys, unit, in_graph):
                    keep[j] = False
                for j in in_graph:
                    if keep[j]:
                        self._drop_from_graph_locked(keys[j])
            if keep.all():
                self._delta.put(keys, unit, self._seq)
            else:
                self._delta.put([e for e, kp in zip(keys, keep, strict=True) if kp],
                                unit[keep], self._seq)
            if not background and len(self._delta) >= self.delta_max:
                self._fold_locked(list(self._delta.ids))
            over_cap = background and len(self._delta) > self.delta_cap
            work = len(self._delta) > self.delta_max or self._needs_rebuild_locked()
        self._after_write(background, work, over_cap)

    def delete(self, ids: Collection[EntityId]) -> None:
        """Remove ids (unknown ones ignored); see :meth:`VectorIndex.delete`.

        A buffered id leaves the buffer; a graph id is marked deleted (a tombstone).

        Raises
        ------
        BadRequest
            ``ids`` is not a collection of strings.
        """
        keys = validate_ids(ids, unique=False)
        background = self._background
        with self._lock.write():
            for entity in keys:
                if not self._delta.remove(entity):
                    self._drop_from_graph_locked(entity)
            work = self._needs_rebuild_locked()
        self._after_write(background, work, over_cap=False)

    def _after_write(self, background: bool, work: bool, over_cap: bool) -> None:
        if background:
            if over_cap:
                self._backpressure()
            if work and self._maint is not None:
                self._maint.wake()
        elif work and self._needs_rebuild():
            self._rebuild(None)

    def fold(self) -> None:
        """Insert every vector buffered so far into the graph.

        In background mode, asks the maintenance thread and waits until every vector
        upserted before this call is folded (vectors re-upserted since stay buffered;
        a rebuild in progress finishes first). In synchronous mode, folds at once
        (deferred by nothing; a rebuild running in another thread is not waited for).
        """
        if self._background and self._maint is not None and self._maint.request_drain(self._seq):
            return
        with self._lock.write():
            self._fold_locked(list(self._delta.ids))
            rebuild = self._needs_rebuild_locked()
        if rebuild:
            self._rebuild(None)

    def rebuild(self) -> None:
        """Build a fresh graph from the live graph vectors and swap it in, dropping tombstones.

        In background mode, asks the maintenance thread and waits for a rebuild that
        started after this call. Otherwise runs in the calling thread (returning at once
        if another thread is rebuilding), without holding the lock while it builds;
        labels restart at 0.
        """
        if self._background and self._maint is not None and self._maint.request_rebuild():
            return
        self._rebuild(None)

    # ------------------------------------------------------------------ queries

    def knn(self, query: Vector, k: int, *, exclude: Collection[EntityId] = ()) -> Neighbours:
        """Approximate top-``k`` by cosine similarity; see :meth:`VectorIndex.knn`.

        The graph is asked for ``k`` plus the number of excluded ids it holds, so the
        answer is still ``k`` long after dropping them; buffered ids are scored exactly.
        """
        q = validate_query(query, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        with self._lock.read():
            return self._knn_locked(q[None, :], kk, skip, threads=1)[0]

    def knn_batch(
        self, queries: Matrix, k: int, *, exclude: Collection[EntityId] = ()
    ) -> list[Neighbours]:
        """Approximate top-``k`` for each row of ``queries`` (shape ``(m, dim)``)."""
        qs = validate_queries(queries, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        with self._lock.read():
            return self._knn_locked(qs, kk, skip, threads=self.num_threads)

    def _knn_locked(
        self, qs: Matrix, k: int, skip: frozenset[EntityId], *, threads: int
    ) -> list[Neighbours]:
        m = qs.shape[0]
        delta = self._delta
        n_graph, n_delta = len(self._label_of), len(delta)
        skip_graph = sum(1 for e in skip if e in self._label_of)
        skip_rows = [delta.row_of[e] for e in skip if e in delta.row_of]
        live_graph = n_graph - skip_graph
        live_delta = n_delta - len(skip_rows)
        k_eff = min(k, live_graph + live_delta)
        merged: list[Neighbours] = [[] for _ in range(m)]
        if k_eff <= 0 or m == 0:
            return merged
        if live_graph > 0:
            labels, scores = self._graph_knn_locked(qs, min(k_eff, live_graph) + skip_graph,
                                                    threads)
            id_of = self._id_of
            for r in range(m):
                out = merged[r]
                for label, score in zip(labels[r].tolist(), scores[r].tolist(), strict=True):
                    entity = id_of.get(label)  # None: a stale or deleted slot
                    if entity is not None and entity not in skip:
                        out.append((entity, score))
        if live_delta > 0:
            delta_scores = delta.scores(qs)  # one matrix product over the dense buffer
            if skip_rows:
                delta_scores[:, skip_rows] = -np.inf
            best = top_k_rows(delta_scores, min(k_eff, live_delta))
            delta_ids = delta.ids
            for r in range(m):
                merged[r].extend(
                    (delta_ids[c], float(delta_scores[r, c])) for c in best[r].tolist()
                )
        return [
            [(e, clip_score(s)) for e, s in sorted(out, key=lambda p: -p[1])[:k_eff]]
            for out in merged
        ]

    def _graph_knn_locked(
        self, qs: Matrix, kg: int, threads: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """Labels and cosine scores of the ``kg`` nearest live graph slots per query."""
        try:
            labels, distances = self._graph.knn_query(qs, k=kg, num_threads=threads)
            return labels, 1.0 - distances
        except RuntimeError:
            pass  # some query could not be filled: redo them one by one
        labels = np.empty((qs.shape[0], kg), np.uint64)
        scores = np.empty((qs.shape[0], kg), np.float32)
        for r in range(qs.shape[0]):
            labels[r], scores[r] = self._graph_knn_one_locked(qs[r : r + 1], kg)
        return labels, scores

    def _graph_knn_one_locked(
        self, q: Matrix, kg: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        # hnswlib raises when it cannot collect kg live results (tombstones can cut a
        # small or heavily updated graph apart). It searches with ef = max(ef, k), so
        # first retry with a wider k, then answer exactly over the live graph vectors.
        wider = min(len(self._id_of), max(2 * kg, 2 * self.ef_search))
        for k_try in (kg, wider) if wider > kg else (kg,):
            try:
                labels, distances = self._graph.knn_query(q, k=k_try, num_threads=1)
            except RuntimeError:
                continue
            return labels[0, :kg], 1.0 - distances[0, :kg]
        self.exact_fallbacks += 1  # not atomic under the shared lock: a lower bound
        if self.exact_fallbacks & (self.exact_fallbacks - 1) == 0:  # 1, 2, 4, 8, ...
            log.warning(
                'hnsw query answered exactly fallbacks=%d graph=%d tombstones=%d hint="%s"',
                self.exact_fallbacks, len(self._id_of), self._tombstones,
                "raise m/ef_construction or lower tombstone_ratio",
            )
        labels = np.fromiter(self._id_of, dtype=np.uint64, count=len(self._id_of))
        vectors = np.asarray(self._graph.get_items(labels, return_type="numpy"))
        scores = q @ vectors.T
        best = top_k_rows(scores, kg)
        return labels[best][0], np.take_along_axis(scores, best, axis=1)[0]

    def get(self, ids: Collection[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return stored unit vectors and a presence mask; see :meth:`VectorIndex.get`."""
        keys = validate_ids(ids, unique=False)
        out = np.zeros((len(keys), self._dim), np.float32)
        mask = np.zeros(len(keys), np.bool_)
        with self._lock.read():
            positions: list[int] = []
            labels: list[int] = []
            delta_rows = self._delta.row_of
            for j, entity in enumerate(keys):
                row = delta_rows.get(entity)
                if row is not None:
                    out[j] = self._delta.vectors[row]
                    mask[j] = True
                    continue
                label = self._label_of.get(entity)
                if label is not None:
                    positions.append(j)
                    labels.append(label)
            if labels:
                out[positions] = np.asarray(self._graph.get_items(labels, return_type="numpy"))
                mask[positions] = True
        return out, mask

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._label_of) + len(self._delta)

    def __contains__(self, entity: object) -> bool:
        if not isinstance(entity, str):
            return False
        with self._lock.read():
            return entity in self._delta.row_of or entity in self._label_of

    def stats(self) -> IndexStats:
        """Counters: graph ids, buffered ids, tombstones and graph capacity."""
        with self._lock.read():
            graph, delta = len(self._label_of), len(self._delta)
            return IndexStats(
                live=graph + delta,
                graph=graph,
                delta=delta,
                tombstones=self._tombstones,
                capacity=self._graph.get_max_elements(),
            )

    # ------------------------------------------------------------------ persistence

    def _params(self) -> dict[str, object]:
        return {
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "initial_capacity": self.initial_capacity,
            "seed": self.seed,
            "delta_max": self.delta_max,
            "tombstone_ratio": self.tombstone_ratio,
            "num_threads": self.num_threads,
            "delta_cap": self.delta_cap,
            "max_pause_s": self.max_pause_s,
        }

    def save(self, path: Path) -> None:
        """Write ``graph.bin`` (hnswlib), ``delta.npy`` and ``manifest.json`` into ``path``.

        The manifest holds the parameters (``ef_search`` included: hnswlib does not
        save it), the ``id -> label`` map, the buffered ids in row order and the
        counters. The delta buffer is saved as is (not folded), so saving does not
        change the index. Holds the shared lock while writing (writers and fold steps
        wait; a background rebuild keeps building and swaps afterwards).

        Raises
        ------
        OSError
            The directory cannot be written.
        """
        from streamer.index.hnsw_io import save_hnsw

        save_hnsw(self, Path(path))

    @classmethod
    def load(cls, path: Path, *, background: bool = False) -> HnswIndex:
        """Read an index written by :meth:`save`; ``ef_search`` comes from the manifest.

        Parameters
        ----------
        path
            The directory.
        background
            Start a maintenance thread (not persisted: a runtime choice).

        Raises
        ------
        StateError
            Missing/foreign manifest, or data files that disagree with it.
        """
        from streamer.index.hnsw_io import load_hnsw

        idx = load_hnsw(cls, Path(path))
        if background:
            idx._start_background()
        return idx

    def _check_invariants(self) -> None:
        """Assert the label maps, the buffer and hnswlib's counters agree."""
        with self._lock.read():
            assert len(self._label_of) == len(self._id_of)
            assert all(self._id_of[label] == e for e, label in self._label_of.items())
            assert not (self._label_of.keys() & self._delta.row_of.keys())
            self._delta.check()
            assert int(self._delta.seqs.max(initial=0)) <= self._seq
            assert self._graph.element_count == len(self._label_of) + self._tombstones
            assert all(label < self._next_label for label in self._id_of)
            assert set(self._graph.get_ids_list()) >= self._id_of.keys()
            assert (self._dirty is not None) == self._rebuilding
            labels = np.fromiter(self._id_of, np.intp, count=len(self._id_of))
            known = self._fp[labels] != 0 if labels.size else labels.astype(np.bool_)
            if known.any():
                copies = np.asarray(self._graph.get_items(labels[known], return_type="numpy"))
                assert (self._fp[labels[known]] == fingerprints(copies, self._fp_mult)).all()
