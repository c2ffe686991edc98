"""The processing engine shared by every mode (demo, worker, replay): no faust, no Kafka client.

One :class:`Engine` owns one embedding type/version: decoder, de-duplicator, learner,
feature table, optional live index and dead-letter sink. :meth:`Engine.process` takes a
micro-batch of raw messages (any source) and, in order:

1. skips messages at or below the stored offset of their (topic, partition) (a restart
   re-delivers them; DESIGN §6, CONVENTIONS C9);
2. decodes each message (never raises) and sends rejects - including ``duplicate``
   event ids - to the dead-letter sink with reason and source position;
3. applies the valid events to the learner;
4. hands the changed vectors to ``publish`` (e.g. the compacted
   ``embeddings.<type>.v<n>`` topic) and waits for its ``flush()`` and the dead letters'
   (so neither ever misses a committed batch; a re-applied batch re-sends the same);
5. commits the changed vectors, *all* learner/dedup state changed since the last
   commit, the counters and the last offset per partition in **one** atomic write;
6. updates the live index (visible at once through its delta buffer).

A crash at any point therefore restarts from a state that is exactly the state after
some prefix of whole micro-batches, and the learner's per-partition, per-event
semantics make the end state independent of how batches were cut.

Scale-out (DESIGN §6, issue 6): when the learner is partition-scoped (every state
record belongs to one source partition, e.g. co-occurrence), an optional
:class:`Changelog` receives each batch's changed state records and last offsets, grouped
by partition, *before* the local commit (the runtime writes them to a compacted Kafka
topic in one transaction). When a partition moves to this worker (rebalance after a
crash, or more workers), :meth:`Engine.restore_partitions` replaces the local state of
that partition with the changelog's if it is further ahead, rebuilds the learner and
rewrites every vector in one commit: keyed state moves with its partition.

A fresh type can be warm-started from another type's vectors before it consumes
anything (:func:`warm_start_from`, ``streamer worker --init-from``): one more atomic
commit of vectors and learner state, with no offsets.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from streamer.errors import DimensionMismatch, StateError
from streamer.events.deadletter import DeadLetterSink
from streamer.events.decode import Decoder, Rejected, columns_to_batch
from streamer.events.dedup import Deduplicator
from streamer.index.base import VectorIndex
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.store import quant
from streamer.store.base import (
    FeatureRecord,
    FeatureTable,
    claim_manifest,
    records_from_arrays,
)
from streamer.topology import TopologySpec
from streamer.transfer import (
    INIT_FROM_META_KEY,
    WarmStart,
    check_transfer,
    load_source_vectors,
    table_path,
)
from streamer.types import ITEM_PREFIX, USER_PREFIX, Clock

log = logging.getLogger(__name__)

_LEARNER = b"L/"
_DEDUP = b"D/"
COUNTERS_KEY = _COUNTERS = b"C/counters"
"""State key of the engine's JSON counters (``accepted``, ``rejected``...)."""


class RawMessage(NamedTuple):
    """One message as read from a topic or file, before decoding.

    A named tuple (cheap to build: a backfill makes one per record).

    Attributes
    ----------
    value
        Raw bytes (``None`` for a tombstone / null value).
    topic, partition, offset
        Source position (a file uses its path, partition 0 and the line number).
    key
        Raw key bytes, if any.
    """

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass
class PartitionState:
    """The state of one source partition, as a changelog or the local table holds it.

    Attributes
    ----------
    partition
        Source partition number.
    offsets
        Last applied offset per source topic (``{}`` if nothing was applied).
    records
        Engine state records of this partition (full keys, e.g. ``b"L/r..."``).
    """

    partition: int
    offsets: dict[str, int] = field(default_factory=dict)
    records: dict[bytes, bytes] = field(default_factory=dict)

    def ahead_of(self, other: dict[str, int]) -> bool:
        """Return True if some topic's offset here is past ``other``'s (``{topic: offset}``)."""
        return any(o > other.get(t, -1) for t, o in self.offsets.items())


class Changelog(Protocol):
    """Where a partition-scoped engine mirrors its state (see :mod:`streamer.runtime.changelog`)."""

    def write(self, records: dict[int, dict[bytes, bytes | None]],
              offsets: dict[tuple[str, int], int]) -> None:
        """Durably write one batch, all or nothing.

        ``records`` are the changed state records per partition (``None`` deletes),
        ``offsets`` the last applied offset per (topic, partition).

        Raises
        ------
        Exception
            If the batch could not be written; the engine then does not commit it.
        """


@dataclass
class RestoreResult:
    """What :meth:`Engine.restore_partitions` did.

    Attributes
    ----------
    restored
        Partitions whose local state was replaced by the incoming one.
    kept
        Partitions whose local state was as far or further ahead (left as they were).
    rewritten
        Number of feature records rewritten (vectors recomputed from the new state).
    """

    restored: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    rewritten: int = 0


@dataclass
class BatchResult:
    """What one :meth:`Engine.process` call did."""

    seen: int = 0
    skipped: int = 0
    accepted: int = 0
    rejected: int = 0
    changed: list[str] = field(default_factory=list)
    records: list[FeatureRecord] = field(default_factory=list)


class Engine:
    """Decode -> learn -> commit -> index -> publish for one embedding type.

    Parameters
    ----------
    spec
        The embedding type.
    learner
        A fresh learner of ``spec.algorithm``; its state is loaded from ``table``.
    table
        The type/version's feature table (one writer).
    dead_letters
        Where rejects go.
    index
        Optional live index (user and item vectors), rebuilt from ``table`` on open.
    clock
        Wall clock for the far-future rule only (learning uses event time).
    max_future_s, dedup_window_s
        See :class:`streamer.settings.Settings`.
    publish
        Called with ``(ids, records)`` after each commit (e.g. to send to Kafka).
    before_learn
        Called with ``(learner, batch)`` just before the learner learns each batch of
        accepted events (predict-then-learn scoring: :mod:`streamer.scheduler`); it must
        not change the learner.
    changelog
        Mirror of the per-partition state (scale-out); only used when the learner is
        partition-scoped, written before each local commit.
    learner_factory
        Builds a fresh learner of the same params (for :meth:`restore_partitions`);
        default ``build_learner(spec.algorithm, spec.params)``.

    Raises
    ------
    StateError
        If ``table`` holds state of another type, version or parameters.
    """

    def __init__(
        self,
        spec: TopologySpec,
        *,
        learner: OnlineLearner,
        table: FeatureTable,
        dead_letters: DeadLetterSink,
        clock: Clock,
        index: VectorIndex | None = None,
        max_future_s: float = 86_400.0,
        dedup_window_s: float = 86_400.0,
        publish: Callable[[list[str], list[FeatureRecord]], None] | None = None,
        before_learn: Callable[[OnlineLearner, EventBatch], None] | None = None,
        changelog: Changelog | None = None,
        learner_factory: Callable[[], OnlineLearner] | None = None,
    ) -> None:
        self.spec = spec
        self.changelog = changelog if learner.partition_scoped else None
        self._learner_factory = learner_factory
        self.before_learn = before_learn
        self.learner = learner
        self.table = table
        self.index = index
        self.dead_letters = dead_letters
        self.publish = publish
        self.decoder = Decoder(actions=spec.action_weights, max_future_s=max_future_s, clock=clock)
        self.dedup = Deduplicator(window_s=dedup_window_s)
        self.counters: Counter[str] = Counter()
        self._check_manifest()
        self._offsets = table.offsets()
        self._has_state = False
        self._load_state()
        self._init_from = self._load_init_from()
        if index is not None:
            self._rebuild_index()

    # -- start-up -------------------------------------------------------------------
    def _check_manifest(self) -> None:
        claim_manifest(self.table, {"fingerprint": self.spec.fingerprint(),
                                    **self.spec.manifest()})

    def _load_state(self) -> None:
        learner_recs: list[tuple[bytes, bytes]] = []
        dedup_recs: list[tuple[bytes, bytes]] = []
        for key, value in self.table.iter_state():
            if key.startswith(_LEARNER):
                learner_recs.append((key[len(_LEARNER):], value))
            elif key.startswith(_DEDUP):
                dedup_recs.append((key[len(_DEDUP):], value))
            elif key == _COUNTERS:
                self.counters.update(json.loads(value))
        self._has_state = bool(learner_recs or dedup_recs or self.counters)
        if learner_recs:
            self.learner.load_state_records(learner_recs)
        if dedup_recs:
            self.dedup.load_state_records(dedup_recs)
        self.learner.changed()  # loading is not a change
        log.info('loaded state type="%s" learner_records=%d dedup_records=%d offsets=%s',
                 self.spec.name, len(learner_recs), len(dedup_recs), self._offsets)

    def _load_init_from(self) -> WarmStart | None:
        # the record is written just before the warm start's commit: a fresh table
        # means that commit never happened, so the record does not count
        raw = self.table.get_meta(INIT_FROM_META_KEY)
        if raw is None or self.is_fresh():
            return None
        return WarmStart.from_bytes(raw)

    def is_fresh(self) -> bool:
        """Return True if no batch and no warm start was ever committed to the table.

        That is: no stored offsets and no state record (learner, dedup or counters).
        """
        return not self._offsets and not self._has_state

    @property
    def init_from(self) -> WarmStart | None:
        """Where this type's warm start came from, or ``None`` if it had none."""
        return self._init_from

    def _rebuild_index(self) -> None:
        assert self.index is not None
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        for entity, rec in self.table.iter_features():
            ids.append(entity)
            vecs.append(rec.vector)
            if len(ids) >= 10_000:
                self.index.upsert(ids, np.stack(vecs))
                ids, vecs = [], []
        if ids:
            self.index.upsert(ids, np.stack(vecs))

    # -- the hot path ---------------------------------------------------------------
    def stored_offset(self, topic: str, partition: int) -> int:
        """Return the last applied offset of (topic, partition), or -1 if none."""
        return self._offsets.get((topic, partition), -1)

    def offsets(self) -> dict[tuple[str, int], int]:
        """Return a copy of the last applied offset per (topic, partition)."""
        return dict(self._offsets)

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Apply one micro-batch of raw messages (see the module docstring).

        Messages of one partition must come in offset order; partitions may interleave.
        Never raises on bad input; raises only on internal or storage failures.
        """
        res = BatchResult(seen=len(messages))
        todo, new_offsets = self._unapplied(messages)
        res.skipped = len(messages) - len(todo)
        if not new_offsets:
            return res
        cols = self.decoder.decode_columns(todo)
        rejects = cols.rejects
        parts = [todo[i].partition for i in cols.index]
        dups = self.dedup.check_many(parts, cols.ts, cols.event_ids)
        if dups:
            for j in dups:
                m = todo[cols.index[j]]
                rejects.append((cols.index[j], Rejected(
                    reason="duplicate",
                    detail=f"event_id {cols.event_ids[j]!r} already applied within the "
                    f"{self.dedup.window_s:g} s dedup window",
                    topic=m.topic, partition=m.partition, offset=m.offset,
                    raw=m.value if m.value is not None else b"",
                )))
            rejects.sort(key=lambda r: r[0])  # dead letters in stream order
            gone = set(dups)
            keep = [j for j in range(len(cols)) if j not in gone]
            cols.select(keep)
            parts = [parts[j] for j in keep]
        counters = self.counters
        for _, rejected in rejects:
            counters[f"rejected.{rejected.reason}"] += 1
            self.dead_letters.send(rejected)
        res.rejected = len(rejects)
        res.accepted = len(cols)
        counters["accepted"] += res.accepted
        counters["rejected"] += res.rejected
        if res.accepted:
            batch = columns_to_batch(cols, parts, [todo[i].offset for i in cols.index],
                                     self.spec.action_weights)
            if self.before_learn is not None:
                self.before_learn(self.learner, batch)
            self.learner.learn_many(batch)
        # vectors that moved, plus every entity an event touched (its update_count and
        # updated_at changed even when its normalised vector did not)
        touched = self.learner.changed()
        touched.update(map(USER_PREFIX.__add__, cols.user_ids))
        touched.update(map(ITEM_PREFIX.__add__, cols.item_ids))
        # event time of each id's last event in this batch: updated_at for learners that
        # do not report last_event_ts (the base class returns NaN); built only if needed
        def seen_ts() -> dict[str, float]:
            return _last_ts(cols.user_ids, cols.item_ids, cols.ts)

        changed, records, features = self._feature_records(sorted(touched), seen_ts)
        records = self._as_stored(records)
        state = self._state_records_changed()
        # the output topic before the commit too: a crash in between re-applies the batch
        # and re-publishes the same vectors, so the topic never misses a committed one
        self._publish(changed, records)
        self.dead_letters.flush()  # dead letters first: at-least-once, never lost
        if self.changelog is not None:
            # before the local commit: the changelog is never behind the table, and the
            # consumer group's committed offset never passes either (faust acks after)
            self.changelog.write(self._by_partition(state, new_offsets), new_offsets)
        self.table.commit(features, state, new_offsets)
        self._offsets.update(new_offsets)
        self._has_state = True
        self._update_index(changed, records, features)
        res.changed = changed
        res.records = records
        return res

    def _unapplied(self, messages: Sequence[RawMessage]
                   ) -> tuple[list[RawMessage], dict[tuple[str, int], int]]:
        """Return the messages past the stored (and this batch's) offsets, and the new offsets.

        A message at or below the last applied offset of its (topic, partition) is a
        re-delivery (a restart, a rebalance) and is skipped.
        """
        stored = self._offsets
        new_offsets: dict[tuple[str, int], int] = {}
        todo: list[RawMessage] = []
        keep = todo.append
        get_new = new_offsets.get
        for m in messages:
            tp = (m.topic, m.partition)
            last = get_new(tp)
            if last is None:
                last = stored.get(tp, -1)
            if m.offset > last:
                new_offsets[tp] = m.offset
                keep(m)
        return todo, new_offsets

    # -- partitions (scale-out) ------------------------------------------------------
    def state_partition(self, key: bytes) -> int | None:
        """Return the source partition of an engine state key, or ``None`` if global.

        Learner keys (``L/``) ask the learner, dedup keys (``D/``) the de-duplicator; the
        counters are global (per worker).

        Raises
        ------
        StateError
            If the learner is not partition-scoped or does not know the key.
        """
        if key.startswith(_LEARNER):
            if not self.learner.partition_scoped:
                msg = (f"{self.spec.name}: algorithm {self.spec.algorithm!r} keeps one shared "
                       "model, its state has no partitions")
                raise StateError(msg)
            return self.learner.state_key_partition(key[len(_LEARNER):])
        if key.startswith(_DEDUP):
            return self.dedup.state_key_partition(key[len(_DEDUP):])
        return None

    def _by_partition(self, state: dict[bytes, bytes | None],
                      offsets: dict[tuple[str, int], int]) -> dict[int, dict[bytes, bytes | None]]:
        out: dict[int, dict[bytes, bytes | None]] = {p: {} for (_t, p) in offsets}
        for key, value in state.items():
            p = self.state_partition(key)
            if p is not None:
                out.setdefault(p, {})[key] = value
        return out

    def partition_states(self, partitions: Iterable[int]) -> dict[int, PartitionState]:
        """Return the local state of ``partitions`` (records and offsets) from the table.

        Raises
        ------
        StateError
            If the learner is not partition-scoped.
        """
        want = set(partitions)
        out = {p: PartitionState(p) for p in want}
        for (topic, p), off in self._offsets.items():
            if p in want:
                out[p].offsets[topic] = off
        for key, value in self.table.iter_state():
            p = self.state_partition(key)
            if p in want:
                out[p].records[key] = value
        return out

    def restore_partitions(self, incoming: dict[int, PartitionState]) -> RestoreResult:
        """Take over partitions whose incoming state is further ahead than the local one.

        For every such partition, its local state records are replaced by the incoming
        ones and its offsets set to the incoming offsets; a fresh learner and
        de-duplicator are loaded from the resulting state and every vector is recomputed
        (an item's vector merges its rows of all partitions, so one moved partition can
        change any vector). State, vectors and offsets go to the table in **one** commit;
        then the index is updated and the changed vectors published. Partitions whose
        local state is as far or further ahead are kept.

        Parameters
        ----------
        incoming
            Partition -> its state as read from the changelog.

        Returns
        -------
        RestoreResult

        Raises
        ------
        StateError
            If the learner is not partition-scoped, or the incoming records do not load
            (another type's or params' state).
        """
        res = RestoreResult()
        mine: dict[int, dict[str, int]] = {}
        for (topic, p), off in self._offsets.items():
            mine.setdefault(p, {})[topic] = off
        take = set()
        for p, st in sorted(incoming.items()):
            (take.add(p) if st.ahead_of(mine.get(p, {})) else res.kept.append(p))
        if not take:
            return res
        res.restored = sorted(take)
        updates: dict[bytes, bytes | None] = {}
        combined: dict[bytes, bytes] = {}
        for key, value in self.table.iter_state():
            if self.state_partition(key) in take:
                updates[key] = None
            else:
                combined[key] = value
        for p in res.restored:
            for key, value in incoming[p].records.items():
                if self.state_partition(key) != p:
                    msg = f"changelog partition {p} holds a state key of another partition"
                    raise StateError(msg)
                updates[key] = value
                combined[key] = value
        learner = (self._learner_factory() if self._learner_factory is not None
                   else _build_learner(self.spec))
        # global records (the params record) are derived from the params: a worker that
        # never had state gets them from a fresh learner
        for k, v in learner.state_changes().items():
            if v is not None and learner.state_key_partition(k) is None \
                    and _LEARNER + k not in combined:
                combined[_LEARNER + k] = updates[_LEARNER + k] = v
        learner.load_state_records([(k[len(_LEARNER):], v) for k, v in combined.items()
                                    if k.startswith(_LEARNER)])
        learner.changed()
        learner.state_changes()  # loading is not a change
        dedup = Deduplicator(window_s=self.dedup.window_s)
        dedup.load_state_records([(k[len(_DEDUP):], v) for k, v in combined.items()
                                  if k.startswith(_DEDUP)])
        ids = set(learner.entity_ids())
        ids.update(e for e, _ in self.table.iter_features())
        old_learner, self.learner = self.learner, learner
        try:
            changed, records, features = self._feature_records(sorted(ids))
        except Exception:
            self.learner = old_learner
            raise
        offsets = {(t, p): o for p in res.restored for t, o in incoming[p].offsets.items()}
        records = self._as_stored(records)
        self._publish(changed, records)
        self.table.commit(features, updates, offsets)
        self.dedup = dedup
        self._offsets.update(offsets)
        self._has_state = True
        res.rewritten = len(features)
        self._update_index(changed, records, features)
        log.info('restored partitions type="%s" restored=%s kept=%s vectors=%d',
                 self.spec.name, res.restored, res.kept, len(features))
        return res

    def _feature_records(
        self, changed: list[str],
        fallback_ts: dict[str, float] | Callable[[], dict[str, float]] | None = None,
    ) -> tuple[list[str], list[FeatureRecord], dict[str, FeatureRecord | None]]:
        """Build the records of ``changed`` ids: (kept ids, their records, id -> record|None).

        An id without a vector maps to ``None`` (delete). ``fallback_ts`` (or a callable
        returning it, called only if needed) gives ``updated_at`` (event s) for ids the
        learner has no event time for (warm start, learners without ``last_event_ts``).
        """
        records: list[FeatureRecord] = []
        features: dict[str, FeatureRecord | None] = {}
        if not changed:
            return changed, records, features
        vecs, mask = self.learner.vectors(changed)
        counts = self.learner.update_counts(changed)
        last_ts = self.learner.last_event_ts(changed)
        if callable(fallback_ts):
            fallback_ts = fallback_ts() if not np.isfinite(last_ts[mask]).all() else None
        rows = np.flatnonzero(mask)
        kept = [changed[j] for j in rows.tolist()]
        ts = last_ts[rows].astype(np.float64).tolist()
        if fallback_ts is not None:
            ts = [t if np.isfinite(t) else fallback_ts.get(e, 0.0)
                  for e, t in zip(kept, ts, strict=True)]
        records = records_from_arrays(vecs[rows], ts, counts[rows].astype(np.int64).tolist(),
                                      self.spec.version)
        features = dict.fromkeys(changed)
        features.update(zip(kept, records, strict=True))
        return kept, records, features

    def _state_records_changed(self) -> dict[bytes, bytes | None]:
        """Collect learner and dedup state changed since the last commit, plus the counters."""
        learner, dedup = self.learner.state_changes(), self.dedup.state_changes()
        state: dict[bytes, bytes | None] = dict(zip(map(_LEARNER.__add__, learner),
                                                    learner.values(), strict=True))
        state.update(zip(map(_DEDUP.__add__, dedup), dedup.values(), strict=True))
        state[_COUNTERS] = json.dumps(dict(self.counters), sort_keys=True).encode()
        return state

    def _as_stored(self, records: list[FeatureRecord]) -> list[FeatureRecord]:
        """Return ``records`` with the vectors the table stores: its codec's reconstruction.

        The index and ``publish`` then hold exactly what the table (and a replica reading
        the output topic) holds. Identity for ``float32``; one vectorised quantise and
        dequantise of the batch otherwise (bitwise what a read of the table returns).
        """
        codec = self.table.codec
        if codec == "float32" or not records:
            return records
        vecs = quant.dequantize(*quant.quantize(np.stack([r.vector for r in records]), codec),
                                codec)
        return [FeatureRecord(v, r.updated_at, r.update_count, r.model_version)
                for v, r in zip(vecs, records, strict=True)]

    def _publish(self, changed: list[str], records: list[FeatureRecord]) -> None:
        """Hand changed vectors to ``publish`` and, if it has ``flush()``, wait for it.

        Called *before* the commit of the batch, so every committed vector is in the
        output topic (at-least-once; a re-applied batch re-sends identical values).
        """
        if self.publish is None or not changed:
            return
        self.publish(changed, records)
        flush = getattr(self.publish, "flush", None)
        if callable(flush):
            flush()

    def _update_index(self, changed: list[str], records: list[FeatureRecord],
                      features: dict[str, FeatureRecord | None]) -> None:
        """Update the live index once a commit has returned."""
        gone = [e for e, r in features.items() if r is None]
        if self.index is not None:
            if gone:
                self.index.delete(gone)
            if changed:
                self.index.upsert(changed, np.stack([r.vector for r in records]))

    # -- transfer -------------------------------------------------------------------
    def warm_start(self, source: TopologySpec, ids: list[str], vectors: np.ndarray,
                   updated_at: np.ndarray) -> WarmStart:
        """Seed this fresh type with ``source``'s vectors and commit them atomically.

        Calls ``learner.warm_start(ids, vectors)``, then writes the vectors of every id
        it initialised and all learner state it changed in **one** table commit with
        no offsets (consumption then starts from the beginning of the source topic),
        then updates the index and publishes. The :class:`WarmStart` record goes to the
        table metadata (key ``init_from``) just before that commit; it only counts once
        the commit is there (see :meth:`is_fresh`), so a crash in between is harmless.

        Parameters
        ----------
        source
            The source type.
        ids
            Namespaced ids of the source's vectors, no duplicates.
        vectors
            Shape ``(len(ids), dim)`` float32, finite.
        updated_at
            Shape ``(len(ids),)`` float64, event seconds of each source vector; used as
            ``updated_at`` of a warm-started record that has no event yet.

        Returns
        -------
        WarmStart
            What was applied (also stored in the table metadata).

        Raises
        ------
        ConfigError
            If ``source`` is this type, or the algorithm has no warm start.
        StateError
            If the table already has state (offsets or state records).
        DimensionMismatch
            If ``vectors`` has another dim than the learner.
        """
        check_transfer(self.spec, source)
        if not self.is_fresh():
            msg = (f"type {self.spec.name!r} already has state in {self.table!r}; a warm "
                   "start only applies to a fresh type (bump its version for a new one)")
            raise StateError(msg)
        dim = self.learner.dim
        if vectors.ndim != 2 or vectors.shape != (len(ids), dim):
            msg = (f"--init-from {source.name}: vectors have shape {vectors.shape}, type "
                   f"{self.spec.name!r} expects ({len(ids)}, {dim})")
            raise DimensionMismatch(msg)
        n = self.learner.warm_start(ids, vectors)
        fallback = dict(zip(ids, map(float, updated_at), strict=True))
        changed, records, features = self._feature_records(sorted(self.learner.changed()),
                                                           fallback)
        state = self._state_records_changed()
        report = WarmStart(source=source.name, source_version=source.version,
                           source_algorithm=source.algorithm, offered=len(ids), ids=int(n))
        self.table.put_meta(INIT_FROM_META_KEY, report.to_bytes())
        self.table.commit(features, state, {})
        self._has_state = True
        self._init_from = report
        records = self._as_stored(records)
        self._update_index(changed, records, features)
        if self.publish is not None and changed:
            self.publish(changed, records)  # the worker sends these once its topics exist
        log.info('warm start type="%s" source="%s" version=%d offered=%d ids=%d',
                 self.spec.name, source.name, source.version, len(ids), n)
        return report

    def close(self) -> None:
        """Stop the index's maintenance thread and close the feature table."""
        if self.index is not None:
            self.index.close()
        self.table.close()

    def metrics(self) -> dict[str, object]:
        """Return counters (accepted, rejected by reason) and offsets, JSON-able."""
        rejected = {k.split(".", 1)[1]: v for k, v in self.counters.items()
                    if k.startswith("rejected.")}
        return {
            "type": self.spec.name, "version": self.spec.version,
            "accepted": self.counters.get("accepted", 0),
            "rejected": self.counters.get("rejected", 0),
            "rejected_by_reason": dict(sorted(rejected.items())),
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(self._offsets.items())},
            "entities": self.table.count(),
            # "native" when batches are decoded by the streamer_native extension
            "decoder": "native" if self.decoder.native else "python",
            "init_from": None if self._init_from is None else self._init_from.to_json(),
            # algorithm counters when the learner has them (sgns: vocabulary size,
            # evicted and dropped ids, noise table, learning rate)
            "learner": dict(stats()) if callable(stats := getattr(self.learner, "stats", None))
            else {},
        }


def _last_ts(user_ids: list[str], item_ids: list[str], ts: list[float]) -> dict[str, float]:
    """Return namespaced id -> the largest event time (s) of its events in the columns."""
    out: dict[str, float] = {}
    ts_arr = np.asarray(ts, dtype=np.float64)
    order = np.argsort(ts_arr, kind="stable").tolist()  # later assignments win: the max
    for prefix, col in ((USER_PREFIX, user_ids), (ITEM_PREFIX, item_ids)):
        for j in order:
            out[prefix + col[j]] = ts[j]
    return out


def _build_learner(spec: TopologySpec) -> OnlineLearner:
    from streamer.learn.registry import build_learner

    return build_learner(spec.algorithm, spec.params)


def open_engine(
    spec: TopologySpec,
    *,
    state_dir: Path,
    dead_letters: DeadLetterSink,
    clock: Clock,
    with_index: bool = True,
    index_params: dict[str, object] | None = None,
    max_future_s: float = 86_400.0,
    dedup_window_s: float = 86_400.0,
    publish: Callable[[list[str], list[FeatureRecord]], None] | None = None,
    path_prefix: str = "",
    before_learn: Callable[[OnlineLearner, EventBatch], None] | None = None,
    changelog: Changelog | None = None,
) -> Engine:
    """Open (or create) the RocksDB state of ``spec`` under ``state_dir`` and build an Engine.

    The path is ``state_dir / "<path_prefix><name>.v<version>"`` (one path per type and
    version; ``path_prefix`` is the topic prefix, so tenants never share state).

    Raises
    ------
    StateError
        If the path is held by another writer or belongs to other settings.
    ConfigError
        If the algorithm is unknown or its params are invalid.
    """
    from streamer.index.hnsw import HnswIndex
    from streamer.index.kinded import KindedIndex
    from streamer.learn.registry import build_learner
    from streamer.store.rocks import RocksFeatureTable

    learner = build_learner(spec.algorithm, spec.params)
    table = RocksFeatureTable(table_path(spec, state_dir=state_dir, path_prefix=path_prefix),
                              dim=learner.dim, codec=spec.storage_codec)  # type: ignore[arg-type]
    index = None
    if with_index:
        params = dict(index_params or {})
        index = KindedIndex(learner.dim, factory=lambda dim: HnswIndex(dim, **params))  # type: ignore[arg-type]
    return Engine(spec, learner=learner, table=table, dead_letters=dead_letters, clock=clock,
                  index=index, max_future_s=max_future_s, dedup_window_s=dedup_window_s,
                  publish=publish, before_learn=before_learn, changelog=changelog)


def warm_start_from(
    engine: Engine, source: TopologySpec, *, state_dir: Path, path_prefix: str = "",
) -> WarmStart | None:
    """Warm-start ``engine``'s type from ``source``'s feature table, unless it has state.

    ``streamer worker --type T --init-from SOURCE`` calls this before consuming. The
    source table (``state_dir / "<path_prefix><source>.v<n>"``, the layout of
    :func:`open_engine`) is read through a RocksDB secondary instance, so a running
    source worker is not disturbed. A type that already has state (a restart, or a
    type that consumed events) is left alone and ``None`` returned: restarts with the
    same flag are idempotent.

    Parameters
    ----------
    engine
        The new type's engine, as opened by :func:`open_engine`.
    source
        The type to copy vectors from (same dim).
    state_dir, path_prefix
        Where the source's table lives (the settings the source worker runs with).

    Returns
    -------
    WarmStart or None
        What was applied, or ``None`` if the type already had state (logged).

    Raises
    ------
    ConfigError
        ``source`` is the engine's own type; no table at the source's path, or it holds
        no vectors; the algorithm does not support warm start.
    DimensionMismatch
        The source's dim differs from the new type's.
    StateError
        The source table is unreadable or belongs to other params.
    """
    check_transfer(engine.spec, source)
    if not engine.is_fresh():
        log.info('init-from skipped type="%s" source="%s": the type already has state '
                 '(offsets=%d, init_from=%s)', engine.spec.name, source.name,
                 len(engine.offsets()), engine.init_from)
        return None
    ids, vectors, updated_at = load_source_vectors(
        source, state_dir=state_dir, path_prefix=path_prefix, dim=engine.learner.dim)
    return engine.warm_start(source, ids, vectors, updated_at)


def iter_chunks(items: Iterable[RawMessage], size: int) -> Iterable[list[RawMessage]]:
    """Yield consecutive lists of at most ``size`` messages (order kept)."""
    chunk: list[RawMessage] = []
    for m in items:
        chunk.append(m)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
