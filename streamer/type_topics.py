"""The Kafka topics one embedding type version reads and writes (no faust import).

Shared by the faust worker (:func:`streamer.runtime.app.ensure_worker_topics`) and
``streamer backfill``, which must not import the faust runtime (2-3 s).
"""

from __future__ import annotations

from streamer.bench.results import BENCHMARKS_TOPIC
from streamer.settings import Settings
from streamer.topology import TopologySpec


def ensure_type_topics(settings: Settings, spec: TopologySpec, *,
                       changelog: str | None = None) -> None:
    """Create the type's topics if missing.

    Those are the source, dead-letter, compacted output and ``benchmarks`` topics and,
    when ``changelog`` names one, the compacted state changelog (one partition per
    source partition, segments rolled at 64 MiB so compaction can run).

    Raises
    ------
    ConfigError
        If an existing topic has another partition count than configured.
    KafkaIOError
        If the broker cannot be reached.
    """
    from streamer.kafka_io import TopicSpec, ensure_topics

    parts = settings.engagements_partitions
    keep = {"retention.ms": "-1"}
    compact = {"cleanup.policy": "compact", "retention.ms": "-1"}
    topics = {
        settings.topic(spec.source): TopicSpec(partitions=parts, configs=keep),
        settings.topic(spec.dead_letters): TopicSpec(partitions=parts, configs=keep),
        settings.topic(spec.output_topic): TopicSpec(partitions=parts, configs=compact),
        settings.topic(BENCHMARKS_TOPIC): TopicSpec(partitions=1, configs=keep),
    }
    if changelog is not None:
        # ~13x the input's bytes before compaction (Wikipedia): roll segments so it can run
        topics[changelog] = TopicSpec(partitions=parts,
                                      configs={**compact, "segment.bytes": str(64 << 20)})
    ensure_topics(settings.kafka_bootstrap, topics)
