"""The engagement event and its wire format (DESIGN §2).

Wire format: one compact JSON object per Kafka message, key = ``user_id`` (UTF-8).

=================  ==========================  ==============================================
field              type                        rule (checked by ``Decoder``)
=================  ==========================  ==============================================
``user_id``        string, 1..256 chars        required
``item_id``        string, 1..256 chars        required; may name a user (follows, messages)
``action``         string                      required; must be a key of the configured
                                               action -> weight-multiplier mapping (or the
                                               mapping has a ``"*"`` catch-all entry)
``ts``             number or ISO-8601 string   required; event time. A number is seconds since
                                               the Unix epoch (int or float). A string is parsed
                                               by :func:`datetime.datetime.fromisoformat`; a
                                               string **without a UTC offset is taken as UTC**.
                                               Rejected when not finite, earlier than
                                               ``min_ts_s`` (default 2000-01-01T00:00:00Z) or
                                               later than ``clock.now_s() + max_future_s``
                                               (default one day)
``weight``         number, > 0, finite         optional, default 1.0; within the decoder's
                                               ``[min_weight, max_weight]`` (default
                                               ``[1e-6, 1e6]``, keeps float32 maths finite);
                                               ``true``/``false`` are not numbers
``schema_version`` int                         optional, default 1; 1..:data:`SCHEMA_VERSION`
``event_id``       string, 1..128 chars        optional; producer-assigned id used for
                                               de-duplication only
=================  ==========================  ==============================================

Unknown extra fields are ignored (forward compatibility: a newer producer may add
fields an older worker does not know). A known field that is present with the value
``null`` is rejected (``null_value``): omit a field to get its default.

Lengths count Unicode code points (Python ``len``), not bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

try:  # orjson is a declared dependency; the fallback keeps the module importable without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    _orjson = None  # type: ignore[assignment]
import json as _json

SCHEMA_VERSION: Final = 1
"""Highest wire ``schema_version`` this code understands."""

MAX_ID_CHARS: Final = 256
"""Maximum length of ``user_id`` and ``item_id`` (code points)."""

MAX_EVENT_ID_CHARS: Final = 128
"""Maximum length of ``event_id`` (code points)."""

DEFAULT_MAX_FUTURE_S: Final = 86_400.0
"""Default tolerance for event times ahead of the wall clock: one day, in seconds."""

DEFAULT_MIN_TS_S: Final = 946_684_800.0
"""Default earliest accepted event time: 2000-01-01T00:00:00Z, in seconds since the epoch.

Earlier event times are taken as clock errors (an unset device clock gives 1970; the
HetRec Last.fm tag file has rows dated 1956, 1957 and 1979). Decoders that must
accept older history (e.g. MovieLens 1997) pass a lower ``min_ts_s`` or ``None``.
"""

KNOWN_ACTIONS: Final = (
    "follow", "like", "retweet", "reply", "click", "edit", "tag", "listen", "message",
    "email", "rate",
)
"""The actions named in DESIGN §2."""

DEFAULT_ACTIONS: Final[Mapping[str, float]] = MappingProxyType(dict.fromkeys(KNOWN_ACTIONS, 1.0))
"""Default action -> weight multiplier mapping (read-only): every known action, multiplier 1.0."""

WILDCARD_ACTION: Final = "*"
"""Key of an action mapping entry that accepts any action not listed, with its multiplier."""


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """One decoded engagement: ``user_id`` engaged with ``item_id`` at event time ``ts``.

    Construction does not validate (it is on the decoder's hot path); events built by
    hand are checked by round-tripping through :func:`to_wire` and
    :meth:`streamer.events.decode.Decoder.decode`.

    Attributes
    ----------
    user_id
        Raw user id (not namespaced), 1..256 code points.
    item_id
        Raw item id (not namespaced), 1..256 code points; may name a user.
    action
        Action name, e.g. ``"edit"``; its weight multiplier comes from configuration.
    ts
        Event time in seconds since the Unix epoch (UTC), float.
    weight
        Event weight (> 0, finite), before the action multiplier. Default 1.0.
    schema_version
        Wire schema version the event was decoded from. Default 1.
    event_id
        Producer-assigned id for de-duplication, or ``None``.

    Examples
    --------
    >>> ev = EngagementEvent("u1", "i9", "click", 1388534400.0, event_id="demo:1")
    >>> to_wire(ev)
    b'{"user_id":"u1","item_id":"i9","action":"click","ts":1388534400.0,"event_id":"demo:1"}'
    """

    user_id: str
    item_id: str
    action: str
    ts: float
    weight: float = 1.0
    schema_version: int = 1
    event_id: str | None = None

    @property
    def key(self) -> bytes:
        """Kafka message key: ``user_id`` encoded as UTF-8."""
        return self.user_id.encode("utf-8")

    @property
    def time(self) -> datetime:
        """Event time as a timezone-aware UTC :class:`~datetime.datetime`.

        Raises
        ------
        ValueError, OverflowError
            If ``ts`` is not finite or outside the range :mod:`datetime` supports.
        """
        return datetime.fromtimestamp(self.ts, tz=UTC)


def _build_unchecked_constructor() -> Callable[..., EngagementEvent]:
    names = tuple(f.name for f in fields(EngagementEvent))
    assert names == ("user_id", "item_id", "action", "ts", "weight", "schema_version",
                     "event_id"), names
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6 = (getattr(EngagementEvent, n).__set__ for n in names)

    def new_event(user_id: str, item_id: str, action: str, ts: float, weight: float,
                  schema_version: int, event_id: str | None) -> EngagementEvent:
        ev = new(EngagementEvent)
        s0(ev, user_id)
        s1(ev, item_id)
        s2(ev, action)
        s3(ev, ts)
        s4(ev, weight)
        s5(ev, schema_version)
        s6(ev, event_id)
        return ev

    return new_event


new_event_unchecked = _build_unchecked_constructor()
"""Build an :class:`EngagementEvent` from all seven fields, positionally, ~2x faster than
the dataclass ``__init__`` (it sets the slots directly; the result is identical). For the
decoder's hot path; everyone else calls ``EngagementEvent(...)``."""


def to_wire(event: EngagementEvent) -> bytes:
    """Encode an event as its wire message value: compact, deterministic JSON (UTF-8).

    Fields come in the fixed order ``user_id, item_id, action, ts, weight,
    schema_version, event_id``; ``weight`` is omitted when it is 1.0,
    ``schema_version`` when it is 1, ``event_id`` when it is ``None`` (the decoder
    restores these defaults). ``ts`` and ``weight`` are written as JSON floats. The
    function does not validate: a non-finite ``ts``/``weight`` is written as
    ``null`` (orjson) and the decoder rejects it.

    Parameters
    ----------
    event
        The event to encode.

    Returns
    -------
    bytes
        The JSON object, no whitespace, non-ASCII characters as raw UTF-8.
    """
    doc: dict[str, object] = {
        "user_id": event.user_id,
        "item_id": event.item_id,
        "action": event.action,
        "ts": float(event.ts),
    }
    if event.weight != 1.0:
        doc["weight"] = float(event.weight)
    if event.schema_version != 1:
        doc["schema_version"] = event.schema_version
    if event.event_id is not None:
        doc["event_id"] = event.event_id
    return dumps(doc)


def dumps(doc: object) -> bytes:
    """Serialise ``doc`` as compact JSON bytes (orjson if installed, else :mod:`json`).

    Non-finite floats become ``null`` with both back ends.
    """
    if _orjson is not None:
        return _orjson.dumps(doc)
    return _json.dumps(_finite_or_none(doc), separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _finite_or_none(doc: object) -> object:
    if isinstance(doc, float) and not math.isfinite(doc):
        return None
    if isinstance(doc, dict):
        return {k: _finite_or_none(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_finite_or_none(v) for v in doc]
    return doc


def parse_iso_ts(text: str) -> float:
    """Parse an ISO-8601 time string into seconds since the epoch.

    A string without a UTC offset (naive) is taken as UTC. Accepts what
    :func:`datetime.datetime.fromisoformat` accepts on Python 3.11+ (``Z`` suffix,
    offsets, fractional seconds, basic format ``20140101T000000Z``, date only).

    Parameters
    ----------
    text
        The time string, e.g. ``"2014-01-01T12:00:00Z"``.

    Returns
    -------
    float
        Seconds since 1970-01-01T00:00:00Z.

    Raises
    ------
    ValueError
        If the string is not ISO-8601 or names an impossible date/time.

    Examples
    --------
    >>> parse_iso_ts("2014-01-01T00:00:00Z")
    1388534400.0
    >>> parse_iso_ts("2014-01-01T02:00:00+02:00")  # same instant
    1388534400.0
    >>> parse_iso_ts("2014-01-01")                 # naive: taken as UTC
    1388534400.0
    """
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except OverflowError as exc:
        msg = f"time {text!r} is out of range"
        raise ValueError(msg) from exc


def format_ts(ts: float) -> str:
    """Format seconds since the epoch as an ISO-8601 UTC string (for messages and logs).

    Returns ``repr(ts)`` when the value is not representable as a datetime.

    Examples
    --------
    >>> format_ts(1388534400.0)
    '2014-01-01T00:00:00Z'
    """
    try:
        dt = datetime.fromtimestamp(ts, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return repr(ts)
    text = dt.isoformat(timespec="microseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")
