"""The exact buffer of fresh vectors in front of the HNSW graph (DESIGN §4).

Fresh vectors are kept in one contiguous, preallocated float32 matrix (unit rows) with
an id list and an ``id -> row`` map. An update of a buffered id overwrites its row in
place (coalescing: only the latest vector of an id is ever folded into the graph); a
removal moves the last row into the freed one (swap-remove), so rows ``[0, n)`` are
always dense and a query is a single matrix product over them, whatever the buffer
size (a 16k x 128 buffer costs well under a millisecond per query).

Each row also carries the sequence number of the upsert call that last wrote it, so
maintenance can fold the rows that have been quiet the longest first ("oldest first"):
ids still being updated stay in the buffer, where an update costs nothing, instead of
turning into graph tombstones.

Not thread-safe: :class:`~streamer.index.hnsw.HnswIndex` guards it with its lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streamer.index.base import grow_capacity
from streamer.types import EntityId, Matrix


class DeltaBuffer:
    """Dense, growable buffer of ``id -> unit vector`` rows with per-row sequence numbers.

    Parameters
    ----------
    dim
        Vector dimension.
    capacity
        Rows allocated up front (grown by doubling, shrunk back by :meth:`compact`).

    Attributes
    ----------
    ids
        Buffered ids in row order (row ``r`` holds ``ids[r]``). Read-only for callers.
    row_of
        ``id -> row``. Read-only for callers.

    Examples
    --------
    >>> import numpy as np
    >>> buf = DeltaBuffer(2, capacity=4)
    >>> buf.put(["i:a", "i:b"], np.eye(2, dtype=np.float32), seq=1)
    >>> buf.put(["i:a"], np.array([[0, 1]], np.float32), seq=2)  # overwrites its row
    >>> buf.ids, buf.oldest(1)
    (['i:a', 'i:b'], ['i:b'])
    >>> buf.remove("i:a")
    True
    >>> buf.ids
    ['i:b']
    """

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self._dim = dim
        self._initial = max(1, capacity)
        self._vectors = np.zeros((self._initial, dim), np.float32)
        self._seq = np.zeros(self._initial, np.int64)
        self.ids: list[EntityId] = []
        self.row_of: dict[EntityId, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, entity: object) -> bool:
        return entity in self.row_of

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return self._vectors.shape[0]

    @property
    def vectors(self) -> Matrix:
        """The live rows, shape ``(len(self), dim)`` float32: a view, do not keep or modify."""
        return self._vectors[: len(self.ids)]

    @property
    def seqs(self) -> npt.NDArray[np.int64]:
        """Sequence number of each live row, shape ``(len(self),)``: a view."""
        return self._seq[: len(self.ids)]

    def put(
        self, keys: Sequence[EntityId], unit: Matrix, seq: int | npt.NDArray[np.int64]
    ) -> None:
        """Insert or overwrite rows.

        Parameters
        ----------
        keys
            Distinct ids, one per row of ``unit``.
        unit
            Shape ``(len(keys), dim)`` float32 unit rows (copied).
        seq
            The writing call's sequence number, or one per key (shape ``(len(keys),)``).
        """
        rows = np.empty(len(keys), np.intp)
        row_of, ids = self.row_of, self.ids
        for j, entity in enumerate(keys):
            row = row_of.get(entity)
            if row is None:
                row = len(ids)
                row_of[entity] = row
                ids.append(entity)
            rows[j] = row
        needed = len(ids)
        if needed > self._vectors.shape[0]:
            size = grow_capacity(self._vectors.shape[0], needed)
            grown = np.zeros((size, self._dim), np.float32)
            grown[: self._vectors.shape[0]] = self._vectors
            seqs = np.zeros(size, np.int64)
            seqs[: self._seq.shape[0]] = self._seq
            self._vectors, self._seq = grown, seqs
        self._vectors[rows] = unit
        self._seq[rows] = seq

    def remove(self, entity: EntityId) -> bool:
        """Drop ``entity`` (swap-remove: the last row moves into its place); False if absent."""
        row = self.row_of.pop(entity, None)
        if row is None:
            return False
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self._vectors[row] = self._vectors[last]
            self._seq[row] = self._seq[last]
            self.ids[row] = moved
            self.row_of[moved] = row
        self.ids.pop()
        return True

    def take(self, keys: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.int64]]:
        """Return copies of the vectors ``(len(keys), dim)`` and sequence numbers of ``keys``."""
        rows = np.fromiter((self.row_of[e] for e in keys), np.intp, count=len(keys))
        return self._vectors[rows], self._seq[rows]

    def oldest(self, count: int, *, max_seq: int | None = None) -> list[EntityId]:
        """Up to ``count`` ids with the smallest sequence numbers (ties: lower row first).

        Parameters
        ----------
        count
            How many ids at most.
        max_seq
            Only consider rows written at or before this sequence number.
        """
        n = len(self.ids)
        if n == 0 or count <= 0:
            return []
        seqs = self._seq[:n]
        rows = np.arange(n) if max_seq is None else np.flatnonzero(seqs <= max_seq)
        if count < rows.size:
            part = np.argpartition(seqs[rows], count - 1)[:count]
            rows = rows[part]
        order = np.lexsort((rows, seqs[rows]))
        return [self.ids[r] for r in rows[order].tolist()]

    def min_seq(self) -> int | None:
        """Return the smallest sequence number buffered, or None when empty."""
        return int(self._seq[: len(self.ids)].min()) if self.ids else None

    def scores(self, queries: Matrix) -> npt.NDArray[np.float32]:
        """Cosine scores of unit ``queries`` ``(m, dim)`` against every row: ``(m, len(self))``."""
        return queries @ self._vectors[: len(self.ids)].T

    def compact(self) -> None:
        """Give memory back once the buffer has emptied out (at most 4x what it holds)."""
        n = len(self.ids)
        target = max(self._initial, 2 * n)
        if self._vectors.shape[0] > 4 * target:
            vectors = np.zeros((target, self._dim), np.float32)
            vectors[:n] = self._vectors[:n]
            seqs = np.zeros(target, np.int64)
            seqs[:n] = self._seq[:n]
            self._vectors, self._seq = vectors, seqs

    def check(self) -> None:
        """Assert the id list, the row map and the unit rows agree (tests)."""
        assert len(self.ids) == len(self.row_of)
        assert all(self.row_of[e] == r for r, e in enumerate(self.ids))
        assert len(self.ids) <= self._vectors.shape[0] == self._seq.shape[0]
        if self.ids:
            norms = np.linalg.norm(self._vectors[: len(self.ids)], axis=1)
            assert np.allclose(norms, 1.0, atol=1e-5)
