"""The Kafka state changelog on a real broker: transactions, compaction view, fencing."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from streamer.engine import PartitionState
from streamer.errors import StateError
from streamer.kafka_io import TopicSpec, ensure_topics
from streamer.runtime.changelog import KafkaChangelog, changelog_topic, transactional_id

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    name = changelog_topic(f"cl-{uuid.uuid4().hex[:8]}.streamer-t-v1")
    ensure_topics(kafka_bootstrap, {name: TopicSpec(
        partitions=3, configs={"cleanup.policy": "compact"})})
    return name


def test_batches_read_back_as_the_latest_value_per_key_with_offsets(kafka_bootstrap, topic,
                                                                     tmp_path):
    cl = KafkaChangelog(kafka_bootstrap, topic, transactional_id(topic, tmp_path))
    cl.write({0: {b"L/a": b"1", b"L/b": b"2"}, 2: {b"L/c": b"3"}},
             {("eng", 0): 10, ("eng", 2): 4})
    cl.write({0: {b"L/a": b"9", b"L/b": None}}, {("eng", 0): 12})
    got = cl.read([0, 1, 2])
    assert got[0] == PartitionState(0, {"eng": 12}, {b"L/a": b"9"})
    assert got[1] == PartitionState(1)  # never written
    assert got[2] == PartitionState(2, {"eng": 4}, {b"L/c": b"3"})
    assert cl.transactions == 2 and cl.records == 3 + 2 + 2 + 1
    cl.close()


def test_an_unfinished_transaction_is_never_read(kafka_bootstrap, topic, tmp_path):
    cl = KafkaChangelog(kafka_bootstrap, topic, transactional_id(topic, tmp_path))
    cl.write({1: {b"L/x": b"old"}}, {("eng", 1): 5})
    # a crash mid-batch: records sent inside a transaction that never commits
    cl._p.begin_transaction()
    cl._produce({1: {b"L/x": b"half", b"L/y": b"half"}}, {("eng", 1): 9})
    cl._p.flush(10)
    assert cl.read([1])[1] == PartitionState(1, {"eng": 5}, {b"L/x": b"old"})
    # the worker restarts on the same state dir: its new producer fences the old one and
    # aborts the open transaction at once
    again = KafkaChangelog(kafka_bootstrap, topic, transactional_id(topic, tmp_path))
    again.write({1: {b"L/y": b"new"}}, {("eng", 1): 6})
    assert again.read([1])[1] == PartitionState(1, {"eng": 6},
                                                {b"L/x": b"old", b"L/y": b"new"})
    with pytest.raises(StateError, match="transaction failed"):
        cl.write({1: {b"L/z": b"zombie"}}, {("eng", 1): 99})  # fenced
    assert b"L/z" not in again.read([1])[1].records


def test_publish_state_replaces_a_partition_with_tombstones(kafka_bootstrap, topic, tmp_path):
    cl = KafkaChangelog(kafka_bootstrap, topic, transactional_id(topic, tmp_path))
    cl.write({0: {b"L/a": b"1", b"L/stale": b"2"}}, {("eng", 0): 3})
    current = cl.read([0])[0]
    local = PartitionState(0, {"eng": 7}, {b"L/a": b"5", b"D/w": b"6"})
    cl.publish_state(local, current)
    assert cl.read([0])[0] == local


def test_a_bad_offset_marker_is_a_clear_error(kafka_bootstrap, topic, tmp_path):
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(topic, b"not-a-number", b"O/eng", partition=2)
    p.flush(10)
    cl = KafkaChangelog(kafka_bootstrap, topic, transactional_id(topic, tmp_path))
    with pytest.raises(StateError, match="offset marker"):
        cl.read([2])
