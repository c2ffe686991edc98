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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.errors import StateError

SHIFT = 31  # bits of the low index in composite int64 keys (partition|entity, row|item)
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


def encode_arrays(a: Any, ids: list[str], rows: list[int], pairs: list[int],
                  parts: list[int]) -> dict[bytes, bytes | None]:
    """Encode the given rows, pairs and partitions of the learner's arrays ``a`` as records.

    Works on the arrays directly (no intermediate tables): this is the flush hot path.
    """
    out: dict[bytes, bytes | None] = {}
    pack_row, pack_part, pack_len, pack_klen, pack_dec = (
        _ROW.pack, _PART.pack, _LEN.pack, _KLEN.pack, _DEC.pack)
    enc: dict[int, bytes] = {}  # entity index -> UTF-8 id, memoised for this call

    def id_bytes(e: int) -> bytes:
        b = enc.get(e)
        if b is None:
            b = enc[e] = ids[e].encode()
        return b

    if rows:
        idx = np.asarray(rows, dtype=np.int64)
        vecs = a.rows[idx].astype("<f4", copy=False)
        win_len, win_e, win_ts, win_w = a.win_len, a.win_e, a.win_ts, a.win_w
        for j, (slot, cnt, ts, mass, part, ent) in enumerate(zip(
                a.row_slot[idx].tolist(), a.row_cnt[idx].tolist(), a.row_ts[idx].tolist(),
                a.row_mass[idx].tolist(), a.row_part[idx].tolist(), a.row_ent[idx].tolist(),
                strict=True)):
            chunks = [pack_row(FORMAT, slot >= 0, cnt, ts, mass), vecs[j].tobytes()]
            if slot >= 0:
                n = int(win_len[slot])
                chunks.append(pack_len(n))
                chunks.append(win_ts[slot, :n].astype("<f8", copy=False).tobytes())
                chunks.append(win_w[slot, :n].astype("<f4", copy=False).tobytes())
                for e in win_e[slot, :n].tolist():
                    b = id_bytes(e)
                    chunks.append(pack_len(len(b)) + b)
            out[b"r" + pack_part(part) + id_bytes(ent)] = b"".join(chunks)
    if pairs:
        idx = np.asarray(pairs, dtype=np.int64)
        urow = a.pair_user_row[idx]
        for part, uent, ient, val, ts in zip(
                a.row_part[urow].tolist(), a.row_ent[urow].tolist(),
                a.pair_item_e[idx].tolist(), a.pair_val[idx].tolist(),
                a.pair_ts[idx].tolist(), strict=True):
            ub = id_bytes(uent)
            out[b"a" + pack_part(part) + pack_klen(len(ub)) + ub + id_bytes(ient)] = pack_dec(
                FORMAT, val, ts)
    for k in parts:
        out[b"n" + pack_part(int(a.part_id[k]))] = pack_dec(
            FORMAT, float(a.part_mass[k]), float(a.part_ts[k]))
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


class StateMixin:
    """Persistence methods of ``DecayedCooccurrence`` (kept here to keep modules short)."""

    # provided by DecayedCooccurrence
    _a: Any
    _ids: list[str]
    _eid: dict[str, int]
    _row_of: dict[int, int]
    _sdirty: dict[str, list[np.ndarray]]
    _vdirty: list[np.ndarray]
    _pending: set[int]
    _meta_emitted: bool
    window: int
    dim: int
    _reset: Callable[[], None]
    _meta_bytes: Callable[[], bytes]
    _entity: Callable[[str, list[int]], int]
    _row: Callable[..., int]
    _pair: Callable[[int, int], int]
    _part: Callable[[int], int]
    _init_random: Callable[[list[int]], None]
    _refresh: Callable[[], None]
    params: Callable[[], dict[str, Any]]

    # ------------------------------------------------------------------ persistence
    def _tables(self, rows: Iterable[int], pairs: Iterable[int], parts: Iterable[int]) -> Tables:
        a, ids = self._a, self._ids
        t = Tables()
        for r in rows:
            win = None
            slot = int(a.row_slot[r])
            if slot >= 0:
                n = int(a.win_len[slot])
                win = [(ids[int(a.win_e[slot, k])], float(a.win_ts[slot, k]),
                        float(a.win_w[slot, k])) for k in range(n)]
            t.rows.append(RowRec(int(a.row_part[r]), ids[int(a.row_ent[r])], int(a.row_cnt[r]),
                                 float(a.row_ts[r]), float(a.row_mass[r]),
                                 a.rows[r].copy(), win))
        for q in pairs:
            ur = int(a.pair_user_row[q])
            t.pairs.append(PairRec(int(a.row_part[ur]), ids[int(a.row_ent[ur])],
                                   ids[int(a.pair_item_e[q])], float(a.pair_val[q]),
                                   float(a.pair_ts[q])))
        for k in parts:
            t.parts.append(PartRec(int(a.part_id[k]), float(a.part_mass[k]), float(a.part_ts[k])))
        return t

    @staticmethod
    def _drain(chunks: list[np.ndarray]) -> list[int]:
        out = np.concatenate(chunks).tolist() if chunks else []
        chunks.clear()
        return out

    def state_changes(self) -> dict[bytes, bytes | None]:
        """Return the state records changed since the last call, and reset.

        Keys (opaque): ``b"m"`` params; ``b"r" + partition + entity`` one partition row
        (float32 accumulator, count, last_ts, decayed mass and, for users, the window);
        ``b"a" + partition + user + item`` one decayed affinity; ``b"n" + partition``
        the partition's decayed total mass. Values are little-endian structs plus raw
        ``tobytes()`` arrays (format byte first). Nothing is ever deleted (``None``).
        There is no RNG state: random vectors are a pure function of ``(seed, id)``.
        """
        a = self._a
        rows, pairs, parts = (self._drain(self._sdirty[k]) for k in ("row", "pair", "part"))
        recs = encode_arrays(a, self._ids, rows, pairs, parts)
        a.row_sdirty[rows] = 0
        a.pair_sdirty[pairs] = 0
        a.part_sdirty[parts] = 0
        if not self._meta_emitted:
            recs[META_KEY] = self._meta_bytes()
            self._meta_emitted = True
        return recs

    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace the state with the one described by stored records.

        Parameters
        ----------
        records
            ``(key, value)`` pairs as emitted by :meth:`state_changes` (last write per key).

        Raises
        ------
        StateError
            If the records were written with other params or another format, or are
            inconsistent (e.g. a window naming an item without a row in its partition).
        """
        meta, tables = decode(records, self.dim)
        if meta is not None and meta != self._meta_bytes():
            msg = (f"cooc state records were written with {meta[1:].decode(errors='replace')}, "
                   f"this learner has {self._meta_bytes()[1:].decode()}; use the same params "
                   "or a new state version")
            raise StateError(msg)
        if meta is None and (tables.rows or tables.pairs or tables.parts):
            msg = ("cooc state records have rows but no params record (b'm'); "
                   "the state is incomplete")
            raise StateError(msg)
        self._rebuild(tables)
        self._meta_emitted = meta is not None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the full state as plain arrays, sorted by id (equal states give equal dicts).

        Keys: ``params`` (0-d str, JSON); ``row_*`` one entry per (entity, partition)
        sorted by entity then partition (``row_vector`` is ``(n, dim)`` float32);
        ``window_*`` windows of user rows, oldest first, ``window_row`` indexing ``row_*``;
        ``pair_*`` affinities sorted by user, partition, item; ``partition_*`` totals.
        """
        a = self._a
        t = self._tables(range(a.n_row), range(a.n_pair), range(a.n_part))
        d = to_arrays(t, self.dim)
        d["params"] = np.array(self._meta_bytes()[1:].decode())
        return d

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one produced by :meth:`state_dict`.

        The next :meth:`state_changes` returns every record (params included), so a
        snapshot restored into an empty feature store is written out in full.

        Raises
        ------
        StateError
            If keys are missing, the params differ from this learner's, or the arrays
            are inconsistent.
        """
        params = str(np.asarray(state.get("params", "")))
        if params != self._meta_bytes()[1:].decode():
            msg = (f"cooc state_dict was made with params {params!r}, "
                   f"this learner has {self.params()}")
            raise StateError(msg)
        self._rebuild(from_arrays(state, self.dim))
        self._meta_emitted = False
        a = self._a
        for kind, n, flags in (("row", a.n_row, a.row_sdirty), ("pair", a.n_pair, a.pair_sdirty),
                               ("part", a.n_part, a.part_sdirty)):
            flags[:n] = 1
            self._sdirty[kind] = [np.arange(n, dtype=np.int64)]

    def _rebuild(self, t: Tables) -> None:
        self._reset()
        a = self._a
        new: list[int] = []
        for rec in sorted(t.rows, key=lambda x: (x.entity, x.partition)):
            e = self._eid.get(rec.entity)
            if e is None:
                e = self._entity(rec.entity, new)
            if ((rec.partition << SHIFT) | e) in self._row_of:
                msg = f"cooc state has two rows for {rec.entity!r} in partition {rec.partition}"
                raise StateError(msg)
            r = self._row(rec.partition, e, user=rec.window is not None)
            a = self._a
            a.rows[r] = rec.vector
            a.row_cnt[r], a.row_ts[r], a.row_mass[r] = rec.count, rec.last_ts, rec.mass
        for rec in t.rows:
            if rec.window is None:
                continue
            r = self._row_of[(rec.partition << SHIFT) | self._eid[rec.entity]]
            slot = int(a.row_slot[r])
            if len(rec.window) > self.window:
                msg = (f"cooc state window of {rec.entity!r} has {len(rec.window)} items, "
                       f"more than window={self.window}")
                raise StateError(msg)
            for k, (item, ts, w) in enumerate(rec.window):
                ie = self._eid.get(item)
                ir = None if ie is None else self._row_of.get((rec.partition << SHIFT) | ie)
                if ir is None:
                    msg = (f"cooc state window of {rec.entity!r} names {item!r}, which has no row "
                           f"in partition {rec.partition}")
                    raise StateError(msg)
                a.win_e[slot, k], a.win_row[slot, k] = a.row_ent[ir], ir
                a.win_ts[slot, k], a.win_w[slot, k] = ts, w
            a.win_len[slot] = len(rec.window)
        for prec in sorted(t.pairs, key=lambda x: (x.user, x.partition, x.item)):
            ue, ie = self._eid.get(prec.user), self._eid.get(prec.item)
            ur = None if ue is None else self._row_of.get((prec.partition << SHIFT) | ue)
            if ur is None or ie is None:
                msg = (f"cooc state affinity ({prec.user!r}, {prec.item!r}) in partition "
                       f"{prec.partition} has no user or item row")
                raise StateError(msg)
            q = self._pair(ur, ie)
            a = self._a
            a.pair_val[q], a.pair_ts[q] = prec.value, prec.last_ts
        for part in sorted(t.parts, key=lambda x: x.partition):
            k = self._part(part.partition)
            self._a.part_mass[k], self._a.part_ts[k] = part.mass, part.last_ts
        self._init_random(new)
        ents = np.arange(self._a.n_ent, dtype=np.int64)
        self._vdirty = [ents]
        self._refresh()
        self._pending = set()
