"""Folds and rebuilds of :class:`~streamer.index.hnsw.HnswIndex` (synchronous or background).

Split out of ``hnsw.py`` as a mixin: :class:`HnswMaintenance` holds the mechanics that
move buffered vectors into the hnswlib graph ("folds") and replace the graph by one
built from the live vectors ("rebuilds"), whichever thread runs them. The policy (when
to fold, when to rebuild, who waits) is described in ``HnswIndex``'s docstring; the
thread is :class:`streamer.index.maintenance.Maintainer`.

Lock discipline: every method suffixed ``_locked`` runs under the index's exclusive
lock; a fold step is one exclusive section (an ``add_items`` of at most one step of
vectors, sized from the measured insert rate to last about ``max_pause_s``). hnswlib's
``add_items`` releases the GIL, so queries of other threads only wait for the lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import hnswlib
import numpy as np
import numpy.typing as npt

from streamer.index.base import grow_capacity
from streamer.index.maintenance import Maintainer
from streamer.types import EntityId, Matrix

if TYPE_CHECKING:
    from streamer.index.delta import DeltaBuffer
    from streamer.index.rwlock import RWLock

log = logging.getLogger("streamer.index.hnsw")

_FOLD_STEP_MIN, _FOLD_STEP_MAX = 8, 4096


def fingerprint_multipliers(dim: int) -> npt.NDArray[np.uint64]:
    """Return fixed random odd 64-bit multipliers, one per component (same in every process)."""
    rng = np.random.default_rng(0x5EED_F00D + dim)
    return rng.integers(1, 2**63, size=dim, dtype=np.uint64) | np.uint64(1)


def fingerprints(unit: Matrix, multipliers: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """64-bit fingerprints of float32 rows ``(n, dim)``: a multiply-add hash of their bits.

    Equal rows always get equal fingerprints, so different fingerprints prove that a
    vector changed without reading it back from hnswlib (whose ``get_items`` costs about
    12 us per id); equal ones are confirmed by an exact comparison. Never 0: the
    fingerprint store uses 0 for "unknown" (e.g. labels loaded from disk).
    """
    words = np.ascontiguousarray(unit, np.float32).view(np.uint32).astype(np.uint64)
    out = (words * multipliers).sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64
    out[out == 0] = 1
    return out


@dataclass(frozen=True, slots=True)
class MaintenanceStats:
    """Counters of an :class:`HnswIndex`'s folds and rebuilds (for metrics and benchmarks).

    Attributes
    ----------
    background
        Whether a maintenance thread is running right now.
    folds, folded
        Fold steps run and vectors they inserted into the graph.
    backpressure_folds
        Upserts that folded synchronously because the delta buffer passed ``delta_cap``.
    rebuilds
        Completed graph rebuilds.
    fold_rate_per_s
        Recent ``add_items`` speed, vectors per wall second (sizes the fold steps).
    error
        ``repr`` of the error that killed the maintenance thread, or None.
    """

    background: bool
    folds: int
    folded: int
    backpressure_folds: int
    rebuilds: int
    fold_rate_per_s: float
    error: str | None


class HnswMaintenance:
    """Fold and rebuild mechanics shared by synchronous and background ``HnswIndex``.

    Notes
    -----
    Relies on the attributes ``HnswIndex.__init__`` sets (annotated below).
    """

    _lock: RWLock
    _graph: hnswlib.Index
    _label_of: dict[EntityId, int]
    _id_of: dict[int, EntityId]
    _next_label: int
    _tombstones: int
    _delta: DeltaBuffer
    _rebuilding: bool
    _dirty: dict[EntityId, int] | None
    _fold_rate: float
    _counts: dict[str, int]
    _fp: npt.NDArray[np.uint64]  # fingerprint per graph label; 0 = unknown
    _fp_mult: npt.NDArray[np.uint64]
    _maint: Maintainer | None
    _background: bool  # a property of HnswIndex: the thread is running
    delta_max: int
    delta_cap: int
    max_pause_s: float
    num_threads: int
    initial_capacity: int
    rebuild_chunk: int

    def _new_graph(self, capacity: int) -> hnswlib.Index:
        raise NotImplementedError

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until background maintenance has nothing left to do; True at once otherwise.

        "Nothing to do" means: at most ``delta_max`` vectors buffered, no rebuild due
        or requested, no :meth:`fold` pending. Concurrent writers can make it wait for
        ever: pass ``timeout`` (wall seconds).

        Returns
        -------
        bool
            False if ``timeout`` ran out first.

        Raises
        ------
        StateError
            The maintenance thread died on an error.
        """
        return self._maint.wait_idle(timeout) if self._maint is not None else True

    def close(self) -> None:
        """Stop the maintenance thread (abandoning a rebuild in progress); idempotent.

        The index stays usable and from then on maintains itself synchronously.
        """
        if self._maint is not None:
            self._maint.stop()

    def maintenance_stats(self) -> MaintenanceStats:
        """Return the fold, backpressure and rebuild counters and the thread's state."""
        maint = self._maint
        with self._lock.read():
            return MaintenanceStats(
                background=self._background,
                folds=self._counts["folds"],
                folded=self._counts["folded"],
                backpressure_folds=self._counts["backpressure_folds"],
                rebuilds=self._counts["rebuilds"],
                fold_rate_per_s=round(self._fold_rate, 1),
                error=None if maint is None or maint.error is None else repr(maint.error),
            )

    # ------------------------------------------------------------------ internals

    def _unchanged_locked(
        self, keys: list[EntityId], unit: Matrix, in_graph: list[int]
    ) -> list[int]:
        """Return the positions in ``in_graph`` whose graph copy is exactly the new vector.

        Fingerprints rule out most changed vectors without reading them back; the rest
        (equal or unknown fingerprints) are compared exactly with hnswlib's copy.
        """
        labels = np.fromiter((self._label_of[keys[j]] for j in in_graph), np.intp,
                             count=len(in_graph))
        stored = self._fp[labels]
        maybe = (stored == 0) | (stored == fingerprints(unit[in_graph], self._fp_mult))
        if not maybe.any():
            return []
        check = [j for j, m in zip(in_graph, maybe.tolist(), strict=True) if m]
        copies = np.asarray(self._graph.get_items(labels[maybe], return_type="numpy"))
        same = np.all(copies == unit[check], axis=1)
        return [j for j, s in zip(check, same.tolist(), strict=True) if s]

    def _backpressure(self) -> None:
        """Fold the oldest buffered vectors, in steps, until at most ``delta_cap`` remain."""
        first = True
        while True:
            with self._lock.write():
                over = len(self._delta) - self.delta_cap
                if over <= 0:
                    return
                if first:
                    self._counts["backpressure_folds"] += 1
                    n = self._counts["backpressure_folds"]
                    if n & (n - 1) == 0:  # 1, 2, 4, ...
                        log.warning(
                            'hnsw delta over its cap: folding in the caller delta=%d cap=%d '
                            'backpressure_folds=%d hint="%s"', len(self._delta),
                            self.delta_cap, n, "raise delta_max/delta_cap or lower the "
                            "update rate; a lower ef_construction inserts faster")
                    first = False
                self._fold_locked(self._delta.oldest(min(over, self._step_size())))
            time.sleep(0.0005)  # let waiting queries in between steps

    def _step_size(self) -> int:
        step = int(self._fold_rate * self.max_pause_s)
        return min(_FOLD_STEP_MAX, max(_FOLD_STEP_MIN, step))

    def _maintain_once(self, maint: Maintainer) -> bool:
        """Do one unit of background work (called by the maintenance thread).

        Priority: a pending :meth:`fold` drain, then a due rebuild (which folds overflow
        itself between its chunks, so a stream that keeps the buffer overflowing cannot
        starve it), then one overflow fold step.
        """
        if maint.drain_target > maint.drained and self._fold_step(maint, rebuilding=False):
            return True
        if maint.rebuild_requested() or self._needs_rebuild():
            self._rebuild(maint)
            return True
        return self._fold_step(maint, rebuilding=False)

    def _fold_step(self, maint: Maintainer, *, rebuilding: bool) -> bool:
        """Fold one step: the oldest vectors of a pending drain, else the overflow."""
        target = maint.drain_target
        drain = not rebuilding and target > maint.drained
        drained = False
        with self._lock.write():
            keys = self._delta.oldest(self._step_size(), max_seq=target) if drain else []
            drained = drain and not keys
            if not keys:
                over = len(self._delta) - self.delta_max
                if over > 0:
                    keys = self._delta.oldest(min(over, self._step_size()))
            self._fold_locked(keys)
        if drained:
            maint.mark_drained(target)
        return drained or bool(keys)

    def _drop_from_graph_locked(self, entity: EntityId) -> None:
        label = self._label_of.pop(entity, None)
        if label is None:
            return
        del self._id_of[label]
        self._graph.mark_deleted(label)
        self._tombstones += 1
        if self._dirty is not None:
            self._dirty.setdefault(entity, 0)

    def _fold_locked(self, keys: list[EntityId]) -> None:
        """Insert the buffered vectors of ``keys`` into the graph under fresh labels."""
        n = len(keys)
        if n == 0:
            return
        vectors, seqs = self._delta.take(keys)
        capacity = self._graph.get_max_elements()
        needed = self._graph.element_count + n  # tombstones still hold slots
        if needed > capacity:
            self._graph.resize_index(grow_capacity(capacity, needed))
        labels = np.arange(self._next_label, self._next_label + n, dtype=np.uint64)
        start = time.perf_counter()
        self._graph.add_items(vectors, labels, num_threads=self.num_threads)
        self._note_rate(n, time.perf_counter() - start)
        self._set_fingerprints(labels, fingerprints(vectors, self._fp_mult))
        for entity, label in zip(keys, labels.tolist(), strict=True):
            self._label_of[entity] = label
            self._id_of[label] = entity
            self._delta.remove(entity)
        if self._dirty is not None:  # folded into a graph that a rebuild will replace
            self._dirty.update(zip(keys, seqs.tolist(), strict=True))
        self._next_label += n
        self._counts["folds"] += 1
        self._counts["folded"] += n
        self._delta.compact()

    def _set_fingerprints(
        self, labels: npt.NDArray[np.uint64], fps: npt.NDArray[np.uint64]
    ) -> None:
        needed = int(labels.max()) + 1 if labels.size else 0
        if needed > self._fp.shape[0]:
            grown = np.zeros(grow_capacity(self._fp.shape[0], needed), np.uint64)
            grown[: self._fp.shape[0]] = self._fp
            self._fp = grown
        self._fp[labels] = fps

    def _note_rate(self, n: int, seconds: float) -> None:
        if n >= _FOLD_STEP_MIN and seconds > 0:
            self._fold_rate = 0.7 * self._fold_rate + 0.3 * (n / seconds)

    def _needs_rebuild_locked(self) -> bool:
        if self.tombstone_ratio is None or self._rebuilding:
            return False
        used = self._graph.element_count
        return used > 0 and self._tombstones > self.tombstone_ratio * used

    def _needs_rebuild(self) -> bool:
        with self._lock.read():
            return self._needs_rebuild_locked()

    def _rebuild(self, maint: Maintainer | None) -> None:
        """Rebuild the graph; ``maint`` is the maintenance thread when called from it.

        1. Under the exclusive lock: set ``_rebuilding`` and start ``_dirty`` (ids whose
           graph copy changes from now on: dropped, or folded into the old graph).
        2. In chunks: copy the live vectors of ids not yet dirty out under the shared
           lock, insert them into the new graph without any lock (in the maintenance
           thread, fold overflow into the old graph between chunks).
        3. Under the exclusive lock: tombstone dirty ids in the new graph, move dirty
           ids that now live in the old graph back to the buffer, swap.
        """
        ticket = maint.rebuild_ticket() if maint is not None else 0
        with self._lock.write():
            if self._rebuilding:
                return
            self._rebuilding = True
            self._dirty = {}
            ids = list(self._label_of)
            labels = np.fromiter(self._label_of.values(), np.uint64, count=len(ids))
        started = time.perf_counter()
        try:
            n = len(ids)
            capacity = max(self.initial_capacity, n + n // 4 + self.delta_max)
            graph = self._new_graph(capacity)
            fps = np.zeros(capacity, np.uint64)
            built: list[EntityId] = []
            for start in range(0, n, self.rebuild_chunk):
                stop = min(n, start + self.rebuild_chunk)
                spent = 0.0
                with self._lock.read():  # blocks writers for ~12 us per vector copied
                    dirty = self._dirty
                    pick = [j for j in range(start, stop) if ids[j] not in dirty]
                    if pick:
                        vectors = np.asarray(
                            self._graph.get_items(labels[pick], return_type="numpy"))
                if pick:
                    step = time.perf_counter()
                    new_labels = np.arange(len(built), len(built) + len(pick), dtype=np.uint64)
                    graph.add_items(vectors, new_labels, num_threads=self.num_threads)
                    spent = time.perf_counter() - step
                    fps[new_labels] = fingerprints(vectors, self._fp_mult)
                    built.extend(ids[j] for j in pick)
                    del vectors
                if maint is not None:
                    maint.check_stop()
                    self._fold_while_rebuilding(maint, budget_s=spent)
            label_of = dict(zip(built, range(len(built)), strict=True))  # outside the lock
            id_of = dict(enumerate(built))
            with self._lock.write():
                self._swap_locked(graph, fps, label_of, id_of)
                if maint is None and len(self._delta) >= self.delta_max:
                    self._fold_locked(list(self._delta.ids))
        except BaseException:
            with self._lock.write():
                self._rebuilding = False
                self._dirty = None
            raise
        if maint is not None:
            maint.mark_rebuilt(ticket)
        log.info("hnsw graph rebuilt live=%d seconds=%.2f", len(built),
                 time.perf_counter() - started)

    def _fold_while_rebuilding(self, maint: Maintainer, budget_s: float) -> None:
        """Fold overflow into the old graph for about ``budget_s`` (half the thread's time)."""
        deadline = time.perf_counter() + budget_s
        while self._fold_step(maint, rebuilding=True):
            maint.check_stop()
            if time.perf_counter() >= deadline:
                return
            time.sleep(0.001)

    def _swap_locked(
        self,
        graph: hnswlib.Index,
        fps: npt.NDArray[np.uint64],
        label_of: dict[EntityId, int],
        id_of: dict[int, EntityId],
    ) -> None:
        dirty = self._dirty or {}
        tombstones = 0
        back: list[EntityId] = []
        for entity in dirty:
            label = label_of.pop(entity, None)
            if label is not None:  # its copy in the new graph is stale or deleted
                del id_of[label]
                graph.mark_deleted(label)
                tombstones += 1
            if entity in self._label_of:  # folded into the old graph during the build
                back.append(entity)
        if back:
            old = np.asarray(self._graph.get_items([self._label_of[e] for e in back],
                                                   return_type="numpy"))
            self._delta.put(back, old, np.array([dirty[e] for e in back], np.int64))
        self._next_label = len(id_of) + tombstones
        self._graph, self._fp = graph, fps
        self._label_of, self._id_of = label_of, id_of
        self._tombstones = tombstones
        self._rebuilding = False
        self._dirty = None
        self._counts["rebuilds"] += 1
