"""The per-partition state changelog of a worker: a compacted Kafka topic, transactional.

Scale-out (issue 6, DESIGN §6): workers of one type share the consumer group and split
the ``engagements`` partitions. A partition-scoped learner (co-occurrence: every state
record belongs to one source partition) mirrors each batch's changed state records and
last offsets to ``<group>-changelog``, changelog partition ``p`` holding the state of
source partition ``p``, as Kafka Streams and faust tables do. When a partition moves to
another worker (a rebalance after a crash, or a new worker), that worker reads the
partition's changelog and takes it over (:meth:`streamer.engine.Engine.restore_partitions`).

Consistency, without a home-made protocol:

* Each batch goes to the changelog in **one Kafka transaction** (KIP-98; librdkafka's
  transactional producer), records plus one offset marker per partition
  (key ``O/<source topic>``, value the last applied offset in ASCII). Readers use
  ``isolation.level=read_committed``, so a transaction cut short by a crash is never
  seen, and compaction keeps the latest value per key.
* The transaction commits *before* the worker's local RocksDB commit and before faust
  acks the batch, so the consumer group's committed offset never passes the changelog:
  a worker that restores a partition at marker ``m`` is re-delivered everything after
  ``m`` and skips what it has.
* ``transactional.id`` is ``<topic>.<hash of host name and state dir>``: a worker
  restarted on the same state dir fences its previous incarnation and aborts its open
  transaction at once; a dead worker's open transaction on another machine is aborted by
  the broker after ``transaction.timeout.ms`` (10 s here). Only one live process can
  hold a state dir (RocksDB's lock), so one id is never used by two live workers.
* A broker outage is waited out, never given up on: a failed transaction is aborted and
  retried; when the producer is left unusable (e.g. the broker timed the open
  transaction out meanwhile: a fatal ``INVALID_TXN_STATE`` on abort) it is re-created
  with the same id and re-initialised, which is safe because nothing of the batch was
  committed locally. Only being fenced by a newer incarnation, or a non-retriable error,
  raises.
* A worker whose local state is *ahead* of the changelog (a table filled by
  ``streamer backfill``, or a changelog turned on later) writes its whole partition
  state to the changelog first, with tombstones for keys the changelog holds and the
  table does not (:meth:`KafkaChangelog.publish_state`).

Sources: Kafka Streams, "Fault tolerance" and "Processing guarantees" docs
(changelog topics, exactly-once with transactions); confluent-kafka-python
``Producer.init_transactions/begin_transaction/commit_transaction`` docs and
librdkafka's ``isolation.level`` and ``transaction.timeout.ms`` configuration.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamer.engine import PartitionState
from streamer.errors import StateError

log = logging.getLogger(__name__)

OFFSET_KEY_PREFIX = b"O/"
"""Key prefix of a changelog partition's offset marker: ``O/<source topic>``."""


def changelog_topic(group: str) -> str:
    """Return the changelog topic of a worker's consumer group: ``<group>-changelog``.

    The group already carries the topic prefix, type and version (Kafka Streams names
    its changelogs ``<application.id>-<store>-changelog`` the same way).
    """
    return f"{group}-changelog"


def transactional_id(topic: str, state_dir: Path) -> str:
    """Return a stable transactional id per (changelog, host, state dir) (module docstring)."""
    where = f"{socket.gethostname()}:{state_dir.absolute()}"
    digest = hashlib.blake2b(where.encode(), digest_size=6).hexdigest()
    return f"{topic}.{digest}"


class KafkaChangelog:
    """Write and read a worker's state changelog topic (see the module docstring).

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    topic
        The changelog topic (compacted, as many partitions as the source topic).
    txn_id
        The producer's ``transactional.id`` (:func:`transactional_id`).
    txn_timeout_ms
        ``transaction.timeout.ms``: how long the broker keeps a dead producer's open
        transaction before aborting it (a restore waits at most about this long).
    retry_for_s
        How long a write keeps retrying a broker outage before it raises (wall s;
        ``None``, the default, waits as long as it takes: giving up would only make a
        restarted worker wait for the same broker).

    Raises
    ------
    StateError
        If the transactional producer cannot be initialised within ``retry_for_s``.
    """

    def __init__(self, bootstrap: str, topic: str, txn_id: str, *,
                 txn_timeout_ms: int = 10_000, retry_for_s: float | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.retry_for_s = retry_for_s
        self._conf = {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": txn_timeout_ms,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "message.timeout.ms": txn_timeout_ms,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2_000,
        }
        self._p = Producer(self._conf)
        self._retry("init", lambda: self._p.init_transactions(30))
        self.transactions = 0
        self.records = 0
        self.retries = 0
        self.renewals = 0

    def _deadline(self) -> float:
        return float("inf") if self.retry_for_s is None else time.monotonic() + self.retry_for_s

    def _retry(self, what: str, fn: Any) -> None:
        deadline = self._deadline()
        while True:
            try:
                fn()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() > deadline:
                    msg = f"changelog {self.topic}: {what} failed: {err}"
                    raise StateError(msg) from exc
                log.warning("changelog %s: %s: %s; retrying", self.topic, what, err)
                time.sleep(0.5)

    def _renew(self, why: object) -> None:
        """Replace an unusable producer by a new one with the same transactional id."""
        log.warning("changelog %s: producer unusable (%s); re-creating it and "
                    "re-initialising transactions (the batch is not committed yet)",
                    self.topic, why)
        try:
            self._p.purge()
        except (KafkaException, RuntimeError):
            pass
        self._p = Producer(self._conf)
        self._retry("init", lambda: self._p.init_transactions(30))
        self.renewals += 1

    def write(self, records: dict[int, dict[bytes, bytes | None]],
              offsets: dict[tuple[str, int], int]) -> None:
        """Write one batch in one transaction (see :class:`streamer.engine.Changelog`).

        A failed transaction (the broker restarts, times it out, aborts it) is aborted
        and retried, with a new producer if the old one is left unusable, until it
        commits or ``retry_for_s`` runs out; each retry logs a warning.

        Raises
        ------
        StateError
            When fenced by a newer incarnation of this worker (same transactional id),
            on a non-retriable error, or when ``retry_for_s`` ran out.
        """
        deadline = self._deadline()
        while True:
            try:
                self._p.begin_transaction()
                n = self._produce(records, offsets)
                self._p.commit_transaction(60)
                self.transactions += 1
                self.records += n
                return
            except KafkaException as exc:
                err = exc.args[0]
                fenced = err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
                if fenced or time.monotonic() > deadline:
                    msg = f"changelog {self.topic}: transaction failed: {err}"
                    raise StateError(msg) from exc
                self.retries += 1
                log.warning("changelog %s: transaction failed (%s); retrying", self.topic, err)
                if err.fatal():
                    self._renew(err)
                elif err.txn_requires_abort():
                    try:
                        self._retry("abort", lambda: self._p.abort_transaction(60))
                    except StateError as abort_exc:
                        self._renew(abort_exc)
                elif not err.retriable():
                    msg = f"changelog {self.topic}: transaction failed: {err}"
                    raise StateError(msg) from exc
                time.sleep(0.5)

    def _produce(self, records: dict[int, dict[bytes, bytes | None]],
                 offsets: dict[tuple[str, int], int]) -> int:
        produce, poll, topic = self._p.produce, self._p.poll, self.topic
        n = 0
        for p, recs in records.items():
            for key, value in recs.items():
                while True:
                    try:
                        produce(topic, value, key, partition=p)
                        break
                    except BufferError:
                        poll(0.05)
                n += 1
        for (source, p), off in offsets.items():
            produce(topic, str(off).encode(), OFFSET_KEY_PREFIX + source.encode(), partition=p)
            n += 1
        poll(0)
        return n

    def publish_state(self, state: PartitionState, current: PartitionState) -> None:
        """Replace partition ``state.partition`` of the changelog by ``state``, in one transaction.

        Keys that ``current`` (the changelog's present content) holds and ``state`` does
        not get tombstones.
        """
        recs: dict[bytes, bytes | None] = {k: None for k in current.records
                                           if k not in state.records}
        recs.update(state.records)
        offsets = {(t, state.partition): o for t, o in state.offsets.items()}
        self.write({state.partition: recs}, offsets)

    def read(self, partitions: list[int], *, timeout_s: float = 120.0) -> dict[int, PartitionState]:
        """Read the committed content of changelog ``partitions`` (latest value per key).

        Reads from the beginning to the last stable offset (``read_committed``); an empty
        partition gives an empty :class:`PartitionState`.

        Raises
        ------
        StateError
            If the partitions cannot be read to their end within ``timeout_s`` (e.g. the
            broker is down), or a marker value is not an integer.
        """
        out = {p: PartitionState(p) for p in partitions}
        if not partitions:
            return out
        c = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"{self.topic}.restore.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        })
        try:
            pending = set(partitions)
            for p in partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30,
                                                 cached=False)
                if hi <= lo:
                    pending.discard(p)
            c.assign([TopicPartition(self.topic, p, 0) for p in sorted(pending)])
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    msg = (f"changelog {self.topic}: partitions {sorted(pending)} not read to "
                           f"their end within {timeout_s:g} s (is the broker up?)")
                    raise StateError(msg)
                for m in c.consume(10_000, 0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(m.partition())
                            continue
                        if err.retriable():
                            continue
                        msg = f"changelog {self.topic}: read failed: {err}"
                        raise StateError(msg)
                    self._apply(out[m.partition()], m.key(), m.value())
        finally:
            c.close()
        return out

    def _apply(self, st: PartitionState, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if key.startswith(OFFSET_KEY_PREFIX):
            try:
                st.offsets[key[len(OFFSET_KEY_PREFIX):].decode()] = int(value or b"")
            except ValueError as exc:
                msg = f"changelog {self.topic}: offset marker {key!r} holds {value!r}"
                raise StateError(msg) from exc
        elif value is None:
            st.records.pop(key, None)
        else:
            st.records[key] = value

    def close(self) -> None:
        """Flush pending deliveries (nothing is pending between transactions)."""
        self._p.flush(10)


def committed_offsets(bootstrap: str, group: str, topic: str,
                      partitions: list[int]) -> dict[int, int]:
    """Return the consumer group's committed offset (next to read) per partition, if any.

    An OffsetFetch request only (the consumer never joins the group). Partitions without
    a committed offset are left out.

    Raises
    ------
    StateError
        If the broker does not answer within 30 s.
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
    except KafkaException as exc:
        msg = f"cannot read the committed offsets of group {group!r}: {exc.args[0]}"
        raise StateError(msg) from exc
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got if tp.offset >= 0}


def check_group_behind_table(engine: Any, committed: dict[int, int], *, group: str,
                             topic: str) -> None:
    """Refuse to consume when the group's committed offsets skip records the table lacks.

    faust resumes each assigned partition at the group's committed offset. If that is
    past the table's stored offset + 1 (the group was advanced by another process: a
    backfill into another state dir, a worker whose state dir was lost, with no
    changelog to restore it from), records in between would never be applied.

    Raises
    ------
    ConfigError
        One line naming the partitions, both offsets and the ways out.
    """
    from streamer.errors import ConfigError

    gaps = {p: (engine.stored_offset(topic, p) + 1, c) for p, c in sorted(committed.items())
            if c > engine.stored_offset(topic, p) + 1}
    if not gaps:
        return
    what = ", ".join(f"partition {p}: table at {t}, group at {c}" for p, (t, c) in gaps.items())
    msg = (f"consumer group {group!r} is ahead of this worker's table on {topic} ({what}); "
           "consuming would skip those records. Run the worker on the state dir that "
           "applied them (e.g. the backfill's), or reset the group: kafka-consumer-groups "
           f"--group {group} --topic {topic} --reset-offsets --to-earliest --execute")
    raise ConfigError(msg)


def sync_partitions(engine: Any, changelog: KafkaChangelog, partitions: list[int]) -> dict:
    """Bring ``engine`` and the changelog to the same state for ``partitions`` (on assignment).

    A partition whose changelog is ahead of the local table is restored from it; a
    partition whose local table is ahead is written to the changelog. Returns a summary
    ``{"restored": [...], "published": [...], "kept": [...], "seconds": float}``.

    Raises
    ------
    StateError
        If the changelog cannot be read or written, or its records do not load.
    """
    t0 = time.monotonic()
    remote = changelog.read(partitions)
    local = engine.partition_states(partitions)
    res = engine.restore_partitions(remote)
    published = []
    for p in res.kept:
        if local[p].ahead_of(remote[p].offsets):
            changelog.publish_state(local[p], remote[p])
            published.append(p)
    out = {"restored": res.restored, "published": published,
           "kept": [p for p in res.kept if p not in published],
           "seconds": round(time.monotonic() - t0, 3)}
    log.info("changelog sync partitions=%s %s", partitions, out)
    return out
