"""Scheduled snapshots, benchmark tasks and drift detection for one worker (DESIGN §7).

:class:`BenchScheduler` hooks into an :class:`streamer.engine.Engine`:

* **before each batch is learned** (``Engine(before_learn=...)``) it scores a seeded
  sample of the batch's events predict-then-learn: each sampled event's true item is
  ranked (ties averaged, TGB's rule) against ``prequential_negatives`` items drawn
  uniformly from the items seen in earlier batches (TGB-style sampled negatives), with
  the type's own scorer and with a popularity baseline. The batch's MRR feeds the drift
  monitor (series ``prequential.mrr``): one score per mini-batch.
* **after each commit** it counts accepted events and event time; when
  ``snapshot_every_events`` accepted events or ``snapshot_every_event_s`` event seconds
  have passed since the last snapshot it pins the table (:func:`streamer.snapshot.capture`,
  on the writer's thread, so the vectors match the offsets) and hands the capture to one
  background thread, which writes the snapshot, prunes old ones, runs the configured
  tasks on it (``stability`` against the previous snapshot, ``topic:<dataset>``,
  ``metadata:<dataset>``, ``follow-jaccard:<dataset>``), feeds every metric to the drift
  monitor and emits one record per result/alert.

Records (JSON objects, see :mod:`streamer.bench.results`) carry ``"kind"``:
``"snapshot"`` (the manifest), ``"result"`` (a task result with ``type``, ``version``,
``snapshot``, ``event_time``), ``"alert"``, ``"error"`` (a task that failed) and, last
for each snapshot, ``"status"`` with the monitor's ``active_alerts`` (an alert stays
active until its metric is back in range or a detector sees it recover). They go to
``emit`` (the worker sends them to the ``benchmarks`` topic, keyed by type) and are
appended to ``results.jsonl`` in the type's snapshot folder, which
``streamer bench --check`` and ``streamer bench report`` read. The monitor's state is
saved to ``drift.json`` there after every snapshot and reloaded on start, so a
restarted worker keeps its detectors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.drift import DriftConfig, DriftMonitor, series_name
from streamer.bench.embeddings import Embeddings
from streamer.bench.results import BENCHMARKS_TOPIC, Alert, TaskResult
from streamer.errors import ConfigError, StateError
from streamer.eval.prequential import Popularity, tie_averaged_ranks
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.settings import BenchSettings
from streamer.snapshot import Capture, Snapshot, SnapshotStore, capture
from streamer.store.base import FeatureTable
from streamer.topology import TopologySpec
from streamer.types import Clock, item_key, user_key

__all__ = ["BENCHMARKS_TOPIC", "BenchScheduler", "parse_task", "read_results"]

log = logging.getLogger(__name__)

SNAPSHOT_TASKS = ("stability", "topic", "metadata", "follow-jaccard")
"""Tasks that run on a snapshot (``linkpred`` replays a whole data set: offline only)."""

Emit = Callable[[dict[str, Any]], None]


def parse_task(text: str) -> tuple[str, str]:
    """Split ``"task[:dataset]"`` into ``(task, dataset)``.

    Raises
    ------
    ConfigError
        If the task is not one of :data:`SNAPSHOT_TASKS` or a dataset is missing/extra.
    """
    task, _, dataset = text.partition(":")
    if task not in SNAPSHOT_TASKS:
        msg = (f"unknown snapshot task {text!r}; expected 'stability' or one of "
               "'topic:<dataset>', 'metadata:<dataset>', 'follow-jaccard:<dataset>'")
        raise ConfigError(msg)
    if (task == "stability") != (dataset == ""):
        msg = (f"snapshot task {text!r}: 'stability' takes no dataset, the others need one "
               "(e.g. 'metadata:lastfm-asia')")
        raise ConfigError(msg)
    return task, dataset


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read a ``results.jsonl`` log (missing file: empty list; a torn last line is skipped).

    Raises
    ------
    StateError
        Never for a torn tail; only if the file cannot be opened.
    """
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a crash mid-append leaves at most one torn line
    return out


class BenchScheduler:
    """Snapshots + tasks + drift for one engine (see the module docstring).

    Parameters
    ----------
    spec
        The type.
    settings
        Its effective bench settings (:meth:`streamer.settings.Settings.bench_for`).
    store
        Where snapshots go.
    emit
        Called with every record (from the worker thread or the background thread;
        must be thread-safe), or ``None``.
    data_dir
        Data sets folder for the tasks' labels/graphs.
    clock
        Wall clock, only for ``created_at`` bookkeeping.

    Raises
    ------
    ConfigError
        If a task or the drift config is invalid (checked here, before any event).
    """

    def __init__(self, spec: TopologySpec, settings: BenchSettings, store: SnapshotStore, *,
                 emit: Emit | None = None, data_dir: Path | None = None,
                 clock: Clock | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.store = store
        self.emit = emit
        self.data_dir = data_dir
        self.clock = clock
        self.tasks = [parse_task(t) for t in settings.tasks]
        self.results_path = store.dir / "results.jsonl"
        self._drift_path = store.dir / "drift.json"
        self._lock = threading.Lock()
        self.monitor = self._load_monitor(settings.drift)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"bench-{spec.name}")
        self._pending: Future[None] | None = None
        self._due: str | None = None
        self._last_snap_applied = 0
        self._last_snap_evt = math.nan
        self._max_evt = -math.inf
        self._items: list[str] = []
        self._item_set: set[str] = set()
        self._popularity = Popularity()
        self._batches = 0
        self._pool_loaded = False
        self._period: dict[str, list[float]] = {"mrr": [], "recall_at_10": [], "pop_mrr": [],
                                                "pop_recall_at_10": []}
        self.counters: dict[str, int] = {"snapshots": 0, "snapshots_deferred": 0, "results": 0,
                                         "alerts": 0, "task_errors": 0, "scored_batches": 0}
        self.last_error: str | None = None
        prev = store.list()
        self._prev: Snapshot | None = prev[-1] if prev else None
        if self._prev is not None:
            if self._prev.manifest.get("event_time") is not None:
                self._last_snap_evt = float(self._prev.manifest["event_time"])
            self._last_snap_applied = int(self._prev.manifest.get("events_applied") or 0)

    # -- drift ------------------------------------------------------------------------
    def _load_monitor(self, cfg: dict[str, Any]) -> DriftMonitor:
        config = DriftConfig.parse(cfg)  # ConfigError: one line
        if self._drift_path.is_file():
            try:
                state = json.loads(self._drift_path.read_text(encoding="utf-8"))
                return DriftMonitor.from_state(state, config=config)
            except (ValueError, StateError) as exc:
                log.warning("drift state %s unreadable (%s); starting fresh",
                            self._drift_path, exc)
        return DriftMonitor(self.spec.name, self.spec.version, config)

    def _feed(self, series: str, value: float, event_time: float) -> list[Alert]:
        if not math.isfinite(value):
            return []
        with self._lock:
            before = set(self.monitor.active)
            alerts = self.monitor.update(series, value, event_time=event_time)
            changed = set(self.monitor.active) != before
        for a in alerts:
            log.warning("drift alert type=%s series=%s detector=%s: %s", a.type, a.series,
                        a.detector, a.message)
            self._record(a.to_json())
            self.counters["alerts"] += 1
        if changed:  # raised or resolved: `bench --check` reads the latest status
            self._status(event_time)
        return alerts

    def _status(self, event_time: float) -> None:
        with self._lock:
            active = [a.to_json() for a in self.monitor.active.values()]
        self._record({"kind": "status", "type": self.spec.name, "version": self.spec.version,
                      "snapshot": None if self._prev is None else self._prev.id,
                      "event_time": event_time if math.isfinite(event_time) else None,
                      "active_alerts": active})

    def _record(self, rec: dict[str, Any]) -> None:
        """Append to results.jsonl and emit (thread-safe)."""
        line = json.dumps(rec, sort_keys=True)
        with self._lock:
            self.store.dir.mkdir(parents=True, exist_ok=True)
            with open(self.results_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        if self.emit is not None:
            try:
                self.emit(rec)
            except Exception as exc:  # noqa: BLE001 - results are also in the local log
                self.last_error = f"emit: {type(exc).__name__}: {exc}"
                log.exception("could not emit a benchmark record")

    # -- per batch ----------------------------------------------------------------------
    def before_learn(self, learner: OnlineLearner, batch: EventBatch) -> None:
        """Score a seeded sample of ``batch`` before the learner sees it; feed the monitor."""
        if len(batch) == 0:
            return
        self._max_evt = max(self._max_evt, float(batch.ts.max()))
        if not self._pool_loaded:
            self._pool_loaded = True
            # a restarted worker: sample negatives from the items its learner already knows
            self._items = [e for e in learner.entity_ids() if e.startswith("i:")]
            self._item_set = set(self._items)
        if self.settings.prequential and len(self._items) >= 2:
            self._score(learner, batch)
        self._popularity.learn_many(batch)
        for raw in batch.item_ids:
            key = item_key(raw)
            if key not in self._item_set:
                self._item_set.add(key)
                self._items.append(key)

    def _score(self, learner: OnlineLearner, batch: EventBatch) -> None:
        s = self.settings
        first = int(batch.offsets[0]) if len(batch.offsets) else self._batches
        rng = np.random.default_rng([s.seed & 0xFFFFFFFF, self._batches, first & 0xFFFFFFFF])
        self._batches += 1
        n = len(batch)
        rows = np.sort(rng.choice(n, size=min(n, s.prequential_sample), replace=False))
        neg_idx = rng.choice(len(self._items), size=min(len(self._items),
                                                      s.prequential_negatives), replace=False)
        negs = [self._items[j] for j in neg_idx]
        users = [user_key(batch.user_ids[r]) for r in rows]
        trues = [item_key(batch.item_ids[r]) for r in rows]
        cands = negs + trues
        fast = getattr(learner, "score_matrix", None)
        if fast is not None:
            sc = np.asarray(fast(users, cands), np.float64)
        else:
            sc = np.stack([np.asarray(learner.score_items(u, cands), np.float64)
                           for u in users])
        pop = np.asarray(self._popularity.score_matrix(users, cands), np.float64)
        out = {}
        for name, m in (("", sc), ("pop_", pop)):
            mat = np.concatenate([m[:, :len(negs)], m[np.arange(len(rows)), len(negs)
                                                      + np.arange(len(rows))][:, None]], 1)
            same = np.asarray([[c == t for c in negs] for t in trues], np.bool_)
            mat[:, :len(negs)][same] = -np.inf  # a negative equal to the true item: drop
            r = tie_averaged_ranks(mat, np.full(len(rows), len(negs)))
            out[f"{name}mrr"] = float(np.mean(1.0 / r))
            out[f"{name}recall_at_10"] = float(np.mean(r <= 10))
        for k, v in out.items():
            self._period[k].append(v)
        self.counters["scored_batches"] += 1
        self._feed("prequential.mrr", out["mrr"], float(batch.ts.max()))

    def after_commit(self, table: FeatureTable, accepted: int, events_applied: int) -> None:
        """Count the batch; take a snapshot when the schedule says so (call after commit).

        ``events_applied`` is the engine's accepted-event counter (stored with the table),
        so "every N events" counts from the last snapshot's counter across restarts.
        """
        del accepted  # the schedule follows the stored counter, not this process's batches
        s = self.settings
        trigger = None
        since = events_applied - self._last_snap_applied
        if s.snapshot_every_events and since >= s.snapshot_every_events:
            trigger = "events"
        elif (s.snapshot_every_event_s and math.isfinite(self._max_evt)
              and (math.isnan(self._last_snap_evt)
                   or self._max_evt - self._last_snap_evt >= s.snapshot_every_event_s)):
            if math.isnan(self._last_snap_evt):
                self._last_snap_evt = self._max_evt  # the schedule starts at the first event
            else:
                trigger = "event_time"
        if trigger is not None or self._due is not None:
            self.snapshot(table, events_applied=events_applied,
                          trigger=trigger or self._due or "events")

    def poll(self, table: FeatureTable, events_applied: int) -> Future[None] | None:
        """Take a deferred snapshot if its turn has come.

        Call it from the writer's thread between commits (the worker's timer does, every
        second), so a snapshot due at the end of a stream is not left waiting.
        """
        if self._due is None:
            return None
        return self.snapshot(table, events_applied=events_applied, trigger=self._due)

    def snapshot(self, table: FeatureTable, *, events_applied: int,
                 trigger: str = "manual") -> Future[None] | None:
        """Pin ``table`` now and process the snapshot in the background thread.

        Returns the job's future, or ``None`` if the previous job still runs: the snapshot
        is then *deferred* (counted in ``snapshots_deferred``) and taken by the first
        :meth:`after_commit`/:meth:`poll` after that job ends, so a worker never queues
        pinned iterators and never loses a scheduled snapshot.
        """
        if self._pending is not None and not self._pending.done():
            if self._due is None:
                self.counters["snapshots_deferred"] += 1
            self._due = trigger
            return None
        self._due = None
        cap = capture(table, events_applied=events_applied, trigger=trigger)
        self._last_snap_applied = events_applied
        if math.isfinite(self._max_evt):
            self._last_snap_evt = self._max_evt
        period = {k: list(v) for k, v in self._period.items()}
        for v in self._period.values():
            v.clear()
        self._pending = self._pool.submit(self._job, cap, period)
        return self._pending

    # -- background ----------------------------------------------------------------------
    def _job(self, cap: Capture, period: dict[str, list[float]]) -> None:
        try:
            snap = self.store.write(cap)
            pruned = self.store.prune(self.settings.snapshot_retain)
            self.counters["snapshots"] += 1
            self._record({"kind": "snapshot", **snap.manifest, "pruned": pruned})
            log.info("snapshot type=%s id=%s entities=%d event_time=%s pruned=%s",
                     self.spec.name, snap.id, snap.manifest["n_entities"],
                     snap.manifest["event_time"], pruned)
            if period["mrr"]:
                res = TaskResult(
                    task="prequential", dataset="",
                    metrics={"mrr": float(np.mean(period["mrr"])),
                             "recall_at_10": float(np.mean(period["recall_at_10"]))},
                    baselines={"popularity": {
                        "mrr": float(np.mean(period["pop_mrr"])),
                        "recall_at_10": float(np.mean(period["pop_recall_at_10"]))}},
                    n=len(period["mrr"]),
                    details={"negatives": self.settings.prequential_negatives,
                             "sample": self.settings.prequential_sample},
                )
                self._result(snap, res, feed=False)
            if self.tasks:
                emb = snap.load()
                prev_emb = None
                for task, dataset in self.tasks:
                    try:
                        if task == "stability":
                            if self._prev is None or self._prev.id == snap.id:
                                continue
                            if prev_emb is None:
                                prev_emb = self._prev.load()
                            res = _evaluate(task, emb, dataset, prev=prev_emb,
                                            seed=self.settings.seed, data_dir=self.data_dir)
                            res = dataclasses.replace(
                                res, details={**res.details, "compared_to": self._prev.id})
                        else:
                            res = _evaluate(task, emb, dataset, prev=None,
                                            seed=self.settings.seed, data_dir=self.data_dir)
                    except Exception as exc:  # noqa: BLE001 - a failing task never stops the worker
                        self.counters["task_errors"] += 1
                        self.last_error = f"{task}:{dataset}: {type(exc).__name__}: {exc}"
                        log.exception("benchmark task %s:%s failed on snapshot %s", task,
                                      dataset, snap.id)
                        self._record({"kind": "error", "type": self.spec.name,
                                      "version": self.spec.version, "snapshot": snap.id,
                                      "task": task, "dataset": dataset,
                                      "error": self.last_error.splitlines()[0]})
                        continue
                    self._result(snap, res, feed=True)
                del emb
            self._prev = snap
            self._status(snap.event_time)
            self._save_monitor()
        except Exception as exc:  # noqa: BLE001 - log and count; the worker keeps consuming
            self.last_error = f"snapshot: {type(exc).__name__}: {exc}"
            log.exception("snapshot job of %s failed", self.spec.name)

    def _result(self, snap: Snapshot, res: TaskResult, *, feed: bool) -> None:
        rec = {"kind": "result", "type": self.spec.name, "version": self.spec.version,
               "snapshot": snap.id, "event_time": snap.manifest.get("event_time"),
               **res.to_json()}
        self._record(rec)
        self.counters["results"] += 1
        if feed:
            for metric, value in sorted(res.metrics.items()):
                if isinstance(value, int | float):
                    self._feed(series_name(res.task, metric, res.dataset), float(value),
                               snap.event_time)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the running snapshot job (tests, shutdown)."""
        if self._pending is not None:
            self._pending.result(timeout=timeout_s)

    def status(self) -> dict[str, Any]:
        """Counters, latest snapshot and active alerts, JSON-able (for ``/metrics``)."""
        with self._lock:
            active = [a.to_json() for a in self.monitor.active.values()]
        snaps = self.store.list()
        busy = self._due is not None or (self._pending is not None
                                         and not self._pending.done())
        return {**self.counters, "latest_snapshot": snaps[-1].id if snaps else None,
                "busy": busy,
                "active_alerts": active, "last_error": self.last_error,
                "tasks": [f"{t}:{d}" if d else t for t, d in self.tasks],
                "dir": str(self.store.dir)}

    def _save_monitor(self) -> None:
        with self._lock:
            state = self.monitor.state()
        self.store.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._drift_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(self._drift_path)

    def close(self) -> None:
        """Finish the running job, stop the background thread and save the detectors."""
        self._pool.shutdown(wait=True)
        try:
            self._save_monitor()
        except OSError as exc:
            log.warning("could not save drift state %s: %s", self._drift_path, exc)


def _evaluate(task: str, emb: Embeddings, dataset: str, *, prev: Embeddings | None,
              seed: int, data_dir: Path | None) -> TaskResult:
    from streamer.bench.tasks import evaluate

    return evaluate(task, emb, dataset, prev=prev, seed=seed, data_dir=data_dir)
