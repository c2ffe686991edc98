"""Event-time de-duplication by ``event_id`` (DESIGN §2, §6).

A duplicate is a repeat of a producer-assigned ``event_id``: identical content without
an id is a real repeat and is never dropped. Restarts never re-apply events (that is
the stored offsets' job); this class catches producers that send the same event twice
(retries, replays of a source file).

Semantics, per partition (a duplicate has the original's key, ``user_id``, hence its
partition; the same id on two partitions is *not* a duplicate):

* the partition's **watermark** is the largest event time checked on it so far;
* an id first seen at event time ``t0`` is *remembered* while
  ``watermark - t0 <= window_s``, then evicted;
* a later event with the same id is a duplicate iff the id is remembered and
  ``event.ts - t0 <= window_s``. A duplicate does not refresh ``t0``.

Eviction depends only on the event sequence (never the wall clock), so replaying a
partition gives the same verdicts; memory is bounded by the number of distinct ids
whose first sighting lies within ``window_s`` of each partition's watermark.

The state is part of the exactly-once flush (DESIGN §6): :meth:`Deduplicator.state_changes`
returns the records changed since the last call, to be written in the same RocksDB
``WriteBatch`` as the offsets, and :meth:`Deduplicator.load_state_records` rebuilds
the state from every stored record.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

from streamer.errors import ConfigError, StateError
from streamer.events.schema import EngagementEvent

DEFAULT_KEY_PREFIX: Final = b"dedup/"

_F64 = struct.Struct(">d")
# batches of at least this many events try the vectorised path of check_many first
_FAST_MIN = 64
_ID_TAG: Final = b"/e/"
_WM_TAG: Final = b"/w"


class _Expiry:
    """The pending evictions of one partition: ``(t0, event_id)``, smallest ``t0`` first.

    What a single min-heap would hold, split in two: entries that arrive in ``t0`` order
    (the common case: a partition's event times rarely go back) join a FIFO, O(1) each
    way; the others a heap. Evicting "every entry with ``t0 < horizon``" drains the
    front of both, so the set evicted at each watermark is the same as with one heap.
    """

    __slots__ = ("fifo", "late")

    def __init__(self, entries: Iterable[tuple[float, str]] = ()) -> None:
        self.fifo: deque[tuple[float, str]] = deque(sorted(entries))
        self.late: list[tuple[float, str]] = []

    def extend(self, entries: Iterable[tuple[float, str]]) -> None:
        """Add ``(t0, event_id)`` entries in arrival order (the FIFO if in ``t0`` order).

        :meth:`Deduplicator.check_many`'s event loop inlines the same rule.
        """
        fifo, late = self.fifo, self.late
        for entry in entries:
            if not fifo or entry[0] >= fifo[-1][0]:
                fifo.append(entry)
            else:
                heapq.heappush(late, entry)

    def pop_below(self, horizon: float) -> list[tuple[float, str]]:
        """Remove and return every entry with ``t0 < horizon``."""
        out = []
        fifo, late = self.fifo, self.late
        while fifo and fifo[0][0] < horizon:
            out.append(fifo.popleft())
        while late and late[0][0] < horizon:
            out.append(heapq.heappop(late))
        return out

    def __len__(self) -> int:
        return len(self.fifo) + len(self.late)

    def entries(self) -> list[tuple[float, str]]:
        """Return every pending entry, sorted (inspection and tests)."""
        return sorted([*self.fifo, *self.late])


class Deduplicator:
    """Flag repeats of an ``event_id`` within an event-time window, per partition.

    Parameters
    ----------
    window_s
        Window in event seconds (finite, >= 0).
    key_prefix
        Prefix of the state record keys (default ``b"dedup/"``). Record keys are
        ``<prefix><partition>/e/<event_id UTF-8>`` (value: ``t0`` as big-endian float64)
        and ``<prefix><partition>/w`` (value: the watermark, big-endian float64).

    Raises
    ------
    ConfigError
        If ``window_s`` is negative or not finite, or ``key_prefix`` is empty.

    Notes
    -----
    Not thread-safe: one instance belongs to one worker loop.

    Examples
    --------
    >>> d = Deduplicator(window_s=60.0)
    >>> ev = EngagementEvent("u1", "i1", "click", 100.0, event_id="e1")
    >>> d.check(ev, partition=0), d.check(ev, partition=0), d.check(ev, partition=1)
    (False, True, False)
    >>> sorted(d.state_changes())
    [b'dedup/0/e/e1', b'dedup/0/w', b'dedup/1/e/e1', b'dedup/1/w']
    """

    def __init__(self, window_s: float, *, key_prefix: bytes = DEFAULT_KEY_PREFIX) -> None:
        ok = isinstance(window_s, int | float) and not isinstance(window_s, bool)
        if not ok or not math.isfinite(window_s) or window_s < 0:
            msg = f"window_s must be a finite number of seconds >= 0, got {window_s!r}"
            raise ConfigError(msg)
        if not isinstance(key_prefix, bytes) or not key_prefix:
            msg = f"key_prefix must be non-empty bytes, got {key_prefix!r}"
            raise ConfigError(msg)
        self.window_s = float(window_s)
        self.key_prefix = key_prefix
        self._seen: dict[int, dict[str, float]] = {}
        self._expiry: dict[int, _Expiry] = {}
        self._watermark: dict[int, float] = {}
        self._dirty_ids: dict[int, set[str]] = {}
        # ids with a record in the store (as of the last state_changes): an id that
        # comes and goes between two calls needs no delete
        self._stored: dict[int, set[str]] = {}
        self._dirty_wm: set[int] = set()

    # ------------------------------------------------------------------ hot path
    def check(self, event: EngagementEvent, partition: int) -> bool:
        """Return True if ``event`` repeats a remembered ``event_id``; else remember it.

        Every call advances the partition's watermark to ``max(watermark, event.ts)``
        and evicts ids that fell out of the window, including calls for events without
        an ``event_id`` (which are never duplicates).

        Parameters
        ----------
        event
            A decoded event; ``event.ts`` in event seconds.
        partition
            Source partition of the event.

        Returns
        -------
        bool
            True for a duplicate (drop it), False otherwise.
        """
        return bool(self.check_many([partition], [event.ts], [event.event_id]))

    def check_many(self, partitions: Sequence[int], ts: Sequence[float],
                   event_ids: Sequence[str | None]) -> list[int]:
        """Check a batch of events in order; return the positions of the duplicates.

        The semantics are those of the module docstring, event by event in order;
        :meth:`check` is the one-event case, so a batch gives the same verdicts and
        the same state as its events checked one at a time.

        Parameters
        ----------
        partitions
            Source partition per event, ``n`` ints.
        ts
            Event time per event, event seconds, ``n`` floats.
        event_ids
            ``event_id`` per event (``None``: never a duplicate), ``n`` entries.

        Returns
        -------
        list of int
            Ascending positions of the events that repeat a remembered ``event_id``.

        Notes
        -----
        A batch of at least 64 events whose ids are distinct and unknown to the
        partitions' remembered ids cannot hold a duplicate; it is applied in one
        vectorised pass (running watermark by ``numpy.maximum.accumulate``), which
        ends in the same state as the event-by-event loop used otherwise.
        """
        if len(ts) >= _FAST_MIN and self._check_new_ids(partitions, ts, event_ids):
            return []
        window = self.window_s
        wms = self._watermark
        seen_of, expiry, dirty_of = self._seen, self._expiry, self._dirty_ids
        dirty_wm = self._dirty_wm
        push, pop = heapq.heappush, heapq.heappop
        dups: list[int] = []
        p_cur = None
        wm = 0.0
        seen: dict[str, float] = {}
        fifo: deque[tuple[float, str]] = deque()
        late: list[tuple[float, str]] = []
        popleft = fifo.popleft
        dirty: set[str] = set()
        for i, (p, t, event_id) in enumerate(zip(partitions, ts, event_ids, strict=True)):
            if p != p_cur:
                if p_cur is not None:
                    wms[p_cur] = wm
                p_cur = p
                if p not in seen_of:
                    seen_of[p], expiry[p], dirty_of[p] = {}, _Expiry(), set()
                seen, dirty = seen_of[p], dirty_of[p]
                fifo, late = expiry[p].fifo, expiry[p].late
                popleft = fifo.popleft
                w = wms.get(p)
                if w is None:
                    wms[p] = wm = t
                    dirty_wm.add(p)
                    self._evict(p, wm)
                else:
                    wm = w
            if t > wm:  # the watermark advances: evict as _evict does
                wm = t
                dirty_wm.add(p)
                horizon = wm - window
                while fifo and fifo[0][0] < horizon:
                    t0, old = popleft()
                    if seen.get(old) == t0:
                        del seen[old]
                        dirty.add(old)
                while late and late[0][0] < horizon:
                    t0, old = pop(late)
                    if seen.get(old) == t0:
                        del seen[old]
                        dirty.add(old)
            if event_id is None:
                continue
            t0 = seen.get(event_id)
            if t0 is not None:
                if t - t0 <= window:
                    dups.append(i)
                    continue
                del seen[event_id]  # remembered but out of window (not when t <= wm)
                dirty.add(event_id)
            if wm - t > window:  # already outside the window: nothing to remember
                continue
            seen[event_id] = t
            if not fifo or t >= fifo[-1][0]:
                fifo.append((t, event_id))
            else:
                push(late, (t, event_id))
            dirty.add(event_id)
        if p_cur is not None:
            wms[p_cur] = wm
        return dups

    def _check_new_ids(self, partitions: Sequence[int], ts: Sequence[float],
                       event_ids: Sequence[str | None]) -> bool:
        """Apply a batch that cannot hold a duplicate, vectorised; False if it might.

        The batch qualifies when its ids are distinct, none is remembered by a
        partition of the batch, and every ``ts`` is finite; otherwise nothing changes
        and False is returned. Per partition, the watermark before each event is the
        running maximum of the event times (and the old watermark); an event's id is
        remembered iff ``watermark - ts <= window_s`` then, and kept iff it is still
        within the window of the final watermark, as the sequential loop would leave
        it (an id remembered then evicted within the batch is only marked dirty). The
        old ids are evicted at the final watermark, which evicts the same set as
        evicting at every step, the watermark being monotone.
        """
        ids = [e for e in event_ids if e is not None]
        id_set = set(ids)
        if len(id_set) != len(ids):
            return False
        p_arr = np.asarray(partitions, dtype=np.int64)
        t_arr = np.asarray(ts, dtype=np.float64)
        if not np.isfinite(t_arr).all():
            return False
        parts = np.unique(p_arr).tolist()
        seen_of = self._seen
        for p in parts:
            seen = seen_of.get(p)
            if seen and not seen.keys().isdisjoint(id_set):
                return False
        window = self.window_s
        e_arr = np.array(event_ids, dtype=object)
        has_id = e_arr != None  # noqa: E711 - element-wise comparison
        for p in parts:
            if len(parts) == 1:
                t_p, e_p, h_p = t_arr, e_arr, has_id
            else:
                sel = np.flatnonzero(p_arr == p)
                t_p, e_p, h_p = t_arr[sel], e_arr[sel], has_id[sel]
            wm0 = self._watermark.get(p)
            run = np.maximum.accumulate(t_p)
            if wm0 is not None:
                np.maximum(run, wm0, out=run)
            wm = float(run[-1])
            if p not in seen_of:
                seen_of[p], self._expiry[p], self._dirty_ids[p] = {}, _Expiry(), set()
            self._watermark[p] = wm
            if wm0 is None or wm > wm0:
                self._dirty_wm.add(p)
                self._evict(p, wm)
            remember = np.flatnonzero(h_p & (run - t_p <= window))
            if not len(remember):
                continue
            rem_t = t_p[remember]
            rem_ids = e_p[remember]
            self._dirty_ids[p].update(rem_ids.tolist())
            keep = rem_t >= wm - window
            kept_t = rem_t[keep].tolist()
            kept_ids = rem_ids[keep].tolist()
            seen_of[p].update(zip(kept_ids, kept_t, strict=True))
            self._expiry[p].extend(zip(kept_t, kept_ids, strict=True))
        return True

    def _evict(self, partition: int, wm: float) -> None:
        exp = self._expiry.get(partition)
        if not exp:
            return
        seen = self._seen[partition]
        dirty = self._dirty_ids[partition]
        for t0, event_id in exp.pop_below(wm - self.window_s):
            if seen.get(event_id) == t0:
                del seen[event_id]
                dirty.add(event_id)

    # ------------------------------------------------------------------ inspection
    def __len__(self) -> int:
        """Return the number of remembered ids over all partitions."""
        return sum(len(s) for s in self._seen.values())

    def watermark(self, partition: int) -> float | None:
        """Return the partition's watermark (event seconds), or None if it saw no event."""
        return self._watermark.get(partition)

    def state_dict(self) -> dict[int, dict[str, object]]:
        """Return ``{partition: {"watermark": float, "ids": {event_id: t0}}}`` (a copy)."""
        parts = set(self._watermark) | set(self._seen)
        return {
            p: {"watermark": self._watermark.get(p), "ids": dict(self._seen.get(p, {}))}
            for p in sorted(parts)
        }

    # ------------------------------------------------------------------ persistence
    def state_key_partition(self, key: bytes) -> int | None:
        """Return the partition of a state record key (``<prefix><partition>/...``).

        Returns ``None`` for keys outside ``key_prefix``.

        Raises
        ------
        StateError
            If a key under ``key_prefix`` has no integer partition.
        """
        if not key.startswith(self.key_prefix):
            return None
        part, sep, _ = key[len(self.key_prefix):].partition(b"/")
        if not sep or not part.isdigit():
            msg = f"dedup: malformed state key {key[:40]!r}"
            raise StateError(msg)
        return int(part)

    def state_changes(self) -> dict[bytes, bytes | None]:
        """Return the state records changed since the last call, and reset the change set.

        Returns
        -------
        dict of bytes to bytes or None
            Remembered ids map to their ``t0`` (big-endian float64); evicted ids that
            have a record (returned by an earlier call, or loaded) map to ``None``
            (delete), those remembered and evicted since the last call are left out;
            each touched partition's watermark record is included.
        """
        out: dict[bytes, bytes | None] = {}
        prefix = self.key_prefix
        pack = _F64.pack
        for partition, ids in self._dirty_ids.items():
            if not ids:
                continue
            seen = self._seen[partition]
            stored = self._stored.setdefault(partition, set())
            base = prefix + str(partition).encode("ascii") + _ID_TAG
            for event_id in ids:
                t0 = seen.get(event_id)
                if t0 is not None:
                    out[base + event_id.encode("utf-8")] = pack(t0)
                    stored.add(event_id)
                elif event_id in stored:
                    out[base + event_id.encode("utf-8")] = None
                    stored.discard(event_id)
            ids.clear()
        for partition in self._dirty_wm:
            key = prefix + str(partition).encode("ascii") + _WM_TAG
            out[key] = _F64.pack(self._watermark[partition])
        self._dirty_wm.clear()
        return out

    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace the state with the one described by stored records.

        Records whose key does not start with ``key_prefix`` are ignored, so the
        runtime may pass every record of a shared column family.

        Raises
        ------
        StateError
            If a record under ``key_prefix`` is malformed (wrong key layout or value
            length), which means the store holds another version's data.
        """
        seen: dict[int, dict[str, float]] = {}
        wms: dict[int, float] = {}
        prefix = self.key_prefix
        for key, value in records:
            if not key.startswith(prefix):
                continue
            try:
                part_txt, sep, rest = key[len(prefix):].partition(b"/")
                partition = int(part_txt.decode("ascii"))
                (number,) = _F64.unpack(value)
                if sep and rest == b"w":
                    wms[partition] = number
                elif sep and rest.startswith(b"e/"):
                    seen.setdefault(partition, {})[rest[2:].decode("utf-8")] = number
                else:
                    raise ValueError("unknown record kind")  # noqa: EM101, TRY301
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                msg = (f"malformed dedup state record {key[:80]!r} -> {value[:16]!r} ({exc}); "
                       "expected keys <prefix><partition>/e/<id> or /w with float64 values: "
                       "is this state directory from another version?")
                raise StateError(msg) from exc
        self._seen = seen
        self._expiry = {p: _Expiry((t0, i) for i, t0 in ids.items()) for p, ids in seen.items()}
        self._watermark = wms
        self._dirty_ids = {p: set() for p in seen}
        self._stored = {p: set(ids) for p, ids in seen.items()}
        self._dirty_wm = set()
