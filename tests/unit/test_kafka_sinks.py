"""The worker's Kafka sinks wait for an absent broker instead of dropping records.

No broker here: the producer points at a loopback port nobody listens on, which is what a
stopped broker looks like to librdkafka (connection refused, reconnect with backoff).
The recovery once a real broker is back is checked end to end in
``tests/integration/test_e2e_wikipedia.py`` (broker stopped and restarted mid-stream).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from streamer.errors import StateError
from streamer.events.decode import Rejected
from streamer.runtime import kafka_sinks
from streamer.runtime.kafka_sinks import KafkaDeadLetters, SinkProducer
from streamer.testing.procs import free_port


@pytest.fixture
def nobody() -> str:
    """Bootstrap address of a loopback port with no listener."""
    return f"127.0.0.1:{free_port()}"


def test_a_bounded_flush_gives_up_with_a_one_line_error(nobody):
    p = SinkProducer(nobody)
    p.produce("t", b"k", b"v")
    with pytest.raises(StateError, match=r"1 records still undelivered after 1\.5 s; is the "
                       rf"broker at {nobody} reachable\?"):
        p.flush(1.5)
    assert p.failed == 0 and p.delivered == 0  # nothing expired: the record is still queued
    assert p.pending == 1


def test_dead_letter_flush_waits_for_the_broker_and_says_so(nobody, monkeypatch, caplog):
    monkeypatch.setattr(kafka_sinks, "WAIT_LOG_FIRST_S", 0.2)
    caplog.set_level(logging.INFO, logger=kafka_sinks.__name__)
    p = SinkProducer(nobody)
    dl = KafkaDeadLetters(p, "engagements.deadletter", "wiki-cooc")
    dl.send(Rejected("not_json", "truncated", "engagements", 0, 7, b"{"))
    outcome: list[BaseException | None] = []

    def flush() -> None:
        try:
            dl.flush()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    t = threading.Thread(target=flush, daemon=True)
    t.start()
    t.join(3.0)
    # still waiting after 3 s, well past any connect attempt: no timeout, nothing dropped
    assert t.is_alive() and outcome == []
    assert p.failed == 0 and p.pending == 1
    waits = [r for r in caplog.records if r.levelno == logging.WARNING
             and "waiting for Kafka at" in r.getMessage()]
    assert waits, [r.getMessage() for r in caplog.records]
    msg = waits[0].getMessage()
    assert nobody in msg and "1 dead letters to 'engagements.deadletter'" in msg
    assert "nothing is dropped" in msg
    # a non-retriable failure (here: the queue purged) ends the wait with a StateError,
    # so the engine does not commit the batch
    p._p.purge()  # noqa: SLF001 - the only way to fail a queued record without a broker
    t.join(10.0)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StateError)
    assert "dead letters to 'engagements.deadletter' failed" in str(outcome[0])
    assert p.failed == 1 and p.pending == 0


def test_produce_waits_for_room_when_the_local_queue_is_full(nobody, monkeypatch, caplog):
    monkeypatch.setattr(kafka_sinks, "WAIT_LOG_FIRST_S", 0.2)
    caplog.set_level(logging.WARNING, logger=kafka_sinks.__name__)
    p = SinkProducer(nobody, **{"queue.buffering.max.messages": 2})
    p.produce("t", b"k", b"1")
    p.produce("t", b"k", b"2")
    done = threading.Event()

    def third() -> None:
        p.produce("t", b"k", b"3")
        done.set()

    t = threading.Thread(target=third, daemon=True)
    t.start()
    time.sleep(1.0)
    assert not done.is_set()  # blocked, not dropped and not raised
    assert any("room in the local queue for 't'" in r.getMessage() for r in caplog.records)
    p._p.purge()  # noqa: SLF001 - frees the queue without a broker
    t.join(10.0)
    assert done.is_set()
