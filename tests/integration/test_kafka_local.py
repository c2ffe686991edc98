"""The real broker behind ``kafka_bootstrap`` keeps what `engagements` relies on (DESIGN §2, §8).

One topic created like `engagements` (4 partitions, ``retention.ms=-1``) receives 1000
keyed records whose timestamps are old event times (2004, as in the Wikipedia data);
reading them back must give every record once, in per-key order, in one partition per
key (murmur2, as faust/aiokafka place them), with the producer's timestamps, and
``offsets_for_times`` must find the first offset at or after a time.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.partitioner.default import murmur2

pytestmark = pytest.mark.integration

N_MESSAGES = 1000
N_PARTITIONS = 4
N_KEYS = 37
# 2004-01-01T00:00:00Z: far older than the broker's default 7-day retention.
T0_MS = 1_072_915_200_000
STEP_MS = 1_500


def _expected_partition(key: bytes) -> int:
    # Java client / kafka-python / aiokafka default partitioner for keyed records.
    return (murmur2(key) & 0x7FFFFFFF) % N_PARTITIONS


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-kafka-local")


@pytest.fixture
def topic(kafka_bootstrap, unique_topic):
    """A fresh topic made like `engagements`; deleted afterwards (by a new client, as the
    broker may have been restarted meanwhile)."""
    name = unique_topic("kafka-local")
    admin = _admin(kafka_bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=N_PARTITIONS,
                    replication_factor=1,
                    topic_configs={"retention.ms": "-1"},
                )
            ],
            timeout_ms=30_000,
        )
    finally:
        admin.close()
    yield name
    admin = _admin(kafka_bootstrap)
    try:
        admin.delete_topics([name], timeout_ms=30_000)
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, int, int, int]]:
    """Send N_MESSAGES; return (key, value, ts_ms, partition, offset) as the broker acked them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = []
    for i in range(N_MESSAGES):
        key = f"u:{i % N_KEYS}".encode()
        value = f'{{"seq": {i}}}'.encode()
        ts_ms = T0_MS + i * STEP_MS
        futures.append(
            (key, value, ts_ms, producer.send(topic, key=key, value=value, timestamp_ms=ts_ms))
        )
    producer.flush(timeout=60)
    sent = []
    for key, value, ts_ms, fut in futures:
        md = fut.get(timeout=60)
        sent.append((key, value, ts_ms, md.partition, md.offset))
    producer.close()
    return sent


def _consume_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    parts = [TopicPartition(topic, p) for p in range(N_PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records = []
    deadline = time.monotonic() + 60  # guard against a hang, not a speed assertion
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def test_topic_created_like_engagements(kafka_bootstrap, topic):
    name = topic
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    admin = _admin(kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(name) == set(range(N_PARTITIONS))
        assert _topic_config(admin, name)["retention.ms"] == "-1"
    finally:
        consumer.close()
        admin.close()


def _topic_config(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    if isinstance(answer, dict):  # kafka-python >= 3: {type: {name: {key: {"value": ...}}}}
        return {k: v["value"] for k, v in answer["topic"][name].items()}
    [resource] = answer[0].resources  # kafka-python 2.x: raw DescribeConfigsResponse list
    return {entry[0]: entry[1] for entry in resource[4]}


def test_keyed_records_round_trip_with_event_time(kafka_bootstrap, topic):
    name = topic
    sent = _produce(kafka_bootstrap, name)
    records = _consume_all(kafka_bootstrap, name, N_MESSAGES)

    # Every record exactly once, with the producer's timestamp (CreateTime = 0).
    assert len(records) == N_MESSAGES
    got = {
        (r.key, r.value): (r.timestamp, r.timestamp_type, r.partition, r.offset) for r in records
    }
    assert len(got) == N_MESSAGES
    for key, value, ts_ms, partition, offset in sent:
        assert got[(key, value)] == (ts_ms, 0, partition, offset)

    # One partition per key, the murmur2 one; offsets dense from 0 in each partition.
    partitions_of_key = defaultdict(set)
    for r in records:
        partitions_of_key[r.key].add(r.partition)
    assert len(partitions_of_key) == N_KEYS
    for key, parts in partitions_of_key.items():
        assert parts == {_expected_partition(key)}, key
    by_partition = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    assert len(by_partition) > 1  # 37 keys over 4 partitions: a single one would mean no spread
    for p, recs in by_partition.items():
        assert [r.offset for r in recs] == list(range(len(recs))), p
        seqs = [json.loads(r.value)["seq"] for r in recs]
        assert seqs == sorted(seqs), p  # per-partition (hence per-key) order kept


def test_offsets_for_times_finds_first_offset_at_or_after(kafka_bootstrap, topic):
    name = topic
    sent = _produce(kafka_bootstrap, name)
    # Oracle: per partition, (ts, offset) pairs in offset order; timestamps rise with offset.
    acked = defaultdict(list)
    for _key, _value, ts_ms, partition, offset in sent:
        acked[partition].append((offset, ts_ms))
    for rows in acked.values():
        rows.sort()

    def expected(partition: int, target_ms: int):
        for offset, ts_ms in acked[partition]:
            if ts_ms >= target_ms:
                return offset, ts_ms
        return None

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(name, p) for p in range(N_PARTITIONS)]
    last_ms = T0_MS + (N_MESSAGES - 1) * STEP_MS
    targets = [T0_MS - 1, T0_MS, T0_MS + 1, T0_MS + 500 * STEP_MS + 7, last_ms, last_ms + 1]
    try:
        for target in targets:
            answer = consumer.offsets_for_times({tp: target for tp in parts})
            for tp in parts:
                want = expected(tp.partition, target)
                got = answer[tp]
                if want is None:
                    assert got is None, (target, tp)
                else:
                    assert (got.offset, got.timestamp) == want, (target, tp)
        ends = consumer.end_offsets(parts)
        assert sum(ends.values()) == N_MESSAGES
        assert {tp.partition: off for tp, off in ends.items()} == {
            p: len(acked[p]) for p in range(N_PARTITIONS)
        }
    finally:
        consumer.close()


def test_restart_keeps_topics_offsets_and_group_commits(kafka_bootstrap, kafka_local, topic):
    name = topic
    sent = _produce(kafka_bootstrap, name)
    parts = [TopicPartition(name, p) for p in range(N_PARTITIONS)]
    group = f"g-{name}"
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    committed = {
        tp: OffsetAndMetadata(len([s for s in sent if s[3] == tp.partition]) // 2, "", -1)
        for tp in parts
    }
    consumer.assign(parts)
    consumer.commit(committed)
    consumer.close()

    kafka_local.stop()
    kafka_local.start()

    after = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        assert after.partitions_for_topic(name) == set(range(N_PARTITIONS))
        ends = after.end_offsets(parts)
        assert sum(ends.values()) == N_MESSAGES
        assert {tp: after.committed(tp) for tp in parts} == {
            tp: om.offset for tp, om in committed.items()
        }
        first = after.offsets_for_times({tp: T0_MS for tp in parts})
        first_ts = {tp: min(s[2] for s in sent if s[3] == tp.partition) for tp in parts}
        assert {tp: (first[tp].offset, first[tp].timestamp) for tp in parts} == {
            tp: (0, ts) for tp, ts in first_ts.items()
        }
    finally:
        after.close()
