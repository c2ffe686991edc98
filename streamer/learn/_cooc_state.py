"""State codec of :class:`~streamer.learn.cooccurrence.DecayedCooccurrence` (private).

Two forms of the same tables: byte records for the feature store's ``WriteBatch``
(DESIGN §6) and plain sorted arrays for ``state_dict``. Record layout (little-endian):

* ``b"m"``: ``u8 format`` + params JSON (sorted keys).
* ``b"r" + >i4 partition + entity utf-8``: ``u8 format, u8 has_window, i8 count,
  f8 last_ts, f8 mass`` + ``dim`` float32 + (user rows) ``u2 n`` + ``n`` f8 ts +
  ``n`` f4 weights + ``n`` times (``u2 len`` + item id utf-8), oldest first.
* ``b"a" + >i4 partition + >u2 len(user) + user + item``: ``u8 format, f8 value, f8 last_ts``.
* ``b"n" + >i4 partition``: ``u8 format, f8 mass, f8 last_ts``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from streamer.errors import StateError

FORMAT = 1
META_KEY = b"m"
_ROW = struct.Struct("<BBqdd")
_DEC = struct.Struct("<Bdd")
_PART = struct.Struct(">i")
_LEN = struct.Struct("<H")
_KLEN = struct.Struct(">H")


@dataclass
class RowRec:
    """One entity's row in one partition."""

    partition: int
    entity: str
    count: int
    last_ts: float
    mass: float
    vector: np.ndarray
    window: list[tuple[str, float, float]] | None  # (item id, ts, weight), oldest first


@dataclass
class PairRec:
    """One decayed user-item affinity in one partition."""

    partition: int
    user: str
    item: str
    value: float
    last_ts: float


@dataclass
class PartRec:
    """One partition's decayed total mass."""

    partition: int
    mass: float
    last_ts: float


@dataclass
class Tables:
    """The learner state as plain records."""

    rows: list[RowRec] = field(default_factory=list)
    pairs: list[PairRec] = field(default_factory=list)
    parts: list[PartRec] = field(default_factory=list)


def encode(t: Tables) -> dict[bytes, bytes | None]:
    """Encode tables as ``{key: value}`` byte records."""
    out: dict[bytes, bytes | None] = {}
    for r in t.rows:
        chunks = [_ROW.pack(FORMAT, r.window is not None, r.count, r.last_ts, r.mass),
                  np.ascontiguousarray(r.vector, "<f4").tobytes()]
        if r.window is not None:
            chunks.append(_LEN.pack(len(r.window)))
            chunks.append(np.array([x[1] for x in r.window], "<f8").tobytes())
            chunks.append(np.array([x[2] for x in r.window], "<f4").tobytes())
            for item, _, _ in r.window:
                b = item.encode()
                chunks.append(_LEN.pack(len(b)) + b)
        out[b"r" + _PART.pack(r.partition) + r.entity.encode()] = b"".join(chunks)
    for p in t.pairs:
        ub = p.user.encode()
        key = b"a" + _PART.pack(p.partition) + _KLEN.pack(len(ub)) + ub + p.item.encode()
        out[key] = _DEC.pack(FORMAT, p.value, p.last_ts)
    for q in t.parts:
        out[b"n" + _PART.pack(q.partition)] = _DEC.pack(FORMAT, q.mass, q.last_ts)
    return out


def _bad(key: bytes, why: str) -> StateError:
    return StateError(f"cooc state record {key[:80]!r} is corrupt: {why}")


def _decode_row(key: bytes, value: bytes, dim: int) -> RowRec:
    if len(value) < _ROW.size + 4 * dim:
        need = _ROW.size + 4 * dim
        raise _bad(key, f"{len(value)} bytes, expected at least {need} for dim={dim}")
    fmt, has_window, count, last_ts, mass = _ROW.unpack_from(value)
    if fmt != FORMAT:
        raise _bad(key, f"format {fmt}, expected {FORMAT}")
    pos = _ROW.size
    vector = np.frombuffer(value, "<f4", dim, pos).astype(np.float32)
    pos += 4 * dim
    window = None
    try:
        if has_window:
            (n,) = _LEN.unpack_from(value, pos)
            pos += _LEN.size
            ts = np.frombuffer(value, "<f8", n, pos).tolist()
            pos += 8 * n
            ws = np.frombuffer(value, "<f4", n, pos).tolist()
            pos += 4 * n
            items = []
            for _ in range(n):
                (m,) = _LEN.unpack_from(value, pos)
                pos += _LEN.size
                items.append(value[pos:pos + m].decode())
                pos += m
            window = list(zip(items, ts, ws, strict=True))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise _bad(key, f"bad window ({exc})") from exc
    if pos != len(value):
        raise _bad(key, f"{len(value) - pos} trailing bytes")
    return RowRec(_PART.unpack_from(key, 1)[0], key[5:].decode(), count, last_ts, mass,
                  vector, window)


def decode(records: Iterable[tuple[bytes, bytes]], dim: int) -> tuple[bytes | None, Tables]:
    """Decode records; return the params record (or ``None``) and the tables.

    Raises
    ------
    StateError
        On an unknown key kind or a malformed value.
    """
    meta: bytes | None = None
    t = Tables()
    for key, value in records:
        key, value = bytes(key), bytes(value)
        kind = key[:1]
        try:
            if key == META_KEY:
                meta = value
            elif kind == b"r":
                t.rows.append(_decode_row(key, value, dim))
            elif kind == b"a":
                p = _PART.unpack_from(key, 1)[0]
                (ulen,) = _KLEN.unpack_from(key, 5)
                user, item = key[7:7 + ulen].decode(), key[7 + ulen:].decode()
                fmt, v, ts = _DEC.unpack(value)
                if fmt != FORMAT:
                    raise _bad(key, f"format {fmt}, expected {FORMAT}")
                t.pairs.append(PairRec(p, user, item, v, ts))
            elif kind == b"n":
                fmt, mass, ts = _DEC.unpack(value)
                if fmt != FORMAT:
                    raise _bad(key, f"format {fmt}, expected {FORMAT}")
                t.parts.append(PartRec(_PART.unpack_from(key, 1)[0], mass, ts))
            else:
                raise _bad(key, "unknown key kind; expected one of b'm', b'r', b'a', b'n'")
        except (struct.error, UnicodeDecodeError) as exc:
            raise _bad(key, str(exc)) from exc
    return meta, t


def _str_array(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=str) if values else np.zeros(0, "<U1")


def to_arrays(t: Tables, dim: int) -> dict[str, np.ndarray]:
    """Return the tables as sorted plain arrays (see ``DecayedCooccurrence.state_dict``)."""
    rows = sorted(t.rows, key=lambda r: (r.entity, r.partition))
    pairs = sorted(t.pairs, key=lambda p: (p.user, p.partition, p.item))
    parts = sorted(t.parts, key=lambda p: p.partition)
    wrow, witem, wts, ww = [], [], [], []
    for k, r in enumerate(rows):
        for item, ts, w in r.window or ():
            wrow.append(k)
            witem.append(item)
            wts.append(ts)
            ww.append(w)
    return {
        "row_entity": _str_array([r.entity for r in rows]),
        "row_partition": np.array([r.partition for r in rows], np.int32),
        "row_vector": (np.stack([r.vector for r in rows]).astype(np.float32) if rows
                       else np.zeros((0, dim), np.float32)),
        "row_last_ts": np.array([r.last_ts for r in rows], np.float64),
        "row_count": np.array([r.count for r in rows], np.int64),
        "row_mass": np.array([r.mass for r in rows], np.float64),
        "row_is_user": np.array([r.window is not None for r in rows], np.bool_),
        "window_row": np.array(wrow, np.int64),
        "window_item": _str_array(witem),
        "window_ts": np.array(wts, np.float64),
        "window_weight": np.array(ww, np.float32),
        "pair_partition": np.array([p.partition for p in pairs], np.int32),
        "pair_user": _str_array([p.user for p in pairs]),
        "pair_item": _str_array([p.item for p in pairs]),
        "pair_value": np.array([p.value for p in pairs], np.float64),
        "pair_last_ts": np.array([p.last_ts for p in pairs], np.float64),
        "partition_id": np.array([p.partition for p in parts], np.int32),
        "partition_mass": np.array([p.mass for p in parts], np.float64),
        "partition_last_ts": np.array([p.last_ts for p in parts], np.float64),
    }


def from_arrays(d: Mapping[str, np.ndarray], dim: int) -> Tables:
    """Inverse of :func:`to_arrays`.

    Raises
    ------
    StateError
        If a key is missing or the arrays' shapes disagree.
    """
    try:
        n = len(d["row_entity"])
        vec = np.asarray(d["row_vector"], np.float32).reshape(n, dim)
        windows: list[list[tuple[str, float, float]] | None] = [
            [] if u else None for u in np.asarray(d["row_is_user"]).tolist()]
        win_cols = (np.asarray(d["window_row"]).tolist(), d["window_item"].tolist(),
                    d["window_ts"].tolist(), d["window_weight"].tolist())
        for k, item, ts, w in zip(*win_cols, strict=True):
            win = windows[k]
            if win is None:
                msg = f"cooc state_dict window entry points at non-user row {k}"
                raise StateError(msg)
            win.append((str(item), float(ts), float(w)))
        rows = [RowRec(int(p), str(e), int(c), float(ts), float(m), vec[k].copy(), windows[k])
                for k, (e, p, c, ts, m) in enumerate(zip(
                    d["row_entity"].tolist(), d["row_partition"].tolist(), d["row_count"].tolist(),
                    d["row_last_ts"].tolist(), d["row_mass"].tolist(), strict=True))]
        pairs = [PairRec(int(p), str(u), str(i), float(v), float(ts)) for p, u, i, v, ts in zip(
            d["pair_partition"].tolist(), d["pair_user"].tolist(), d["pair_item"].tolist(),
            d["pair_value"].tolist(), d["pair_last_ts"].tolist(), strict=True)]
        parts = [PartRec(int(p), float(m), float(ts)) for p, m, ts in zip(
            d["partition_id"].tolist(), d["partition_mass"].tolist(),
            d["partition_last_ts"].tolist(), strict=True)]
    except (KeyError, ValueError, IndexError) as exc:
        msg = f"cooc state_dict is incomplete or inconsistent: {exc!r}"
        raise StateError(msg) from exc
    return Tables(rows, pairs, parts)
