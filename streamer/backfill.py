"""``streamer backfill``: replay ``engagements`` from Kafka into one type version, fast.

The faust worker tops out at ~6-7k events/s (faust's per-message overhead), so a
backfill bypasses faust: one consumer ``assign()``s every partition of
``<prefix>engagements`` and feeds :meth:`streamer.engine.Engine.process` large
micro-batches cut by offsets, into the type version's own RocksDB table (the path its
worker uses, :func:`streamer.transfer.table_path`). DESIGN §6 and CONVENTIONS C9 give the
contract; this module only chooses *which* records, in *which order*, in *which batches*.

Range (event time = the records' Kafka timestamps, which producers set to the event time)
-----------------------------------------------------------------------------------------
* start of partition ``p`` = ``max(stored offset + 1, from)``, where ``from`` is the
  beginning offset (``earliest``) or the first offset whose timestamp is at or after the
  ``--from`` time (Kafka ``offsets_for_times``; a partition with no such record starts
  at its end offset). A restart therefore resumes after what the table holds.
* stop of partition ``p`` (exclusive) = its end offset when the backfill starts
  (``--until latest``), or the first offset whose timestamp is at or after ``--until``
  (no such record: the end offset at start). Without ``--until`` the backfill catches up
  to the end offsets at start, then **follows** the live stream until SIGINT/SIGTERM.
* times are ISO-8601 (no UTC offset = UTC) or epoch seconds
  (:func:`~streamer.backfill_plan.parse_bound`).

Order and batches (determinism)
-------------------------------
During the bounded catch-up the engine gets the records in one order that depends on
the data alone, never on fetch timing (:class:`~streamer.backfill_plan.OrderedMerge`):
a k-way merge across partitions by ``(key, partition)``, offset order within a
partition, where a record's key is the smallest timestamp among it and the next 7
records of its partition (a raw-timestamp key lets one record stamped far in the future
hold back the rest of its partition: on the integration tests' Wikipedia stream with
1,000 bad messages, valid events then lag the event time already applied by 174 h on
average, against 31 s with this key). The merge is memoryless (a key depends only on
the record and its successors), so a restart from the stored offsets continues the same
sequence. Batches are cut every ``batch`` records of that sequence. The co-occurrence
learner keeps per-partition state, so its table does not depend on the interleaving at
all; SGNS shares one model across partitions, so its vectors do, and this order is what
makes two replays of one range bitwise identical. The merge costs a sliding minimum, a
running maximum and a ``searchsorted`` per partition plus one ``lexsort`` per poll
(numpy). The live-follow phase applies records as they arrive (live arrival order is
not deterministic anyway).

Exactly-once effect
-------------------
Every batch is one :meth:`Engine.process` call: feature writes, all changed learner and
dedup state, counters and offsets in one RocksDB ``WriteBatch``. A SIGKILL at any point
leaves the table at the end of some batch; the restart seeks to the stored offsets + 1
and ends in the same table as an uninterrupted run. After each commit the position is
also committed (asynchronously, best effort) to the version's consumer group
(:func:`streamer.registry.consumer_group_of`: the target version's own group, never the
live version's unless the target *is* the live version), so ``streamer serve`` and
``kafka-consumer-groups`` show its lag and a worker of this version started later
continues from there; the table's offsets remain the truth.

No live index is kept (``with_index=False``): a worker of this version rebuilds its index
from the table when it opens it, and ``streamer serve`` replicas build theirs from the
output topic.

Publishing to ``embeddings.<type>.v<n>``
----------------------------------------
Publishing every changed vector after every catch-up batch would send each active id
again and again (Wikipedia: ~10k ids, re-sent in every batch they touch). Instead, once
the catch-up is complete, the backfill sweeps the table and publishes each entity's
latest vector **once** (idempotent on the compacted topic; a crash before or during
the sweep is repaired by the restart, which sweeps again when it completes). Replicas
therefore see the new version's vectors at the end of the catch-up, all at once. In the
live-follow phase every batch publishes its changed vectors, as the worker does.
Rejected messages go to the dead-letter topic (:class:`KafkaDeadLetters`), flushed
before each commit, as in the worker. The snapshot/benchmark scheduler is **not** run
by a backfill (no per-batch scoring, no snapshots): run ``streamer snapshot`` or a
worker afterwards.

Client
------
confluent-kafka (librdkafka): fetching and decompression run in librdkafka's own
threads, off the GIL, while the engine works. Measured here over the Wikipedia topic, a
bare consume loop costs ~1.2 µs of CPU per record with confluent-kafka against 9-10 µs
with kafka-python (whose fetcher parses records in Python, on the engine's core);
``benchmarks/consume.py`` measured the wall rates (72-125k against 67-112k events/s).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamer.backfill_plan import (
    EARLY_BATCH,
    Bound,
    CatchUp,
    OrderedMerge,
    PartitionPlan,
    check_range,
    gaps,
    parse_bound,
    plan_offsets,
)
from streamer.engine import Engine, RawMessage
from streamer.errors import BadRequest, ConfigError, StateError
from streamer.kafka_io import KafkaIOError
from streamer.topology import TopologySpec

if TYPE_CHECKING:
    from streamer.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCH = 1_000_000
"""Largest ``--batch``: a batch's records, decoded columns and changed state are held in
memory at once, so much larger ones only risk running out of it."""

SWEEP_META = "backfill.sweep"
"""Table meta key of the last publishing sweep: JSON ``{"topic", "offsets": [[topic,
partition, offset], ...], "published": n}``, written once its records were acked."""

DEFAULT_BATCH = 50_000
"""Records per :meth:`Engine.process` call (``--batch``). Larger batches amortise the
per-commit cost (changed vectors, learner state, one RocksDB write); on this 2-core
machine wiki-cooc from Kafka ran at 46k events/s with 10k, 54k with 20k and 59k with
50k before the engine's batch hot path (measure with ``benchmarks/replay.py --batch
N``). A crash redoes at most one batch. When the fetcher has queued nothing more and
at least :data:`~streamer.backfill_plan.EARLY_BATCH` records are ready, they are
applied as a shorter batch instead of waiting for a whole one."""


# --------------------------------------------------------------------------------------
# target resolution and preparation


def resolve_target(ref: str, specs: tuple[TopologySpec, ...] | None = None,
                   ) -> tuple[TopologySpec, str]:
    """Return the type version a ``--type`` names, and a one-line note saying which.

    ``NAME.vN`` is that version; a bare ``NAME`` is the **highest** declared version
    (a backfill usually fills a new candidate version, unlike ``NAME`` elsewhere,
    which means the live version).

    Raises
    ------
    BadRequest
        A malformed reference.
    UnknownType
        No such type or version (lists what is declared).
    """
    from streamer.registry import declared_types, parse_ref, resolve, versions_of

    specs = declared_types() if specs is None else specs
    name, version = parse_ref(ref)
    if version is None:
        declared = versions_of(specs, name)
        if not declared:
            resolve(specs, None, ref)  # raises UnknownType listing the declared types
        version = declared[-1]
        note = (f"backfill target: {name}.v{version} (the highest declared version of "
                f"{name}; declared: {', '.join(f'v{v}' for v in declared)})")
    else:
        note = f"backfill target: {name}.v{version}"
    spec = resolve(specs, None, f"{name}.v{version}", allow_retired=True)
    return spec, note


def ensure_topics(settings: Settings, spec: TopologySpec) -> None:
    """Create the source, dead-letter, compacted output and ``benchmarks`` topics if missing.

    The worker's layout (:func:`streamer.type_topics.ensure_type_topics`), without the
    state changelog.

    The source topic itself must exist: a backfill of a topic nobody produced to (a
    wrong ``STREAMER_TOPIC_PREFIX``) is refused rather than creating empty topics.

    Raises
    ------
    ConfigError
        If the source topic does not exist, or an existing topic has another partition
        count than configured.
    KafkaIOError
        If the broker cannot be reached.
    """
    from streamer.kafka_io import topic_partition_counts
    from streamer.type_topics import ensure_type_topics

    source = settings.topic(spec.source)
    if source not in topic_partition_counts(settings.kafka_bootstrap, [source]):
        msg = (f"topic {source!r} does not exist at {settings.kafka_bootstrap}: nothing to "
               "backfill from; produce to it first (streamer produce) or check "
               "STREAMER_TOPIC_PREFIX")
        raise ConfigError(msg)
    ensure_type_topics(settings, spec)  # no changelog: a backfill writes none


def _locked(spec: TopologySpec, path: object) -> ConfigError:
    msg = (f"{spec.name}.v{spec.version} is in use: another process (a worker or a backfill "
           f"of this version) holds its feature table {path} (RocksDB lock); stop it first "
           "(one writer per type version and state dir)")
    return ConfigError(msg)


def check_table_free(settings: Settings, spec: TopologySpec) -> None:
    """Fail fast if a running worker (or backfill) of the version holds its table.

    Raises
    ------
    ConfigError
        If the RocksDB lock is held (one line).
    StateError
        If the table belongs to another dim or codec, or cannot be opened.
    """
    from streamer.store.rocks import RocksFeatureTable, is_lock_error
    from streamer.transfer import table_path, type_dim

    path = table_path(spec, state_dir=settings.state_dir, path_prefix=settings.topic_prefix)
    if not (path / "CURRENT").is_file():
        return
    try:
        RocksFeatureTable(path, dim=type_dim(spec), codec=spec.storage_codec).close()  # type: ignore[arg-type]
    except StateError as exc:
        if exc.__cause__ is not None and is_lock_error(exc.__cause__):
            raise _locked(spec, path) from exc
        raise


def prepare(settings: Settings, spec: TopologySpec) -> None:
    """Do what a worker does before it consumes: table check, registry, topics.

    Raises
    ------
    ConfigError
        A worker holds the table; a topic has the wrong partition count.
    RetiredType
        The version is retired in the registry.
    RegistryUnavailable, KafkaIOError
        The broker cannot be reached.
    """
    from streamer.registry import REGISTRY_TOPIC, register_version

    check_table_free(settings, spec)
    register_version(settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC), spec)
    ensure_topics(settings, spec)


# --------------------------------------------------------------------------------------
# the run


@dataclass
class Progress:
    """Where a backfill is (sent to ``on_progress`` after every committed batch).

    Attributes
    ----------
    phase
        ``"catch-up"`` (bounded, deterministic order) or ``"follow"`` (live).
    applied
        Records applied by this run (accepted + rejected).
    accepted, rejected
        Of which valid events / dead-lettered messages.
    total
        Records of the bounded range this run had to apply when it started.
    lag
        Records left to the stop offsets (catch-up) or to the end offsets last seen by
        the consumer (follow), summed over partitions.
    elapsed_s
        Wall seconds since the first record arrived.
    """

    phase: Literal["catch-up", "follow"]
    applied: int
    accepted: int
    rejected: int
    total: int
    lag: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        """Records applied per wall second so far."""
        return self.applied / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class BackfillSummary:
    """What a backfill did (``--json`` prints :meth:`to_json`).

    Attributes
    ----------
    type, version, group, topic
        The target version, its consumer group and the source topic.
    mode
        ``"until"`` (bounded) or ``"follow"``.
    start, until
        The bounds as given (``str(Bound)``); ``until`` is ``None`` in follow mode.
    partitions
        Partition -> ``{"begin", "end", "stored", "start", "stop", "applied_to"}``;
        ``applied_to`` is the last offset the table holds at exit (-1: none).
    applied, accepted, rejected
        Records applied by this run; valid events; dead-lettered messages.
    catch_up_applied
        Of ``applied``, in the bounded phase.
    catch_up_s
        Wall seconds from the first record to the end of the bounded phase (its last
        commit and the publishing sweep).
    events_per_s
        ``catch_up_applied / catch_up_s``.
    setup_s
        Wall seconds from the start to the assignment (table check, registry, topics,
        table open, learner warm-up, offset requests).
    published
        Vectors sent to ``embeddings.<type>.v<n>``.
    sweep_skipped
        True if the end-of-catch-up publishing sweep was skipped: nothing was applied
        and an earlier run had published this very table state (see
        :data:`SWEEP_META`).
    decoder
        ``"native"`` if events were decoded by the ``streamer_native`` extension,
        ``"python"`` otherwise (``STREAMER_NATIVE=0``, or not installed).
    rejected_by_reason
        This run's dead-lettered messages per reject reason (``not_json``, ...).
    skipped
        Partition -> records left out between the table's stored offset and this run's
        start (a ``--from`` past where the table stopped, or records already deleted by
        retention): the table has a gap there. Empty normally.
    complete
        True if the bounded range was fully applied.
    interrupted
        True if SIGINT/SIGTERM (``stop``) ended the run.
    """

    type: str
    version: int
    group: str
    topic: str
    mode: Literal["until", "follow"]
    start: str
    until: str | None
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)
    applied: int = 0
    accepted: int = 0
    rejected: int = 0
    catch_up_applied: int = 0
    catch_up_s: float = 0.0
    events_per_s: float = 0.0
    setup_s: float = 0.0
    published: int = 0
    sweep_skipped: bool = False
    decoder: str = "python"
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: dict[int, int] = field(default_factory=dict)
    complete: bool = False
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict (partition keys as strings)."""
        d = asdict(self)
        d["partitions"] = {str(p): v for p, v in self.partitions.items()}
        d["skipped"] = {str(p): n for p, n in self.skipped.items()}
        d["catch_up_s"] = round(self.catch_up_s, 3)
        d["setup_s"] = round(self.setup_s, 3)
        d["events_per_s"] = round(self.events_per_s, 1)
        return d


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """Return the confluent-kafka consumer settings of a backfill (and of its raw baseline).

    No auto-commit and no offset store (positions are committed explicitly after each
    table commit), ``assign()`` only (no group membership, no rebalance). No
    end-of-partition events: seen here to overtake records still queued in a batch
    ``consume()``, they cannot tell that a partition has given its last record. A short
    fetch queue backoff (see the setting).
    """
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "streamer-backfill",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        # librdkafka postpones a partition's next fetch by this much when its prefetch
        # queue is over its thresholds; at the default (1000 ms) the last records of a
        # topic arrived ~0.95 s late in half the bare consume runs measured here
        "fetch.queue.backoff.ms": 10,
        **overrides,
    }


@contextlib.contextmanager
def _gc_between_batches() -> Iterator[None]:
    """Run the cyclic garbage collector between batches only, not inside them.

    A catch-up allocates several small objects per record (messages, decoded events,
    columns) that die with their batch; by default the collector scans the young
    generation every 700 allocations, rescanning them for nothing. The engine's batch
    leaves no cyclic garbage (measured: ``gc.collect()`` after each batch of wiki-cooc
    and wiki-sgns found 0 objects), so the automatic collector is off during the
    catch-up, the objects alive before it are frozen out of every scan, and
    :func:`_collect` sweeps what one batch left. Restores the collector on exit.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


def _collect() -> None:
    """Collect the young generations (what the last batch allocated and left behind)."""
    if not gc.isenabled():
        gc.collect(1)


class Backfill:
    """One backfill run of a type version: open (engine, producer, consumer), run, close.

    Call :func:`prepare` first (table lock, registry, topics); :func:`run_backfill`
    does it all.

    Parameters
    ----------
    settings
        Broker, prefix, state dir, consumer group template, dedup/future windows,
        ``worker.publish`` and ``worker.batch_within_s`` (the follow phase's wait).
    spec
        The target type version.
    start, until
        The range (:func:`~streamer.backfill_plan.parse_bound`); ``until=None`` follows
        the live stream after the catch-up.
    batch
        Records per engine batch (catch-up and follow).
    on_progress
        Called after every committed batch.
    on_status
        Called with one-line status messages (plan, end of the catch-up, follow status).
    stop
        Set it (e.g. from a signal handler) to stop after the current batch commits.
    status_every_s
        Wall seconds between follow-phase status lines.
    warm_up
        Load the learner's compiled kernels on a throwaway learner before the first
        record (numba loads its cache on the first call: ~0.7 s here), so that
        ``setup_s`` holds it and ``events_per_s`` measures the stream.
    started_at
        ``time.perf_counter()`` when the set-up began (default: now), for ``setup_s``.

    Raises
    ------
    BadRequest
        ``batch < 1`` or a reversed time range.
    ConfigError
        The table is held by another process.
    StateError
        The table belongs to other settings.
    """

    def __init__(
        self,
        settings: Settings,
        spec: TopologySpec,
        *,
        start: Bound,
        until: Bound | None,
        batch: int = DEFAULT_BATCH,
        on_progress: Callable[[Progress], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        status_every_s: float = 10.0,
        warm_up: bool = True,
        started_at: float | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        from streamer.engine import open_engine
        from streamer.registry import consumer_group_of
        from streamer.runtime.kafka_sinks import (
            EmbeddingPublisher,
            KafkaDeadLetters,
            SinkProducer,
        )
        from streamer.store.rocks import is_lock_error
        from streamer.transfer import table_path
        from streamer.types import SystemClock

        _check_batch(batch)
        check_range(start, until)
        self._t_setup = time.perf_counter() if started_at is None else started_at
        self.settings, self.spec = settings, spec
        self.start_bound, self.until_bound = start, until
        self.batch = batch
        self.on_progress, self.on_status = on_progress, on_status
        self.stop = stop or threading.Event()
        self.status_every_s = status_every_s
        self.topic = settings.topic(spec.source)
        self.group = consumer_group_of(spec, settings.consumer_group, settings.topic_prefix)
        self.producer = SinkProducer(settings.kafka_bootstrap)
        self.publisher = (EmbeddingPublisher(self.producer, settings.topic(spec.output_topic),
                                             spec.storage_codec)
                          if settings.worker.publish else None)
        try:
            self.engine: Engine = open_engine(
                spec, state_dir=settings.state_dir,
                dead_letters=KafkaDeadLetters(self.producer, settings.topic(spec.dead_letters),
                                              spec.name, spec.version),
                clock=SystemClock(), with_index=False,
                max_future_s=settings.max_future_s, dedup_window_s=settings.dedup_window_s,
                publish=None, path_prefix=settings.topic_prefix)
        except StateError as exc:
            if exc.__cause__ is not None and is_lock_error(exc.__cause__):
                path = table_path(spec, state_dir=settings.state_dir,
                                  path_prefix=settings.topic_prefix)
                raise _locked(spec, path) from exc
            raise
        if warm_up:
            _warm_up(spec)
        self._commit_errors = 0
        self.consumer = Consumer(consumer_config(settings.kafka_bootstrap, self.group,
                                                 on_commit=self._on_commit))
        self.summary = BackfillSummary(
            type=spec.name, version=spec.version, group=self.group, topic=self.topic,
            mode="follow" if until is None else "until", start=str(start),
            until=None if until is None else str(until))
        self.plan: dict[int, PartitionPlan] = {}
        self._total = 0
        self._overflow: dict[int, list[RawMessage]] = {}
        self._t0: float | None = None

    # -- setup ----------------------------------------------------------------------
    def _on_commit(self, err: Any, partitions: Any) -> None:  # noqa: ARG002
        if err is not None:
            self._commit_errors += 1
            if self._commit_errors <= 3:
                log.warning('backfill group commit failed group="%s": %s', self.group, err)

    def _tp(self, p: int, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition

        return (TopicPartition(self.topic, p) if offset is None
                else TopicPartition(self.topic, p, offset))

    def _offsets_for_times(self, parts: list[int], ms: int, timeout_s: float
                           ) -> dict[int, int | None]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            got = self.consumer.offsets_for_times(
                [TopicPartition(self.topic, p, ms) for p in parts], timeout=timeout_s)
        except KafkaException as exc:
            msg = f"offsets_for_times({self.topic!r}, {ms} ms) failed: {exc}"
            raise KafkaIOError(msg) from exc
        out: dict[int, int | None] = {}
        for tp in got:
            if tp.error is not None:
                msg = f"offsets_for_times({self.topic!r}[{tp.partition}]) failed: {tp.error}"
                raise KafkaIOError(msg)
            # librdkafka answers -1 (OFFSET_END) when no record is at or after the time
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def make_plan(self, timeout_s: float = 30.0) -> dict[int, PartitionPlan]:
        """Ask Kafka for the partitions, watermarks and time offsets; choose the range.

        Raises
        ------
        ConfigError
            If the source topic does not exist.
        KafkaIOError
            If a metadata or offsets request fails.
        """
        from confluent_kafka import KafkaException

        try:
            md = self.consumer.list_topics(self.topic, timeout=timeout_s)
            meta = md.topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                msg = (f"source topic {self.topic!r} does not exist on "
                       f"{self.settings.kafka_bootstrap!r}; produce to it first")
                raise ConfigError(msg)
            parts = sorted(meta.partitions)
            begin: dict[int, int] = {}
            end: dict[int, int] = {}
            for p in parts:
                begin[p], end[p] = self.consumer.get_watermark_offsets(
                    self._tp(p), timeout=timeout_s, cached=False)
        except KafkaException as exc:
            msg = f"cannot read the offsets of {self.topic!r}: {exc}"
            raise KafkaIOError(msg) from exc
        stored = {p: o for (t, p), o in self.engine.offsets().items() if t == self.topic}
        frm = (None if self.start_bound.ms is None
               else self._offsets_for_times(parts, self.start_bound.ms, timeout_s))
        unt = (None if self.until_bound is None or self.until_bound.ms is None
               else self._offsets_for_times(parts, self.until_bound.ms, timeout_s))
        self.plan = plan_offsets(parts, begin=begin, end=end, stored=stored,
                                 from_offsets=frm, until_offsets=unt)
        self._total = sum(pl.todo for pl in self.plan.values())
        for pl in self.plan.values():
            if 0 <= pl.stored < pl.begin - 1:
                log.warning("partition %d: offsets %d..%d of %s were deleted (retention) "
                            "before this table applied them", pl.partition, pl.stored + 1,
                            pl.begin - 1, self.topic)
        return self.plan

    # -- helpers --------------------------------------------------------------------
    def _status(self, text: str) -> None:
        log.info("backfill %s", text)
        if self.on_status is not None:
            self.on_status(text)

    def _applied_to(self) -> dict[int, int]:
        return {p: o for (t, p), o in self.engine.offsets().items() if t == self.topic}

    def _lag(self, phase: Literal["catch-up", "follow"]) -> int:
        """Return the records left to the stop offsets (catch-up) or the known end offsets."""
        done = self._applied_to()
        lag = 0
        for p, pl in self.plan.items():
            nxt = max(done.get(p, -1) + 1, pl.start)
            if phase == "catch-up":
                lag += max(0, pl.stop - nxt)
            else:
                try:
                    hi = self.consumer.get_watermark_offsets(self._tp(p), cached=True)[1]
                except Exception:  # noqa: BLE001 - a status line: never fail for it
                    hi = -1
                lag += max(0, hi - nxt)
        return lag

    def _apply(self, msgs: list[RawMessage], phase: Literal["catch-up", "follow"]) -> None:
        res = self.engine.process(msgs)
        s = self.summary
        n = res.seen - res.skipped
        s.applied += n
        s.accepted += res.accepted
        s.rejected += res.rejected
        if phase == "catch-up":
            s.catch_up_applied += n
        commits = [self._tp(p, o + 1) for p, o in self._applied_to().items()]
        if commits:
            try:
                self.consumer.commit(offsets=commits, asynchronous=True)
            except Exception as exc:  # noqa: BLE001 - best effort: the table is the truth
                self._on_commit(exc, commits)
        if self.on_progress is not None:
            now = time.perf_counter()
            self.on_progress(Progress(
                phase=phase, applied=s.applied, accepted=s.accepted, rejected=s.rejected,
                total=self._total, lag=self._lag(phase),
                elapsed_s=now - (self._t0 or now)))

    def _check_error(self, err: Any) -> None:
        """Raise on a fatal consumer error; log (librdkafka retries) the others."""
        from confluent_kafka import KafkaError

        if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                         KafkaError._UNKNOWN_PARTITION,  # noqa: SLF001
                                         KafkaError.TOPIC_AUTHORIZATION_FAILED):
            msg = f"consuming {self.topic!r} failed: {err}"
            raise KafkaIOError(msg)
        log.warning("backfill consumer: %s (librdkafka retries)", err)

    # -- phases ---------------------------------------------------------------------
    def run(self) -> BackfillSummary:
        """Plan, assign, catch up (deterministic order), publish; then follow or return.

        Returns
        -------
        BackfillSummary
            Also kept in :attr:`summary`.

        Raises
        ------
        KafkaIOError
            A fatal consumer error.
        StateError
            A batch could not be committed (e.g. dead letters undeliverable).
        """
        if not self.plan:
            self.make_plan()
        s = self.summary
        s.partitions = {p: {"begin": pl.begin, "end": pl.end, "stored": pl.stored,
                            "start": pl.start, "stop": pl.stop, "applied_to": pl.stored}
                        for p, pl in self.plan.items()}
        follow = self.until_bound is None
        # the start offsets ride on the assignment (no seek before it); a bounded run
        # reads only the partitions it has records to apply from
        assign = [self._tp(p, pl.start) for p, pl in self.plan.items() if follow or pl.todo]
        if assign:
            self.consumer.assign(assign)
        idle = [self._tp(p) for p, pl in self.plan.items() if follow and not pl.todo]
        if idle:  # followed later: nothing to fetch for them during the catch-up
            self.consumer.pause(idle)
        s.setup_s = time.perf_counter() - self._t_setup
        s.skipped = gaps(self.plan)
        if s.skipped:
            where = ", ".join(f"partition {p}: {n}" for p, n in s.skipped.items())
            msg = (f"warning: {sum(s.skipped.values())} records between the table's stored "
                   f"offsets and this run's start are left out ({where}): the table will "
                   "have a gap; without --from a backfill resumes where the table stopped")
            log.warning("backfill %s", msg)
            if self.on_status is not None:
                self.on_status(msg)
        before = dict(self.engine.counters)
        ranges = ", ".join(f"{p}:{pl.start}..{pl.stop}" for p, pl in self.plan.items())
        s.decoder = "native" if self.engine.decoder.native else "python"
        self._status(f"catch-up: {self._total} records of {self.topic} [{ranges}) into "
                     f"{self.spec.name}.v{self.spec.version} (group {self.group}, "
                     f"{s.decoder} decoder)")
        with _gc_between_batches():
            self._catch_up(follow)
        if not self.stop.is_set():
            self._publish_sweep()
            s.complete = True
        if self._t0 is not None:
            s.catch_up_s = time.perf_counter() - self._t0
            s.events_per_s = s.catch_up_applied / s.catch_up_s if s.catch_up_s > 0 else 0.0
        self._status(f"catch-up {'done' if s.complete else 'stopped'}: "
                     f"{s.catch_up_applied} records applied ({s.accepted} accepted, "
                     f"{s.rejected} rejected) in {s.catch_up_s:.1f} s "
                     f"({s.events_per_s:,.0f} events/s); {s.published} vectors published")
        if follow and not self.stop.is_set():
            self.engine.publish = self.publisher
            self._follow()
        s.interrupted = self.stop.is_set()
        s.rejected_by_reason = {
            k.split(".", 1)[1]: n - before.get(k, 0) for k, n in sorted(
                self.engine.counters.items()) if k.startswith("rejected.")
            and n > before.get(k, 0)}
        return s

    def _catch_up(self, follow: bool) -> None:
        """Apply every planned record in merge order, in batches of ``self.batch``."""
        cu = CatchUp(self.topic, self.plan, self.batch, keep_overflow=follow)
        consume = self.consumer.consume
        fetch = min(max(self.batch, 1000), 20_000)
        idle_since: float | None = None
        while True:
            chunk = cu.next_batch()
            if chunk is None and not (cu.done or self.stop.is_set()):
                # the fetcher runs ahead in librdkafka's threads: take what it queued
                # without waiting, and if it queued nothing, apply the records that are
                # ready rather than idle until a whole batch arrives (cuts do not change
                # the end state)
                msgs = consume(num_messages=max(1, min(fetch, cu.expected())), timeout=0)
                if msgs:
                    self._feed(cu, msgs)
                    continue
                chunk = cu.next_batch(at_least=EARLY_BATCH)
            if chunk is not None:
                self._apply(chunk, "catch-up")
                del chunk
                _collect()
                if self.stop.is_set():
                    break
                continue
            if cu.done or self.stop.is_set():
                break
            # consume(n) waits for n records (or the timeout): wait for no more than an
            # early batch needs, then take the rest as it comes (above); for one record
            # at first, which starts the catch-up clock (events_per_s)
            want = 1 if self._t0 is None else min(fetch, cu.expected(), EARLY_BATCH,
                                                  self.batch)
            msgs = consume(num_messages=max(1, want), timeout=0.5)
            if not msgs:
                idle_since = self._idle(cu, idle_since)
                continue
            idle_since = None
            self._feed(cu, msgs)
        self._overflow = cu.overflow

    def _feed(self, cu: CatchUp, msgs: list[Any]) -> None:
        """Hand one poll's messages to ``cu``; pause partitions it closed; raise on errors."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        closed, errors = cu.feed(msgs)
        for err in errors:
            self._check_error(err)
        if closed:  # stop prefetching past the stop offsets (follow resumes them)
            self.consumer.pause([self._tp(p) for p in closed])

    def _idle(self, cu: CatchUp, since: float | None) -> float:
        """Note a poll that gave nothing; warn once a minute about partitions still open.

        Offsets are contiguous in ``engagements`` (not compacted, not transactional), so
        a partition only stays open while its records are on their way.
        """
        now = time.monotonic()
        if since is None:
            return now
        if now - since >= 60.0:
            waiting = {p: pl.stop for p, pl in self.plan.items() if cu.is_open(p)}
            log.warning("backfill: no record for %.0f s; still waiting for partitions %s of "
                        "%s up to their stop offsets (is the broker up?)", now - since,
                        waiting, self.topic)
            return now
        return since

    def _sweep_done_before(self) -> bool:
        """Return True if an earlier sweep published this table state and the topic has it.

        Its mark (table meta :data:`SWEEP_META`) names the topic, the table's offsets
        and the number of vectors sent; a run that applied nothing, on a table whose
        offsets are those, to a topic holding at least that many records (not deleted
        and re-created since), has nothing to republish.
        """
        raw = self.engine.table.get_meta(SWEEP_META)
        if raw is None or self.summary.catch_up_applied or self.publisher is None:
            return False
        try:
            mark = json.loads(raw)
        except ValueError:
            return False
        if mark.get("topic") != self.publisher.topic or mark.get("offsets") != self._offsets_json():
            return False
        from streamer.kafka_io import end_offsets

        try:
            held = sum(end_offsets(self.settings.kafka_bootstrap, self.publisher.topic).values())
        except (ConfigError, KafkaIOError):
            return False
        return held >= int(mark.get("published", 0))

    def _offsets_json(self) -> list[list[Any]]:
        return [[t, p, o] for (t, p), o in sorted(self.engine.offsets().items())]

    def _publish_sweep(self) -> None:
        """Publish every entity's stored vector once, then wait for the acks.

        Values in the table's current format go out as stored (the bytes a replica
        would get from the engine); any other (an older format) is decoded and encoded.
        Skipped when an earlier sweep already published this table state
        (:meth:`_sweep_done_before`); after a sweep its mark is stored in the table.
        """
        if self.publisher is None:
            return
        if self._sweep_done_before():
            self.summary.sweep_skipped = True
            self._status("nothing applied, and an earlier run published every vector of "
                         "this table state: not republished")
            return
        from streamer.store.codec import current_frame_time, decode_entity, decode_record

        dim, codec = self.engine.learner.dim, self.engine.table.codec
        items: list[tuple[bytes, bytes, float]] = []
        n = 0
        for key, value in self.engine.table.iter_encoded_features():  # type: ignore[attr-defined]
            ts = current_frame_time(value, dim, codec)
            if ts is None:  # re-encode through the checked path (raises if corrupt)
                self.publisher([decode_entity(key)], [decode_record(value, dim, key=key)])
                n += 1
                continue
            items.append((key, value, ts))
            if len(items) >= 10_000:
                self.publisher.send_encoded(items)
                n += len(items)
                items = []
        if items:
            self.publisher.send_encoded(items)
            n += len(items)
        self.producer.flush()
        self.summary.published += n
        self.engine.table.put_meta(SWEEP_META, json.dumps(
            {"topic": self.publisher.topic, "offsets": self._offsets_json(), "published": n},
            separators=(",", ":")).encode())

    def _follow(self) -> None:
        """Apply live records as they come (per-batch publishing) until ``stop`` is set."""
        consume = self.consumer.consume
        within = max(self.settings.worker.batch_within_s, 0.05)
        self._status("following the live stream; SIGINT/SIGTERM stops after the current "
                     "batch")
        self.consumer.resume([self._tp(p) for p in self.plan])
        for items in self._overflow.values():
            for i in range(0, len(items), self.batch):
                self._apply(items[i:i + self.batch], "follow")
        self._overflow = {}
        published0 = self.publisher.sent if self.publisher is not None else 0
        next_status = time.monotonic() + self.status_every_s
        since = 0
        topic = self.topic
        while not self.stop.is_set():
            raws: list[RawMessage] = []
            for m in consume(num_messages=self.batch, timeout=within):
                err = m.error()
                if err is not None:
                    self._check_error(err)
                    continue
                raws.append(RawMessage(m.value(), topic, m.partition(), m.offset()))
            if raws:
                self._apply(raws, "follow")
                since += len(raws)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_every_s
                self._status(f"following: {since} records applied in the last "
                             f"{self.status_every_s:g} s, {self.summary.applied} in all, "
                             f"lag {self._lag('follow')}")
                since = 0
        if self.publisher is not None:
            self.producer.flush()
            self.summary.published += self.publisher.sent - published0

    # -- teardown -------------------------------------------------------------------
    def close(self) -> None:
        """Commit the final position (sync, best effort), close the consumer, flush, close."""
        done = self._applied_to()
        for p, d in self.summary.partitions.items():
            d["applied_to"] = done.get(p, -1)
        commits = [self._tp(p, o + 1) for p, o in done.items()]
        try:
            if commits:
                self.consumer.commit(offsets=commits, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - best effort: the table is the truth
            log.warning('backfill final group commit failed group="%s": %s', self.group, exc)
        finally:
            self.consumer.close()
            try:
                self.producer.flush()
            finally:
                self.engine.close()


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        msg = f"--batch {batch!r}; expected an integer >= 1 (records per engine batch)"
        raise BadRequest(msg)


def _warm_up(spec: TopologySpec) -> None:
    """Run one synthetic event through a throwaway learner of ``spec`` (loads its JIT code)."""
    from streamer.events.decode import to_batch
    from streamer.events.schema import EngagementEvent
    from streamer.learn.registry import build_learner

    try:
        learner = build_learner(spec.algorithm, spec.params)
        action = next(iter(spec.action_weights), "click")
        ev = EngagementEvent(user_id="warm-up", item_id="warm-up", action=action,
                             ts=1.0e9)
        learner.learn_many(to_batch([ev], partitions=[0], offsets=[0],
                                    action_weights=spec.action_weights))
        learner.vectors(["u:warm-up", "i:warm-up"])
        learner.state_changes()
    except Exception as exc:  # noqa: BLE001 - an optimisation only
        log.debug("backfill warm-up of %s skipped: %s", spec.algorithm, exc)


def run_backfill(
    settings: Settings,
    spec: TopologySpec,
    *,
    start: Bound,
    until: Bound | None,
    batch: int = DEFAULT_BATCH,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> BackfillSummary:
    """Backfill ``spec`` from ``settings.topic(spec.source)``: prepare, run, close.

    Parameters
    ----------
    settings, spec, start, until, batch, on_progress, on_status, stop
        See :class:`Backfill`.

    Returns
    -------
    BackfillSummary
        What was applied; ``complete`` tells whether the bounded range was finished.

    Raises
    ------
    BadRequest
        A bad range or batch size.
    ConfigError
        The table is in use; the source topic is missing or has another partition count.
    RetiredType
        The version is retired.
    KafkaIOError, RegistryUnavailable
        Kafka cannot be reached.
    StateError
        The table belongs to other settings, or a batch could not be committed.
    """
    t0 = time.perf_counter()
    check_range(start, until)
    _check_batch(batch)
    prepare(settings, spec)
    bf = Backfill(settings, spec, start=start, until=until, batch=batch,
                  on_progress=on_progress, on_status=on_status, stop=stop, started_at=t0)
    try:
        return bf.run()
    finally:
        bf.close()


__all__ = [
    "DEFAULT_BATCH",
    "Backfill",
    "BackfillSummary",
    "Bound",
    "OrderedMerge",
    "PartitionPlan",
    "Progress",
    "check_range",
    "consumer_config",
    "parse_bound",
    "plan_offsets",
    "prepare",
    "resolve_target",
    "run_backfill",
]

