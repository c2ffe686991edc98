"""Snapshots: consistent copies of an embedding type's vectors, with a manifest (DESIGN §7).

A snapshot is a folder ``<root>/<prefix><type>.v<n>/<id>/`` holding

* ``vectors.npy``: shape ``(n, dim)`` float32, one row per entity;
* ``ids.json``: the ``n`` namespaced ids (``u:...``, ``i:...``) in row order (key order);
* ``updated_at.npy``: shape ``(n,)`` float64, event seconds of each row's last update;
* ``update_count.npy``: shape ``(n,)`` int64, events applied to each entity;
* ``manifest.json``: type, version, algorithm, params, fingerprint, the offsets the
  vectors include (``{"topic[partition]": offset}``), ``event_time`` (the latest
  ``updated_at``, event seconds), ``events_applied``, counts, trigger and ``created_at``
  (wall seconds from the injected clock: bookkeeping only, never used for learning).

The vectors and the offsets come from one point in time of the feature table
(:meth:`streamer.store.base.FeatureTable.view`), so a snapshot is exactly the state
after the batch that wrote those offsets. Files are written into a hidden temporary
folder and renamed into place, so a crash never leaves a half snapshot under a valid id.
Snapshot ids are zero-padded sequence numbers (``000001``...), increasing per type.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.bench.embeddings import Embeddings
from streamer.errors import ConfigError, StateError
from streamer.store.base import FeatureRecord, FeatureTable
from streamer.topology import TopologySpec
from streamer.types import Clock, EntityId

__all__ = ["Capture", "Snapshot", "SnapshotStore", "capture", "store_for"]

FORMAT = 1
_ID_RE = re.compile(r"^\d{6,}$")


@dataclass
class Capture:
    """A point-in-time view of a feature table, not yet written (see :func:`capture`).

    Attributes
    ----------
    offsets
        ``{(topic, partition): last applied offset}`` the records include.
    records
        Iterator of ``(id, record)`` in key order, pinned at the capture; consume once.
    events_applied
        Accepted events counted by the engine at the capture (0 if unknown).
    trigger
        Why it was taken: ``"events"``, ``"event_time"``, ``"manual"``, ``"cli"``.
    """

    offsets: dict[tuple[str, int], int]
    records: Iterator[tuple[EntityId, FeatureRecord]]
    events_applied: int = 0
    trigger: str = "manual"


def capture(table: FeatureTable, *, events_applied: int = 0, trigger: str = "manual") -> Capture:
    """Pin the table's current features and offsets (cheap).

    Call it on the writer's thread between commits, then write the capture anywhere
    (another thread) with :meth:`SnapshotStore.write`.
    """
    offsets, records = table.view()
    return Capture(offsets=offsets, records=records, events_applied=events_applied,
                   trigger=trigger)


@dataclass(frozen=True)
class Snapshot:
    """One snapshot on disk.

    Attributes
    ----------
    id
        Zero-padded sequence number.
    path
        Its folder.
    manifest
        The parsed ``manifest.json``.
    """

    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def event_time(self) -> float:
        """Latest ``updated_at`` in the snapshot (event seconds; NaN if empty)."""
        v = self.manifest.get("event_time")
        return float("nan") if v is None else float(v)

    def load(self) -> Embeddings:
        """Read the vectors as :class:`~streamer.bench.embeddings.Embeddings`.

        Raises
        ------
        StateError
            If a file is missing or the files disagree in length.
        """
        try:
            ids = json.loads((self.path / "ids.json").read_text(encoding="utf-8"))
            vectors = np.load(self.path / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            msg = f"snapshot {self.path} is unreadable: {exc}"
            raise StateError(msg) from exc
        if vectors.ndim != 2 or len(ids) != len(vectors):
            msg = (f"snapshot {self.path} is inconsistent: {len(ids)} ids, vectors of "
                   f"shape {vectors.shape}")
            raise StateError(msg)
        return Embeddings(tuple(ids), vectors)

    def columns(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Return ``(updated_at, update_count)``: shape ``(n,)`` float64 event seconds, int64."""
        return (np.load(self.path / "updated_at.npy", allow_pickle=False),
                np.load(self.path / "update_count.npy", allow_pickle=False))


class SnapshotStore:
    """The snapshots of one embedding type/version under a root folder.

    Parameters
    ----------
    root
        Snapshot root (``STREAMER_BENCH__SNAPSHOT_DIR``, default ``<state_dir>/snapshots``).
    spec
        The embedding type.
    path_prefix
        The topic prefix (tenants never share snapshots), as for feature tables.
    clock
        Wall clock for ``created_at`` only.
    """

    def __init__(self, root: Path, spec: TopologySpec, *, path_prefix: str = "",
                 clock: Clock | None = None) -> None:
        self.spec = spec
        self.dir = Path(root) / f"{path_prefix}{spec.state_dirname}"
        self.clock = clock

    # -- reading ---------------------------------------------------------------------
    def list(self) -> list[Snapshot]:
        """Return the complete snapshots, oldest first (hidden temporary folders skipped)."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.iterdir()):
            if p.is_dir() and _ID_RE.match(p.name) and (p / "manifest.json").is_file():
                out.append(self._read(p))
        return out

    def _read(self, path: Path) -> Snapshot:
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"snapshot manifest {path / 'manifest.json'} is unreadable: {exc}"
            raise StateError(msg) from exc
        return Snapshot(id=path.name, path=path, manifest=manifest)

    def get(self, snapshot_id: str | None = None) -> Snapshot:
        """Return snapshot ``snapshot_id`` (``None``/``"latest"``: the newest).

        Raises
        ------
        ConfigError
            If there is no such snapshot (the message lists what exists).
        """
        snaps = self.list()
        if not snaps:
            msg = (f"type {self.spec.name!r} has no snapshots under {self.dir}; take one with "
                   f"`streamer snapshot {self.spec.name}` or let its worker take them on "
                   "schedule (STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS)")
            raise ConfigError(msg)
        if snapshot_id in (None, "latest"):
            return snaps[-1]
        for s in snaps:
            if s.id == snapshot_id:
                return s
        have = ", ".join(s.id for s in snaps[-5:])
        msg = (f"type {self.spec.name!r} has no snapshot {snapshot_id!r}; expected one of the "
               f"{len(snaps)} ids under {self.dir} (latest: {have})")
        raise ConfigError(msg)

    # -- writing ---------------------------------------------------------------------
    def _next_id(self) -> str:
        last = 0
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if _ID_RE.match(p.name):
                    last = max(last, int(p.name))
        return f"{last + 1:06d}"

    def write(self, cap: Capture) -> Snapshot:
        """Write a capture as the next snapshot (atomically: temp folder, then rename).

        Raises
        ------
        StateError
            If the files cannot be written.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        sid = self._next_id()
        tmp = self.dir / f".tmp-{sid}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            ids: list[str] = []
            rows: list[np.ndarray] = []
            stamps: list[float] = []
            counts: list[int] = []
            for entity, rec in cap.records:
                ids.append(entity)
                rows.append(rec.vector)
                stamps.append(rec.updated_at)
                counts.append(rec.update_count)
            dim = int(self.spec.params.get("dim", 0)) or (len(rows[0]) if rows else 0)
            vectors = (np.stack(rows).astype(np.float32, copy=False) if rows
                       else np.zeros((0, dim), np.float32))
            updated = np.asarray(stamps, np.float64)
            np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
            np.save(tmp / "updated_at.npy", updated, allow_pickle=False)
            np.save(tmp / "update_count.npy", np.asarray(counts, np.int64), allow_pickle=False)
            (tmp / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
            n_users = sum(1 for e in ids if e.startswith("u:"))
            manifest = {
                "format": FORMAT, "snapshot": sid, "type": self.spec.name,
                "version": self.spec.version, "algorithm": self.spec.algorithm,
                "params": dict(self.spec.params), "fingerprint": self.spec.fingerprint(),
                "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(cap.offsets.items())},
                "event_time": float(updated.max()) if len(updated) else None,
                "events_applied": cap.events_applied, "n_entities": len(ids),
                "n_users": n_users, "n_items": len(ids) - n_users,
                "dim": int(vectors.shape[1]), "trigger": cap.trigger,
                "created_at": None if self.clock is None else self.clock.now_s(),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True),
                                               encoding="utf-8")
            _fsync_dir(tmp)
            for _attempt in range(100):
                try:
                    # a rename onto an existing (non-empty) snapshot fails: another process
                    # (a CLI snapshot beside the worker) took this id first; take the next
                    os.rename(tmp, self.dir / sid)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    sid = self._next_id()
                    manifest["snapshot"] = sid
                    (tmp / "manifest.json").write_text(
                        json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            else:
                msg = f"could not find a free snapshot id under {self.dir}"
                raise StateError(msg)
            _fsync_dir(self.dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            msg = f"cannot write snapshot {sid} of {self.spec.name!r} under {self.dir}: {exc}"
            raise StateError(msg) from exc
        return self._read(self.dir / sid)

    def prune(self, retain: int) -> list[str]:
        """Delete all but the newest ``retain`` snapshots (and temp folders of dead writers).

        A temp folder ``.tmp-<id>-<pid>`` is left alone while process ``pid`` runs (another
        worker or ``streamer snapshot`` on this machine may be writing it).

        Returns
        -------
        list of str
            The deleted snapshot ids, oldest first.

        Raises
        ------
        ConfigError
            If ``retain < 1``.
        """
        if retain < 1:
            msg = f"snapshot retention must be >= 1, got {retain}"
            raise ConfigError(msg)
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith(".tmp-") and not _writer_alive(p.name):
                    shutil.rmtree(p, ignore_errors=True)
        snaps = self.list()
        gone = snaps[:-retain] if len(snaps) > retain else []
        for s in gone:
            shutil.rmtree(s.path, ignore_errors=True)
        return [s.id for s in gone]


def store_for(settings: Any, spec: TopologySpec, bench: Any = None) -> SnapshotStore:
    """Return the snapshot store of ``spec`` under ``settings`` (worker and CLI alike).

    The root is the type's effective ``snapshot_dir`` (``bench``, default
    ``settings.bench_for(spec.benchmarks)``) or ``<state_dir>/snapshots``; the topic
    prefix keeps tenants apart; ``created_at`` comes from the system clock.
    """
    from streamer.types import SystemClock

    bench = bench if bench is not None else settings.bench_for(dict(spec.benchmarks))
    root = bench.snapshot_dir or settings.state_dir / "snapshots"
    return SnapshotStore(root, spec, path_prefix=settings.topic_prefix, clock=SystemClock())


def _writer_alive(name: str) -> bool:
    """Return True if the process that named temp folder ``.tmp-<id>-<pid>`` still runs."""
    try:
        pid = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    """Flush (fsync) a folder's files and the folder itself (durable rename)."""
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
