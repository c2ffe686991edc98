"""What a backfill replays and in which order: range bounds, offsets, deterministic merge.

Pure (no Kafka client, no I/O): :mod:`streamer.backfill` asks Kafka for the offsets and
feeds :class:`OrderedMerge`; these pieces are unit-tested without a broker.

* :func:`parse_bound` reads ``--from`` / ``--until`` (``earliest`` / ``latest``, ISO-8601
  or epoch seconds) into a :class:`Bound` in event-time milliseconds (Kafka record
  timestamps); :func:`check_range` refuses an empty or reversed time range.
* :func:`plan_offsets` picks each partition's start (``max(stored + 1, from)``) and stop
  (exclusive) offset from the broker's answers.
* :class:`OrderedMerge` interleaves the partitions in an order that depends on the data
  alone (see its docstring), so replays of one range feed a learner the same sequence;
  :class:`CatchUp` turns polled records into fixed-size batches in that order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Literal

import numpy as np

from streamer.errors import BadRequest

__all__ = ["LOOKAHEAD", "Bound", "CatchUp", "OrderedMerge", "PartitionPlan", "check_range",
           "merge_keys", "parse_bound", "plan_offsets"]

_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMS = ("an ISO-8601 time (e.g. 2014-01-01T00:00:00Z; no UTC offset means UTC) or epoch "
          "seconds (e.g. 1388534400)")


# --------------------------------------------------------------------------------------
# range: bounds and offsets (pure)


@dataclass(frozen=True)
class Bound:
    """One end of a backfill range.

    Attributes
    ----------
    kind
        ``"earliest"`` (start only), ``"latest"`` (stop only: the end offsets when the
        backfill starts) or ``"time"``.
    ms
        For ``"time"``: event time in **milliseconds** since the epoch (a Kafka record
        timestamp), else ``None``.
    """

    kind: Literal["earliest", "latest", "time"]
    ms: int | None = None

    def __str__(self) -> str:
        if self.ms is None:
            return self.kind
        dt = _EPOCH + timedelta(milliseconds=self.ms)
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_MAX_MS = 253_402_300_800_000
"""10000-01-01T00:00:00Z in epoch milliseconds: the first time :mod:`datetime` cannot show."""


def parse_bound(text: str, *, option: Literal["--from", "--until"]) -> Bound:
    """Parse a ``--from`` or ``--until`` value.

    Parameters
    ----------
    text
        ``--from``: ``earliest``, an ISO-8601 time or epoch seconds. ``--until``:
        ``latest``, an ISO-8601 time or epoch seconds. ISO-8601 is what
        :meth:`datetime.datetime.fromisoformat` reads (``Z`` suffix, offsets, fractions,
        date only); a time without a UTC offset is UTC. A plain number (``1388534400``,
        ``1388534400.5``) is epoch seconds, so a basic-format date must be written with
        dashes (``2014-01-01``, not ``20140101``).
    option
        Which option it is (decides the keyword accepted and the error message).

    Returns
    -------
    Bound
        Times are rounded **up** to the millisecond (a record of timestamp ``t`` ms is
        at or after the time ``x`` iff ``t >= ceil(x)``).

    Raises
    ------
    BadRequest
        One line naming the value and the expected forms (before 1970, from the year
        10000 on, e.g. epoch milliseconds given as seconds, NaN, garbage).

    Examples
    --------
    >>> parse_bound("2014-01-01", option="--from")
    Bound(kind='time', ms=1388534400000)
    >>> parse_bound("1388534400.0005", option="--until").ms
    1388534400001
    >>> parse_bound("latest", option="--until").kind
    'latest'
    """
    keyword = "earliest" if option == "--from" else "latest"
    s = text.strip() if isinstance(text, str) else ""
    if s == keyword:
        return Bound(keyword)  # type: ignore[arg-type]
    ms: int | None = None
    if _NUMBER_RE.match(s):
        try:
            ms = int((Decimal(s) * 1000).to_integral_value(rounding=ROUND_CEILING))
        except InvalidOperation:
            ms = None
    elif s:
        try:
            dt = datetime.fromisoformat(s)
        except (ValueError, OverflowError):
            dt = None
        if dt is not None:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            try:
                us = (dt - _EPOCH) // timedelta(microseconds=1)
            except OverflowError:
                us = -1
            ms = -(-us // 1000)
    if ms is None or ms < 0 or ms >= 1 << 62:
        msg = f"{option} {text!r} is not a valid {'start' if option == '--from' else 'stop'}; " \
              f"expected '{keyword}', {_FORMS}, not before 1970"
        raise BadRequest(msg)
    if ms >= _MAX_MS:
        hint = (" (epoch milliseconds? give seconds)" if _NUMBER_RE.match(s)
                and ms // 1000 < _MAX_MS else "")
        msg = (f"{option} {text!r} is after 9999-12-31{hint}; expected '{keyword}', {_FORMS}, "
               "before the year 10000")
        raise BadRequest(msg)
    return Bound("time", ms)


def check_range(start: Bound, until: Bound | None) -> None:
    """Refuse a time range that ends before it starts.

    Raises
    ------
    BadRequest
        If both are times and ``until`` is not later than ``start``.
    """
    if until is not None and start.ms is not None and until.ms is not None \
            and until.ms <= start.ms:
        msg = (f"--until {until} is not later than --from {start}; expected a stop time "
               "after the start time (the range is [from, until))")
        raise BadRequest(msg)


@dataclass(frozen=True)
class PartitionPlan:
    """Offsets of one partition for a backfill (all Kafka offsets, stop exclusive).

    Attributes
    ----------
    partition
        Partition number.
    begin, end
        First available offset and end offset (next offset to be written) at start.
    stored
        Last offset the table had applied (-1: none).
    start
        First offset to apply: ``max(stored + 1, from-offset, begin)``.
    stop
        First offset *not* to apply in the bounded (catch-up) phase.
    """

    partition: int
    begin: int
    end: int
    stored: int
    start: int
    stop: int

    @property
    def todo(self) -> int:
        """Records left to apply in the bounded phase (0 if done)."""
        return max(0, self.stop - self.start)


def gaps(plan: dict[int, PartitionPlan]) -> dict[int, int]:
    """Return partition -> records between the table's stored offset and the plan's start.

    Non-zero where the table has applied records (``stored >= 0``) and the start lies
    further on (a ``--from`` past where the table stopped, or records deleted by
    retention since): those records will never be in the table. Partitions without
    a gap are left out.

    Examples
    --------
    >>> gaps({0: PartitionPlan(0, 0, 90, 9, 40, 90), 1: PartitionPlan(1, 0, 90, 9, 10, 90),
    ...       2: PartitionPlan(2, 0, 90, -1, 40, 90)})
    {0: 30}
    """
    return {p: pl.start - pl.stored - 1 for p, pl in sorted(plan.items())
            if pl.stored >= 0 and pl.start > pl.stored + 1}


def plan_offsets(
    partitions: Iterable[int],
    *,
    begin: dict[int, int],
    end: dict[int, int],
    stored: dict[int, int],
    from_offsets: dict[int, int | None] | None,
    until_offsets: dict[int, int | None] | None,
) -> dict[int, PartitionPlan]:
    """Choose the start and stop offset of every partition.

    Parameters
    ----------
    partitions
        Partitions of the source topic.
    begin, end
        Beginning and end offsets of each partition (when the backfill starts).
    stored
        Last applied offset per partition in the table (missing: none).
    from_offsets
        ``None`` for ``--from earliest``, else the ``offsets_for_times`` answer per
        partition (``None``: no record at or after the time: start at the end).
    until_offsets
        ``None`` for ``--until latest`` or follow mode (stop at the end offsets), else
        the ``offsets_for_times`` answer (``None``: stop at the end offset).

    Returns
    -------
    dict
        Partition -> :class:`PartitionPlan`.

    Examples
    --------
    >>> plan = plan_offsets([0, 1], begin={0: 0, 1: 0}, end={0: 10, 1: 8}, stored={0: 4},
    ...                     from_offsets={0: 2, 1: None}, until_offsets=None)
    >>> (plan[0].start, plan[0].stop), (plan[1].start, plan[1].stop)
    ((5, 10), (8, 8))
    """
    out: dict[int, PartitionPlan] = {}
    for p in sorted(partitions):
        b, e = begin[p], end[p]
        if from_offsets is None:
            base = b
        else:
            f = from_offsets.get(p)
            base = e if f is None or f < 0 else f
        st = stored.get(p, -1)
        start = max(base, st + 1, b)
        if until_offsets is None:
            stop = e
        else:
            u = until_offsets.get(p)
            stop = e if u is None or u < 0 else u
        out[p] = PartitionPlan(partition=p, begin=b, end=e, stored=st, start=start, stop=stop)
    return out


# --------------------------------------------------------------------------------------
# deterministic merge (pure)


LOOKAHEAD = 8
"""Records of look-ahead in the merge key (:class:`OrderedMerge`). Measured on the
Wikipedia stream with the integration tests' 1,000 bad messages (template timestamps
from anywhere in the month) mixed in: ordering by the raw timestamps leaves valid events
on average 174 h behind the latest event time already applied (each late-stamped bad
record holds back the rest of its partition); with a look-ahead of 8, 31 s (99th
percentile 13 min); 32: 6 min; 128: 1.2 h."""


def merge_keys(ts_ms: np.ndarray, lookahead: int = LOOKAHEAD) -> np.ndarray:
    """Return each record's merge key: the smallest timestamp of it and its next records.

    Parameters
    ----------
    ts_ms
        Shape ``(n,)`` int64, record timestamps (ms) of one partition, in offset order,
        up to its stop offset.
    lookahead
        Window length ``W``: key ``j`` is ``min(ts[j : j + W])`` (shorter at the end).

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)`` int64.

    Examples
    --------
    >>> merge_keys(np.array([5, 99, 6, 7, 1, 9]), lookahead=2).tolist()
    [5, 6, 6, 1, 1, 9]
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    n = len(ts)
    if n == 0 or lookahead <= 1:
        return ts.copy()
    out = np.empty(n, np.int64)
    full = n - lookahead + 1
    if full > 0:
        out[:full] = np.lib.stride_tricks.sliding_window_view(ts, lookahead).min(axis=1)
    tail = ts[max(full, 0):]
    out[max(full, 0):] = np.minimum.accumulate(tail[::-1])[::-1]
    return out


class OrderedMerge:
    """Merge per-partition record streams into one order that depends on the data alone.

    Each record gets a key ``k = min(ts[j : j + W])``: the smallest timestamp among it
    and the next ``W - 1`` records of its partition (:func:`merge_keys`, ``W`` =
    :data:`LOOKAHEAD`; shorter windows at the partition's stop). The order is the
    k-way merge that repeatedly emits the smallest ``(k, partition)`` among the
    partitions' next records (``heapq.merge`` over the keyed streams): event-time order
    across partitions, offset order within one. Keying by the raw timestamp would let
    one record stamped far in the future (a bad clock, a malformed message) hold back
    the rest of its partition until every other partition has passed that time; the
    look-ahead key gives such a record the time of its neighbours instead.

    The merge is memoryless: a record's key depends only on it and the records after it
    (up to the stop), so resuming from any emitted prefix's positions yields the rest of
    the same order (a backfill restarted after a crash applies the same sequence).

    Implementation: that merge equals sorting by ``(K, partition, offset)``, ``K`` being
    the running maximum of ``k`` over the partition (a record cannot leave before its
    predecessors). A record is released once its key is known (``W - 1`` successors
    arrived, or the partition closed) and no future record of an **open** partition can
    sort before it: an open partition bounds the release at ``(K_last, partition)``;
    one that has no keyed record yet blocks every release. :meth:`close` a partition
    once it has given its last record (its stop offset).

    Parameters
    ----------
    partitions
        The open partitions.
    lookahead
        ``W`` (>= 1; 1 keys by the raw timestamps).

    Examples
    --------
    >>> m = OrderedMerge([0, 1], lookahead=1)
    >>> m.extend(0, ["a0", "a1"], [10, 30])
    >>> m.pop_ready()  # partition 1 has given nothing yet
    []
    >>> m.extend(1, ["b0"], [20])
    >>> m.pop_ready()  # a1 (30) may still be preceded by a record of 1 at (20..30)
    ['a0', 'b0']
    >>> m.close(1)
    >>> m.pop_ready()
    ['a1']
    """

    def __init__(self, partitions: Iterable[int], *, lookahead: int = LOOKAHEAD) -> None:
        if lookahead < 1:
            msg = f"lookahead must be >= 1, got {lookahead}"
            raise ValueError(msg)
        self.lookahead = lookahead
        self._open: set[int] = set(partitions)
        # keyed records waiting for release: running-max keys and items
        self._keys: dict[int, np.ndarray] = {p: np.empty(0, np.int64) for p in self._open}
        self._items: dict[int, list[Any]] = {p: [] for p in self._open}
        # records whose look-ahead window is not complete yet (< lookahead of them)
        self._tail_ts: dict[int, np.ndarray] = {p: np.empty(0, np.int64) for p in self._open}
        self._tail: dict[int, list[Any]] = {p: [] for p in self._open}
        self._max: dict[int, int] = {}

    def extend(self, partition: int, items: list[Any], ts_ms: list[int]) -> None:
        """Append records of ``partition``, in its order, with their timestamps (ms).

        Raises
        ------
        ValueError
            If ``partition`` was closed or is unknown, or the lengths differ.
        """
        if partition not in self._open:
            msg = f"partition {partition} is closed or unknown"
            raise ValueError(msg)
        if len(items) != len(ts_ms):
            msg = f"{len(items)} items but {len(ts_ms)} timestamps"
            raise ValueError(msg)
        if not items:
            return
        old = self._tail_ts[partition]
        ts = np.asarray(ts_ms, dtype=np.int64)
        ts = np.concatenate((old, ts)) if len(old) else ts
        pending = self._tail[partition]
        pending.extend(items)
        ready = len(ts) - self.lookahead + 1
        if ready <= 0:
            self._tail_ts[partition] = ts
            return
        keys = np.lib.stride_tricks.sliding_window_view(ts, self.lookahead).min(axis=1)
        self._keep(partition, keys[:ready], pending[:ready])
        self._tail_ts[partition] = ts[ready:]
        del pending[:ready]

    def _keep(self, partition: int, keys: np.ndarray, items: list[Any]) -> None:
        """Queue keyed records for release (``keys`` become running maxima)."""
        keys = np.maximum.accumulate(keys)
        prev = self._max.get(partition)
        if prev is not None:
            np.maximum(keys, prev, out=keys)
        self._max[partition] = int(keys[-1])
        old = self._keys[partition]
        self._keys[partition] = np.concatenate((old, keys)) if len(old) else keys
        self._items[partition].extend(items)

    def close(self, partition: int) -> None:
        """Declare that ``partition`` gives no more records (idempotent)."""
        if partition not in self._open:
            return
        self._open.discard(partition)
        tail = self._tail.get(partition)
        if tail:
            self._keep(partition, merge_keys(self._tail_ts[partition], self.lookahead), tail)
            self._tail[partition] = []
            self._tail_ts[partition] = np.empty(0, np.int64)

    def is_open(self, partition: int) -> bool:
        """Return True while ``partition`` may still give records."""
        return partition in self._open

    @property
    def pending(self) -> int:
        """Records held back (not yet released)."""
        return (sum(len(v) for v in self._items.values())
                + sum(len(v) for v in self._tail.values()))

    @property
    def finished(self) -> bool:
        """True once every partition is closed and every record released."""
        return not self._open and self.pending == 0

    def pop_ready(self) -> list[Any]:
        """Release, in merge order, every record no future record can precede."""
        bound: tuple[int, int] | None = None
        for p in self._open:
            last = self._max.get(p)
            if last is None:
                return []
            if bound is None or (last, p) < bound:
                bound = (last, p)
        keys_sel: list[np.ndarray] = []
        parts_sel: list[np.ndarray] = []
        items: list[Any] = []
        for p in sorted(self._items):
            keys = self._keys[p]
            if not len(keys):
                continue
            if bound is None:
                n = len(keys)
            else:
                n = int(np.searchsorted(keys, bound[0], side="right" if p <= bound[1] else "left"))
            if n == 0:
                continue
            keys_sel.append(keys[:n])
            parts_sel.append(np.full(n, p, np.int64))
            items.extend(self._items[p][:n])
            self._keys[p] = keys[n:]
            del self._items[p][:n]
        if len(keys_sel) <= 1:
            return items
        k = np.concatenate(keys_sel)
        order = np.lexsort((np.arange(len(k)), np.concatenate(parts_sel), k))
        return [items[i] for i in order.tolist()]


EARLY_BATCH = 4_000
"""Fewest ready records a catch-up applies before a whole batch is there, when the
fetcher has queued nothing more (:meth:`CatchUp.next_batch` ``at_least``): the engine
works instead of idling, and smaller batches cost more per record (each commits its
changed vectors and state)."""


class CatchUp:
    """Turn the polled records of a bounded range into engine batches, in merge order.

    Feed it what the consumer returns (:meth:`feed`), take batches (:meth:`next_batch`)
    until :attr:`done`. Records are ordered by :class:`OrderedMerge` and cut into
    batches of ``batch`` records; the order depends on the range's data alone, never on
    how the consumer happened to chunk its fetches. A caller that finds nothing more
    fetched yet may take the ready records as a shorter batch
    (``next_batch(at_least=...)``) rather than wait, so the engine starts on the first
    records while the rest are still being fetched; the cuts then depend on timing,
    the end state does not (see :mod:`streamer.engine`).

    Parameters
    ----------
    topic
        Source topic (copied into each :class:`~streamer.engine.RawMessage`).
    plan
        Partition -> :class:`PartitionPlan`; partitions with nothing to do are closed.
    batch
        Records per batch (>= 1).
    keep_overflow
        Keep records at or past a partition's stop offset in :attr:`overflow` (the
        follow phase applies them next) instead of dropping them.

    Notes
    -----
    A partition closes when its record at ``stop - 1`` (or any later one) arrives:
    offsets are contiguous in ``engagements`` (not compacted, not transactional).
    """

    def __init__(self, topic: str, plan: dict[int, PartitionPlan], batch: int, *,
                 keep_overflow: bool = False) -> None:
        from streamer.engine import RawMessage

        self._raw = RawMessage
        self.topic = topic
        self.batch = batch
        self.keep_overflow = keep_overflow
        self.stops = {p: pl.stop for p, pl in plan.items()}
        self.merge = OrderedMerge(p for p, pl in plan.items() if pl.todo)
        self.overflow: dict[int, list[Any]] = {p: [] for p in plan}
        self._ready: list[Any] = []
        self._next = {p: pl.start for p, pl in plan.items()}

    @property
    def done(self) -> bool:
        """True once every record of the range was handed out in a batch."""
        return self.merge.finished and not self._ready

    def is_open(self, partition: int) -> bool:
        """Return True while records of ``partition`` below its stop are still expected."""
        return self.merge.is_open(partition)

    def expected(self) -> int:
        """Return the records below the stop offsets not received yet (open partitions).

        Ask the consumer for no more: a batch ``consume(n, timeout)`` waits for ``n``
        records or the timeout, so asking for more than will come costs the timeout.
        """
        return sum(max(0, self.stops[p] - self._next[p]) for p in self.stops
                   if self.merge.is_open(p))

    def feed(self, msgs: Iterable[Any]) -> tuple[list[int], list[Any]]:
        """Take one poll's messages (confluent-kafka ``Message`` or alike).

        Each message has ``error()``, ``partition()``, ``offset()``, ``timestamp()``
        (``(type, ms)``) and ``value()``. The key is not kept (the engine does not read
        it; the partition already reflects it).

        Returns
        -------
        closed, errors
            Partitions that reached their stop offset with this poll (pause them), and
            the ``error()`` of the error events (the caller decides which are fatal).

        Raises
        ------
        ValueError
            If a record below the stop of an already closed partition arrives (a
            broker that skipped offsets: never silently dropped).
        """
        raw, new = self._raw, tuple.__new__  # RawMessage without its Python __new__
        topic = self.topic
        stops = self.stops
        merge = self.merge
        closed: list[int] = []
        errors: list[Any] = []
        groups: dict[int, tuple[list[Any], list[int]]] = {}
        past: set[int] = set()
        cur = None
        add_item = add_ts = None
        for m in msgs:
            err = m.error()
            if err is not None:
                errors.append(err)
                continue
            p = m.partition()
            o = m.offset()
            if o >= stops[p]:
                past.add(p)  # closed below, after its records of this poll are merged
                if self.keep_overflow:
                    self.overflow[p].append(new(raw, (m.value(), topic, p, o, None)))
                continue
            if p != cur:  # a poll gives runs of one partition: switch lists per run only
                items, tss = groups.setdefault(p, ([], []))
                add_item, add_ts, cur = items.append, tss.append, p
            add_item(new(raw, (m.value(), topic, p, o, None)))  # type: ignore[misc]
            add_ts(m.timestamp()[1])  # type: ignore[misc]
        nxt = self._next
        for p, (items, tss) in groups.items():
            merge.extend(p, items, tss)
            nxt[p] = items[-1].offset + 1
            if nxt[p] >= stops[p]:
                past.add(p)
        for p in sorted(past):
            if merge.is_open(p):
                merge.close(p)
                closed.append(p)
        self._ready.extend(merge.pop_ready())
        return closed, errors

    def next_batch(self, at_least: int | None = None) -> list[Any] | None:
        """Return the next batch, or None if it is not ready yet.

        A batch has ``batch`` records, or is the rest once all records arrived. With
        ``at_least``, every ready record is returned as a shorter batch too, when there
        are ``at_least`` or more of them (the caller found nothing more to fetch right
        now and would rather apply than wait).
        """
        ready = self._ready
        size = self.batch
        if len(ready) >= size or (ready and self.merge.finished):
            chunk = ready[:size]
            del ready[:size]
            return chunk
        if at_least is not None and ready and len(ready) >= at_least:
            chunk = ready[:]
            ready.clear()
            return chunk
        return None
