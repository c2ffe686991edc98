"""``create_app(settings, spec)``: the faust worker of one embedding type (no module-level App).

One faust App per type/version (app id and consumer group ``streamer-<type>-v<n>``)
consumes ``engagements`` in micro-batches with ``take_events()`` and hands each batch to
the :class:`streamer.engine.Engine`, which commits vectors, learner state and offsets
atomically to the type's RocksDB path. faust acks a ``take`` batch only after the loop
body returns, so the consumer group's committed offset never passes what is stored;
after a crash the engine skips re-delivered offsets (DESIGN §6).

Several types learn from one ``engagements`` stream side by side, one worker process
each: every type has its own app id and consumer group (``streamer-<type>-v<n>``, under
the topic prefix), faust data dir, RocksDB path, output topic and web port, so nothing is
shared but the input topic and the dead-letter topic (a malformed message is
dead-lettered once by each type that reads it). ``--init-from`` warm-starts a fresh type
from another type's table before the worker consumes (:func:`init_from`).

Scale-out: several workers of one type (one state dir each, same consumer group) split
the partitions through the group's rebalance. For a partition-scoped algorithm each
batch's state also goes to the transactional ``<group>-changelog`` topic, and on every
assignment the worker takes over the partitions whose changelog is ahead of its table
(:mod:`streamer.runtime.changelog`), before faust resumes them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import faust

from streamer.bench.results import BENCHMARKS_TOPIC
from streamer.engine import Engine, RawMessage, open_engine, warm_start_from
from streamer.errors import ConfigError, StateError
from streamer.events.deadletter import MemoryDeadLetters
from streamer.events.decode import Decoder
from streamer.runtime.kafka_sinks import EmbeddingPublisher, KafkaDeadLetters, SinkProducer
from streamer.scheduler import BenchScheduler
from streamer.settings import BenchSettings, Settings
from streamer.snapshot import store_for
from streamer.store.base import FeatureRecord
from streamer.topology import TopologySpec
from streamer.transfer import WarmStart
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
    group = worker_group(settings, spec)
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

    bench = settings.bench_for(dict(spec.benchmarks))
    source_topic = settings.topic(spec.source)
    use_changelog = changelog_enabled(settings, spec)

    def engine() -> Engine:
        if "engine" not in holder:
            producer = SinkProducer(settings.kafka_bootstrap)
            holder["producer"] = producer
            publish = (EmbeddingPublisher(producer, settings.topic(spec.output_topic),
                                          spec.storage_codec) if w.publish else None)
            sched = None
            if bench.enabled:
                sched = holder["scheduler"] = make_scheduler(settings, spec, bench,
                                                             producer=producer)
            if use_changelog:
                from streamer.runtime.changelog import (
                    KafkaChangelog,
                    changelog_topic,
                    transactional_id,
                )

                topic = changelog_topic(group)
                holder["changelog"] = KafkaChangelog(
                    settings.kafka_bootstrap, topic,
                    transactional_id(topic, settings.state_dir))
            holder["engine"] = open_engine(
                spec,
                state_dir=settings.state_dir,
                dead_letters=KafkaDeadLetters(producer, settings.topic(spec.dead_letters),
                                              spec.name, spec.version),
                clock=SystemClock(),
                with_index=w.index,
                index_params=settings.index.hnsw_params(),
                max_future_s=settings.max_future_s,
                dedup_window_s=settings.dedup_window_s,
                publish=publish,
                path_prefix=settings.topic_prefix,
                before_learn=None if sched is None else sched.before_learn,
                changelog=holder.get("changelog"),
            )
        return holder["engine"]

    stats: dict[str, Any] = {"batches": 0, "messages": 0, "first_batch_wall_s": None,
                             "last_batch_wall_s": None, "rebalances": []}
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
                # a message of a partition revoked since it was buffered belongs to its
                # new owner now (never acked here, so it is delivered there)
                if owned is None or e.message.partition in owned
            ]
            if not msgs:
                continue
            try:
                res = eng.process(msgs)
            except Exception as exc:  # noqa: BLE001 - any failure here is fatal, see below
                # Nothing of the batch was committed (one atomic write), but retrying the
                # same messages fails again: faust would restart the agent forever while
                # /health said ok. Exit non-zero instead, so the supervisor sees it.
                _die(spec, stats, "batch failed", exc)
            sched = holder.get("scheduler")
            if sched is not None:
                sched.after_commit(eng.table, res.accepted, eng.counters.get("accepted", 0))
            stats["last_batch_wall_s"] = time.time()
            log.debug("batch seen=%d accepted=%d rejected=%d skipped=%d changed=%d",
                      res.seen, res.accepted, res.rejected, res.skipped, len(res.changed))

    # partitions this worker owns, tracked only with a changelog (state moves between
    # workers): None means "all". Eager rebalancing revokes on every member before any
    # partition is reassigned, and these handlers run on the agent's event loop.
    owned: set[int] | None = set() if use_changelog and not noop else None

    if owned is not None:
        @app.on_partitions_revoked.connect
        async def give_up_partitions(app: faust.App, revoked: Any, **kwargs: Any) -> None:  # noqa: ARG001
            owned.difference_update(tp.partition for tp in revoked
                                    if tp.topic == source_topic)

    if not noop:
        @app.on_partitions_assigned.connect
        async def take_over_partitions(app: faust.App, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
            # faust pauses the assigned partitions until this returns and then seeks them
            # to the group's committed offsets, which must never pass the table
            from streamer.errors import ConfigError
            from streamer.runtime.changelog import (
                check_group_behind_table,
                committed_offsets,
                sync_partitions,
            )

            parts = sorted(tp.partition for tp in assigned if tp.topic == source_topic)
            if owned is not None:
                owned.clear()
            if not parts:
                return
            try:
                eng = engine()
                if use_changelog:
                    stats["rebalances"].append(
                        {"partitions": parts, **sync_partitions(eng, holder["changelog"],
                                                                parts)})
                check_group_behind_table(
                    eng, committed_offsets(settings.kafka_bootstrap, group, source_topic,
                                           parts), group=group, topic=source_topic)
            except ConfigError as exc:
                log.critical("worker %s: %s", spec.name, exc)
                sys.stderr.write(f"streamer worker {spec.name}: {exc}\n")
                sys.stderr.flush()
                os._exit(2)
            except Exception as exc:  # noqa: BLE001 - consuming without the state is wrong
                _die(spec, stats, "partition take-over failed", exc)
            if owned is not None:
                owned.update(parts)

    if bench.enabled:
        @app.timer(interval=1.0)
        async def take_deferred_snapshot() -> None:
            # runs on the agent's event loop between batches, so the capture is consistent
            sched = holder.get("scheduler")
            if sched is not None:
                eng = holder["engine"]
                sched.poll(eng.table, eng.counters.get("accepted", 0))

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
            if "scheduler" in holder:
                body["bench"] = holder["scheduler"].status()
            if "changelog" in holder:
                cl = holder["changelog"]
                body["changelog"] = {"topic": cl.topic, "transactions": cl.transactions,
                                     "records": cl.records, "retries": cl.retries,
                                     "producer_renewals": cl.renewals}
        return web.json({**body, "throughput": dict(stats)})

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **kwargs: Any) -> None:  # noqa: ARG001
        if "changelog" in holder:
            holder["changelog"].close()
        if "scheduler" in holder:
            holder["scheduler"].close()
        if "producer" in holder:
            holder["producer"].flush()
        if "engine" in holder:
            holder["engine"].close()

    return app


def _die(spec: TopologySpec, stats: dict[str, Any], what: str, exc: BaseException) -> None:
    """Log ``what`` failed and exit the process with status 1 (no faust restart loop)."""
    stats["failed"] = f"{type(exc).__name__}: {exc}"
    log.critical("worker %s: %s, exiting with status 1: %s: %s",
                 spec.name, what, type(exc).__name__, exc, exc_info=True)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.stderr.write(f"streamer worker {spec.name}: {what}: {type(exc).__name__}: {exc}\n")
    sys.stderr.flush()
    os._exit(1)


def changelog_enabled(settings: Settings, spec: TopologySpec) -> bool:
    """Return True if the worker of ``spec`` mirrors its state to a changelog topic.

    That is ``STREAMER_WORKER__CHANGELOG`` (default on) and a partition-scoped algorithm
    (:attr:`streamer.learn.base.OnlineLearner.partition_scoped`; SGNS is one shared model).
    """
    from streamer.learn.registry import get_algorithm

    return bool(settings.worker.changelog) and get_algorithm(spec.algorithm).partition_scoped


def check_bench(settings: Settings, spec: TopologySpec) -> BenchSettings:
    """Validate the type's effective bench settings (tasks, drift config) before starting.

    Raises
    ------
    ConfigError
        One line naming what is wrong.
    """
    from streamer.bench.drift import DriftConfig
    from streamer.bench.tasks import task_needs
    from streamer.scheduler import parse_task

    bench = settings.bench_for(dict(spec.benchmarks))
    for t in bench.tasks:
        task, dataset = parse_task(t)
        if task != "stability":
            task_needs(task, dataset)  # e.g. metadata:wikipedia -> one line, before start
    DriftConfig.parse(bench.drift)  # ConfigError: one line
    return bench


def make_scheduler(settings: Settings, spec: TopologySpec, bench: BenchSettings, *,
                   producer: SinkProducer | None) -> BenchScheduler:
    """Build the worker's snapshot/benchmark scheduler; records go to ``benchmarks``.

    Raises
    ------
    ConfigError
        If a configured task or the drift config is invalid.
    """
    store = store_for(settings, spec, bench)
    emit = None
    if producer is not None:
        topic = settings.topic(BENCHMARKS_TOPIC)
        key = spec.name.encode()

        def emit(rec: dict[str, Any]) -> None:
            producer.produce(topic, key, json.dumps(rec, sort_keys=True).encode())

    return BenchScheduler(spec, bench, store, emit=emit, data_dir=settings.data_dir,
                          clock=SystemClock())


def worker_group(settings: Settings, spec: TopologySpec) -> str:
    """Return the worker's faust app id and consumer group.

    ``STREAMER_CONSUMER_GROUP`` if set, with ``{type}`` and ``{version}`` replaced by the
    type's name and version (so one setting serves every type: two types must never share
    a group, or they split the partitions between them), else
    ``<topic_prefix>streamer-<type>-v<version>``.
    """
    from streamer.registry import consumer_group_of

    return consumer_group_of(spec, settings.consumer_group, settings.topic_prefix)


def check_table(settings: Settings, spec: TopologySpec) -> None:
    """Fail fast if the type's feature table is held by another worker or cannot be opened.

    Without this, a second worker of a running type joins the consumer group, takes
    half the partitions and crash-loops on the RocksDB lock while they stall. Opening
    the table also checks its manifest's dim and storage codec before consuming.

    Raises
    ------
    ConfigError
        If another process holds the table (one writer per path).
    StateError
        If the table belongs to another dim or codec.
    """
    from streamer.store.rocks import RocksFeatureTable
    from streamer.transfer import table_path, type_dim

    path = table_path(spec, state_dir=settings.state_dir, path_prefix=settings.topic_prefix)
    if not (path / "CURRENT").is_file():
        return  # created by the worker's first batch
    try:
        RocksFeatureTable(path, dim=type_dim(spec), codec=spec.storage_codec).close()
    except StateError as exc:
        if "is locked" not in str(exc):
            raise
        msg = (f"{spec.name}.v{spec.version} already has a worker using {path} (RocksDB lock "
               "held); run one worker per type and state dir (scale out with more "
               "partitions and workers on other state dirs)")
        raise ConfigError(msg) from exc


def check_web_port(settings: Settings) -> None:
    """Fail fast if the worker's /health and /metrics port is taken (e.g. by another worker).

    Every worker serves its pages on ``STREAMER_WORKER__WEB_PORT`` (127.0.0.1), so a
    second worker on one machine needs another port (or 0: no pages).

    Raises
    ------
    ConfigError
        If the port is in use on 127.0.0.1.
    """
    port = settings.worker.web_port
    if port == 0:
        return
    with socket.socket() as s:
        # as aiohttp (faust's web server) does: TIME_WAIT leftovers of a previous run
        # do not count, only a live listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            msg = (f"worker web port {port} on 127.0.0.1 is in use (another worker?); give "
                   "each worker its own port with --web-port or STREAMER_WORKER__WEB_PORT "
                   "(0 turns the /health and /metrics pages off)")
            raise ConfigError(msg) from exc


@dataclass
class InitFrom:
    """Outcome of the ``--init-from`` step of a worker.

    Attributes
    ----------
    source
        The source type.
    report
        What was applied, or ``None`` if the type already had state (skipped).
    ids, records
        The warm-started vectors still to publish to ``embeddings.<type>.v<n>``
        (empty when skipped or when publishing is off).
    """

    source: TopologySpec
    report: WarmStart | None
    ids: list[str] = field(default_factory=list)
    records: list[FeatureRecord] = field(default_factory=list)


def init_from(settings: Settings, spec: TopologySpec, source: TopologySpec) -> InitFrom:
    """Warm-start ``spec``'s fresh table from ``source``'s vectors; needs no broker.

    Opens ``spec``'s RocksDB path as its writer (so it fails if a worker of ``spec``
    runs), applies :func:`streamer.engine.warm_start_from`, and closes it again before
    the faust worker opens it. The vectors to publish are returned, not sent, so the
    argument and state errors come before any Kafka connection.

    Raises
    ------
    ConfigError, DimensionMismatch, StateError
        See :func:`streamer.engine.warm_start_from`.
    """
    out = InitFrom(source=source, report=None)

    def collect(ids: list[str], records: list[FeatureRecord]) -> None:
        out.ids.extend(ids)
        out.records.extend(records)

    eng = open_engine(spec, state_dir=settings.state_dir, dead_letters=MemoryDeadLetters(),
                      clock=SystemClock(), with_index=False,
                      publish=collect if settings.worker.publish else None,
                      path_prefix=settings.topic_prefix)
    try:
        out.report = warm_start_from(eng, source, state_dir=settings.state_dir,
                                     path_prefix=settings.topic_prefix)
    finally:
        eng.close()
    return out


def publish_init(settings: Settings, spec: TopologySpec, init: InitFrom) -> None:
    """Send the warm-started vectors to ``embeddings.<type>.v<n>`` and wait for the acks.

    Raises
    ------
    StateError
        If the broker does not acknowledge them (the table keeps them; events that touch
        an id publish it again).
    """
    if not init.ids:
        return
    producer = SinkProducer(settings.kafka_bootstrap)
    publish = EmbeddingPublisher(producer, settings.topic(spec.output_topic), spec.storage_codec)
    publish(init.ids, init.records)
    producer.flush()
    log.info('published warm start type="%s" ids=%d', spec.name, len(init.ids))


def ensure_worker_topics(settings: Settings, spec: TopologySpec) -> None:
    """Create the worker's topics if missing.

    Those are the source, dead-letter, compacted output and ``benchmarks`` topics, and
    for partition-scoped algorithms the compacted ``<group>-changelog``.

    Raises
    ------
    ConfigError
        If an existing topic has another partition count than configured.
    """
    from streamer.runtime.changelog import changelog_topic
    from streamer.type_topics import ensure_type_topics

    ensure_type_topics(settings, spec, changelog=changelog_topic(worker_group(settings, spec))
                       if changelog_enabled(settings, spec) else None)


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
               noop: bool = False, init: InitFrom | None = None) -> None:
    """Run the worker of ``spec`` until SIGINT/SIGTERM (blocks; exits the process).

    Parameters
    ----------
    settings, spec
        As :func:`create_app`.
    loglevel
        faust log level.
    noop
        See :func:`create_app`.
    init
        The result of :func:`init_from` (``--init-from``): its vectors are published
        once the topics exist, before consuming.

    Raises
    ------
    ConfigError
        If the web port is taken or a topic has the wrong partition count.
    """
    from streamer.registry import REGISTRY_TOPIC, register_version

    check_web_port(settings)
    check_table(settings, spec)
    check_bench(settings, spec)
    # refuses a retired version; records created_at the first time this version runs
    register_version(settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC), spec)
    ensure_worker_topics(settings, spec)
    if init is not None:
        publish_init(settings, spec, init)
    _use_uvloop()
    app = create_app(settings, spec, noop=noop)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
