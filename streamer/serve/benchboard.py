"""Benchmark results and drift alerts in the API: tails the ``benchmarks`` topic (DESIGN §7).

Workers publish one JSON record per snapshot, task result and alert to ``benchmarks``
(keyed by type; see :mod:`streamer.scheduler`). A :class:`BenchmarksTail` reads the topic
from the beginning with no consumer group, like the embedding tails, into a
:class:`BenchBoard` that the HTTP API serves (``/v1/types/{type}/benchmarks``,
``/v1/alerts``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from typing import Any

from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

__all__ = ["BenchBoard", "BenchmarksTail"]


class BenchBoard:
    """Thread-safe in-memory view of benchmark records, per type.

    Parameters
    ----------
    max_records
        Results and alerts kept per type (oldest dropped first).
    """

    def __init__(self, max_records: int = 2000) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=max_records))
        self._results: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=max_records))
        self._alerts: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=max_records))
        # the latest status record's active alerts, and alerts raised after it
        self._status_active: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._since_status: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.records = 0

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            for d in (self._snapshots, self._results, self._alerts, self._status_active,
                      self._since_status):
                d.clear()
            self.records = 0

    def add(self, rec: dict[str, Any]) -> None:
        """Apply one record (``kind`` snapshot/result/error/alert/status; others ignored)."""
        v = rec.get("version")
        t = str(rec.get("type", ""))
        if isinstance(v, int) and not isinstance(v, bool):
            t = f"{t}.v{v}"  # versions of one type side by side stay apart
        kind = rec.get("kind")
        with self._lock:
            self.records += 1
            if kind == "snapshot":
                self._snapshots[t].append(rec)
            elif kind in ("result", "error"):
                self._results[t].append(rec)
            elif kind == "alert":
                self._alerts[t].append(rec)
                self._since_status[t].append(rec)
            elif kind == "status":
                self._status_active[t] = list(rec.get("active_alerts") or [])
                self._since_status[t] = []

    def _open(self, name: str) -> list[dict[str, Any]]:
        """Open alerts of a type: as ``streamer bench --check`` (cli_bench.open_alerts_of)."""
        out, seen = [], set()
        for a in (*self._status_active.get(name, ()), *self._since_status.get(name, ())):
            key = (a.get("series"), a.get("detector"), a.get("at"))
            if key not in seen:
                seen.add(key)
                out.append(a)
        return out

    def for_type(self, name: str, limit: int = 200, version: int | None = None
                 ) -> dict[str, Any]:
        """Return snapshots, latest result per task, recent results and alerts of a type.

        Records carrying a ``version`` are kept per ``name.vN``; ask for one with
        ``version`` (records without a version are included in every answer).
        """
        if version is not None:
            name = f"{name}.v{version}"
        with self._lock:
            return self._for_key(name, limit)

    def _for_key(self, ref: str, limit: int) -> dict[str, Any]:
        """Return the records of ``ref`` (``name`` or ``name.vN``; caller holds the lock)."""
        base = ref.rsplit(".v", 1)[0] if ".v" in ref else None
        keys = (ref,) if base is None else (base, ref)

        def cat(d: dict[str, deque[dict[str, Any]]]) -> list[dict[str, Any]]:
            return [r for k in keys for r in d.get(k, ())]

        results = cat(self._results)
        latest: dict[str, dict[str, Any]] = {}
        for r in results:
            if r.get("kind") == "result":
                task = r["task"] if not r.get("dataset") else f"{r['task']}:{r['dataset']}"
                latest[task] = r
        return {
            "type": ref,
            "snapshots": cat(self._snapshots)[-limit:],
            "latest": latest,
            "results": results[-limit:],
            "alerts": cat(self._alerts)[-limit:],
            "open_alerts": [a for k in keys for a in self._open(k)],
        }

    def alerts(self) -> dict[str, Any]:
        """Return every type's open alerts and the recent alert history."""
        with self._lock:
            names = sorted(set(self._status_active) | set(self._since_status))
            open_ = [a for t in names for a in self._open(t)]
            history = [a for t in sorted(self._alerts) for a in self._alerts[t]]
        return {"open": open_, "history": history}


class BenchmarksTail(threading.Thread):
    """Background thread applying the ``benchmarks`` topic to a :class:`BenchBoard`.

    Parameters
    ----------
    bootstrap, topic
        Where to read (every partition, from the beginning, no consumer group).
    board
        Where records go. Records that are not JSON objects are counted and skipped.
    """

    def __init__(self, bootstrap: str, topic: str, board: BenchBoard,
                 *, poll_timeout_ms: int = 200) -> None:
        super().__init__(name=f"tail-{topic}", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.board = board
        self.poll_timeout_ms = poll_timeout_ms
        self.errors = 0
        self.last_error: str | None = None
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        """Ask the thread to stop after its current poll."""
        self._stop_evt.set()

    def run(self) -> None:
        """Tail until stopped; on a client error start over (the board is rebuilt)."""
        while not self._stop_evt.is_set():
            try:
                self._tail()
            except Exception as exc:  # noqa: BLE001 - keep serving; the error is reported
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception('benchmarks tail failed topic="%s"; retrying in 1 s', self.topic)
                self._stop_evt.wait(1.0)

    def _tail(self) -> None:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 group_id=None, fetch_max_wait_ms=self.poll_timeout_ms)
        try:
            parts = None
            while not parts and not self._stop_evt.is_set():
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    time.sleep(1.0)
            if not parts:
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            self.board.clear()  # a restart re-reads the topic from the beginning
            while not self._stop_evt.is_set():
                for msgs in consumer.poll(timeout_ms=self.poll_timeout_ms).values():
                    for m in msgs:
                        try:
                            rec = json.loads(m.value)
                        except (TypeError, ValueError):
                            rec = None
                        if not isinstance(rec, dict):
                            self.errors += 1
                            continue
                        self.board.add(rec)
        finally:
            consumer.close()
