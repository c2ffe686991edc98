"""What a reader replica serves for one embedding type: vectors by id and a live index.

Shared by ``streamer serve`` (fed by tailing ``embeddings.<type>.v<n>``) and
``streamer demo`` (fed by the in-process engine). Thread-safe: one writer thread
applies updates while HTTP handlers read.

Freshness (TTL, event time): with ``ttl_s`` set, an id is **expired** when the type's
watermark (the latest ``updated_at`` applied, event seconds) is more than ``ttl_s``
past the id's ``updated_at``. A batch get reports each id as ``fresh``, ``expired`` or
``missing`` and withholds an expired vector unless asked; neighbour results flag
expired ids and can leave them out. Reads as of a snapshot judge expiry against the
snapshot's own watermark.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from streamer.errors import BadRequest, DimensionMismatch, InvalidVector, UnknownEntity
from streamer.index.base import VectorIndex
from streamer.serve.snapshots import (
    OpenSnapshot,
    SnapshotCache,
    UnknownSnapshot,
    parse_snapshot_id,
)
from streamer.snapshot import SnapshotStore
from streamer.store.base import FeatureRecord
from streamer.types import ITEM_PREFIX, USER_PREFIX, Vector, entity_kind

__all__ = ["MAX_IDS", "MAX_ID_LEN", "MAX_K", "Neighbour", "ServedType", "Status",
           "check_entity_id", "check_ids", "check_k", "check_kind", "is_expired"]

#: Most neighbours one query may ask for.
MAX_K = 1000
#: Most ids one batch get may ask for.
MAX_IDS = 1000
#: Longest namespaced id accepted (characters, prefix included).
MAX_ID_LEN = 300
_F32_MAX = float(np.finfo(np.float32).max)
_PREFIXES = frozenset((USER_PREFIX, ITEM_PREFIX))

Status = Literal["fresh", "expired", "missing"]


def check_entity_id(entity: object) -> None:
    """Validate a namespaced id (``u:<user_id>`` or ``i:<item_id>``).

    Raises
    ------
    BadRequest
        Naming what was received and what is expected.
    """
    if not isinstance(entity, str):
        msg = (f"bad id {entity!r:.40} ({type(entity).__name__}): expected a string "
               f"'u:<user_id>' or 'i:<item_id>'")
        raise BadRequest(msg)
    if len(entity) < 3 or len(entity) > MAX_ID_LEN:
        msg = (f"bad id {entity[:40]!r} ({len(entity)} characters): expected 'u:<user_id>' "
               f"or 'i:<item_id>' of 3..{MAX_ID_LEN} characters")
        raise BadRequest(msg)
    try:
        entity_kind(entity)
    except ValueError:
        msg = f"bad id {entity[:40]!r}: expected a 'u:' (user) or 'i:' (item) prefix"
        raise BadRequest(msg) from None


def check_ids(ids: Sequence[object]) -> None:
    """Validate a batch of ids: ``1..MAX_IDS`` of them, each as :func:`check_entity_id`.

    Raises
    ------
    BadRequest
        An empty or too large batch (the message names the limit), or a bad id.
    """
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        msg = f"ids must be a list of ids, got {type(ids).__name__}"
        raise BadRequest(msg)
    if len(ids) > MAX_IDS:
        msg = f"too many ids: {len(ids)}; expected at most {MAX_IDS} per request"
        raise BadRequest(msg)
    if not ids:
        msg = f"no ids given; expected 1..{MAX_IDS} ids"
        raise BadRequest(msg)
    prefixes = _PREFIXES
    for i in ids:  # fast path for the common case; check_entity_id words the error
        if type(i) is not str or not 3 <= len(i) <= MAX_ID_LEN or i[:2] not in prefixes:
            check_entity_id(i)


def check_k(k: object) -> None:
    """Raise BadRequest unless ``k`` is an int with ``1 <= k <= MAX_K``."""
    if isinstance(k, bool) or not isinstance(k, int):
        msg = f"k={k!r:.20} is not an integer; expected 1..{MAX_K}"
        raise BadRequest(msg)
    if not 1 <= k <= MAX_K:
        msg = f"k={k} is out of range; expected 1..{MAX_K}"
        raise BadRequest(msg)


def check_kind(kind: object) -> None:
    """Raise BadRequest unless ``kind`` is ``None``, ``"user"`` or ``"item"``."""
    if kind is not None and kind not in ("user", "item"):
        msg = f"kind={kind!r:.40}; expected 'user' or 'item'"
        raise BadRequest(msg)


class Neighbour(NamedTuple):
    """One neighbour: its id, cosine similarity, and whether its vector is expired."""

    id: str
    score: float
    expired: bool


def is_expired(updated_at: float, watermark: float | None, ttl_s: float | None) -> bool:
    """Return True if ``watermark - updated_at > ttl_s`` (all event seconds).

    No TTL, or no watermark yet (``None``/NaN), means never expired.

    Examples
    --------
    >>> is_expired(100.0, 200.0, 50.0), is_expired(100.0, 150.0, 50.0)
    (True, False)
    """
    if ttl_s is None or watermark is None or watermark != watermark:
        return False
    return watermark - updated_at > ttl_s


@dataclass
class ServedType:
    """Vectors and index of one type/version, as served.

    Attributes
    ----------
    name, version, dim, algorithm, description, params
        Registry metadata.
    index
        A kinded index (users and items) over the served vectors.
    ttl_s
        Time to live of a vector in event seconds (``TopologySpec.ttl_s``); ``None``:
        vectors never expire.
    snapshot_store
        Where this type's snapshots live (:func:`streamer.snapshot.store_for`), for
        reads as of a snapshot; ``None``: this server reads no snapshots.
    last_event_ts
        Watermark: the latest ``updated_at`` applied (event seconds; NaN before any).
    caught_up
        Set by the feeder once it has applied everything there was at start.

    Notes
    -----
    Thread safety: :meth:`apply` calls are serialised by a writer lock; the id ->
    record map and the watermark change together under a short lock that readers take,
    so a read never waits for an index insertion.
    """

    name: str
    version: int
    dim: int
    index: VectorIndex
    algorithm: str = ""
    description: str = ""
    params: dict[str, object] = field(default_factory=dict)
    ttl_s: float | None = None
    snapshot_store: SnapshotStore | None = None
    _records: dict[str, FeatureRecord] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    last_event_ts: float = float("nan")
    last_applied_wall_s: float = float("nan")
    caught_up: bool = False

    def __post_init__(self) -> None:
        self._snapshots = (None if self.snapshot_store is None
                           else SnapshotCache(self.snapshot_store, self.dim))

    # -- writing ---------------------------------------------------------------------
    def apply(self, ids: Sequence[str], records: Sequence[FeatureRecord | None]) -> None:
        """Upsert (or delete, for ``None``) vectors; visible to the next query at once.

        Parameters
        ----------
        ids
            Namespaced ids; the last record of an id repeated in one call wins.
        records
            One per id: the new record (vector shape ``(dim,)`` float32), or ``None`` to
            delete the id.

        Notes
        -----
        The watermark rises to the newest ``updated_at`` applied (never falls), so
        expiry moves with event time only. The index is updated before the id map,
        outside the readers' lock: a read never waits for an index insertion.
        """
        ups = [(i, r) for i, r in zip(ids, records, strict=True) if r is not None]
        gone = [i for i, r in zip(ids, records, strict=True) if r is None]
        latest = dict(ups)  # last write per id wins within one call
        with self._write_lock:
            if gone:
                self.index.delete(gone)
            if latest:
                keys = list(latest)
                self.index.upsert(keys, np.stack([latest[k].vector for k in keys]))
            with self._lock:
                for i in gone:
                    self._records.pop(i, None)
                if latest:
                    self._records.update(latest)
                    ts = max(r.updated_at for r in latest.values())
                    if not ts <= self.last_event_ts:  # NaN-safe max
                        self.last_event_ts = ts
                self.last_applied_wall_s = time.time()

    # -- reading ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    @property
    def watermark(self) -> float | None:
        """The live watermark (event seconds), or None before any vector was applied."""
        wm = self.last_event_ts
        return None if wm != wm else wm

    def get_many(self, ids: Sequence[str]) -> list[FeatureRecord | None]:
        """Return the live record of each id (``None`` where unknown), expired or not.

        Raises
        ------
        BadRequest
            An empty or too large batch, or a malformed id.
        """
        check_ids(ids)
        with self._lock:
            return [self._records.get(i) for i in ids]

    def read(self, ids: Sequence[str], *, snapshot: object = None,
             include_expired: bool = False) -> dict[str, Any]:
        """Batch get with freshness: the answer of ``/v1/types/{type}/embeddings``.

        Parameters
        ----------
        ids
            ``1..MAX_IDS`` namespaced ids (repeats allowed, answered in order).
        snapshot
            ``None``: the live vectors. Else a snapshot id (positive int or digit
            string): the vectors as of that snapshot, expiry judged against its own
            watermark (``event_time`` in its manifest).
        include_expired
            Also return the vector of an expired id (it is still marked expired).

        Returns
        -------
        dict
            ``{"type", "version", "ttl_s", "watermark", "snapshot", "items"}``;
            ``snapshot`` is ``None`` or ``{"id", "event_time", "created_at"}``; each item
            is ``{"id", "status", "found", "expired", "vector", "updated_at",
            "update_count", "model_version"}`` with ``status`` one of ``"fresh"``,
            ``"expired"``, ``"missing"``. A vector is a read-only float32 array of shape
            ``(dim,)`` or ``None`` (missing, or expired and not asked for): serialise
            with ``orjson.OPT_SERIALIZE_NUMPY``.

        Raises
        ------
        BadRequest
            Bad ids or a snapshot id that is not a positive integer.
        UnknownSnapshot
            No such snapshot (or no snapshot store); the message lists what exists.
        StateError
            The snapshot's files are unreadable or inconsistent.
        """
        check_ids(ids)
        if snapshot is None:
            with self._lock:
                recs = [self._records.get(i) for i in ids]
                wm = self.watermark
            items = [self._live_item(e, r, wm, include_expired) for e, r in zip(ids, recs,
                                                                                 strict=True)]
            snap_json = None
        else:
            snap = self._open_snapshot(snapshot)
            wm = snap.event_time
            items = self._snapshot_items(snap, ids, include_expired)
            snap_json = {"id": snap.id, "event_time": wm,
                         "created_at": snap.snapshot.manifest.get("created_at")}
        return {"type": self.name, "version": self.version, "ttl_s": self.ttl_s,
                "watermark": wm, "snapshot": snap_json, "items": items}

    def _live_item(self, entity: str, rec: FeatureRecord | None, wm: float | None,
                   include_expired: bool) -> dict[str, Any]:
        if rec is None:
            return _missing(entity)
        expired = is_expired(rec.updated_at, wm, self.ttl_s)
        return {"id": entity, "status": "expired" if expired else "fresh", "found": True,
                "expired": expired,
                "vector": rec.vector if include_expired or not expired else None,
                "updated_at": rec.updated_at, "update_count": rec.update_count,
                "model_version": rec.model_version}

    def _snapshot_items(self, snap: OpenSnapshot, ids: Sequence[str],
                        include_expired: bool) -> list[dict[str, Any]]:
        rows = snap.lookup(ids)
        hit = rows >= 0
        found_rows = rows[hit]
        # one gather from the memory map; np.asarray drops the memmap subclass (orjson)
        block = np.asarray(snap.vectors[found_rows])
        block.flags.writeable = False
        stamps = snap.updated_at[found_rows].tolist()
        counts = snap.update_count[found_rows].tolist()
        wm = snap.event_time
        out: list[dict[str, Any]] = []
        j = 0
        for entity, present in zip(ids, hit.tolist(), strict=True):
            if not present:
                out.append(_missing(entity))
                continue
            expired = is_expired(stamps[j], wm, self.ttl_s)
            out.append({"id": entity, "status": "expired" if expired else "fresh",
                        "found": True, "expired": expired,
                        "vector": block[j] if include_expired or not expired else None,
                        "updated_at": stamps[j], "update_count": counts[j],
                        "model_version": snap.model_version})
            j += 1
        return out

    def _open_snapshot(self, snapshot: object) -> OpenSnapshot:
        if self._snapshots is None:
            sid = parse_snapshot_id(snapshot)  # a bad id is still a 400
            msg = (f"type {self.name}.v{self.version} has no snapshots on this server; no "
                   f"snapshot {sid} to read")
            raise UnknownSnapshot(msg)
        return self._snapshots.open(snapshot)

    def snapshots(self) -> list[dict[str, Any]]:
        """Return the type's snapshots, oldest first (empty if it has no store).

        Each is ``{"id", "event_time", "events_applied", "created_at", "entities",
        "trigger"}`` (:func:`streamer.serve.snapshots.snapshot_summary`).
        """
        return [] if self._snapshots is None else self._snapshots.list()

    def neighbours_by_id(
        self, entity: str, k: int, kind: Literal["user", "item"] | None = None, *,
        fresh_only: bool = False,
    ) -> list[Neighbour]:
        """Return up to ``k`` nearest ids of ``entity`` (itself excluded), cosine similarity.

        Parameters
        ----------
        entity, k, kind
            The query id, neighbours wanted (``1..MAX_K``), and ``"user"``/``"item"``
            to search one kind only (``None``: both).
        fresh_only
            Leave expired neighbours out; the index is searched deeper so that ``k``
            fresh neighbours come back whenever the type has that many.

        Raises
        ------
        BadRequest
            Malformed id, k out of range or an unknown kind.
        UnknownEntity
            The id has no vector in this type.
        """
        check_entity_id(entity)
        check_k(k)
        check_kind(kind)
        with self._lock:
            rec = self._records.get(entity)
        if rec is None:
            msg = f"{entity!r} has no vector in type {self.name!r} v{self.version}"
            raise UnknownEntity(msg)
        return self._knn(rec.vector, k, kind, (entity,), fresh_only)

    def neighbours_by_vector(
        self, vector: Sequence[float] | Vector, k: int,
        kind: Literal["user", "item"] | None = None, *, fresh_only: bool = False,
    ) -> list[Neighbour]:
        """Return up to ``k`` nearest ids of a query vector (shape ``(dim,)``).

        Raises
        ------
        BadRequest
            k out of range or an unknown kind.
        DimensionMismatch
            The vector's length is not ``dim`` (the message names both).
        InvalidVector
            NaN/inf values, values beyond float32, or an all-zero vector.
        """
        check_k(k)
        check_kind(kind)
        try:
            v64 = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            msg = f"vector must be a list of {self.dim} numbers: {exc}"
            raise InvalidVector(msg) from None
        if v64.ndim != 1 or v64.shape[0] != self.dim:
            got = f"{v64.shape[0]} dimensions" if v64.ndim == 1 else f"shape {v64.shape}"
            msg = f"vector has {got}; type {self.name!r} expects {self.dim}"
            raise DimensionMismatch(msg)
        if not np.all(np.isfinite(v64)) or float(np.max(np.abs(v64))) > _F32_MAX:
            msg = "vector has NaN/inf values (or values beyond float32); expected finite numbers"
            raise InvalidVector(msg)
        if not np.any(v64):
            msg = "vector is all zeros; expected a non-zero vector (cosine needs a norm)"
            raise InvalidVector(msg)
        return self._knn(v64.astype(np.float32), k, kind, (), fresh_only)

    def _knn(self, v: Vector, k: int, kind: str | None, exclude: tuple[str, ...],
             fresh_only: bool) -> list[Neighbour]:
        n = len(self._records)
        if n == 0:
            return []
        filtering = fresh_only and self.ttl_s is not None
        want = min(n, 2 * k + 8) if filtering else k
        while True:
            res = self.index.knn(v, want, kind=kind, exclude=exclude)  # type: ignore[call-arg]
            with self._lock:
                wm = self.watermark
                recs = [self._records.get(i) for i, _ in res]
            flagged = [Neighbour(i, float(s), is_expired(r.updated_at, wm, self.ttl_s))
                       for (i, s), r in zip(res, recs, strict=True)
                       if r is not None]  # deleted since the search
            if not filtering:
                return flagged[:k]
            fresh = [x for x in flagged if not x.expired]
            if len(fresh) >= k or len(res) < want or want >= n:
                return fresh[:k]
            want = min(n, 4 * want)

    def describe(self) -> dict[str, object]:
        """Return JSON-able registry metadata with freshness (``ttl_s`` in event seconds)."""
        return {
            "name": self.name, "version": self.version, "dim": self.dim,
            "algorithm": self.algorithm, "params": self.params,
            "description": self.description, "entities": len(self._records),
            "last_event_ts": self.watermark, "ttl_s": self.ttl_s,
            "caught_up": self.caught_up,
        }


def _missing(entity: str) -> dict[str, Any]:
    return {"id": entity, "status": "missing", "found": False, "expired": False,
            "vector": None, "updated_at": None, "update_count": None, "model_version": None}
