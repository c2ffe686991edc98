"""Kafka sinks used by the worker: dead letters and the compacted embeddings topic.

Both use one kafka-python ``KafkaProducer`` (its own I/O thread, murmur2 partitioner
like faust/aiokafka). Dead letters are flushed *before* the engine commits a batch,
so a crash can repeat a dead letter but never lose one (at-least-once).
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer

from streamer.events.decode import Rejected
from streamer.store.base import FeatureRecord
from streamer.store.codec import encode_record

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """Return a throughput-tuned, ``acks='all'`` kafka-python producer for ``bootstrap``."""
    conf: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 5,
    }
    conf.update(overrides)
    return KafkaProducer(**conf)


class KafkaDeadLetters:
    """Dead-letter sink on a topic: value = the raw bytes, headers = reason and source position.

    Parameters
    ----------
    producer
        A kafka-python producer.
    topic
        Dead-letter topic (``engagements.deadletter``).
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.sent = 0
        self._pending = 0

    def send(self, rejected: Rejected) -> None:
        """Queue one reject (keyed by its source position)."""
        key = f"{rejected.topic}/{rejected.partition}/{rejected.offset}".encode()
        self._producer.send(self.topic, key=key, value=rejected.raw, headers=rejected.headers())
        self.sent += 1
        self._pending += 1

    def flush(self) -> None:
        """Block until every queued reject is acknowledged by the broker."""
        if self._pending:
            self._producer.flush()
            self._pending = 0


class EmbeddingPublisher:
    """Publishes changed vectors to ``embeddings.<type>.v<n>`` (compacted, key = entity id).

    Values are :func:`streamer.store.codec.encode_record` bytes; the record timestamp is
    the vector's event time (ms).
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.sent = 0

    def __call__(self, ids: list[str], records: list[FeatureRecord]) -> None:
        """Queue one message per changed entity (delivery is asynchronous)."""
        send = self._producer.send
        for entity, rec in zip(ids, records, strict=True):
            ts_ms = int(rec.updated_at * 1000) if rec.updated_at == rec.updated_at else None
            send(self.topic, key=entity.encode(), value=encode_record(rec), timestamp_ms=ts_ms)
        self.sent += len(ids)
