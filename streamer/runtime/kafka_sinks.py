"""Kafka sinks used by the worker: dead letters and the compacted embeddings topic.

Both share one confluent-kafka (librdkafka) producer: measured here, enqueueing a
540-byte record costs ~5 µs against ~60 µs with kafka-python, and the worker publishes
a few records per event. ``partitioner=murmur2_random`` keeps key placement identical
to kafka-python/aiokafka/faust (librdkafka's default differs; DESIGN §8).

Dead letters are flushed and their delivery checked *before* the engine commits a
batch, so a crash can repeat a dead letter but never lose one (at-least-once).

A broker that goes away (restart, network cut) is waited for, never given up on:
records do not expire locally (``message.timeout.ms=0``, "infinite" in librdkafka's
CONFIGURATION.md), librdkafka reconnects with exponential backoff (``reconnect.backoff.ms``
100 ms up to ``reconnect.backoff.max.ms``, jitter -25 %..+50 %), and a dead-letter flush
waits until the broker acknowledges them, logging a warning with what it waits for at
growing intervals (5, 10, 20, 40, then every 60 s). The worker process stays alive and
consumes on once the broker is back; only a non-retriable delivery error (e.g. the topic
was deleted) fails a flush.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from streamer.errors import StateError
from streamer.events.decode import Rejected
from streamer.store.base import FeatureRecord
from streamer.store.codec import encode_records

log = logging.getLogger(__name__)


WAIT_LOG_FIRST_S = 5.0
"""Wall seconds a flush waits before its first "waiting for the broker" warning."""
WAIT_LOG_MAX_S = 60.0
"""Longest interval (wall s) between two "waiting for the broker" warnings."""


class SinkProducer:
    """A librdkafka producer with delivery-error accounting that waits out broker outages.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    overrides
        librdkafka settings (``linger.ms``, ...), merged over the defaults.

    Notes
    -----
    Records never time out locally (``message.timeout.ms=0``): while the broker is down
    they stay queued (up to ``queue.buffering.max.messages``, then :meth:`produce`
    waits) and are sent once it is back, in order per partition (idempotent producer).
    A delivery is only *failed* on a non-retriable error; :attr:`failed` and
    :attr:`last_error` count those. :attr:`last_client_error` is the last connection-level
    error (e.g. all brokers down), which librdkafka retries by itself.
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
            # 0 = never expire: wait for the broker rather than drop a record
            "message.timeout.ms": 0,
            # reconnect with exponential backoff (100 ms .. 2 s) rather than librdkafka's
            # 10 s cap, so a restarted broker is found again within seconds
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2_000,
            "error_cb": self._on_error,
        }
        conf.update(overrides)
        self.bootstrap = bootstrap
        self._lock = threading.Lock()
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_client_error: str | None = None
        self._p = Producer(conf)

    def _on_error(self, err: KafkaError) -> None:
        # client-level errors (all brokers down, transport): librdkafka retries them
        # by itself; they are shown in the "waiting for Kafka" lines
        self.last_client_error = str(err)
        if err.fatal():
            log.error("kafka producer fatal error: %s", err)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
                return
            self.failed += 1
            self.last_error = str(err)
            n = self.failed
        if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th... failure: a trail, not a flood
            log.error('kafka delivery failed topic="%s" error="%s" (failed deliveries so '
                      "far: %d)", msg.topic() if msg is not None else "?", err, n)

    @property
    def pending(self) -> int:
        """Records produced whose delivery report has not come yet (queued or in flight)."""
        with self._lock:
            return self.produced - self.delivered - self.failed

    def produce(self, topic: str, key: bytes, value: bytes | None,
                headers: list[tuple[str, bytes]] | None = None,
                timestamp_ms: int | None = None) -> None:
        """Queue one record; waits (serving delivery reports) while the local queue is full.

        The queue fills only when the broker has been away for a long time
        (``queue.buffering.max.messages`` records); the wait is then logged like a
        :meth:`flush` wait and lasts until the broker takes records again.
        """
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": self._on_delivery}
        if headers:
            kw["headers"] = headers
        if timestamp_ms is not None and timestamp_ms >= 0:
            kw["timestamp"] = timestamp_ms
        try:
            self._p.produce(topic, **kw)
        except BufferError:
            waiter = _BrokerWait(self, f"room in the local queue for {topic!r}")
            while True:
                self._p.poll(0.05)
                try:
                    self._p.produce(topic, **kw)
                    break
                except BufferError:
                    waiter.tick()
            waiter.done()
        with self._lock:
            self.produced += 1
        self._p.poll(0)

    def flush(self, timeout_s: float | None = 60.0, *, what: str = "records") -> None:
        """Block until every queued record is acknowledged (or has failed).

        Parameters
        ----------
        timeout_s
            Give up after this many wall seconds; ``None`` waits as long as the broker
            is away, logging a warning at growing intervals (5 s, 10 s, 20 s, 40 s,
            then every 60 s) and an info line once delivered.
        what
            What is being flushed, for the log lines (e.g. ``"dead letters"``).

        Raises
        ------
        StateError
            If records are still queued after ``timeout_s`` (broker unreachable).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        left = self._p.flush(0 if timeout_s is None else min(timeout_s, 1.0))
        if not left:
            return
        waiter = _BrokerWait(self, what)
        while left:
            step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if step <= 0:
                msg = (f"{left} records still undelivered after {timeout_s:g} s; is the broker "
                       f"at {self.bootstrap} reachable?")
                raise StateError(msg)
            left = self._p.flush(step)
            if left:
                waiter.tick()
        waiter.done()


class _BrokerWait:
    """Log lines of one wait for the broker: warnings at growing intervals, then "done"."""

    def __init__(self, producer: SinkProducer, what: str) -> None:
        self._producer = producer
        self._what = what
        self._t0 = time.monotonic()
        self._next = self._t0 + WAIT_LOG_FIRST_S
        self._interval = WAIT_LOG_FIRST_S
        self._warned = False

    def tick(self) -> None:
        """Log a warning if the next one is due (call it between waits)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._warned = True
        log.warning('waiting for Kafka at %s: %d records not acknowledged after %.0f s '
                    '(waiting for %s); retrying until the broker answers, nothing is dropped '
                    '(last error: %s)', self._producer.bootstrap, self._producer.pending,
                    now - self._t0, self._what, self._producer.last_client_error)
        self._interval = min(2 * self._interval, WAIT_LOG_MAX_S)
        self._next = now + self._interval

    def done(self) -> None:
        """Log that the wait is over, if a warning was logged."""
        if self._warned:
            log.info("Kafka at %s answered again: %s delivered after %.1f s of waiting",
                     self._producer.bootstrap, self._what, time.monotonic() - self._t0)


class KafkaDeadLetters:
    """Dead-letter sink on a topic: value = the raw bytes, headers = reason and source position.

    Parameters
    ----------
    producer
        The shared :class:`SinkProducer`.
    topic
        Dead-letter topic (``engagements.deadletter``).
    type_name
        The embedding type whose worker rejected the message, sent as header
        ``x-streamer-type``: every type's worker reads the same input, so a malformed
        message is dead-lettered once per type and this tells the copies apart.
    version
        The type's version, sent as header ``x-streamer-version`` (a backfill of a new
        version and the live worker dead-letter the same message); none if ``None``.
    """

    def __init__(self, producer: SinkProducer, topic: str, type_name: str = "",
                 version: int | None = None) -> None:
        self._producer = producer
        self.topic = topic
        self._type_headers = [("x-streamer-type", type_name.encode("utf-8"))]
        if version is not None:
            self._type_headers.append(("x-streamer-version", str(version).encode("ascii")))
        self.sent = 0
        self._pending = 0
        self._counts: dict[str, int] = {}

    def send(self, rejected: Rejected) -> None:
        """Queue one reject (keyed by its source position)."""
        key = f"{rejected.topic}/{rejected.partition}/{rejected.offset}".encode()
        self._producer.produce(self.topic, key, rejected.raw,
                               headers=[*rejected.headers(), *self._type_headers])
        self.sent += 1
        self._pending += 1
        self._counts[rejected.reason] = self._counts.get(rejected.reason, 0) + 1

    def flush(self) -> None:
        """Block until every queued reject is acknowledged, however long the broker is away.

        While the broker is down this waits (logging what it waits for; see
        :meth:`SinkProducer.flush` with ``timeout_s=None``): the engine commits the batch
        only after its dead letters are durable, and giving up would only make a
        restarted worker wait for the same broker.

        Raises
        ------
        StateError
            If a dead letter could not be delivered (a non-retriable error): the batch
            must not be committed.
        """
        if not self._pending:
            return
        failed_before = self._producer.failed
        self._producer.flush(None, what=f"{self._pending} dead letters to {self.topic!r}")
        if self._producer.failed > failed_before:
            msg = (f"dead letters to {self.topic!r} failed: {self._producer.last_error}; "
                   "the batch is not committed and will be re-read")
            raise StateError(msg)
        self._pending = 0

    @property
    def counts(self) -> dict[str, int]:
        """Dead letters sent by this sink, by reason."""
        return dict(self._counts)


class EmbeddingPublisher:
    """Publishes changed vectors to ``embeddings.<type>.v<n>`` (compacted, key = entity id).

    Values are :func:`streamer.store.codec.encode_records` bytes in the type's storage
    codec (``float32``/``float16``/``int8``), so replicas hold exactly the feature
    table's values; the record timestamp is the vector's event time (ms). Records are
    queued by ``__call__``; the engine calls :meth:`flush` before it commits the batch,
    so a crash never leaves a committed vector out of the topic. While the broker is
    away records wait in the producer's queue (they never expire) and go out in order
    once it is back.
    """

    def __init__(self, producer: SinkProducer, topic: str, codec: str = "float32") -> None:
        self._producer = producer
        self.topic = topic
        self.codec = codec
        self.sent = 0
        self._pending = False
        self._failed_mark = 0

    def __call__(self, ids: list[str], records: list[FeatureRecord]) -> None:
        """Queue one message per changed entity."""
        if not self._pending:
            self._failed_mark = self._producer.failed  # failures from here on count
        produce = self._producer.produce
        topic = self.topic
        values = encode_records(records, self.codec, names=ids)  # type: ignore[arg-type]
        for entity, rec, value in zip(ids, records, values, strict=True):
            ts = rec.updated_at
            produce(topic, entity.encode(), value,
                    timestamp_ms=int(ts * 1000) if ts == ts else None)
        self.sent += len(ids)
        self._pending = True

    def send_encoded(self, items: list[tuple[bytes, bytes, float]]) -> None:
        """Queue already encoded vectors: ``(entity key, value, updated_at)`` each.

        ``value`` must be what :meth:`__call__` would send for that record (the table's
        stored bytes in the type's codec, see
        :func:`streamer.store.codec.current_frame_time`); ``updated_at`` is event
        seconds (the record timestamp).
        """
        if not self._pending:
            self._failed_mark = self._producer.failed
        produce = self._producer.produce
        topic = self.topic
        for key, value, ts in items:
            produce(topic, key, value, timestamp_ms=int(ts * 1000) if ts == ts else None)
        self.sent += len(items)
        self._pending = True

    def flush(self) -> None:
        """Block until every queued vector is acknowledged, however long the broker is away.

        Raises
        ------
        StateError
            If a vector could not be delivered (a non-retriable error, e.g. the topic
            was deleted): the batch must not be committed.
        """
        if not self._pending:
            return
        self._producer.flush(None, what=f"vectors to {self.topic!r}")
        if self._producer.failed > self._failed_mark:
            msg = (f"vectors to {self.topic!r} failed: {self._producer.last_error}; the "
                   "batch is not committed and will be re-read")
            raise StateError(msg)
        self._pending = False
