"""Reader replica: tails the compacted ``embeddings.<type>.v<n>`` topics into a ServedType.

Each replica reads every partition from the beginning with no consumer group
(``assign`` + ``seek_to_beginning``), so any number of replicas can serve the same
type, each with its own index (DESIGN §1).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition

from streamer.errors import StateError
from streamer.serve.served import ServedType
from streamer.store.codec import decode_record

log = logging.getLogger(__name__)


class EmbeddingTail(threading.Thread):
    """Background thread applying ``embeddings.<type>.v<n>`` messages to ``served``.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    topic
        The type's compacted output topic.
    served
        Where vectors go.
    poll_timeout_ms
        Max wait per poll (wall ms); bounds freshness when the topic is idle.
    """

    def __init__(self, bootstrap: str, topic: str, served: ServedType,
                 *, poll_timeout_ms: int = 50) -> None:
        super().__init__(name=f"tail-{topic}", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.served = served
        self.poll_timeout_ms = poll_timeout_ms
        self.applied = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop_evt = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        """Ask the thread to stop after its current poll."""
        self._stop_evt.set()

    def run(self) -> None:
        """Tail the topic until stopped; on a client error, log it and start over.

        Re-reading from the beginning is safe: applying a record twice is idempotent.
        """
        while not self._stop_evt.is_set():
            try:
                self._tail()
            except Exception as exc:  # noqa: BLE001 - keep serving; the error is reported
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception('embedding tail failed topic="%s"; retrying in 1 s', self.topic)
                self._stop_evt.wait(1.0)

    def _tail(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
            fetch_max_wait_ms=self.poll_timeout_ms, max_poll_records=5000,
        )
        try:
            parts = None
            while not parts and not self._stop_evt.is_set():
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:  # unknown topic, or metadata not loaded yet
                    time.sleep(0.5)
            if not parts:
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            self.ready.set()
            while not self._stop_evt.is_set():
                batch = consumer.poll(timeout_ms=self.poll_timeout_ms)
                ids: list[str] = []
                recs = []
                for msgs in batch.values():
                    for m in msgs:
                        try:
                            entity = m.key.decode()
                            rec = (None if m.value is None
                                   else decode_record(m.value, self.served.dim))
                        except (StateError, UnicodeDecodeError, AttributeError) as exc:
                            self.errors += 1
                            log.warning('bad embedding message topic="%s" offset=%d error="%s"',
                                        self.topic, m.offset, exc)
                            continue
                        ids.append(entity)
                        recs.append(rec)
                if ids:
                    self.served.apply(ids, recs)
                    self.applied += len(ids)
                if not self.served.caught_up and all(
                    consumer.position(tp) >= end[tp] for tp in tps
                ):
                    self.served.caught_up = True
        finally:
            consumer.close()
