"""Live cosine ANN index over hnswlib, with an exact delta buffer (DESIGN §4, CONVENTIONS C10).

hnswlib (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search
using Hierarchical Navigable Small World graphs", IEEE TPAMI 2018; library docs at
github.com/nmslib/hnswlib) gives fast queries but is awkward to keep live:

* labels are integers: the adaptor owns a ``str id <-> int label`` map;
* capacity is fixed at ``init_index``: grown geometrically with ``resize_index``;
* re-adding an existing label is 5-8x slower than inserting a fresh one, so an update
  marks the old label deleted and inserts the new vector under a fresh label; the
  tombstones are counted and the graph is rebuilt from the live vectors past a ratio;
* ``add_items`` must not run concurrently with ``knn_query``: a readers-writer lock;
* ``knn_query`` raises when it cannot return ``k`` results: ``k`` is clamped to the
  live count, and a query the graph cannot fill is answered exactly;
* ``ef`` is not saved by ``save_index``: it lives in ``manifest.json``.

Fresh vectors first land in a small exact **delta buffer**, so an update is visible to
the very next query; the buffer is folded into the graph (one batched ``add_items``)
when it holds ``delta_max`` ids or on :meth:`HnswIndex.fold`. Queries merge the graph's
answer with exact scores over the buffer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from importlib import metadata
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt

from streamer.errors import StateError
from streamer.index.base import (
    FORMAT_VERSION,
    SPACE,
    IndexStats,
    Neighbours,
    VectorIndex,
    check_positive_int,
    clip_score,
    fraction_or_none,
    grow_capacity,
    read_manifest,
    top_k_rows,
    validate_exclude,
    validate_ids,
    validate_k,
    validate_queries,
    validate_query,
    validate_vectors,
    write_manifest,
)
from streamer.index.rwlock import RWLock
from streamer.types import EntityId, Matrix, Vector

log = logging.getLogger(__name__)

_GRAPH = "graph.bin"
_DELTA = "delta.npy"
_HNSW_SPACE = "ip"  # vectors are unit-normalised by us, so inner product == cosine


def _hnswlib_version() -> str:
    try:
        return metadata.version("hnswlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored builds
        return "unknown"


class HnswIndex(VectorIndex):
    """Cosine k-NN over an hnswlib graph plus an exact buffer of fresh vectors.

    Parameters
    ----------
    dim
        Vector dimension, ``>= 1``.
    m
        HNSW graph degree ``M`` (memory and build time grow with it), ``>= 2``.
    ef_construction
        Candidate list size while inserting (build quality), ``>= 1``.
    ef_search
        Candidate list size while querying (recall/latency knob), ``>= 1``; hnswlib
        searches with ``max(ef_search, k)``. Persisted in the manifest.
    initial_capacity
        Graph slots allocated up front; grows geometrically (doubling).
    seed
        hnswlib's ``random_seed`` for level assignment (builds are deterministic for a
        given seed and history when ``num_threads == 1``).
    delta_max
        Fresh vectors buffered exactly before they are folded into the graph. Larger
        means fewer, bigger folds (longer write-lock pauses) and slightly slower queries.
    tombstone_ratio
        Rebuild the graph from the live vectors when tombstones exceed this fraction of
        the graph's slots in use; ``None`` disables automatic rebuilds (call
        :meth:`rebuild` yourself, e.g. from a maintenance thread).
    num_threads
        Threads hnswlib uses for folds, rebuilds and ``knn_batch``.

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
    ``upsert``, ``delete`` and ``fold`` take it exclusively (a fold of ``delta_max``
    vectors blocks queries for roughly ``delta_max / 5000`` s at 64-d). A rebuild holds
    the exclusive lock only to copy the live vectors out and to swap the new graph in:
    the build itself runs without the lock, in the thread that called :meth:`rebuild`
    (or the ``upsert``/``delete``/``fold`` that crossed ``tombstone_ratio``), while
    other threads keep querying the old graph and writing into the delta buffer (folds
    wait until the swap; removals made meanwhile are replayed on the new graph).
    ``save`` holds the shared lock while it writes, so writers wait for it.

    Examples
    --------
    >>> import numpy as np
    >>> idx = HnswIndex(dim=2, initial_capacity=8)
    >>> idx.upsert(["i:x", "i:y"], np.array([[1, 0], [0, 1]], np.float32))
    >>> idx.upsert(["i:x"], np.array([[0, 1]], np.float32))  # visible at once
    >>> [e for e, _ in idx.knn(np.array([0.0, 1.0], np.float32), k=2)]
    ['i:x', 'i:y']
    """

    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        initial_capacity: int = 1024,
        seed: int = 100,
        delta_max: int = 1024,
        tombstone_ratio: float | None = 0.2,
        num_threads: int = 1,
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

        self._lock = RWLock()
        self._graph = self._new_graph(self.initial_capacity)
        self._label_of: dict[EntityId, int] = {}  # ids whose current vector is in the graph
        self._id_of: dict[int, EntityId] = {}  # live labels only
        self._next_label = 0
        self._tombstones = 0
        self._delta = np.zeros((self._delta_rows_hint(), self._dim), np.float32)
        self._delta_ids: list[EntityId] = []  # ids whose current vector is in the buffer
        self._delta_row: dict[EntityId, int] = {}
        self._rebuilding = False
        self._removed_during_rebuild: set[EntityId] | None = None
        self.exact_fallbacks = 0

    def __repr__(self) -> str:
        return (
            f"HnswIndex(dim={self._dim}, m={self.m}, ef_search={self.ef_search}, "
            f"graph={len(self._label_of)}, delta={len(self._delta_ids)}, "
            f"tombstones={self._tombstones})"
        )

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def _delta_rows_hint(self) -> int:
        return max(16, min(self.delta_max, 4096))

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

        Raises
        ------
        BadRequest, DimensionMismatch, InvalidVector
            As :meth:`VectorIndex.upsert`; nothing changes on error.
        """
        keys = validate_ids(ids, unique=True)
        unit = validate_vectors(keys, vectors, self._dim)
        if not keys:
            return
        with self._lock.write():
            keep = np.ones(len(keys), np.bool_)
            in_graph = [j for j, e in enumerate(keys) if e in self._label_of]
            if in_graph:
                labels = [self._label_of[keys[j]] for j in in_graph]
                stored = np.asarray(self._graph.get_items(labels, return_type="numpy"))
                unchanged = np.all(stored == unit[in_graph], axis=1)
                for j, same in zip(in_graph, unchanged.tolist(), strict=True):
                    if same:
                        keep[j] = False
                    else:
                        self._drop_from_graph_locked(keys[j])
            if keep.all():
                self._delta_put_locked(keys, unit)
            else:
                self._delta_put_locked([e for e, kp in zip(keys, keep, strict=True) if kp],
                                       unit[keep])
            if len(self._delta_ids) >= self.delta_max:
                self._fold_locked()
            rebuild = self._needs_rebuild_locked()
        if rebuild:
            self.rebuild()

    def delete(self, ids: Collection[EntityId]) -> None:
        """Remove ids (unknown ones ignored); see :meth:`VectorIndex.delete`.

        A buffered id leaves the buffer; a graph id is marked deleted (a tombstone).

        Raises
        ------
        BadRequest
            ``ids`` is not a collection of strings.
        """
        keys = validate_ids(ids, unique=False)
        with self._lock.write():
            for entity in keys:
                if entity in self._delta_row:
                    self._delta_remove_locked(entity)
                else:
                    self._drop_from_graph_locked(entity)
            rebuild = self._needs_rebuild_locked()
        if rebuild:
            self.rebuild()

    def fold(self) -> None:
        """Insert every buffered vector into the graph now (deferred while rebuilding)."""
        with self._lock.write():
            self._fold_locked()
            rebuild = self._needs_rebuild_locked()
        if rebuild:
            self.rebuild()

    def rebuild(self) -> None:
        """Build a fresh graph from the live graph vectors and swap it in, dropping tombstones.

        Returns at once if another thread is rebuilding. Runs the build in the calling
        thread without holding the lock (see the class Notes); labels restart at 0.
        """
        with self._lock.write():
            if self._rebuilding:
                return
            self._rebuilding = True
            self._removed_during_rebuild = set()
            ids = list(self._label_of)
            labels = list(self._label_of.values())
            if labels:
                vectors = np.asarray(self._graph.get_items(labels, return_type="numpy"))
            else:
                vectors = np.zeros((0, self._dim), np.float32)
        try:
            n = len(ids)
            graph = self._new_graph(max(self.initial_capacity, n + n // 4 + self.delta_max))
            if n:
                graph.add_items(vectors, np.arange(n, dtype=np.uint64),
                                num_threads=self.num_threads)
            del vectors
            with self._lock.write():
                label_of = dict(zip(ids, range(n), strict=True))
                tombstones = 0
                for entity in self._removed_during_rebuild or ():
                    label = label_of.pop(entity, None)
                    if label is not None:
                        graph.mark_deleted(label)
                        tombstones += 1
                self._graph = graph
                self._label_of = label_of
                self._id_of = {label: e for e, label in label_of.items()}
                self._next_label = n
                self._tombstones = tombstones
                self._rebuilding = False
                self._removed_during_rebuild = None
                if len(self._delta_ids) >= self.delta_max:
                    self._fold_locked()
        except BaseException:
            with self._lock.write():
                self._rebuilding = False
                self._removed_during_rebuild = None
            raise

    def _drop_from_graph_locked(self, entity: EntityId) -> None:
        label = self._label_of.pop(entity, None)
        if label is None:
            return
        del self._id_of[label]
        self._graph.mark_deleted(label)
        self._tombstones += 1
        if self._removed_during_rebuild is not None:
            self._removed_during_rebuild.add(entity)

    def _delta_put_locked(self, keys: list[EntityId], unit: Matrix) -> None:
        rows = np.empty(len(keys), np.intp)
        for j, entity in enumerate(keys):
            row = self._delta_row.get(entity)
            if row is None:
                row = len(self._delta_ids)
                self._delta_row[entity] = row
                self._delta_ids.append(entity)
            rows[j] = row
        needed = len(self._delta_ids)
        if needed > self._delta.shape[0]:
            grown = np.zeros((grow_capacity(self._delta.shape[0], needed), self._dim), np.float32)
            grown[: self._delta.shape[0]] = self._delta
            self._delta = grown
        self._delta[rows] = unit

    def _delta_remove_locked(self, entity: EntityId) -> None:
        row = self._delta_row.pop(entity)
        last = len(self._delta_ids) - 1
        if row != last:
            moved = self._delta_ids[last]
            self._delta[row] = self._delta[last]
            self._delta_ids[row] = moved
            self._delta_row[moved] = row
        self._delta_ids.pop()

    def _fold_locked(self) -> None:
        n = len(self._delta_ids)
        if n == 0 or self._rebuilding:
            return
        capacity = self._graph.get_max_elements()
        needed = self._graph.element_count + n  # tombstones still hold slots
        if needed > capacity:
            self._graph.resize_index(grow_capacity(capacity, needed))
        labels = np.arange(self._next_label, self._next_label + n, dtype=np.uint64)
        self._graph.add_items(self._delta[:n], labels, num_threads=self.num_threads)
        for entity, label in zip(self._delta_ids, labels.tolist(), strict=True):
            self._label_of[entity] = label
            self._id_of[label] = entity
        self._next_label += n
        self._delta_ids = []
        self._delta_row = {}
        if self._delta.shape[0] > 4 * self._delta_rows_hint():
            self._delta = np.zeros((self._delta_rows_hint(), self._dim), np.float32)

    def _needs_rebuild_locked(self) -> bool:
        if self.tombstone_ratio is None or self._rebuilding:
            return False
        used = self._graph.element_count
        return used > 0 and self._tombstones > self.tombstone_ratio * used

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
        n_graph = len(self._label_of)
        n_delta = len(self._delta_ids)
        skip_graph = sum(1 for e in skip if e in self._label_of)
        skip_rows = [self._delta_row[e] for e in skip if e in self._delta_row]
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
            delta_scores = qs @ self._delta[:n_delta].T
            if skip_rows:
                delta_scores[:, skip_rows] = -np.inf
            best = top_k_rows(delta_scores, min(k_eff, live_delta))
            delta_ids = self._delta_ids
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
        labels, scores = self._graph_exact_locked(q, kg)
        return labels[0], scores[0]

    def _graph_exact_locked(
        self, qs: Matrix, kg: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        labels = np.fromiter(self._id_of, dtype=np.uint64, count=len(self._id_of))
        vectors = np.asarray(self._graph.get_items(labels, return_type="numpy"))
        scores = qs @ vectors.T
        best = top_k_rows(scores, kg)
        return labels[best], np.take_along_axis(scores, best, axis=1)

    def get(self, ids: Collection[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return stored unit vectors and a presence mask; see :meth:`VectorIndex.get`."""
        keys = validate_ids(ids, unique=False)
        out = np.zeros((len(keys), self._dim), np.float32)
        mask = np.zeros(len(keys), np.bool_)
        with self._lock.read():
            positions: list[int] = []
            labels: list[int] = []
            for j, entity in enumerate(keys):
                row = self._delta_row.get(entity)
                if row is not None:
                    out[j] = self._delta[row]
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
            return len(self._label_of) + len(self._delta_ids)

    def __contains__(self, entity: object) -> bool:
        if not isinstance(entity, str):
            return False
        with self._lock.read():
            return entity in self._delta_row or entity in self._label_of

    def stats(self) -> IndexStats:
        """Counters: graph ids, buffered ids, tombstones and graph capacity."""
        with self._lock.read():
            graph, delta = len(self._label_of), len(self._delta_ids)
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
        }

    def save(self, path: Path) -> None:
        """Write ``graph.bin`` (hnswlib), ``delta.npy`` and ``manifest.json`` into ``path``.

        The manifest holds the parameters (``ef_search`` included: hnswlib does not
        save it), the ``id -> label`` map, the buffered ids in row order and the
        counters. The delta buffer is saved as is (not folded), so saving does not
        change the index.

        Raises
        ------
        OSError
            The directory cannot be written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            tmp_graph = path / (_GRAPH + ".tmp")
            self._graph.save_index(str(tmp_graph))
            os.replace(tmp_graph, path / _GRAPH)
            tmp_delta = path / (_DELTA + ".tmp")
            with tmp_delta.open("wb") as fh:
                np.save(fh, self._delta[: len(self._delta_ids)])
            os.replace(tmp_delta, path / _DELTA)
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": "hnsw",
                "space": SPACE,
                "hnswlib_space": _HNSW_SPACE,
                "hnswlib_version": _hnswlib_version(),
                "dim": self._dim,
                "params": self._params(),
                "capacity": self._graph.get_max_elements(),
                "element_count": self._graph.element_count,
                "next_label": self._next_label,
                "tombstones": self._tombstones,
                "live": len(self._label_of) + len(self._delta_ids),
                "labels": dict(self._label_of),
                "delta_ids": list(self._delta_ids),
                "files": {"graph": _GRAPH, "delta": _DELTA},
            }
        write_manifest(path, manifest)

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read an index written by :meth:`save`; ``ef_search`` comes from the manifest.

        Raises
        ------
        StateError
            Missing/foreign manifest, or data files that disagree with it.
        """
        path = Path(path)
        manifest = read_manifest(path, "hnsw")
        try:
            dim = int(manifest["dim"])
            params = dict(manifest["params"])
            initial_capacity = int(params.pop("initial_capacity"))
            idx = cls(dim, initial_capacity=1, **params)
            idx.initial_capacity = initial_capacity
            label_of = {str(e): int(label) for e, label in manifest["labels"].items()}
            delta_ids = [str(e) for e in manifest["delta_ids"]]
            delta = np.load(path / manifest["files"]["delta"], allow_pickle=False)
            graph = hnswlib.Index(space=manifest["hnswlib_space"], dim=dim)
            graph_file = path / manifest["files"]["graph"]
            if not graph_file.is_file():
                msg = f"graph file {str(graph_file)!r} is missing"
                raise OSError(msg)
            graph.load_index(str(graph_file), max_elements=int(manifest["capacity"]))
            next_label = int(manifest["next_label"])
            tombstones = int(manifest["tombstones"])
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            msg = f"cannot load hnsw index from {str(path)!r}: {exc}"
            raise StateError(msg) from exc
        problems = []
        if graph.element_count != len(label_of) + tombstones:
            problems.append(
                f"graph holds {graph.element_count} slots but the manifest accounts for "
                f"{len(label_of)} live + {tombstones} tombstones"
            )
        if delta.shape != (len(delta_ids), dim) or delta.dtype != np.float32:
            problems.append(f"delta file has shape {delta.shape} {delta.dtype}, "
                            f"expected ({len(delta_ids)}, {dim}) float32")
        if len(set(delta_ids)) != len(delta_ids) or set(delta_ids) & label_of.keys():
            problems.append("an id is listed twice across labels and delta_ids")
        if len(set(label_of.values())) != len(label_of) or any(
            not 0 <= label < next_label for label in label_of.values()
        ):
            problems.append("the label map is not a bijection below next_label")
        if problems:
            msg = f"hnsw index at {str(path)!r} is inconsistent: " + "; ".join(problems)
            raise StateError(msg)
        idx._configure(graph)
        idx._graph = graph
        idx._label_of = label_of
        idx._id_of = {label: e for e, label in label_of.items()}
        idx._next_label = next_label
        idx._tombstones = tombstones
        idx._delta = np.zeros((max(idx._delta_rows_hint(), len(delta_ids)), dim), np.float32)
        idx._delta[: len(delta_ids)] = delta
        idx._delta_ids = delta_ids
        idx._delta_row = {e: r for r, e in enumerate(delta_ids)}
        return idx

    def _check_invariants(self) -> None:
        """Assert the label maps, the buffer and hnswlib's counters agree."""
        with self._lock.read():
            assert len(self._label_of) == len(self._id_of)
            assert all(self._id_of[label] == e for e, label in self._label_of.items())
            assert not (self._label_of.keys() & self._delta_row.keys())
            assert len(self._delta_ids) == len(self._delta_row)
            assert all(self._delta_row[e] == r for r, e in enumerate(self._delta_ids))
            assert self._graph.element_count == len(self._label_of) + self._tombstones
            assert all(label < self._next_label for label in self._id_of)
            assert set(self._graph.get_ids_list()) >= self._id_of.keys()
            if self._delta_ids:
                norms = np.linalg.norm(self._delta[: len(self._delta_ids)], axis=1)
                assert np.allclose(norms, 1.0, atol=1e-5)
