"""What a reader replica serves for one embedding type: vectors by id and a live index.

Shared by ``streamer serve`` (fed by tailing ``embeddings.<type>.v<n>``) and
``streamer demo`` (fed by the in-process engine). Thread-safe: one writer thread
applies updates while HTTP handlers read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from streamer.errors import BadRequest, DimensionMismatch, InvalidVector, UnknownEntity
from streamer.index.base import VectorIndex
from streamer.store.base import FeatureRecord
from streamer.types import Vector, entity_kind

MAX_K = 1000
MAX_IDS = 1000
MAX_ID_LEN = 300


def check_entity_id(entity: str) -> None:
    """Validate a namespaced id (``u:<user_id>`` or ``i:<item_id>``).

    Raises
    ------
    BadRequest
        Naming what was received and what is expected.
    """
    if not isinstance(entity, str) or len(entity) < 3 or len(entity) > MAX_ID_LEN:
        msg = (f"bad id {str(entity)[:40]!r}: expected 'u:<user_id>' or 'i:<item_id>' of "
               f"3..{MAX_ID_LEN} characters")
        raise BadRequest(msg)
    try:
        entity_kind(entity)
    except ValueError:
        msg = f"bad id {entity[:40]!r}: expected a 'u:' (user) or 'i:' (item) prefix"
        raise BadRequest(msg) from None


def check_k(k: int) -> None:
    """Raise BadRequest unless ``1 <= k <= MAX_K``."""
    if not 1 <= k <= MAX_K:
        msg = f"k={k} is out of range; expected 1..{MAX_K}"
        raise BadRequest(msg)


@dataclass
class ServedType:
    """Vectors and index of one type/version, as served.

    Attributes
    ----------
    name, version, dim, algorithm, description
        Registry metadata.
    index
        A kinded index (users and items) over the served vectors.
    """

    name: str
    version: int
    dim: int
    index: VectorIndex
    algorithm: str = ""
    description: str = ""
    params: dict[str, object] = field(default_factory=dict)
    _records: dict[str, FeatureRecord] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    last_event_ts: float = float("nan")
    last_applied_wall_s: float = float("nan")
    caught_up: bool = False

    def apply(self, ids: Sequence[str], records: Sequence[FeatureRecord | None]) -> None:
        """Upsert (or delete, for ``None``) vectors; visible to the next query at once."""
        ups = [(i, r) for i, r in zip(ids, records, strict=True) if r is not None]
        gone = [i for i, r in zip(ids, records, strict=True) if r is None]
        with self._lock:
            if gone:
                self.index.delete(gone)
                for i in gone:
                    self._records.pop(i, None)
            if ups:
                # last write per id wins within one call
                latest = dict(ups)
                keys = list(latest)
                self.index.upsert(keys, np.stack([latest[k].vector for k in keys]))
                self._records.update(latest)
                ts = max(r.updated_at for r in latest.values())
                if not ts <= self.last_event_ts:  # NaN-safe max
                    self.last_event_ts = ts
            self.last_applied_wall_s = time.time()

    def __len__(self) -> int:
        return len(self._records)

    def get_many(self, ids: Sequence[str]) -> list[FeatureRecord | None]:
        """Return the record of each id (``None`` where unknown).

        Raises
        ------
        BadRequest
            Too many ids, or a malformed id.
        """
        if len(ids) > MAX_IDS:
            msg = f"too many ids: {len(ids)}; expected at most {MAX_IDS} per request"
            raise BadRequest(msg)
        if not ids:
            msg = "no ids given; expected 1..1000 ids"
            raise BadRequest(msg)
        for i in ids:
            check_entity_id(i)
        with self._lock:
            return [self._records.get(i) for i in ids]

    def neighbours_by_id(
        self, entity: str, k: int, kind: Literal["user", "item"] | None = None
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` nearest ids of ``entity`` (itself excluded), cosine similarity.

        Raises
        ------
        BadRequest
            Malformed id or k out of range.
        UnknownEntity
            The id has no vector in this type.
        """
        check_entity_id(entity)
        check_k(k)
        with self._lock:
            rec = self._records.get(entity)
            if rec is None:
                msg = f"{entity!r} has no vector in type {self.name!r} v{self.version}"
                raise UnknownEntity(msg)
            return self._knn(rec.vector, k, kind, exclude=(entity,))

    def neighbours_by_vector(
        self, vector: Sequence[float] | Vector, k: int, kind: Literal["user", "item"] | None = None
    ) -> list[tuple[str, float]]:
        """Return up to ``k`` nearest ids of a query vector (shape ``(dim,)``).

        Raises
        ------
        BadRequest, DimensionMismatch, InvalidVector
            On bad k, wrong dimension or a NaN/inf/zero vector.
        """
        check_k(k)
        v = np.asarray(vector, dtype=np.float32)
        if v.ndim != 1 or v.shape[0] != self.dim:
            msg = f"vector has shape {v.shape}; type {self.name!r} expects ({self.dim},)"
            raise DimensionMismatch(msg)
        if not np.all(np.isfinite(v)) or not np.any(v):
            msg = "vector has NaN/inf values or is all zeros; expected a finite non-zero vector"
            raise InvalidVector(msg)
        with self._lock:
            return self._knn(v, k, kind, exclude=())

    def _knn(self, v: Vector, k: int, kind: str | None, exclude: tuple[str, ...]
             ) -> list[tuple[str, float]]:
        if kind is not None and kind not in ("user", "item"):
            msg = f"kind={kind!r}; expected 'user' or 'item'"
            raise BadRequest(msg)
        if len(self._records) == 0:
            return []
        return self.index.knn(v, k, kind=kind, exclude=exclude)  # type: ignore[call-arg]

    def describe(self) -> dict[str, object]:
        """Return JSON-able registry metadata with freshness."""
        return {
            "name": self.name, "version": self.version, "dim": self.dim,
            "algorithm": self.algorithm, "params": self.params,
            "description": self.description, "entities": len(self._records),
            "last_event_ts": None if self.last_event_ts != self.last_event_ts
            else self.last_event_ts,
            "caught_up": self.caught_up,
        }
