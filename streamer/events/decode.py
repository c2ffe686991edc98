"""Wire bytes -> :class:`EngagementEvent` or :class:`Rejected` (CONVENTIONS C8).

:meth:`Decoder.decode` never raises on bad input: every message either decodes to an
event or becomes a :class:`Rejected` record (reason, one-line detail, source
topic/partition/offset and the raw bytes) for the dead letters.

Parsing uses orjson (strict RFC 8259 JSON, ~1 µs per message here). A message orjson
refuses is parsed again by the standard library's lenient :mod:`json` so that
``NaN``/``Infinity`` literals, numbers beyond the double range and similar near-JSON
get a precise reason (``bad_weight``, ``bad_ts``...) instead of ``not_json``. Field
checks are hand-written: ``benchmarks/decode.py --json`` measured them against
pydantic v2 ``TypeAdapter.validate_json`` (see that script for the numbers).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, ConfigError
from streamer.events.schema import (
    DEFAULT_ACTIONS,
    DEFAULT_MAX_FUTURE_S,
    DEFAULT_MIN_TS_S,
    MAX_EVENT_ID_CHARS,
    MAX_ID_CHARS,
    SCHEMA_VERSION,
    WILDCARD_ACTION,
    EngagementEvent,
    format_ts,
    new_event_unchecked,
    parse_iso_ts,
)
from streamer.learn.base import EventBatch
from streamer.types import Clock

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _load_native() -> Any:
    """Return the ``streamer_native`` module, or ``None`` if absent or disabled.

    ``streamer_native`` (``native/`` in the repository, Rust) decodes batches in native
    code; ``STREAMER_NATIVE`` set to ``0``, ``false``, ``no`` or ``off`` (any case) in
    the environment turns it off. ``1``/``true``/``yes``/``on`` without the extension,
    or any other value, is logged as a warning (and the extension used if installed).
    """
    value = os.environ.get("STREAMER_NATIVE", "").strip().lower()
    if value in {"0", "false", "no", "off"}:
        return None
    if value not in {"", "1", "true", "yes", "on"}:
        log.warning("STREAMER_NATIVE=%r is not understood (expected 0/false/no/off or "
                    "1/true/yes/on); the native decoder is used if installed", value)
    try:
        import streamer_native
    except ImportError:
        if value in {"1", "true", "yes", "on"}:
            log.warning("STREAMER_NATIVE=%s but streamer_native is not installed (pip "
                        "install ./native, needs Rust): using the Python decoder", value)
        return None
    return streamer_native


_NATIVE = _load_native()
NATIVE_AVAILABLE: Final[bool] = _NATIVE is not None
"""True if batches are decoded by ``streamer_native`` (installed and not disabled)."""

RejectReason = Literal[
    "not_utf8",            # value bytes are not UTF-8
    "not_json",            # UTF-8 but not JSON (truncated, garbage, BOM, nested too deep)
    "not_object",          # JSON, but an array/string/number/bool instead of an object
    "null_value",          # value is None (Kafka tombstone) or JSON null, or a field is null
    "missing_field",       # user_id, item_id, action or ts absent
    "wrong_type",          # a field has the wrong JSON type (bool is not a number)
    "bad_id",              # user_id/item_id not 1..256 chars, event_id not 1..128
    "unknown_action",      # action not in the configured mapping
    "bad_weight",          # weight NaN/inf/<= 0 or outside [min_weight, max_weight]
    "bad_ts",              # ts not finite, not ISO-8601, or before min_ts_s
    "future_ts",           # ts > clock.now_s() + max_future_s
    "bad_schema_version",  # schema_version < 1 or > SCHEMA_VERSION
    "duplicate",           # event_id seen within the dedup window (Deduplicator)
    "internal",            # a bug in the decoder; logged with its traceback
]
"""Why a message was rejected. Stable strings: they go into dead-letter headers and metrics."""

REJECT_REASONS: Final[tuple[str, ...]] = get_args(RejectReason)
"""All reject reasons, in documentation order."""

MIN_WEIGHT: Final = 1e-6
"""Default smallest accepted ``weight``: smaller values underflow float32 learner maths."""

MAX_WEIGHT: Final = 1e6
"""Default largest accepted ``weight``: larger values overflow float32 learner maths."""

PREVIEW_CHARS: Final = 256
"""Length of the lossy UTF-8 preview of the raw bytes in :meth:`Rejected.to_dict`."""

_MISSING: Final[Any] = object()
_INF: Final = math.inf
_REQUIRED: Final = ("user_id", "item_id", "action", "ts")
new_event = new_event_unchecked


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that did not become an event, with everything needed to find and fix it.

    Attributes
    ----------
    reason
        One of :data:`REJECT_REASONS`.
    detail
        One line: what was wrong, what was received (shortened) and what was expected.
    topic, partition, offset
        Where the message came from (for files: the file name, 0 and the line number).
    raw
        The message value exactly as received; ``None`` for a Kafka tombstone.
    """

    reason: RejectReason
    detail: str
    topic: str
    partition: int
    offset: int
    raw: bytes | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (one dead-letter file line).

        ``raw`` is base64 (``None`` for a tombstone); ``raw_preview`` is its first
        :data:`PREVIEW_CHARS` characters decoded as UTF-8 with replacement
        characters (lossy, for humans); ``raw_len`` is its length in bytes.
        """
        raw = self.raw
        if raw is None:
            b64 = preview = None
            n = 0
        else:
            b64 = base64.b64encode(raw).decode("ascii")
            preview = raw[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
            n = len(raw)
        return {
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "raw": b64,
            "raw_len": n,
            "raw_preview": preview,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Rejected:
        """Rebuild a record from :meth:`to_dict` output (e.g. a dead-letter file line).

        Raises
        ------
        BadRequest
            If a key is missing or ``reason`` is not a known reason.
        """
        try:
            reason = doc["reason"]
            raw = doc["raw"]
            rec = cls(
                reason=reason,
                detail=str(doc["detail"]),
                topic=str(doc["topic"]),
                partition=int(doc["partition"]),
                offset=int(doc["offset"]),
                raw=None if raw is None else base64.b64decode(raw, validate=True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not a dead-letter record: {exc!r}; expected the keys of Rejected.to_dict()"
            raise BadRequest(msg) from exc
        if reason not in REJECT_REASONS:
            msg = f"unknown reject reason {reason!r}; expected one of {', '.join(REJECT_REASONS)}"
            raise BadRequest(msg)
        return rec

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers for the dead-letter record (the value is :attr:`raw` unchanged).

        Returns
        -------
        list of (str, bytes)
            ``x-reject-reason``, ``x-source-topic``, ``x-source-partition``,
            ``x-source-offset`` (decimal ASCII) and ``x-reject-detail`` (UTF-8).
        """
        return [
            ("x-reject-reason", self.reason.encode("ascii")),
            ("x-source-topic", self.topic.encode("utf-8", "backslashreplace")),
            ("x-source-partition", str(self.partition).encode("ascii")),
            ("x-source-offset", str(self.offset).encode("ascii")),
            ("x-reject-detail", self.detail.encode("utf-8", "backslashreplace")),
        ]


@dataclass(slots=True)
class DecodedColumns:
    """One batch decoded by :meth:`Decoder.decode_columns`: accepted events as columns.

    Attributes
    ----------
    index
        Position in the input of each accepted event (ascending), ``n`` ints.
    user_ids, item_ids, actions
        Raw (not namespaced) ids and action names, ``n`` strings each.
    ts
        Event time of each event, seconds since the epoch, ``n`` floats.
    weights
        Event weight (before the action multiplier), ``n`` floats.
    schema_versions
        Wire schema version of each event, ``n`` ints.
    event_ids
        Producer-assigned id of each event or ``None``, ``n`` entries.
    rejects
        ``(position, Rejected)`` of every rejected message, ascending positions.
    """

    index: list[int] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    schema_versions: list[int] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    rejects: list[tuple[int, Rejected]] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]],
                  rejects: list[tuple[int, Rejected]]) -> DecodedColumns:
        """Build the columns from rows of one accepted event each.

        A row is ``(position, user_id, item_id, action, ts, weight, schema_version,
        event_id)``; rows and ``rejects`` in ascending positions.
        """
        out = cls(rejects=rejects)
        if rows:
            (out.index, out.user_ids, out.item_ids, out.actions, out.ts, out.weights,
             out.schema_versions, out.event_ids) = map(list, zip(*rows, strict=True))
        return out

    def __len__(self) -> int:
        """Return the number of accepted events."""
        return len(self.index)

    def events(self) -> list[EngagementEvent]:
        """Return the accepted events as :class:`EngagementEvent` objects, in order."""
        return [new_event(*row) for row in zip(
            self.user_ids, self.item_ids, self.actions, self.ts, self.weights,
            self.schema_versions, self.event_ids, strict=True)]

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the accepted events at positions ``keep`` (indexes into the columns)."""
        for name in ("index", "user_ids", "item_ids", "actions", "ts", "weights",
                     "schema_versions", "event_ids"):
            col = getattr(self, name)
            setattr(self, name, [col[j] for j in keep])


class Decoder:
    """Decode and validate wire messages into :class:`EngagementEvent` (DESIGN §2).

    Parameters
    ----------
    actions
        Action name -> weight multiplier (finite, > 0). Actions not listed are rejected
        (``unknown_action``) unless the mapping has a ``"*"`` entry, which accepts any
        action. Default: :data:`~streamer.events.schema.DEFAULT_ACTIONS`.
    max_future_s
        Seconds of event time tolerated ahead of ``clock.now_s()`` (default one day);
        later events are rejected (``future_ts``).
    min_ts_s
        Earliest accepted event time, seconds since the epoch (default
        2000-01-01T00:00:00Z, see :data:`~streamer.events.schema.DEFAULT_MIN_TS_S`);
        ``None`` accepts any finite time.
    min_weight, max_weight
        Accepted ``weight`` range (inclusive). Defaults ``1e-6`` and ``1e6`` keep
        learners' float32 arithmetic finite and non-zero.
    clock
        Wall-clock source for the far-future rule; the only wall-time input.
    native
        Decode batches (:meth:`decode_columns`) with the ``streamer_native`` extension:
        ``None`` (default) if it is installed and ``STREAMER_NATIVE`` is not ``0``,
        ``True`` to require it, ``False`` for the pure-Python path. The verdicts,
        values and counters are the same either way.

    Raises
    ------
    ConfigError
        If a multiplier is not finite and > 0, or a bound is not finite, or
        ``native=True`` without the extension.

    Notes
    -----
    Determinism: every rule but ``future_ts`` depends on the message alone. The
    far-future rule compares with the wall clock, so a message rejected as
    ``future_ts`` may be accepted when replayed a day later.

    Thread safety: :meth:`decode` keeps no per-message state; the counters are plain
    integers updated without a lock, so use one decoder per thread (one per agent)
    if exact counts matter.

    Examples
    --------
    >>> from streamer.types import ManualClock
    >>> dec = Decoder(actions={"click": 1.0}, clock=ManualClock(1.4e9))
    >>> dec.decode(b'{"user_id":"u1","item_id":"i2","action":"click","ts":1.3e9}',
    ...            topic="engagements", partition=0, offset=7)
    EngagementEvent(user_id='u1', item_id='i2', action='click', ts=1300000000.0, weight=1.0, schema_version=1, event_id=None)
    >>> dec.decode(b'{"user_id":"u1"', topic="engagements", partition=0, offset=8).reason
    'not_json'
    >>> dec.counters
    {'accepted': 1, 'rejected': {'not_json': 1}}
    """  # noqa: E501

    def __init__(
        self,
        *,
        actions: Mapping[str, float] = DEFAULT_ACTIONS,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
        min_ts_s: float | None = DEFAULT_MIN_TS_S,
        min_weight: float = MIN_WEIGHT,
        max_weight: float = MAX_WEIGHT,
        clock: Clock,
        native: bool | None = None,
    ) -> None:
        self.actions = dict(_check_actions(actions))
        self.max_future_s = _check_finite("max_future_s", max_future_s, lo=0.0)
        self.min_ts_s = None if min_ts_s is None else _check_finite("min_ts_s", min_ts_s)
        self.min_weight = _check_finite("min_weight", min_weight, lo=0.0)
        self.max_weight = _check_finite("max_weight", max_weight, lo=self.min_weight)
        if self.min_weight <= 0.0:
            msg = f"min_weight must be > 0, got {min_weight!r}"
            raise ConfigError(msg)
        self.clock = clock
        self._wildcard = WILDCARD_ACTION in self.actions
        # -max (not -inf) so that the range test below also rejects ts = -inf
        self._lo_ts = -sys.float_info.max if self.min_ts_s is None else self.min_ts_s
        self._accepted = 0
        self._rejected: dict[str, int] = {}
        if native and _NATIVE is None:
            msg = ("native decoding requested but streamer_native is not installed (or "
                   "STREAMER_NATIVE=0); expected: pip install ./native (needs Rust)")
            raise ConfigError(msg)
        self._native = _NATIVE if native is not False else None
        if self._native is not None and not all(map(_utf8_ok, self.actions)):
            if native:
                msg = ("native decoding needs action names that are valid Unicode text (a "
                       "lone surrogate is not); expected other names or native=False")
                raise ConfigError(msg)
            self._native = None  # the extension takes UTF-8 text only
        self._native_actions = None if self._wildcard else list(self.actions)

    @property
    def native(self) -> bool:
        """True if :meth:`decode_columns` runs in native code (``streamer_native``)."""
        return self._native is not None

    # ------------------------------------------------------------------ public API
    def decode(
        self, raw: bytes | None, *, topic: str, partition: int, offset: int
    ) -> EngagementEvent | Rejected:
        """Decode one message value. Never raises.

        Parameters
        ----------
        raw
            The Kafka message value (``None`` for a tombstone).
        topic, partition, offset
            Source position, copied into a :class:`Rejected`.

        Returns
        -------
        EngagementEvent or Rejected
            The event, or the rejection with its reason and a one-line detail.
        """
        try:
            if type(raw) is not bytes and raw is not None:
                raw = _as_bytes(raw)
            result = self._decode(raw)
        except Exception as exc:  # a bug, not bad input: keep the worker alive, but loudly
            log.exception(
                'decoder bug topic="%s" partition=%d offset=%d', topic, partition, offset
            )
            result = ("internal", _one_line(f"decoder bug: {type(exc).__name__}: {exc}"))
            if type(raw) is not bytes:
                raw = None
        if type(result) is tuple:
            reason, detail = result
            self._rejected[reason] = self._rejected.get(reason, 0) + 1
            return Rejected(reason, detail, topic, partition, offset, raw)  # type: ignore[arg-type]
        self._accepted += 1
        return result  # type: ignore[return-value]

    def decode_columns(self, messages: Sequence[Any]) -> DecodedColumns:  # noqa: C901
        """Decode a batch of messages into columns. Never raises.

        The verdicts, details and counters are those of :meth:`decode` called on each
        message in order; only the cost differs. A message in the common shape (a JSON
        object with string ids, a configured action, float ``ts`` and ``weight``, an
        integer ``schema_version`` and a string ``event_id``, all within bounds) is
        accepted inline, without building an :class:`EngagementEvent` (in native code,
        by ``streamer_native``, if :attr:`native`; it also takes integer ``ts`` and
        ``weight``); every other message goes through :meth:`decode`, which finds the
        exact reason. The
        far-future bound of the inline check uses the wall clock read once, at the
        start of the batch: a message it does not accept is decided by :meth:`decode`
        with a fresh reading, so with a clock that never goes back the verdicts are the
        same as one :meth:`decode` per message.

        Parameters
        ----------
        messages
            ``n`` objects with ``value`` (bytes or ``None``), ``topic``, ``partition``
            and ``offset`` attributes, e.g. :class:`streamer.engine.RawMessage`.

        Returns
        -------
        DecodedColumns
            The accepted events as columns (with their positions in ``messages``) and
            the rejects (with theirs), both in input order.
        """
        if self._native is not None:
            return self._decode_columns_native(messages)
        rows: list[tuple[Any, ...]] = []
        add = rows.append
        rejects: list[tuple[int, Rejected]] = []
        loads = _loads if _orjson is None else _orjson.loads
        known = self.actions
        wildcard = self._wildcard
        lo = self._lo_ts
        hi = self.clock.now_s() + self.max_future_s
        w_lo, w_hi = self.min_weight, self.max_weight
        id_max, eid_max, v_max = MAX_ID_CHARS, MAX_EVENT_ID_CHARS, SCHEMA_VERSION
        missing = _MISSING
        fast = 0
        for i, m in enumerate(messages):
            raw = m.value
            obj = None
            if type(raw) is bytes:
                try:
                    obj = loads(raw)
                except Exception:  # noqa: BLE001 - decode() below finds the reason
                    obj = None
            if type(obj) is dict:
                get = obj.get
                u = get("user_id")
                it = get("item_id")
                a = get("action")
                t = get("ts")
                w = get("weight", 1.0)
                v = get("schema_version", 1)
                eid = get("event_id", missing)
                if (type(u) is str and type(it) is str and type(a) is str
                        and type(t) is float and type(w) is float and type(v) is int
                        and 0 < len(u) <= id_max and 0 < len(it) <= id_max
                        and (wildcard or a in known) and lo <= t <= hi
                        and w_lo <= w <= w_hi and 1 <= v <= v_max
                        and (eid is missing
                             or (type(eid) is str and 0 < len(eid) <= eid_max))):
                    add((i, u, it, a, t, w, v, None if eid is missing else eid))
                    fast += 1
                    continue
            self._decide(i, m, add, rejects)
        self._accepted += fast
        return DecodedColumns.from_rows(rows, rejects)

    def _decide(self, i: int, m: Any, add: Callable[[tuple[Any, ...]], None],
                rejects: list[tuple[int, Rejected]]) -> None:
        """:meth:`decode` message ``m`` (position ``i``): add its row, or its reject."""
        r = self.decode(m.value, topic=m.topic, partition=m.partition, offset=m.offset)
        if type(r) is Rejected:
            rejects.append((i, r))
        else:
            add((i, r.user_id, r.item_id, r.action, r.ts,  # type: ignore[union-attr]
                 r.weight, r.schema_version, r.event_id))  # type: ignore[union-attr]

    def _decode_columns_native(self, messages: Sequence[Any]) -> DecodedColumns:
        """:meth:`decode_columns` with the common shape accepted by ``streamer_native``.

        The extension accepts what the Python loop accepts inline (plus integer ``ts``
        and ``weight``, which :meth:`decode` turns into the same floats) and lists every
        other message, which :meth:`decode` then decides.
        """
        hi = self.clock.now_s() + self.max_future_s
        try:
            (index, users, items, actions, ts, weights, versions, eids, others
             ) = self._native.decode_events(  # type: ignore[union-attr]
                [m.value for m in messages], self._native_actions, self._lo_ts, hi,
                self.min_weight, self.max_weight, MAX_ID_CHARS, MAX_EVENT_ID_CHARS,
                SCHEMA_VERSION)
        except Exception:  # a bug, not bad input: never raise, decode this batch in Python
            log.exception("native decoder failed on a batch of %d messages; decoding it "
                          "in Python", len(messages))
            index, users, items, actions, ts, weights, versions, eids = ([] for _ in range(8))
            others = list(range(len(messages)))
        self._accepted += len(index)
        extra: list[tuple[Any, ...]] = []
        rejects: list[tuple[int, Rejected]] = []
        for i in others:
            self._decide(i, messages[i], extra.append, rejects)
        if extra:  # accepted by decode() alone (an ISO ts...): merge in input order
            rows = sorted([*zip(index, users, items, actions, ts, weights, versions, eids,
                                strict=True), *extra], key=itemgetter(0))
            return DecodedColumns.from_rows(rows, rejects)
        return DecodedColumns(index, users, items, actions, ts, weights, versions, eids,
                              rejects)

    def mark_duplicate(
        self, event: EngagementEvent, raw: bytes | None, *, topic: str, partition: int, offset: int
    ) -> Rejected:
        """Turn an accepted event that the deduplicator flagged into a ``duplicate`` rejection.

        Moves one count from ``accepted`` to ``rejected["duplicate"]``, so that
        ``accepted + sum(rejected.values())`` stays the number of messages decoded.
        """
        self._accepted -= 1
        self._rejected["duplicate"] = self._rejected.get("duplicate", 0) + 1
        detail = (
            f"event_id {_show(event.event_id)} was already seen on partition {partition} "
            "within the dedup window; expected a new event_id"
        )
        return Rejected("duplicate", detail, topic, partition, offset, raw)

    @property
    def counters(self) -> dict[str, Any]:
        """Return ``{"accepted": n, "rejected": {reason: n}}`` (a copy)."""
        return {"accepted": self._accepted, "rejected": dict(self._rejected)}

    def multiplier(self, action: str) -> float:
        """Return the weight multiplier of ``action`` (the ``"*"`` entry for unlisted ones).

        Raises
        ------
        ConfigError
            If the action is not in the mapping and there is no ``"*"`` entry.
        """
        return _multiplier(self.actions, action)

    def to_batch(
        self,
        events: Sequence[EngagementEvent],
        partitions: int | Sequence[int] | npt.ArrayLike,
        offsets: Sequence[int] | npt.ArrayLike,
    ) -> EventBatch:
        """Return :func:`to_batch` with this decoder's action multipliers."""
        return to_batch(events, partitions, offsets, self.actions)

    # ------------------------------------------------------------------ internals
    def _decode(self, raw: bytes | None) -> EngagementEvent | tuple[str, str]:  # noqa: C901
        if raw is None:
            return ("null_value", "message value is null (a tombstone); expected a JSON object")
        lenient = False
        try:
            obj = _loads(raw)
        except Exception:  # orjson.JSONDecodeError, or anything the fallback raises
            parsed = _loads_lenient(raw)
            if type(parsed) is tuple:
                return parsed  # type: ignore[return-value]
            obj = parsed[0]
            lenient = True
        if type(obj) is not dict:
            if obj is None:
                return ("null_value", "message is JSON null; expected a JSON object")
            return ("not_object", f"message is a JSON {_kind(obj)}; expected a JSON object")
        get = obj.get

        version = get("schema_version", _MISSING)
        if version is _MISSING:
            version = 1
        elif type(version) is not int:
            return _type_error("schema_version", version, f"an integer 1..{SCHEMA_VERSION}")
        elif not 1 <= version <= SCHEMA_VERSION:
            return (
                "bad_schema_version",
                f"schema_version {_show(version)} is not supported; expected 1..{SCHEMA_VERSION}",
            )

        user_id = get("user_id", _MISSING)
        item_id = get("item_id", _MISSING)
        action = get("action", _MISSING)
        ts = get("ts", _MISSING)
        if user_id is _MISSING or item_id is _MISSING or action is _MISSING or ts is _MISSING:
            missing = ", ".join(f for f in _REQUIRED if f not in obj)
            return ("missing_field", f"missing required field(s) {missing}; "
                    "expected user_id, item_id, action and ts")

        if type(user_id) is not str:
            return _type_error("user_id", user_id, f"a string of 1..{MAX_ID_CHARS} characters")
        if not 0 < len(user_id) <= MAX_ID_CHARS or (lenient and not _utf8_ok(user_id)):
            return ("bad_id", _bad_len("user_id", user_id, MAX_ID_CHARS))
        if type(item_id) is not str:
            return _type_error("item_id", item_id, f"a string of 1..{MAX_ID_CHARS} characters")
        if not 0 < len(item_id) <= MAX_ID_CHARS or (lenient and not _utf8_ok(item_id)):
            return ("bad_id", _bad_len("item_id", item_id, MAX_ID_CHARS))

        if type(action) is not str:
            return _type_error("action", action, "a string naming a configured action")
        if action not in self.actions and not self._wildcard:
            known = ", ".join(sorted(self.actions))
            return ("unknown_action", f"action {_show(action)} is not configured; "
                    f"expected one of: {_shorten(known, 200)}")

        t = type(ts)
        if t is float:
            ts_s = ts
        elif t is int:
            try:
                ts_s = float(ts)
            except OverflowError:
                return ("bad_ts", f"ts {_show(ts)} is out of range; expected seconds since epoch")
        elif t is str:
            try:
                ts_s = parse_iso_ts(ts)
            except ValueError:
                return ("bad_ts", f"ts {_show(ts)} is not an ISO-8601 time; expected e.g. "
                        "'2014-01-01T12:00:00Z' or seconds since epoch")
        else:
            return _type_error("ts", ts, "seconds since epoch (number) or an ISO-8601 string")
        if not self._lo_ts <= ts_s < _INF:
            if ts_s != ts_s or ts_s in (_INF, -_INF):
                return ("bad_ts", f"ts {_show(ts)} is not finite; expected seconds since epoch")
            return ("bad_ts", f"ts {_show(ts)} ({format_ts(ts_s)}) is before min_ts_s="
                    f"{self.min_ts_s!r} ({format_ts(self._lo_ts)}); expected a later event time")
        limit = self.clock.now_s() + self.max_future_s
        if ts_s > limit:
            return ("future_ts", f"ts {_show(ts)} ({format_ts(ts_s)}) is more than "
                    f"{self.max_future_s:g} s after now; expected <= {format_ts(limit)}")

        weight = get("weight", _MISSING)
        if weight is _MISSING:
            weight = 1.0
        else:
            t = type(weight)
            if t is int:
                try:
                    weight = float(weight)
                except OverflowError:
                    weight = _INF
            elif t is not float:
                return _type_error("weight", weight, "a number > 0")
            if not self.min_weight <= weight <= self.max_weight:  # NaN fails too
                what = "not finite" if weight != weight or weight in (_INF, -_INF) else (
                    "<= 0" if weight <= 0 else "out of range")
                return ("bad_weight", f"weight {_show(weight)} is {what}; expected a number in "
                        f"[{self.min_weight:g}, {self.max_weight:g}] (default 1.0)")

        event_id = get("event_id", _MISSING)
        if event_id is _MISSING:
            event_id = None
        elif type(event_id) is not str:
            return _type_error("event_id", event_id,
                               f"a string of 1..{MAX_EVENT_ID_CHARS} characters")
        elif not 0 < len(event_id) <= MAX_EVENT_ID_CHARS or (
            lenient and not _utf8_ok(event_id)
        ):
            return ("bad_id", _bad_len("event_id", event_id, MAX_EVENT_ID_CHARS))

        return new_event(user_id, item_id, action, ts_s, weight, version, event_id)


def to_batch(
    events: Sequence[EngagementEvent],
    partitions: int | Sequence[int] | npt.ArrayLike,
    offsets: Sequence[int] | npt.ArrayLike,
    action_weights: Mapping[str, float] = DEFAULT_ACTIONS,
) -> EventBatch:
    """Build a columnar :class:`~streamer.learn.base.EventBatch` from decoded events.

    Parameters
    ----------
    events
        ``n`` decoded events, in stream order.
    partitions
        Source partition per event, shape ``(n,)``, or one int for all.
    offsets
        Source offset per event, shape ``(n,)`` (row numbers when there is no Kafka).
    action_weights
        Action -> multiplier (``"*"`` covers unlisted actions); the batch weight is
        ``event.weight * action_weights[event.action]``, float32.

    Returns
    -------
    EventBatch
        ``weights`` float32 ``(n,)``, ``ts`` float64 ``(n,)`` event seconds,
        ``partitions`` int32, ``offsets`` int64.

    Raises
    ------
    ConfigError
        If an action has no multiplier (decoder and batcher configured differently).
    BadRequest
        If ``partitions``/``offsets`` do not have ``n`` entries, or a resulting weight
        is not finite and > 0 in float32.

    Examples
    --------
    >>> ev = EngagementEvent("u1", "i1", "like", 1.5e9, weight=2.0)
    >>> b = to_batch([ev], 3, [41], {"like": 0.5})
    >>> b.weights.tolist(), b.partitions.tolist(), b.offsets.tolist()
    ([1.0], [3], [41])
    """
    return _make_batch([e.user_id for e in events], [e.item_id for e in events],
                       [e.action for e in events], [e.weight for e in events],
                       [e.ts for e in events], partitions, offsets, action_weights)


def columns_to_batch(
    cols: DecodedColumns,
    partitions: Sequence[int] | npt.ArrayLike,
    offsets: Sequence[int] | npt.ArrayLike,
    action_weights: Mapping[str, float] = DEFAULT_ACTIONS,
) -> EventBatch:
    """Build an :class:`~streamer.learn.base.EventBatch` from decoded columns.

    The same batch as :func:`to_batch` of ``cols.events()`` (bit for bit), without
    building the event objects.

    Parameters
    ----------
    cols
        ``n`` accepted events (:meth:`Decoder.decode_columns`).
    partitions, offsets
        Source partition and offset per event, shape ``(n,)`` each.
    action_weights
        Action -> multiplier, as in :func:`to_batch`.

    Raises
    ------
    ConfigError, BadRequest
        As :func:`to_batch`.
    """
    return _make_batch(cols.user_ids, cols.item_ids, cols.actions, cols.weights, cols.ts,
                       partitions, offsets, action_weights)


def _make_batch(
    user_ids: list[str], item_ids: list[str], actions: list[str], weights_in: list[float],
    ts: list[float], partitions: int | Sequence[int] | npt.ArrayLike,
    offsets: Sequence[int] | npt.ArrayLike, action_weights: Mapping[str, float],
) -> EventBatch:
    n = len(user_ids)
    mults = {a: _multiplier(action_weights, a) for a in set(actions)}
    if all(m == 1.0 for m in mults.values()):
        weights = np.array(weights_in, dtype=np.float64).reshape(n)  # w * 1.0 == w exactly
    else:
        weights = np.fromiter((w * mults[a] for w, a in zip(weights_in, actions, strict=True)),
                              np.float64, n)
    with np.errstate(over="ignore"):
        weights32 = weights.astype(np.float32)
    if n and not (np.all(np.isfinite(weights32)) and np.all(weights32 > 0)):
        bad = int(np.flatnonzero(~(np.isfinite(weights32) & (weights32 > 0)))[0])
        msg = (f"event {bad} has weight*multiplier {weights[bad]!r}, which is not finite and "
               "> 0 in float32; expected decoder-validated weights")
        raise BadRequest(msg)
    if isinstance(partitions, int | np.integer):
        parts = np.full(n, int(partitions), np.int32)
    else:
        parts = np.asarray(partitions, dtype=np.int32).reshape(-1)
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1)
    if len(parts) != n or len(offs) != n:
        msg = (f"to_batch got {n} events but {len(parts)} partitions and {len(offs)} offsets; "
               "expected one of each per event")
        raise BadRequest(msg)
    return EventBatch(
        user_ids=list(user_ids),
        item_ids=list(item_ids),
        weights=weights32,
        ts=np.array(ts, dtype=np.float64).reshape(n),
        partitions=parts,
        offsets=offs,
        actions=list(actions),
    )


# ---------------------------------------------------------------------- helpers
def _loads(raw: bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)  # pragma: no cover


def _no_constant(name: str) -> Any:  # pragma: no cover - fallback path without orjson
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _loads_lenient(raw: bytes) -> list[Any] | tuple[str, str]:
    """Second, lenient parse of a message the strict parser refused.

    Returns ``[obj]`` (a list) on success or a ``(reason, detail)`` tuple.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 4]
        return ("not_utf8", f"invalid UTF-8 at byte {exc.start} ({bad!r}) of {len(raw)}; "
                "expected a UTF-8 JSON object")
    try:
        return [json.loads(text)]
    except (ValueError, RecursionError) as exc:
        what = _one_line(str(exc)) if isinstance(exc, ValueError) else "nested too deeply"
        return ("not_json", f"not JSON ({_shorten(what, 120)}) in {len(raw)} bytes starting "
                f"{_shorten(repr(raw[:40]), 60)}; expected a JSON object")


def _utf8_ok(text: str) -> bool:
    """Return False for strings with lone surrogates (possible only via the lenient parser)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    msg = f"message value is a Python {type(raw).__name__}; expected bytes or None"
    raise TypeError(msg)


def _multiplier(actions: Mapping[str, float], action: str) -> float:
    mult = actions.get(action)
    if mult is None:
        mult = actions.get(WILDCARD_ACTION)
        if mult is None:
            msg = (f"action {action!r} has no weight multiplier; configured actions: "
                   f"{', '.join(sorted(actions))} (add it, or a '*' entry)")
            raise ConfigError(msg)
    return float(mult)


def _check_actions(actions: Mapping[str, float]) -> Mapping[str, float]:
    if not isinstance(actions, Mapping) or not actions:
        msg = f"actions must be a non-empty mapping of action -> multiplier, got {actions!r}"
        raise ConfigError(msg)
    for name, mult in actions.items():
        if not isinstance(name, str) or not name:
            msg = f"action names must be non-empty strings, got {name!r}"
            raise ConfigError(msg)
        ok = isinstance(mult, int | float) and not isinstance(mult, bool)
        if not ok or not math.isfinite(mult) or mult <= 0:
            msg = f"action {name!r} has multiplier {mult!r}; expected a finite number > 0"
            raise ConfigError(msg)
    return actions


def _check_finite(name: str, value: float, lo: float | None = None) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (lo is not None and value < lo):
        bound = "" if lo is None else f" >= {lo!r}"
        msg = f"{name} must be a finite number{bound}, got {value!r}"
        raise ConfigError(msg)
    return float(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_error(field: str, value: object, expected: str) -> tuple[str, str]:
    if value is None:
        return ("null_value", f"field {field} is null; expected {expected} (omit optional "
                "fields to get their default)")
    return ("wrong_type", f"field {field} is a JSON {_kind(value)} {_show(value)}; "
            f"expected {expected}")


def _bad_len(field: str, value: str, limit: int) -> str:
    if not _utf8_ok(value):
        return f"field {field} {_show(value)} contains a lone surrogate; expected valid Unicode"
    return (f"field {field} has {len(value)} characters ({_show(value)}); "
            f"expected 1..{limit}")


def _show(value: object, limit: int = 60) -> str:
    """Short one-line repr of a received value for a detail message."""
    return _shorten(repr(value), limit)


def _shorten(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
