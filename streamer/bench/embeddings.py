"""The vectors a benchmark task reads: ids and one float32 matrix.

A snapshot on disk, a learner trained in-process, or a live feature table can all be
turned into :class:`Embeddings`; tasks never care which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest
from streamer.learn.base import OnlineLearner
from streamer.types import EntityId

__all__ = ["Embeddings"]


@dataclass(frozen=True)
class Embeddings:
    """Namespaced ids (``u:...`` users, ``i:...`` items) and their vectors.

    Attributes
    ----------
    ids
        ``n`` distinct namespaced ids, in row order.
    vectors
        Shape ``(n, dim)`` float32, row ``j`` belongs to ``ids[j]``.

    Raises
    ------
    BadRequest
        If the shapes disagree, ids repeat, or a vector is not finite.
    """

    ids: tuple[EntityId, ...]
    vectors: npt.NDArray[np.float32]
    _row: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vectors, np.float32)
        if v.ndim != 2 or v.shape[0] != len(self.ids):
            msg = f"vectors must have shape ({len(self.ids)}, dim), got {v.shape}"
            raise BadRequest(msg)
        if not np.isfinite(v).all():
            msg = "embeddings contain NaN or infinite values"
            raise BadRequest(msg)
        row = {e: j for j, e in enumerate(self.ids)}
        if len(row) != len(self.ids):
            msg = "embedding ids must be distinct"
            raise BadRequest(msg)
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "_row", row)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: Sequence[EntityId]) -> tuple[npt.NDArray[np.float32],
                                                       npt.NDArray[np.bool_]]:
        """Return the vectors of ``ids`` and which were found.

        Returns
        -------
        tuple
            ``(vectors, found)``: shape ``(len(ids), dim)`` float32 (zero rows for unknown
            ids) and shape ``(len(ids),)`` bool.
        """
        out = np.zeros((len(ids), self.dim), np.float32)
        found = np.zeros(len(ids), np.bool_)
        for j, e in enumerate(ids):
            r = self._row.get(e)
            if r is not None:
                out[j] = self.vectors[r]
                found[j] = True
        return out, found

    def kind(self, prefix: str) -> Embeddings:
        """Return the subset whose ids start with ``prefix`` (``"u:"`` or ``"i:"``)."""
        rows = [j for j, e in enumerate(self.ids) if e.startswith(prefix)]
        return Embeddings(tuple(self.ids[j] for j in rows), self.vectors[rows])

    @classmethod
    def from_learner(cls, learner: OnlineLearner) -> Embeddings:
        """Return every entity a learner publishes (:meth:`OnlineLearner.entity_ids`)."""
        ids = list(learner.entity_ids())
        vecs, found = learner.vectors(ids)
        keep = [j for j in range(len(ids)) if found[j]]
        return cls(tuple(ids[j] for j in keep), np.asarray(vecs)[keep])
