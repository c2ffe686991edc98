"""Synchronous Kafka helpers on kafka-python: topics, the data-set producer, test readers.

This is the only module of the events/data-set layer that imports kafka-python
(imported lazily, inside the functions, so importing this module opens nothing).
The faust runtime has its own clients; these helpers serve the CLI (``streamer
produce``, topic creation), the replay tools and the integration tests.

Topic layout (DESIGN §2, §8): ``engagements`` (key = ``user_id``, explicit partition
count, default 4, ``retention.ms=-1`` because it is the system of record and data
sets carry 1970-based or 2004 event times), ``engagements.deadletter`` and the
compacted ``embeddings.<type>.v<version>`` topics.

Partitioning: records are placed by kafka-python's default partitioner, murmur2 of
the key bytes modulo the partition count, as the Java client, aiokafka and faust do
(:func:`partition_for_key` computes it offline).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from streamer.errors import ConfigError, StreamerError
from streamer.types import Clock, SystemClock

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)

ENGAGEMENTS_TOPIC: Final = "engagements"
DEADLETTER_TOPIC: Final = "engagements.deadletter"
DEFAULT_PARTITIONS: Final = 4

Message = tuple[bytes | None, bytes | None, int | None]
"""A record to produce: ``(key, value, timestamp_ms)``; ``value=None`` is a tombstone,
``timestamp_ms=None`` lets the producer use the wall clock."""


class KafkaIOError(StreamerError, RuntimeError):
    """Kafka could not be reached or refused a request (delivery failed, timeout)."""

    http_status = 503


@dataclass(frozen=True)
class TopicSpec:
    """Wanted shape of a topic.

    Attributes
    ----------
    partitions
        Partition count (>= 1). Existing topics must already have exactly this count.
    configs
        Topic-level configs set at creation (e.g. ``{"retention.ms": "-1"}``).
        Existing topics are not altered.
    replication_factor
        Replicas per partition (1 on a single-node broker).
    """

    partitions: int = DEFAULT_PARTITIONS
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int) \
                or self.partitions < 1:
            msg = f"TopicSpec.partitions must be an integer >= 1, got {self.partitions!r}"
            raise ConfigError(msg)
        if not isinstance(self.replication_factor, int) or self.replication_factor < 1:
            msg = (f"TopicSpec.replication_factor must be an integer >= 1, "
                   f"got {self.replication_factor!r}")
            raise ConfigError(msg)


def embeddings_topic(type_name: str, version: int) -> str:
    """Return the compacted output topic of an embedding type: ``embeddings.<type>.v<version>``."""
    return f"embeddings.{type_name}.v{version}"


def default_topic_specs(
    partitions: int = DEFAULT_PARTITIONS,
    embedding_topics: Iterable[str] = (),
    *,
    engagements: str = ENGAGEMENTS_TOPIC,
    deadletters: str = DEADLETTER_TOPIC,
) -> dict[str, TopicSpec]:
    """Return the standard topic layout.

    ``engagements``: ``partitions`` partitions, ``retention.ms=-1``; the dead-letter
    topic: same count, ``retention.ms=-1`` (dead letters keep the source record's
    timestamp, which may be years old, so time-based retention would drop them at
    once: purge by hand); each embedding topic: ``cleanup.policy=compact``.
    """
    specs = {
        engagements: TopicSpec(partitions, {"retention.ms": "-1"}),
        deadletters: TopicSpec(partitions, {"retention.ms": "-1"}),
    }
    for name in embedding_topics:
        if not name.startswith("embeddings."):
            msg = f"embedding topic {name!r} must start with 'embeddings.' (embeddings_topic())"
            raise ConfigError(msg)
        specs[name] = TopicSpec(partitions, {"cleanup.policy": "compact"})
    return specs


def ensure_topics(
    bootstrap: str, specs: Mapping[str, TopicSpec], *, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics and verify the partition counts of existing ones (idempotent).

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port...]`` of the brokers.
    specs
        Topic name -> :class:`TopicSpec`.
    timeout_s
        Seconds to wait for the broker and for new topics' leaders.

    Returns
    -------
    dict
        Topic name -> ``"created"`` or ``"exists"``.

    Raises
    ------
    ConfigError
        If an existing topic has a different partition count (faust crash-loops on
        such mismatches; repartitioning a keyed topic moves keys, so it is an
        operator decision), or a name/spec is invalid.
    KafkaIOError
        If the broker cannot be reached or refuses the request.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not specs:
        return {}
    for name, spec in specs.items():
        if not isinstance(spec, TopicSpec):
            msg = f"spec of topic {name!r} is a {type(spec).__name__}; expected a TopicSpec"
            raise ConfigError(msg)
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="streamer-admin",
            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        msg = f"cannot reach Kafka at {bootstrap!r}: {exc!r}; is the broker running?"
        raise KafkaIOError(msg) from exc
    result: dict[str, str] = {}
    try:
        existing = set(admin.list_topics())
        missing = {n: s for n, s in specs.items() if n not in existing}
        if missing:
            request = {
                name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": {k: str(v) for k, v in spec.configs.items()},
                }
                for name, spec in missing.items()
            }
            try:
                resp = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
            except KafkaError as exc:
                msg = f"creating topics {sorted(missing)} on {bootstrap!r} failed: {exc!r}"
                raise KafkaIOError(msg) from exc
            for topic in resp.get("topics", []):
                name, code = topic["name"], topic.get("error_code", 0)
                if code == 0:
                    result[name] = "created"
                elif code == TopicAlreadyExistsError.errno:  # created concurrently
                    result[name] = "exists"
                else:
                    msg = (f"creating topic {name!r} failed: error {code} "
                           f"{topic.get('error_message')!r}; spec {missing[name]}")
                    raise KafkaIOError(msg)
            # wait for concurrently created topics too: another worker may have created
            # one a moment ago and its metadata may not be visible yet
            if result:
                admin.wait_for_topics(sorted(result), timeout_ms=timeout_ms)
        counts = _partition_counts(admin, list(specs))
    except KafkaError as exc:
        msg = f"Kafka request to {bootstrap!r} failed: {exc!r}"
        raise KafkaIOError(msg) from exc
    finally:
        admin.close()
    for name, spec in specs.items():
        result.setdefault(name, "exists")
        have = counts.get(name)
        if have != spec.partitions:
            msg = (f"topic {name!r} on {bootstrap!r} has {have} partitions, expected "
                   f"{spec.partitions}; delete and recreate it (data is lost) or configure "
                   f"{have} partitions")
            raise ConfigError(msg)
    return result


def topic_partition_counts(
    bootstrap: str, topics: Iterable[str], *, timeout_s: float = 30.0
) -> dict[str, int]:
    """Return ``{topic: partition count}`` for the given topics that exist (others left out).

    Raises
    ------
    KafkaIOError
        If the broker cannot be reached.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="streamer-admin",
            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
        )
        try:
            return _partition_counts(admin, list(topics))
        finally:
            admin.close()
    except KafkaError as exc:
        msg = f"cannot reach Kafka at {bootstrap!r}: {exc!r}; is the broker running?"
        raise KafkaIOError(msg) from exc


def _partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(topics):
        if topic.get("error_code", 0) == 0:
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def produce_events(
    bootstrap: str,
    topic: str,
    messages: Iterable[Message],
    *,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    producer_config: Mapping[str, Any] | None = None,
) -> int:
    """Produce ``(key, value, timestamp_ms)`` messages to ``topic`` and wait for all acks.

    Parameters
    ----------
    bootstrap
        Broker address(es).
    topic
        Existing topic (auto-creation is disabled: create it with :func:`ensure_topics`).
    messages
        Records in order. The record timestamp is ``timestamp_ms`` (event time, ms);
        the key decides the partition (murmur2, see :func:`partition_for_key`).
    rate
        Messages per second (wall time) or ``None`` for as fast as possible. Pacing
        is by schedule (message ``i`` is sent no earlier than ``start + i / rate``), so
        short stalls are caught up.
    progress
        Called with the number of messages sent so far, every ``progress_every``
        messages and once at the end.
    clock, sleep
        Wall-clock source and sleep function for the rate limiter (injectable).
    producer_config
        Extra :class:`kafka.KafkaProducer` settings (override the defaults:
        ``acks="all"``, idempotence on, ``linger_ms=20``, ``batch_size=256 KiB``).

    Returns
    -------
    int
        Number of messages produced and acknowledged.

    Raises
    ------
    ConfigError
        If ``rate`` is not > 0 or the topic does not exist.
    KafkaIOError
        If the broker cannot be reached or any record failed delivery (the first
        error is reported; Kafka's idempotent producer keeps the rest in order).
    """
    if rate is not None and not rate > 0:
        msg = f"rate must be > 0 messages/s or None, got {rate!r}"
        raise ConfigError(msg)
    clock = clock or SystemClock()
    if topic not in topic_partition_counts(bootstrap, [topic]):
        msg = (f"topic {topic!r} does not exist on {bootstrap!r}; create it first "
               "(kafka_io.ensure_topics, or `streamer produce`, which creates it)")
        raise ConfigError(msg)
    producer = SyncProducer(bootstrap, **dict(producer_config or {}))
    try:
        start = clock.now_s()
        n = 0
        for key, value, ts_ms in messages:
            if rate is not None:
                due = start + n / rate
                now = clock.now_s()
                if now < due:
                    sleep(due - now)
            producer.send(topic, value, key=key, timestamp_ms=ts_ms)
            n += 1
            if progress is not None and n % progress_every == 0:
                progress(n)
        producer.flush()
        if progress is not None:
            progress(n)
        return n
    finally:
        producer.close()


class SyncProducer:
    """A kafka-python producer whose delivery errors surface on :meth:`flush`.

    :meth:`send` is asynchronous (batched); :meth:`flush` blocks until every record
    sent so far is acknowledged and raises :class:`KafkaIOError` if any failed. Usable
    by the runtime's dead-letter sink: ``send(DEADLETTER_TOPIC, rejected.raw,
    key=..., headers=rejected.headers())`` then ``flush()`` before committing offsets.

    Parameters
    ----------
    bootstrap
        Broker address(es).
    **config
        :class:`kafka.KafkaProducer` settings overriding the defaults (``acks="all"``,
        ``enable_idempotence=True``, ``linger_ms=20``, ``batch_size=262144``,
        ``allow_auto_create_topics=False``, ``max_block_ms=30000``).

    Raises
    ------
    KafkaIOError
        If the broker cannot be reached.

    Notes
    -----
    Thread safety: kafka-python's producer is thread-safe; the error slot is set from
    its I/O thread and read on :meth:`flush`.
    """

    DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType({
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "allow_auto_create_topics": False,
        "max_block_ms": 30_000,
        "client_id": "streamer-producer",
    })

    def __init__(self, bootstrap: str, **config: Any) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.bootstrap = bootstrap
        cfg = {**self.DEFAULTS, **config}
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, **cfg)
        except KafkaError as exc:
            msg = f"cannot reach Kafka at {bootstrap!r}: {exc!r}; is the broker running?"
            raise KafkaIOError(msg) from exc
        self._error: BaseException | None = None
        self._failed = 0
        self.sent = 0

    def require_topic(self, topic: str) -> set[int]:
        """Return the partitions of ``topic``.

        Raises
        ------
        ConfigError
            If the topic does not exist (within ``max_block_ms``).
        """
        from kafka.errors import KafkaError

        try:
            parts = self._producer.partitions_for(topic)
        except KafkaError as exc:
            parts = None
            cause: BaseException | None = exc
        else:
            cause = None
        if not parts:
            msg = (f"topic {topic!r} does not exist on {self.bootstrap!r} ({cause!r}); "
                   "create it first (kafka_io.ensure_topics / streamer produce --create)")
            raise ConfigError(msg) from cause
        return set(parts)

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (value ``None`` = tombstone, needs a key).

        Raises
        ------
        KafkaIOError
            If the record cannot even be queued (buffer full past ``max_block_ms``,
            record too large, producer closed).
        """
        from kafka.errors import KafkaError

        try:
            fut = self._producer.send(topic, value, key=key, headers=headers,
                                      timestamp_ms=timestamp_ms, partition=partition)
        except (KafkaError, ValueError, TypeError) as exc:
            msg = f"cannot queue a record for {topic!r}: {exc!r}"
            raise KafkaIOError(msg) from exc
        fut.add_errback(self._on_error)
        self.sent += 1

    def _on_error(self, exc: BaseException) -> None:
        self._failed += 1
        if self._error is None:
            self._error = exc

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued record is acknowledged.

        Raises
        ------
        KafkaIOError
            If any record failed since the last flush, or the flush timed out.
        """
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            msg = f"flush to {self.bootstrap!r} timed out or failed: {exc!r}"
            raise KafkaIOError(msg) from exc
        if self._error is not None:
            err, failed = self._error, self._failed
            self._error, self._failed = None, 0
            msg = f"{failed} record(s) failed delivery to {self.bootstrap!r}; first: {err!r}"
            raise KafkaIOError(msg) from err

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the producer (pending records are sent first, up to ``timeout_s``)."""
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Return the partition the default (murmur2) partitioner picks for ``key``.

    Same placement as the Java client, kafka-python, aiokafka and faust:
    ``(murmur2(key) & 0x7fffffff) % num_partitions``.
    """
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def end_offsets(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> dict[int, int]:
    """Return ``{partition: end offset}`` (the offset the next record will get).

    Raises
    ------
    ConfigError
        If the topic does not exist.
    KafkaIOError
        If the broker cannot be reached.
    """
    from kafka.structs import TopicPartition

    consumer = _consumer(bootstrap, timeout_s)
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic, bootstrap)]
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
        return {tp.partition: off for tp, off in sorted(ends.items())}
    finally:
        consumer.close()


def consume_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Read every record of ``topic`` present now, from the beginning (no consumer group).

    Parameters
    ----------
    bootstrap, topic
        Where to read.
    timeout_s
        Give up after this many seconds of wall time.

    Returns
    -------
    list of kafka.consumer.fetcher.ConsumerRecord
        Sorted by ``(partition, offset)``; each has ``key``, ``value``, ``timestamp``
        (ms), ``headers``.

    Raises
    ------
    ConfigError
        If the topic does not exist.
    KafkaIOError
        If not all records up to the end offsets arrived within ``timeout_s``.
    """
    from kafka.structs import TopicPartition

    consumer = _consumer(bootstrap, timeout_s)
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic, bootstrap)]
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            if time.monotonic() > deadline:
                got = {tp.partition: consumer.position(tp) for tp in pending}
                msg = (f"consume_all({topic!r}) timed out after {timeout_s} s at positions "
                       f"{got}, ends {({tp.partition: ends[tp] for tp in pending})}")
                raise KafkaIOError(msg)
            batches = consumer.poll(timeout_ms=500, max_records=50_000)
            for tp, recs in batches.items():
                records.extend(r for r in recs if r.offset < ends[tp])
            for tp in list(pending):
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def _consumer(bootstrap: str, timeout_s: float) -> Any:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id="streamer-reader",
            request_timeout_ms=max(int(timeout_s * 1000), 31_000),
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
    except KafkaError as exc:
        msg = f"cannot reach Kafka at {bootstrap!r}: {exc!r}; is the broker running?"
        raise KafkaIOError(msg) from exc


def _partitions(consumer: Any, topic: str, bootstrap: str) -> list[int]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        msg = f"topic {topic!r} does not exist on {bootstrap!r}; create it first"
        raise ConfigError(msg)
    return sorted(parts)
