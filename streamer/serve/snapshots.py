"""Reads as of a snapshot: memory-mapped snapshot folders, opened lazily and kept in an LRU.

A serve process answers ``GET/POST /v1/types/{type}/embeddings?snapshot=<id>`` from the
snapshot folders the worker (or ``streamer snapshot``) wrote under
:func:`streamer.snapshot.store_for` (layout in :mod:`streamer.snapshot`). Opening a
snapshot reads its ``ids.json`` (building an id -> row map), its two small metadata
columns, and memory-maps ``vectors.npy`` (``np.load(mmap_mode="r")``), so only the rows
asked for are paged in. A small LRU keeps the last few open snapshots.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, ConfigError, StateError, StreamerError
from streamer.snapshot import Snapshot, SnapshotStore

__all__ = ["OpenSnapshot", "SnapshotCache", "UnknownSnapshot", "parse_snapshot_id"]

#: Longest accepted snapshot id (digits); ids are zero-padded sequence numbers.
MAX_SNAPSHOT_DIGITS = 18


class UnknownSnapshot(StreamerError, KeyError):
    """A snapshot id that the type has not (or no longer) got on disk."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def parse_snapshot_id(value: object) -> str:
    """Normalise a snapshot id given as a positive int or a string of digits.

    Parameters
    ----------
    value
        ``3``, ``"3"`` or ``"000003"`` (bools, floats, signs and spaces refused).

    Returns
    -------
    str
        The on-disk id, zero-padded to 6 digits (``"000003"``).

    Raises
    ------
    BadRequest
        If ``value`` is not a positive integer.

    Examples
    --------
    >>> parse_snapshot_id(3), parse_snapshot_id("000012")
    ('000003', '000012')
    """
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif (isinstance(value, str) and 0 < len(value) <= MAX_SNAPSHOT_DIGITS
          and value.isascii() and value.isdigit()):
        n = int(value)
    if n is None or not 1 <= n < 10 ** MAX_SNAPSHOT_DIGITS:
        msg = (f"snapshot={str(value)[:40]!r} is not a snapshot id; expected a positive "
               "integer such as 3 or '000003' (see GET /v1/types/<type>/snapshots)")
        raise BadRequest(msg)
    return f"{n:06d}"


def snapshot_summary(snap: Snapshot) -> dict[str, Any]:
    """Return the JSON-able summary of one snapshot (from its manifest).

    Parameters
    ----------
    snap
        A snapshot listed by :meth:`streamer.snapshot.SnapshotStore.list`.

    Returns
    -------
    dict
        Keys: ``id``, ``event_time`` (event seconds of the newest row, or None if empty),
    ``events_applied``, ``created_at`` (wall seconds, or None), ``entities``,
    ``trigger``.
    """
    m = snap.manifest
    return {"id": snap.id, "event_time": m.get("event_time"),
            "events_applied": m.get("events_applied"), "created_at": m.get("created_at"),
            "entities": m.get("n_entities"), "trigger": m.get("trigger")}


@dataclass(frozen=True)
class OpenSnapshot:
    """One snapshot, opened for reads by id.

    Attributes
    ----------
    snapshot
        The folder and its manifest.
    rows
        Namespaced id -> row number.
    vectors
        Shape ``(n, dim)`` float32, memory-mapped read-only.
    updated_at
        Shape ``(n,)`` float64, event seconds of each row's last update.
    update_count
        Shape ``(n,)`` int64.
    model_version
        The type version that wrote the snapshot (from the manifest).
    """

    snapshot: Snapshot
    rows: dict[str, int]
    vectors: npt.NDArray[np.float32]
    updated_at: npt.NDArray[np.float64]
    update_count: npt.NDArray[np.int64]
    model_version: int

    @property
    def id(self) -> str:
        """The snapshot id (zero-padded sequence number)."""
        return self.snapshot.id

    @property
    def event_time(self) -> float | None:
        """The snapshot's watermark: event seconds of its newest row (None if empty)."""
        v = self.snapshot.manifest.get("event_time")
        return None if v is None else float(v)

    @classmethod
    def open(cls, snap: Snapshot, dim: int) -> OpenSnapshot:
        """Open ``snap``'s files (vectors memory-mapped read-only).

        Parameters
        ----------
        snap
            The snapshot folder and manifest.
        dim
            The dimension the served type expects.

        Raises
        ------
        StateError
            A file is missing or unreadable, the files disagree in length, or the
            vectors' dimension is not ``dim``.
        """
        try:
            ids = json.loads((snap.path / "ids.json").read_text(encoding="utf-8"))
            vectors = np.load(snap.path / "vectors.npy", mmap_mode="r", allow_pickle=False)
            updated_at, update_count = snap.columns()
        except (OSError, ValueError) as exc:
            msg = f"snapshot {snap.path} is unreadable: {exc}"
            raise StateError(msg) from exc
        n = len(ids)
        if (vectors.ndim != 2 or vectors.dtype != np.float32 or vectors.shape[0] != n
                or updated_at.shape != (n,) or update_count.shape != (n,)):
            msg = (f"snapshot {snap.path} is inconsistent: {n} ids, vectors {vectors.dtype} "
                   f"{vectors.shape}, updated_at {updated_at.shape}, "
                   f"update_count {update_count.shape}")
            raise StateError(msg)
        if n and vectors.shape[1] != dim:
            msg = (f"snapshot {snap.path} holds vectors of dim {vectors.shape[1]}, but the "
                   f"served type has dim {dim}")
            raise StateError(msg)
        version = snap.manifest.get("version", 0)
        return cls(snapshot=snap, rows={e: j for j, e in enumerate(ids)}, vectors=vectors,
                   updated_at=updated_at.astype(np.float64, copy=False),
                   update_count=update_count.astype(np.int64, copy=False),
                   model_version=int(version) if isinstance(version, int) else 0)

    def lookup(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Return the row of each id, ``-1`` where the snapshot has none (shape ``(len(ids),)``)."""
        get = self.rows.get
        return np.fromiter((get(e, -1) for e in ids), dtype=np.int64, count=len(ids))


class SnapshotCache:
    """Opens a type's snapshots on demand and keeps the last ``capacity`` open (LRU).

    Parameters
    ----------
    store
        Where the type's snapshots live.
    dim
        The served dimension (a snapshot of another dimension is refused).
    capacity
        Open snapshots kept (memory maps and id maps), ``>= 1``.

    Notes
    -----
    Thread-safe: the LRU is guarded by a lock; a snapshot is opened outside it (two
    threads may open the same one at once; the first to finish is kept). A cached
    snapshot whose folder was pruned is dropped at its next request (404), although
    open memory maps stay readable.
    """

    def __init__(self, store: SnapshotStore, dim: int, *, capacity: int = 4) -> None:
        if capacity < 1:
            msg = f"snapshot cache capacity must be >= 1, got {capacity}"
            raise ConfigError(msg)
        self.store = store
        self.dim = dim
        self.capacity = capacity
        self._open: OrderedDict[str, OpenSnapshot] = OrderedDict()
        self._lock = threading.Lock()

    def list(self) -> list[dict[str, Any]]:
        """Return the summaries (:func:`snapshot_summary`) of every snapshot, oldest first."""
        return [snapshot_summary(s) for s in self.store.list()]

    def open(self, snapshot: object) -> OpenSnapshot:
        """Return snapshot ``snapshot`` (an int or digit string), opening it if needed.

        Raises
        ------
        BadRequest
            ``snapshot`` is not a positive integer.
        UnknownSnapshot
            No such snapshot on disk (the message lists the ids there are).
        StateError
            Its files are unreadable or inconsistent.
        """
        sid = parse_snapshot_id(snapshot)
        folder = self.store.dir / sid
        present = (folder / "manifest.json").is_file()
        with self._lock:
            hit = self._open.get(sid)
            if hit is not None:
                if present:
                    self._open.move_to_end(sid)
                    return hit
                del self._open[sid]
        if not present:
            raise UnknownSnapshot(self._unknown_message(sid))
        try:
            snap = self.store.get(sid)
        except StreamerError as exc:  # pruned between the check and the read
            raise UnknownSnapshot(self._unknown_message(sid)) from exc
        opened = OpenSnapshot.open(snap, self.dim)
        with self._lock:
            kept = self._open.setdefault(sid, opened)
            self._open.move_to_end(sid)
            while len(self._open) > self.capacity:
                self._open.popitem(last=False)
        return kept

    def cached(self) -> list[str]:
        """Return the ids of the open snapshots, least recently used first."""
        with self._lock:
            return list(self._open)

    def _unknown_message(self, sid: str) -> str:
        have = [s.id for s in self.store.list()]
        name = f"{self.store.spec.name}.v{self.store.spec.version}"
        if not have:
            return f"type {name} has no snapshots; no snapshot {sid} to read"
        shown = ", ".join(have[-20:])
        more = f" (latest 20 of {len(have)})" if len(have) > 20 else ""
        return f"type {name} has no snapshot {sid}; available: {shown}{more}"
