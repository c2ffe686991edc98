"""Brute-force cosine index in numpy: the in-memory twin and test oracle of the HNSW index.

Same public API as :class:`streamer.index.hnsw.HnswIndex` (CONVENTIONS C3); the role
hnswlib's own ``BFIndex`` plays in hnswlib's tests. Exact answers at ``O(n * dim)``
per query.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

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

_VECTORS = "vectors.npy"


class ExactIndex(VectorIndex):
    """Exact cosine k-NN over a dense, growable float32 matrix.

    Parameters
    ----------
    dim
        Vector dimension, ``>= 1``.
    initial_capacity
        Rows allocated up front; grows geometrically (doubling) when full.

    Raises
    ------
    ConfigError
        A parameter out of range.

    Notes
    -----
    Storage: unit-norm float32 rows packed densely; a delete moves the last row into
    the freed one, so memory is ``capacity * dim * 4`` bytes plus the id map.

    Thread safety: ``knn``, ``knn_batch``, ``get``, ``len``, ``in``, ``stats`` and
    ``save`` take a shared lock and run concurrently; ``upsert`` and ``delete`` take it
    exclusively (see :class:`streamer.index.rwlock.RWLock`).

    Examples
    --------
    >>> import numpy as np
    >>> idx = ExactIndex(dim=2)
    >>> idx.upsert(["i:x", "i:y"], np.array([[1, 0], [0, 1]], np.float32))
    >>> [(e, round(s, 3)) for e, s in idx.knn(np.array([0.9, 0.1], np.float32), k=2)]
    [('i:x', 0.994), ('i:y', 0.11)]
    """

    def __init__(self, dim: int, *, initial_capacity: int = 1024) -> None:
        self._dim = check_positive_int("dim", dim)
        self.initial_capacity = check_positive_int("initial_capacity", initial_capacity)
        self._lock = RWLock()
        self._vectors = np.zeros((self.initial_capacity, self._dim), np.float32)
        self._ids: list[EntityId] = []
        self._row_of: dict[EntityId, int] = {}

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self._dim}, live={len(self._ids)})"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    # ------------------------------------------------------------------ mutations

    def upsert(self, ids: Sequence[EntityId], vectors: Matrix) -> None:
        """Insert or replace vectors; see :meth:`VectorIndex.upsert`.

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
            rows = np.empty(len(keys), np.intp)
            for j, entity in enumerate(keys):
                row = self._row_of.get(entity)
                if row is None:
                    row = len(self._ids)
                    self._row_of[entity] = row
                    self._ids.append(entity)
                rows[j] = row
            needed = len(self._ids)
            if needed > self._vectors.shape[0]:
                grown = np.zeros((grow_capacity(self._vectors.shape[0], needed), self._dim),
                                 np.float32)
                grown[: self._vectors.shape[0]] = self._vectors
                self._vectors = grown
            self._vectors[rows] = unit

    def delete(self, ids: Collection[EntityId]) -> None:
        """Remove ids (unknown ones ignored); see :meth:`VectorIndex.delete`.

        Raises
        ------
        BadRequest
            ``ids`` is not a collection of strings.
        """
        keys = validate_ids(ids, unique=False)
        with self._lock.write():
            for entity in keys:
                row = self._row_of.pop(entity, None)
                if row is None:
                    continue
                last = len(self._ids) - 1
                if row != last:
                    moved = self._ids[last]
                    self._vectors[row] = self._vectors[last]
                    self._ids[row] = moved
                    self._row_of[moved] = row
                self._ids.pop()
                self._vectors[last] = 0.0

    def fold(self) -> None:
        """Do nothing: there is no buffer."""

    def rebuild(self) -> None:
        """Do nothing: there are no tombstones."""

    # ------------------------------------------------------------------ queries

    def knn(self, query: Vector, k: int, *, exclude: Collection[EntityId] = ()) -> Neighbours:
        """Exact top-``k`` by cosine similarity; see :meth:`VectorIndex.knn`.

        Ties are broken by storage row (deterministic for a given history).
        """
        q = validate_query(query, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        with self._lock.read():
            return self._knn_locked(q[None, :], kk, skip)[0]

    def knn_batch(
        self, queries: Matrix, k: int, *, exclude: Collection[EntityId] = ()
    ) -> list[Neighbours]:
        """Exact top-``k`` for each row of ``queries`` (shape ``(m, dim)``)."""
        qs = validate_queries(queries, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        with self._lock.read():
            return self._knn_locked(qs, kk, skip)

    def _knn_locked(
        self, qs: Matrix, k: int, skip: frozenset[EntityId]
    ) -> list[Neighbours]:
        n = len(self._ids)
        skip_rows = [self._row_of[e] for e in skip if e in self._row_of]
        k_eff = min(k, n - len(skip_rows))
        if k_eff <= 0 or qs.shape[0] == 0:
            return [[] for _ in range(qs.shape[0])]
        scores = qs @ self._vectors[:n].T
        if skip_rows:
            scores[:, skip_rows] = -np.inf
        best = top_k_rows(scores, k_eff)
        ids = self._ids
        return [
            [(ids[c], clip_score(scores[r, c])) for c in best[r]] for r in range(qs.shape[0])
        ]

    def get(self, ids: Collection[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return stored unit vectors and a presence mask; see :meth:`VectorIndex.get`."""
        keys = validate_ids(ids, unique=False)
        out = np.zeros((len(keys), self._dim), np.float32)
        mask = np.zeros(len(keys), np.bool_)
        with self._lock.read():
            rows = [self._row_of.get(e, -1) for e in keys]
            mask[:] = [r >= 0 for r in rows]
            if mask.any():
                out[mask] = self._vectors[np.asarray(rows)[mask]]
        return out, mask

    def __len__(self) -> int:
        with self._lock.read():
            return len(self._ids)

    def __contains__(self, entity: object) -> bool:
        if not isinstance(entity, str):
            return False
        with self._lock.read():
            return entity in self._row_of

    def stats(self) -> IndexStats:
        """Counters: everything is "delta" (exact), nothing is graph or tombstone."""
        with self._lock.read():
            n = len(self._ids)
            return IndexStats(live=n, graph=0, delta=n, tombstones=0,
                              capacity=self._vectors.shape[0])

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path) -> None:
        """Write ``vectors.npy`` and ``manifest.json`` (ids in row order) into ``path``.

        Raises
        ------
        OSError
            The directory cannot be written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            n = len(self._ids)
            tmp = path / (_VECTORS + ".tmp")
            with tmp.open("wb") as fh:
                np.save(fh, self._vectors[:n])
            tmp.replace(path / _VECTORS)
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": "exact",
                "space": SPACE,
                "dim": self._dim,
                "initial_capacity": self.initial_capacity,
                "live": n,
                "ids": list(self._ids),
                "files": {"vectors": _VECTORS},
            }
        write_manifest(path, manifest)

    @classmethod
    def load(cls, path: Path, *, background: bool = False) -> ExactIndex:
        """Read an index written by :meth:`save` (``background`` is ignored: no maintenance).

        Raises
        ------
        StateError
            Missing/foreign manifest, or a vectors file that disagrees with it.
        """
        path = Path(path)
        manifest = read_manifest(path, "exact")
        try:
            vectors = np.load(path / manifest["files"]["vectors"], allow_pickle=False)
            ids = [str(e) for e in manifest["ids"]]
            dim = int(manifest["dim"])
            idx = cls(dim, initial_capacity=int(manifest["initial_capacity"]))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            msg = f"cannot load exact index from {str(path)!r}: {exc}"
            raise StateError(msg) from exc
        if vectors.shape != (len(ids), dim) or vectors.dtype != np.float32:
            msg = (
                f"exact index at {str(path)!r}: vectors file has shape {vectors.shape} "
                f"{vectors.dtype}, manifest says ({len(ids)}, {dim}) float32"
            )
            raise StateError(msg)
        if len(set(ids)) != len(ids):
            msg = f"exact index at {str(path)!r}: manifest lists an id twice"
            raise StateError(msg)
        idx._vectors = np.zeros((max(idx.initial_capacity, len(ids)), dim), np.float32)
        idx._vectors[: len(ids)] = vectors
        idx._ids = ids
        idx._row_of = {e: r for r, e in enumerate(ids)}
        return idx

    def _check_invariants(self) -> None:
        """Assert that the id list, the row map and the matrix agree."""
        with self._lock.read():
            assert len(self._ids) == len(self._row_of)
            assert all(self._row_of[e] == r for r, e in enumerate(self._ids))
            assert len(self._ids) <= self._vectors.shape[0]
            if self._ids:
                norms = np.linalg.norm(self._vectors[: len(self._ids)], axis=1)
                assert np.allclose(norms, 1.0, atol=1e-5)
