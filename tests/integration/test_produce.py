"""Topic creation and the data-set producer against a real Kafka broker."""

from __future__ import annotations

import json

import pytest

from streamer.datasets import load_wire
from streamer.errors import ConfigError
from streamer.events.decode import Decoder, Rejected
from streamer.events.dedup import Deduplicator
from streamer.events.schema import to_wire
from streamer.kafka_io import (
    TopicSpec,
    consume_all,
    default_topic_specs,
    embeddings_topic,
    end_offsets,
    ensure_topics,
    partition_for_key,
    produce_events,
    topic_partition_counts,
)
from streamer.testing.badevents import bad_messages, synthetic_events
from streamer.types import ManualClock

pytestmark = pytest.mark.integration

WIKIPEDIA_EVENTS = 157_474


def test_ensure_topics_is_idempotent_and_checks_partition_counts(kafka_bootstrap, unique_topic):
    base = unique_topic("eng")
    emb = embeddings_topic(unique_topic("type"), 1)
    specs = default_topic_specs(4, [emb], engagements=base, deadletters=f"{base}.deadletter")
    assert ensure_topics(kafka_bootstrap, specs) == {
        base: "created", f"{base}.deadletter": "created", emb: "created"}
    assert ensure_topics(kafka_bootstrap, specs) == {
        base: "exists", f"{base}.deadletter": "exists", emb: "exists"}
    assert topic_partition_counts(kafka_bootstrap, [base, emb, "no-such-topic-x"]) == {
        base: 4, emb: 4}
    with pytest.raises(ConfigError, match=r"has 4 partitions, expected 3"):
        ensure_topics(kafka_bootstrap, {base: TopicSpec(3)})
    configs = _topic_configs(kafka_bootstrap, [base, emb])
    assert configs[base]["retention.ms"] == "-1"
    assert configs[emb]["cleanup.policy"] == "compact"


def _topic_configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resp = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        admin.close()
    return {name: {k: v["value"] for k, v in cfgs.items()} for name, cfgs in resp["topic"].items()}


def test_wikipedia_stream_lands_with_event_time_and_key_placement(kafka_bootstrap, unique_topic):
    topic = unique_topic("wiki")
    ensure_topics(kafka_bootstrap, {topic: TopicSpec(4, {"retention.ms": "-1"})})
    seen: list[int] = []
    n = produce_events(kafka_bootstrap, topic, load_wire("wikipedia"), progress=seen.append,
                       progress_every=50_000)
    assert n == WIKIPEDIA_EVENTS
    assert seen == [50_000, 100_000, 150_000, WIKIPEDIA_EVENTS]
    ends = end_offsets(kafka_bootstrap, topic)
    assert sorted(ends) == [0, 1, 2, 3]
    assert sum(ends.values()) == WIKIPEDIA_EVENTS
    records = consume_all(kafka_bootstrap, topic, timeout_s=300)
    assert len(records) == WIKIPEDIA_EVENTS
    expected = {v: (k, ts) for k, v, ts in load_wire("wikipedia")}  # values are unique (event_id)
    per_partition: dict[int, list[float]] = {}
    for r in records:
        key, ts_ms = expected.pop(r.value)
        assert r.key == key
        assert r.timestamp == ts_ms == round(json.loads(r.value)["ts"] * 1000)
        assert r.timestamp_type == 0  # CreateTime: the producer's event time
        assert r.partition == partition_for_key(key, 4)
        per_partition.setdefault(r.partition, []).append(r.timestamp)
    assert not expected
    # the file is time-sorted, so each partition's records are too (order kept per key)
    assert all(ts == sorted(ts) for ts in per_partition.values())


def test_rate_limit_paces_by_schedule_with_an_injected_clock(kafka_bootstrap, unique_topic):
    topic = unique_topic("rate")
    ensure_topics(kafka_bootstrap, {topic: TopicSpec(1)})
    clock = ManualClock(1000.0)
    sleeps: list[float] = []

    def sleep(dt: float) -> None:
        sleeps.append(dt)
        clock.advance(dt)

    msgs = [(b"k", b'{"n":%d}' % i, 1_400_000_000_000 + i) for i in range(50)]
    assert produce_events(kafka_bootstrap, topic, msgs, rate=10.0, clock=clock, sleep=sleep) == 50
    assert len(sleeps) == 49 and sum(sleeps) == pytest.approx(4.9)
    assert clock.now_s() == pytest.approx(1004.9)
    with pytest.raises(ConfigError, match="rate"):
        produce_events(kafka_bootstrap, topic, msgs, rate=0.0)


def test_producing_to_a_missing_topic_is_a_config_error(kafka_bootstrap, unique_topic):
    with pytest.raises(ConfigError, match="does not exist"):
        produce_events(kafka_bootstrap, unique_topic("missing"), [(b"k", b"v", 0)])


def test_bad_messages_survive_kafka_and_get_their_reasons(kafka_bootstrap, unique_topic):
    topic = unique_topic("bad")
    ensure_topics(kafka_bootstrap, {topic: TopicSpec(4, {"retention.ms": "-1"})})
    now = 1_700_000_000.0
    originals = synthetic_events(30, seed=5, now_s=now)
    bad = bad_messages(120, seed=5, now_s=now, originals=originals)
    good = [(e.key, to_wire(e), round(e.ts * 1000)) for e in originals]
    produce_events(kafka_bootstrap, topic,
                   [*good, *((m.key, m.value, m.timestamp_ms) for m in bad)])
    records = consume_all(kafka_bootstrap, topic, timeout_s=120)
    assert len(records) == len(good) + len(bad)
    expected = [None] * len(good) + [m.expected_reason for m in bad]
    position = {}
    for i, (k, v, _ts) in enumerate([*good, *((m.key, m.value, m.timestamp_ms) for m in bad)]):
        position.setdefault((partition_for_key(k, 4), k, v), []).append(i)
    dec = Decoder(clock=ManualClock(now))
    dedup = Deduplicator(86_400)
    reasons: dict[int, str | None] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out = dec.decode(r.value, topic=r.topic, partition=r.partition, offset=r.offset)
        if not isinstance(out, Rejected) and dedup.check(out, r.partition):
            out = dec.mark_duplicate(out, r.value, topic=r.topic, partition=r.partition,
                                     offset=r.offset)
        i = position[(r.partition, r.key, r.value)].pop(0)
        reasons[i] = out.reason if isinstance(out, Rejected) else None
    assert [reasons[i] for i in range(len(expected))] == expected
