"""Seeded generator of malformed engagement messages, each with the reason it must get.

Used by tests (every generated message must land in the dead letters with
``expected_reason``) and by ``scripts/gen_bad_events.py``.

Kinds (:data:`BAD_KINDS`, kind -> expected reject reason): truncated JSON, wrong
types, a missing field, NaN / infinite / negative or zero weight, far-future and
pre-2000 times, an unparsable ISO time, non-UTF-8 bytes, empty, 10 kB and over-long
ids, an unknown action, Kafka tombstones, JSON ``null``, a JSON non-object, a null
field, an unsupported schema version, and exact duplicates of an earlier valid
event (same bytes, same ``event_id``). The dedup window must cover the originals' time span.

The duplicate kind needs ``originals``: valid events carrying an ``event_id`` that
the consumer sees *before* the duplicates (on the same partition, as the key is the
same ``user_id``) and within the dedup window (the copy has the same ``ts``).

Examples
--------
>>> from streamer.events.decode import Decoder
>>> from streamer.types import ManualClock
>>> msgs = bad_messages(20, seed=1, now_s=1.6e9)
>>> dec = Decoder(clock=ManualClock(1.6e9))
>>> all(dec.decode(m.value, topic="t", partition=0, offset=i).reason == m.expected_reason
...     for i, m in enumerate(msgs))
True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from streamer.errors import ConfigError
from streamer.events.schema import EngagementEvent, to_wire

BAD_KINDS: Final[dict[str, str]] = {
    "truncated_json": "not_json",
    "garbage": "not_json",
    "wrong_type_id": "wrong_type",
    "wrong_type_ts": "wrong_type",
    "bool_weight": "wrong_type",
    "missing_field": "missing_field",
    "nan_weight": "bad_weight",
    "inf_weight": "bad_weight",
    "negative_weight": "bad_weight",
    "future_ts": "future_ts",
    "ancient_ts": "bad_ts",
    "bad_iso_ts": "bad_ts",
    "not_utf8": "not_utf8",
    "empty_id": "bad_id",
    "huge_id": "bad_id",
    "long_event_id": "bad_id",
    "unknown_action": "unknown_action",
    "tombstone": "null_value",
    "json_null": "null_value",
    "null_field": "null_value",
    "not_object": "not_object",
    "bad_schema_version": "bad_schema_version",
    "duplicate": "duplicate",
}
"""Every kind of bad message and the reject reason the decoder (or dedup) must give it."""

_ACTIONS: Final = ("click", "like", "follow", "edit")


@dataclass(frozen=True)
class BadMessage:
    """One malformed message.

    Attributes
    ----------
    kind
        Key of :data:`BAD_KINDS`.
    key
        Kafka key (the template event's ``user_id``, UTF-8).
    value
        Message value; ``None`` for a tombstone.
    timestamp_ms
        Record timestamp: the template event's time in ms.
    expected_reason
        The reason the message must be rejected with.
    """

    kind: str
    key: bytes
    value: bytes | None
    timestamp_ms: int
    expected_reason: str

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-able dict (key/value as latin-1-safe base64 strings)."""
        import base64

        return {
            "kind": self.kind,
            "expected_reason": self.expected_reason,
            "key": base64.b64encode(self.key).decode("ascii"),
            "value": None if self.value is None else base64.b64encode(self.value).decode("ascii"),
            "timestamp_ms": self.timestamp_ms,
        }


def synthetic_events(
    n: int, *, seed: int, now_s: float, span_s: float = 86_400.0, prefix: str = "good"
) -> list[EngagementEvent]:
    """Return ``n`` valid events with ids ``<prefix>:<i>``, times in ``[now - span, now]``.

    Users ``u0..u49``, items ``i0..i199``, actions from click/like/follow/edit (all in
    the default action mapping), ascending ``ts``.
    """
    rng = np.random.default_rng(seed)
    ts = np.sort(now_s - span_s * rng.random(n))
    users = rng.integers(0, 50, n)
    items = rng.integers(0, 200, n)
    acts = rng.integers(0, len(_ACTIONS), n)
    return [
        EngagementEvent(f"u{users[i]}", f"i{items[i]}", _ACTIONS[acts[i]], float(ts[i]),
                        event_id=f"{prefix}:{i}")
        for i in range(n)
    ]


def bad_messages(
    n: int,
    *,
    seed: int,
    now_s: float,
    originals: Sequence[EngagementEvent] = (),
    kinds: Sequence[str] | None = None,
) -> list[BadMessage]:
    """Return ``n`` malformed messages, cycling through the kinds in a seeded order.

    Parameters
    ----------
    n
        Number of messages; with ``n >= len(kinds)`` every kind appears at least once.
    seed
        Seed of the numpy ``Generator`` that picks templates, kinds order and values.
    now_s
        The decoder clock's ``now_s()`` (wall seconds): valid templates lie within the
        day before it; ``future_ts`` messages lie 2 days to 10 years after it.
    originals
        Valid events with ``event_id`` to copy for the ``duplicate`` kind (and to use
        as templates). Without any, the ``duplicate`` kind is left out.
    kinds
        Subset of :data:`BAD_KINDS` (default: all that apply).

    Returns
    -------
    list of BadMessage

    Raises
    ------
    ConfigError
        If ``n < 0``, a kind is unknown, or ``duplicate`` is asked for without
        originals that have an ``event_id``.
    """
    if n < 0:
        msg = f"n must be >= 0, got {n}"
        raise ConfigError(msg)
    with_ids = [e for e in originals if e.event_id is not None]
    if kinds is None:
        kinds = [k for k in BAD_KINDS if k != "duplicate" or with_ids]
    for k in kinds:
        if k not in BAD_KINDS:
            msg = f"unknown bad-message kind {k!r}; expected one of {', '.join(BAD_KINDS)}"
            raise ConfigError(msg)
    if "duplicate" in kinds and not with_ids:
        msg = "kind 'duplicate' needs originals with an event_id"
        raise ConfigError(msg)
    if not kinds:
        msg = "kinds must not be empty"
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    templates = list(originals) or synthetic_events(64, seed=seed, now_s=now_s, prefix="tmpl")
    order = [kinds[i] for i in rng.permutation(len(kinds))]
    out = []
    for i in range(n):
        kind = order[i % len(order)]
        if kind == "duplicate":
            base = with_ids[int(rng.integers(len(with_ids)))]
        else:
            base = templates[int(rng.integers(len(templates)))]
        value = _MAKERS[kind](base, rng, now_s)
        ts_ms = max(0, int(round(base.ts * 1000)))
        out.append(BadMessage(kind, base.key, value, ts_ms, BAD_KINDS[kind]))
    return out


# ---------------------------------------------------------------------- makers
def _doc(ev: EngagementEvent) -> dict[str, object]:
    return json.loads(to_wire(ev))


def _dump(doc: object) -> bytes:
    # the standard library writes NaN/Infinity literals (as many producers do)
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode("utf-8")


def _with(ev: EngagementEvent, **fields: object) -> bytes:
    doc = _doc(ev)
    doc.update(fields)
    return _dump(doc)


def _truncated(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    raw = to_wire(ev)
    return raw[: int(rng.integers(1, len(raw)))]  # a strict prefix of an object never parses


def _garbage(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    choices = [b"user_id=1&item_id=2", b"{'user_id': 'u1'}", b"", b"   ", b"{,}", b"\xef\xbb\xbf{}"]
    return choices[int(rng.integers(len(choices)))]


def _wrong_type_id(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    field = ("user_id", "item_id")[int(rng.integers(2))]
    return _with(ev, **{field: int(rng.integers(1, 10**6))})


def _wrong_type_ts(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, ts=[ev.ts] if rng.random() < 0.5 else {"s": ev.ts})


def _bool_weight(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, weight=bool(rng.random() < 0.5))


def _missing(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    doc = _doc(ev)
    del doc[("user_id", "item_id", "action", "ts")[int(rng.integers(4))]]
    return _dump(doc)


def _nan_weight(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, weight=float("nan"))


def _inf_weight(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    if rng.random() < 0.5:
        return _with(ev, weight=float("inf"))  # the literal Infinity
    return _with(ev, weight=1.0).replace(b'"weight":1.0', b'"weight":1e999')


def _negative_weight(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, weight=0.0 if rng.random() < 0.3 else -float(rng.uniform(0.1, 10)))


def _future_ts(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, ts=now + 2 * 86_400 + float(rng.uniform(0, 10 * 365 * 86_400)))


def _ancient_ts(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, ts=float(rng.uniform(-1e9, 9e8)))  # 1938..1998


def _bad_iso_ts(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    choices = ["yesterday", "2014-13-01T00:00:00Z", "01/02/2014", "1388534400", ""]
    return _with(ev, ts=choices[int(rng.integers(len(choices)))])


def _not_utf8(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    raw = to_wire(ev)
    cut = raw.index(b'"user_id":"') + len(b'"user_id":"')
    junk = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xfe\xfe")[int(rng.integers(4))]
    return raw[:cut] + junk + raw[cut:]


def _empty_id(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, **{("user_id", "item_id")[int(rng.integers(2))]: ""})


def _huge_id(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, item_id="x" * 10_240)


def _long_event_id(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, event_id="e" * 129)


def _unknown_action(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, action=f"teleport{int(rng.integers(100))}")


def _tombstone(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes | None:
    return None


def _json_null(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return b"null" if rng.random() < 0.5 else b" null\n"


def _null_field(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    field = ("user_id", "item_id", "action", "ts", "weight", "event_id")[int(rng.integers(6))]
    return _with(ev, **{field: None})


def _not_object(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    choices = [_dump([_doc(ev)]), b"42", b'"user_id"', b"true", b"[]"]
    return choices[int(rng.integers(len(choices)))]


def _bad_schema_version(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return _with(ev, schema_version=int(rng.choice([0, -1, 2, 99])))


def _duplicate(ev: EngagementEvent, rng: np.random.Generator, now: float) -> bytes:
    return to_wire(ev)


_MAKERS: Final[dict[str, Callable[[EngagementEvent, np.random.Generator, float], bytes | None]]] = {
    "truncated_json": _truncated,
    "garbage": _garbage,
    "wrong_type_id": _wrong_type_id,
    "wrong_type_ts": _wrong_type_ts,
    "bool_weight": _bool_weight,
    "missing_field": _missing,
    "nan_weight": _nan_weight,
    "inf_weight": _inf_weight,
    "negative_weight": _negative_weight,
    "future_ts": _future_ts,
    "ancient_ts": _ancient_ts,
    "bad_iso_ts": _bad_iso_ts,
    "not_utf8": _not_utf8,
    "empty_id": _empty_id,
    "huge_id": _huge_id,
    "long_event_id": _long_event_id,
    "unknown_action": _unknown_action,
    "tombstone": _tombstone,
    "json_null": _json_null,
    "null_field": _null_field,
    "not_object": _not_object,
    "bad_schema_version": _bad_schema_version,
    "duplicate": _duplicate,
}
