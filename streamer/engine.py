"""The processing engine shared by every mode (demo, worker, replay): no faust, no Kafka client.

One :class:`Engine` owns one embedding type/version: decoder, de-duplicator, learner,
feature table, optional live index and dead-letter sink. :meth:`Engine.process` takes a
micro-batch of raw messages (any source) and, in order:

1. skips messages at or below the stored offset of their (topic, partition) (a restart
   re-delivers them; DESIGN §6, CONVENTIONS C9);
2. decodes each message (never raises) and sends rejects - including ``duplicate``
   event ids - to the dead-letter sink with reason and source position;
3. applies the valid events to the learner;
4. commits the changed vectors, *all* learner/dedup state changed since the last
   commit, the counters and the last offset per partition in **one** atomic write;
5. updates the live index (visible at once through its delta buffer) and hands the
   changed vectors to ``publish`` (e.g. the compacted ``embeddings.<type>.v<n>`` topic).

A crash at any point therefore restarts from a state that is exactly the state after
some prefix of whole micro-batches, and the learner's per-partition, per-event
semantics make the end state independent of how batches were cut.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.events.deadletter import DeadLetterSink
from streamer.events.decode import Decoder, Rejected, to_batch
from streamer.events.dedup import Deduplicator
from streamer.events.schema import EngagementEvent
from streamer.index.base import VectorIndex
from streamer.learn.base import OnlineLearner
from streamer.store.base import FeatureRecord, FeatureTable, claim_manifest
from streamer.topology import TopologySpec
from streamer.types import Clock, item_key, user_key

log = logging.getLogger(__name__)

_LEARNER = b"L/"
_DEDUP = b"D/"
_COUNTERS = b"C/counters"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as read from a topic or file, before decoding.

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
    ) -> None:
        self.spec = spec
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
        self._load_state()
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
        if learner_recs:
            self.learner.load_state_records(learner_recs)
        if dedup_recs:
            self.dedup.load_state_records(dedup_recs)
        self.learner.changed()  # loading is not a change
        log.info('loaded state type="%s" learner_records=%d dedup_records=%d offsets=%s',
                 self.spec.name, len(learner_recs), len(dedup_recs), self._offsets)

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
        events: list[EngagementEvent] = []
        parts: list[int] = []
        offs: list[int] = []
        new_offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic, m.partition)
            if m.offset <= new_offsets.get(tp, self._offsets.get(tp, -1)):
                res.skipped += 1
                continue
            new_offsets[tp] = m.offset
            decoded = self.decoder.decode(m.value, topic=m.topic, partition=m.partition,
                                          offset=m.offset)
            if not isinstance(decoded, Rejected) and self.dedup.check(decoded, m.partition):
                decoded = Rejected(
                    reason="duplicate",
                    detail=f"event_id {decoded.event_id!r} already applied within the "
                    f"{self.dedup.window_s:g} s dedup window",
                    topic=m.topic, partition=m.partition, offset=m.offset,
                    raw=m.value if m.value is not None else b"",
                )
            if isinstance(decoded, Rejected):
                res.rejected += 1
                self.counters[f"rejected.{decoded.reason}"] += 1
                self.dead_letters.send(decoded)
                continue
            events.append(decoded)
            parts.append(m.partition)
            offs.append(m.offset)
        if not new_offsets:
            return res
        res.accepted = len(events)
        self.counters["accepted"] += len(events)
        self.counters["rejected"] += res.rejected
        if events:
            batch = to_batch(events, partitions=parts, offsets=offs,
                             action_weights=self.spec.action_weights)
            self.learner.learn_many(batch)
        # vectors that moved, plus every entity an event touched (its update_count and
        # updated_at changed even when its normalised vector did not)
        touched = self.learner.changed()
        for e in events:
            touched.add(user_key(e.user_id))
            touched.add(item_key(e.item_id))
        changed = sorted(touched)
        records: list[FeatureRecord] = []
        features: dict[str, FeatureRecord | None] = {}
        if changed:
            vecs, mask = self.learner.vectors(changed)
            counts = self.learner.update_counts(changed)
            last_ts = self.learner.last_event_ts(changed)
            kept: list[str] = []
            for j, entity in enumerate(changed):
                if not mask[j]:
                    features[entity] = None
                    continue
                rec = FeatureRecord(vector=vecs[j], updated_at=float(last_ts[j]),
                                    update_count=int(counts[j]), model_version=self.spec.version)
                features[entity] = rec
                kept.append(entity)
                records.append(rec)
            changed = kept
        state: dict[bytes, bytes | None] = {}
        for k, v in self.learner.state_changes().items():
            state[_LEARNER + k] = v
        for k, v in self.dedup.state_changes().items():
            state[_DEDUP + k] = v
        state[_COUNTERS] = json.dumps(dict(self.counters), sort_keys=True).encode()
        self.dead_letters.flush()  # dead letters first: at-least-once, never lost
        self.table.commit(features, state, new_offsets)
        self._offsets.update(new_offsets)
        gone = [e for e, r in features.items() if r is None]
        if self.index is not None:
            if gone:
                self.index.delete(gone)
            if changed:
                self.index.upsert(changed, np.stack([r.vector for r in records]))
        if self.publish is not None and changed:
            self.publish(changed, records)
        res.changed = changed
        res.records = records
        return res

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
        }


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
    table = RocksFeatureTable(Path(state_dir) / f"{path_prefix}{spec.state_dirname}",
                              dim=learner.dim)
    index = None
    if with_index:
        params = dict(index_params or {})
        index = KindedIndex(learner.dim, factory=lambda dim: HnswIndex(dim, **params))  # type: ignore[arg-type]
    return Engine(spec, learner=learner, table=table, dead_letters=dead_letters, clock=clock,
                  index=index, max_future_s=max_future_s, dedup_window_s=dedup_window_s,
                  publish=publish)


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
