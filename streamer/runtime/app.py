"""``create_app(settings, spec)``: the faust worker of one embedding type (no module-level App).

One faust App per type/version (app id and consumer group ``streamer-<type>-v<n>``)
consumes ``engagements`` in micro-batches with ``take_events()`` and hands each batch to
the :class:`streamer.engine.Engine`, which commits vectors, learner state and offsets
atomically to the type's RocksDB path. faust acks a ``take`` batch only after the loop
body returns, so the consumer group's committed offset never passes what is stored;
after a crash the engine skips re-delivered offsets (DESIGN §6).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from streamer.engine import Engine, RawMessage, open_engine
from streamer.events.decode import Decoder
from streamer.runtime.kafka_sinks import EmbeddingPublisher, KafkaDeadLetters, SinkProducer
from streamer.settings import Settings
from streamer.topology import TopologySpec
from streamer.types import SystemClock

log = logging.getLogger(__name__)


def create_app(settings: Settings, spec: TopologySpec, *, noop: bool = False) -> faust.App:
    """Build the faust App of ``spec`` (nothing connects until the worker starts).

    Parameters
    ----------
    settings
        Runtime settings (broker, state dir, batching, timeouts, web port).
    spec
        The embedding type this worker owns.
    noop
        Benchmark baseline: only decode and ack (no learner, table, index or publish);
        ``/metrics`` then reports offsets and decoder counters.

    Returns
    -------
    faust.App
        With one agent on ``spec.source`` and ``/health`` and ``/metrics`` pages.
    """
    w = settings.worker
    group = settings.consumer_group or f"{settings.topic_prefix}{spec.app_id}"
    datadir = (settings.state_dir / "faust" / group).absolute()
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        group,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=w.session_timeout_s,
        broker_heartbeat_interval=w.heartbeat_interval_s,
        broker_commit_interval=1.0,
        broker_max_poll_records=w.batch_max,
        stream_buffer_maxsize=max(4 * w.batch_max, 4096),
        web_enabled=w.web_port > 0,
        web_port=w.web_port or 6066,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        producer_acks=-1,
    )
    source = app.topic(settings.topic(spec.source), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    holder: dict[str, Any] = {}
    started = time.monotonic()

    def engine() -> Engine:
        if "engine" not in holder:
            producer = SinkProducer(settings.kafka_bootstrap)
            holder["producer"] = producer
            publish = (EmbeddingPublisher(producer, settings.topic(spec.output_topic))
                       if w.publish else None)
            holder["engine"] = open_engine(
                spec,
                state_dir=settings.state_dir,
                dead_letters=KafkaDeadLetters(producer, settings.topic(spec.dead_letters)),
                clock=SystemClock(),
                with_index=w.index,
                index_params=settings.index.hnsw_params(),
                max_future_s=settings.max_future_s,
                dedup_window_s=settings.dedup_window_s,
                publish=publish,
                path_prefix=settings.topic_prefix,
            )
        return holder["engine"]

    stats: dict[str, Any] = {"batches": 0, "messages": 0, "first_batch_wall_s": None,
                             "last_batch_wall_s": None}
    noop_offsets: dict[str, int] = {}
    decoder = (Decoder(actions=spec.action_weights, max_future_s=settings.max_future_s,
                       clock=SystemClock()) if noop else None)

    @app.agent(source, name=f"{spec.name}-learner")
    async def learn(stream: faust.StreamT) -> None:
        eng = None if noop else engine()
        async for events in stream.take_events(w.batch_max, within=w.batch_within_s):
            now = time.time()
            if stats["first_batch_wall_s"] is None:
                stats["first_batch_wall_s"] = now
            stats["batches"] += 1
            stats["messages"] += len(events)
            if eng is None:
                assert decoder is not None
                for e in events:
                    m = e.message
                    decoder.decode(m.value, topic=m.topic, partition=m.partition,
                                   offset=m.offset)
                    noop_offsets[f"{m.topic}[{m.partition}]"] = m.offset
                stats["last_batch_wall_s"] = time.time()
                continue
            msgs = [
                RawMessage(value=e.message.value, topic=e.message.topic,
                           partition=e.message.partition, offset=e.message.offset,
                           key=e.message.key)
                for e in events
            ]
            res = eng.process(msgs)
            stats["last_batch_wall_s"] = time.time()
            log.debug("batch seen=%d accepted=%d rejected=%d skipped=%d changed=%d",
                      res.seen, res.accepted, res.rejected, res.skipped, len(res.changed))

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:  # noqa: ARG001
        return web.json({"status": "ok", "type": spec.name, "version": spec.version,
                         "uptime_s": round(time.monotonic() - started, 3)})

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:  # noqa: ARG001
        if decoder is not None:  # noop mode
            body: dict[str, Any] = {"type": spec.name, "noop": True,
                                    "offsets": dict(noop_offsets), **decoder.counters}
        else:
            body = engine().metrics()
            prod = holder["producer"]
            body["producer"] = {"delivered": prod.delivered, "failed": prod.failed,
                                "last_error": prod.last_error}
        return web.json({**body, "throughput": dict(stats)})

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **kwargs: Any) -> None:  # noqa: ARG001
        if "producer" in holder:
            holder["producer"].flush()
        if "engine" in holder:
            holder["engine"].close()

    return app


def ensure_worker_topics(settings: Settings, spec: TopologySpec) -> None:
    """Create the source, dead-letter and compacted output topics if missing.

    Raises
    ------
    ConfigError
        If an existing topic has another partition count than configured.
    """
    from streamer.kafka_io import TopicSpec, ensure_topics

    parts = settings.engagements_partitions
    keep = {"retention.ms": "-1"}
    ensure_topics(settings.kafka_bootstrap, {
        settings.topic(spec.source): TopicSpec(partitions=parts, configs=keep),
        settings.topic(spec.dead_letters): TopicSpec(partitions=parts, configs=keep),
        settings.topic(spec.output_topic): TopicSpec(
            partitions=parts, configs={"cleanup.policy": "compact", "retention.ms": "-1"}),
    })


def _use_uvloop() -> None:
    """Run faust on uvloop when installed.

    faust's per-message asyncio overhead dominates a no-op worker (benchmarks/e2e.py).
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return
    import mode.loop

    mode.loop.use("uvloop")


def run_worker(settings: Settings, spec: TopologySpec, *, loglevel: str = "info",
               noop: bool = False) -> None:
    """Run the worker of ``spec`` until SIGINT/SIGTERM (blocks; exits the process)."""
    ensure_worker_topics(settings, spec)
    _use_uvloop()
    app = create_app(settings, spec, noop=noop)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
