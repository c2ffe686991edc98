"""Decayed co-occurrence embeddings by incremental random indexing (DESIGN §3).

Each entity id gets a fixed random vector ``r_id`` derived from ``(seed, id)``. An item's
*context row* ``c_i`` accumulates the decayed weights of the items ``j`` its users engaged
with shortly before or after it, times ``r_j``; a user's row ``u`` accumulates the decayed
weights of the items it engaged with, times ``r_i``. Because random vectors are nearly
orthogonal, ``u · c_i ≈ Σ_j a_uj C_ij``: item-based collaborative filtering in one dot
product, so users and items share one space and "items for a user" is one ANN query.

Sources
-------
* Random indexing: M. Sahlgren, "An Introduction to Random Indexing", TKE 2005
  (incremental context vectors as sums of sparse/dense random index vectors);
  D. Achlioptas, "Database-friendly random projections", JCSS 2003 (±1 entries).
* Decayed counts stored lazily as ``(value, last_ts)``: Satuluri et al., "SimClusters",
  KDD 2020 §5.2 (real-time tweet embeddings with exponentially decayed counts).
* Context weighting: O. Levy & Y. Goldberg, "Neural Word Embedding as Implicit Matrix
  Factorization", NIPS 2014 and Levy, Goldberg & Dagan, TACL 2015 (PPMI, damping of
  frequent contexts). ``context_weighting="idf"`` multiplies each contribution of
  context ``j`` by ``log(1 + N / m_j)`` from the decayed marginals, an incremental
  stand-in for the ``log(N / m_j)`` term of PMI that stays positive.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, ConfigError, StateError
from streamer.learn import _cooc_kernel as K
from streamer.learn import _cooc_state as S
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.types import EntityId, Matrix, item_key, user_key

__all__ = ["DecayedCooccurrence", "random_index_vectors"]

_FORMAT = 1
_ROW_HEAD = struct.Struct("<BBqdd")  # format, has_window, count, last_ts, mass
_DECAYED = struct.Struct("<Bdd")  # format, value, last_ts
_SHIFT = 40  # entity / row index bits in the composite dict keys


def _hash_key(seed: int) -> bytes:
    h = hashlib.blake2b(str(int(seed)).encode(), digest_size=16, person=b"streamer-cooc")
    return h.digest()


def _id_states(ids: Sequence[str], key: bytes) -> npt.NDArray[np.uint64]:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little")
         for i in ids), np.uint64, len(ids))


def random_index_vectors(ids: Sequence[EntityId], dim: int, seed: int) -> Matrix:
    """Return the deterministic random index vectors ``r_id`` of namespaced ids.

    Parameters
    ----------
    ids
        Namespaced entity ids (``u:...`` / ``i:...``).
    dim
        Vector dimension.
    seed
        Integer seed; with the id it keys a BLAKE2b hash (not Python's salted ``hash``),
        which seeds SplitMix64 to draw ``dim`` signs.

    Returns
    -------
    Matrix
        Shape ``(len(ids), dim)`` float32, entries ``±1/sqrt(dim)`` (unit norm). The same
        ``(seed, id, dim)`` gives the same row on every machine and in every process.
    """
    return K.rademacher_rows(_id_states(ids, _hash_key(seed)), dim)


def _check_positive(name: str, value: object, *, allow_inf: bool, integer: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = v > 0 and not math.isnan(v) and (allow_inf or math.isfinite(v))
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        msg = f"cooc: {name} must be {kind}, got {value!r}"
        raise ConfigError(msg)


class DecayedCooccurrence(OnlineLearner):
    """Exponentially decayed item co-occurrence, projected by random indexing.

    Parameters
    ----------
    dim
        Vector dimension (random index length), >= 1.
    half_life_s
        Half-life of every count, in event seconds (one per embedding type).
    window
        How many of a user's most recent *distinct* items a new item is paired with
        (>= 0; 0 disables item-item pairs).
    max_gap_s
        Only pair with window items whose event time is within this many event seconds
        of the new event (``inf`` for no limit).
    self_weight
        Weight of an item's own random vector added to its context row on each
        engagement (>= 0), so a user's repeat engagements score the item itself.
    context_weighting
        ``"none"`` or ``"idf"``: damp popular contexts by ``log(1 + N/m_j)`` with the
        partition's decayed total mass ``N`` and item marginal ``m_j`` (PPMI-like).
    seed
        Seed of the random index vectors.
    affinity_half_life_s
        Half-life of the per user-item affinity used by :meth:`score_items`
        (event seconds); ``None`` means ``half_life_s``.
    affinity_weight
        Weight of the normalised affinity added to the cosine in :meth:`score_items`
        (>= 0; 0 scores by cosine only).

    Notes
    -----
    *State is kept per source partition* (``EventBatch.partitions``): each partition has
    its own user rows, windows, item rows and affinities, applied strictly event by event
    in batch order (the runtime delivers each partition in offset order). The published
    vector of an entity merges its partition rows in ascending partition order, each
    decayed to the latest ``last_ts`` among them, then L2-normalises to float32. So the
    state and vectors are bitwise independent of batch boundaries and of how partitions
    interleave (on one platform: decay uses libm ``pow``).

    An entity *exists* (``vectors`` mask True, listed by ``entity_ids``) once its merged
    row is non-zero. With ``self_weight=0`` an item exists only after a first pair.

    Thread safety: none; one writer, and readers must not call concurrently with
    :meth:`learn_many`.

    Examples
    --------
    >>> m = DecayedCooccurrence(dim=8, half_life_s=3600.0, seed=1)
    >>> m.learn_many(EventBatch.from_rows([("alice", "a", 1.0, 0.0), ("alice", "b", 1.0, 5.0)]))
    >>> sorted(m.changed())
    ['i:a', 'i:b', 'u:alice']
    >>> vecs, mask = m.vectors(["i:a", "i:zzz"])
    >>> vecs.shape, mask.tolist()
    ((2, 8), [True, False])
    """

    name = "cooc"
    #: State is kept per source partition (checked for interleaving invariance).
    per_partition_state = True

    def __init__(
        self,
        dim: int = 128,
        half_life_s: float = 7 * 86_400.0,
        window: int = 10,
        max_gap_s: float = 86_400.0,
        self_weight: float = 1.0,
        context_weighting: str = "idf",
        seed: int = 0,
        affinity_half_life_s: float | None = 86_400.0,
        affinity_weight: float = 2.0,
    ) -> None:
        self._dim = dim
        self.half_life_s = half_life_s
        self.window = window
        self.max_gap_s = max_gap_s
        self.self_weight = self_weight
        self.context_weighting = context_weighting
        self.seed = seed
        self.affinity_half_life_s = affinity_half_life_s
        self.affinity_weight = affinity_weight
        self._validate_params()
        self._hkey = _hash_key(seed)
        self._reset()

    # ------------------------------------------------------------------ params
    def _validate_params(self) -> None:
        _check_positive("dim", self._dim, allow_inf=False, integer=True)
        _check_positive("half_life_s", self.half_life_s, allow_inf=True)
        _check_positive("max_gap_s", self.max_gap_s, allow_inf=True)
        if self.affinity_half_life_s is not None:
            _check_positive("affinity_half_life_s", self.affinity_half_life_s, allow_inf=True)
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 0:
            msg = f"cooc: window must be an integer >= 0, got {self.window!r}"
            raise ConfigError(msg)
        for name in ("self_weight", "affinity_weight"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not (0 <= v < math.inf):
                msg = f"cooc: {name} must be a finite number >= 0, got {v!r}"
                raise ConfigError(msg)
        if self.context_weighting not in ("none", "idf"):
            msg = f"cooc: context_weighting must be 'none' or 'idf', got {self.context_weighting!r}"
            raise ConfigError(msg)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            msg = f"cooc: seed must be an integer, got {self.seed!r}"
            raise ConfigError(msg)

    def _ahl(self) -> float:
        ahl = self.affinity_half_life_s
        return float(self.half_life_s if ahl is None else ahl)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._dim)

    def params(self) -> dict[str, Any]:
        """Return the constructor parameters, verbatim."""
        return {
            "dim": self._dim, "half_life_s": self.half_life_s, "window": self.window,
            "max_gap_s": self.max_gap_s, "self_weight": self.self_weight,
            "context_weighting": self.context_weighting, "seed": self.seed,
            "affinity_half_life_s": self.affinity_half_life_s,
            "affinity_weight": self.affinity_weight,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"DecayedCooccurrence({args})"

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, object]]:
        """Yield small, fast constructor params for the contract suite."""
        yield {"dim": 16, "half_life_s": 50.0, "window": 4, "max_gap_s": 100.0, "seed": 3}
        yield {"dim": 8, "half_life_s": 1e9, "window": 0, "self_weight": 0.5,
               "context_weighting": "none", "seed": 1, "affinity_half_life_s": 10.0}

    def _meta_bytes(self) -> bytes:
        return bytes([_FORMAT]) + json.dumps(self.params(), sort_keys=True).encode()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._a = K.Arrays(self.dim, self.window)
        self._eid: dict[str, int] = {}
        self._ids: list[str] = []
        self._row_of: dict[int, int] = {}
        self._pair_of: dict[int, int] = {}
        self._part_idx: dict[int, int] = {}
        self._vdirty: list[np.ndarray] = []
        self._sdirty: dict[str, list[np.ndarray]] = {"row": [], "pair": [], "part": []}
        self._pending: set[int] = set()
        self._meta_emitted = False

    def _entity(self, key: str, new: list[int]) -> int:
        e = self._a.add_entities(1)
        self._eid[key] = e
        self._ids.append(key)
        new.append(e)
        return e

    def _init_random(self, new: list[int]) -> None:
        if new:
            idx = np.asarray(new, np.int64)
            self._a.rand[idx] = K.rademacher_rows(
                _id_states([self._ids[e] for e in new], self._hkey), self.dim)

    def _row(self, p: int, e: int, user: bool) -> int:
        a = self._a
        r = a.add_row()
        a.row_ent[r] = e
        a.row_part[r] = p
        h = a.ent_head[e]
        if h < 0 or a.row_part[h] > p:
            a.row_next[r] = h
            a.ent_head[e] = r
        else:
            prev = h
            while a.row_next[prev] >= 0 and a.row_part[a.row_next[prev]] < p:
                prev = a.row_next[prev]
            a.row_next[r] = a.row_next[prev]
            a.row_next[prev] = r
        if user:
            a.row_slot[r] = a.add_slot()
        self._row_of[(p << _SHIFT) | e] = r
        return r

    def _pair(self, ur: int, ie: int) -> int:
        a = self._a
        q = a.add_pair()
        a.pair_item_e[q] = ie
        a.pair_user_row[q] = ur
        a.pair_next[q] = a.row_pair_head[ur]
        a.row_pair_head[ur] = q
        self._pair_of[(ur << _SHIFT) | ie] = q
        return q

    def _part(self, p: int) -> int:
        k = self._a.add_part(p)
        self._part_idx[p] = k
        return k

    # ------------------------------------------------------------------ learning
    @staticmethod
    def _validate_batch(batch: EventBatch) -> None:
        w, ts, parts = batch.weights, batch.ts, batch.partitions
        if not (np.all(np.isfinite(w)) and np.all(w > 0)):
            bad = w[~(np.isfinite(w) & (w > 0))][0]
            msg = f"cooc: event weights must be finite and > 0, got {bad!r}"
            raise BadRequest(msg)
        if not np.all(np.isfinite(ts)):
            msg = f"cooc: event ts must be finite event seconds, got {ts[~np.isfinite(ts)][0]!r}"
            raise BadRequest(msg)
        if np.any(parts < 0):
            msg = f"cooc: partitions must be >= 0, got {int(parts.min())}"
            raise BadRequest(msg)

    def learn_many(self, batch: EventBatch) -> None:
        """Apply a batch of events, each partition's events in batch order.

        Parameters
        ----------
        batch
            Raw user and item ids (namespaced here as ``u:``/``i:``), weights > 0,
            event times in seconds, source partitions >= 0.

        Raises
        ------
        BadRequest
            If a weight is not finite and > 0, a ts is not finite, or a partition < 0.
        """
        n = len(batch)
        if n == 0:
            return
        self._validate_batch(batch)
        ev_ur = np.empty(n, np.int64)
        ev_ir = np.empty(n, np.int64)
        ev_ie = np.empty(n, np.int64)
        ev_pr = np.empty(n, np.int64)
        ev_pk = np.empty(n, np.int64)
        eid, row_of, pair_of, part_idx = self._eid, self._row_of, self._pair_of, self._part_idx
        new: list[int] = []
        for k, (p, u, i) in enumerate(zip(batch.partitions.tolist(), batch.user_ids,
                                          batch.item_ids, strict=True)):
            uk = user_key(u)
            ue = eid.get(uk)
            if ue is None:
                ue = self._entity(uk, new)
            ik = item_key(i)
            ie = eid.get(ik)
            if ie is None:
                ie = self._entity(ik, new)
            pbase = p << _SHIFT
            ur = row_of.get(pbase | ue)
            if ur is None:
                ur = self._row(p, ue, user=True)
            ir = row_of.get(pbase | ie)
            if ir is None:
                ir = self._row(p, ie, user=False)
            q = pair_of.get((ur << _SHIFT) | ie)
            if q is None:
                q = self._pair(ur, ie)
            pk = part_idx.get(p)
            if pk is None:
                pk = self._part(p)
            ev_ur[k], ev_ir[k], ev_ie[k], ev_pr[k], ev_pk[k] = ur, ir, ie, q, pk
        self._init_random(new)
        self._run_kernel(ev_ur, ev_ir, ev_ie, ev_pr, ev_pk,
                         np.ascontiguousarray(batch.weights, np.float32),
                         np.ascontiguousarray(batch.ts, np.float64))

    def _run_kernel(self, ev_ur: np.ndarray, ev_ir: np.ndarray, ev_ie: np.ndarray,
                    ev_pr: np.ndarray, ev_pk: np.ndarray, w: np.ndarray, ts: np.ndarray) -> None:
        a = self._a
        n = len(ts)
        span = n * (self.window + 2)
        out_rows = np.empty(span, np.int64)
        out_ents = np.empty(span, np.int64)
        out_pairs = np.empty(n, np.int64)
        out_parts = np.empty(n, np.int64)
        counts = np.zeros(4, np.int64)
        K.learn_kernel(
            ev_ur, ev_ir, ev_ie, ev_pr, ev_pk, w, ts,
            a.rand, a.rows, a.row_ts, a.row_cnt, a.row_mass, a.row_ent, a.row_slot, a.row_sdirty,
            a.win_e, a.win_row, a.win_ts, a.win_w, a.win_len,
            a.pair_val, a.pair_ts, a.pair_sdirty,
            a.part_mass, a.part_ts, a.part_sdirty,
            a.ent_vdirty,
            float(self.half_life_s), self._ahl(), float(self.max_gap_s), float(self.self_weight),
            K.CTX_IDF if self.context_weighting == "idf" else K.CTX_NONE, True,
            out_rows, out_ents, out_pairs, out_parts, counts,
        )
        self._sdirty["row"].append(out_rows[: counts[0]].copy())
        self._vdirty.append(out_ents[: counts[1]].copy())
        self._sdirty["pair"].append(out_pairs[: counts[2]].copy())
        self._sdirty["part"].append(out_parts[: counts[3]].copy())

    # ------------------------------------------------------------------ vectors
    def _refresh(self) -> None:
        """Recompute published vectors of touched entities; remember which changed."""
        if not self._vdirty:
            return
        ents = np.concatenate(self._vdirty)
        self._vdirty = []
        if len(ents) == 0:
            return
        a = self._a
        changed = np.zeros(len(ents), np.bool_)
        K.publish_kernel(ents, a.ent_head, a.row_next, a.rows, a.row_ts, float(self.half_life_s),
                         a.pub, a.pub_ok, changed)
        a.ent_vdirty[ents] = 0
        self._pending.update(ents[changed].tolist())

    def _indices(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        get = self._eid.get
        return np.fromiter((get(i, -1) for i in ids), np.int64, len(ids))

    def vectors(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return current unit vectors of namespaced ``ids``.

        Returns
        -------
        vectors, mask
            Read-only ``(len(ids), dim)`` float32 (L2 norm 1 where present, zero rows
            elsewhere) and a read-only ``(len(ids),)`` bool mask of ids with a vector.
            Unknown ids are simply absent (mask False), never an error.
        """
        self._refresh()
        idx = self._indices(ids)
        known = idx >= 0
        mask = np.zeros(len(ids), np.bool_)
        mask[known] = self._a.pub_ok[idx[known]]
        out = np.zeros((len(ids), self.dim), np.float32)
        out[mask] = self._a.pub[idx[mask]]
        out.flags.writeable = False
        mask.flags.writeable = False
        return out, mask

    def changed(self) -> set[EntityId]:
        """Return ids whose published vector changed bitwise (or appeared) since the last call."""
        self._refresh()
        out = {self._ids[e] for e in self._pending}
        self._pending = set()
        return out

    def entity_ids(self) -> list[EntityId]:
        """Return every id that has a vector, sorted."""
        self._refresh()
        ok = np.flatnonzero(self._a.pub_ok[: self._a.n_ent])
        return sorted(self._ids[e] for e in ok.tolist())

    def _rows_of(self, e: int) -> list[int]:
        out, r = [], int(self._a.ent_head[e])
        while r >= 0:
            out.append(r)
            r = int(self._a.row_next[r])
        return out

    def update_counts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        """Return how many events changed each id's rows (0 if unknown); ``(len(ids),)`` int64.

        A user counts its own events; an item counts its engagements plus the events of
        other items that paired with it (both change its context row).
        """
        out = np.zeros(len(ids), np.int64)
        for k, e in enumerate(self._indices(ids).tolist()):
            if e >= 0:
                out[k] = sum(int(self._a.row_cnt[r]) for r in self._rows_of(e))
        return out

    def last_event_ts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.float64]:
        """Return the latest event time (s) that touched each id (NaN if unknown)."""
        out = np.full(len(ids), np.nan)
        for k, e in enumerate(self._indices(ids).tolist()):
            if e >= 0:
                out[k] = max(float(self._a.row_ts[r]) for r in self._rows_of(e))
        return out

    # ------------------------------------------------------------------ scoring
    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> Matrix:
        """Score every candidate item for every user (higher is better).

        ``score = cos(u, c_i) + affinity_weight * a_ui / max_j a_uj``, where ``a_ui`` is the
        decayed user-item affinity (sum of the user's event weights on the item, half-life
        ``affinity_half_life_s``) and the cosine is between published vectors (0 when
        either is absent). DESIGN §7 allows this combination; with the default weight a
        user's past items rank by recency-weighted frequency, ahead of never-seen items
        that are ranked by item-based CF through the cosine.

        Parameters
        ----------
        users, items
            Namespaced ids; unknown ids score 0 (cosine) and have no affinity.

        Returns
        -------
        Matrix
            Shape ``(len(users), len(items))`` float32.
        """
        u_vec, _ = self.vectors(users)
        i_vec, _ = self.vectors(items)
        scores = u_vec @ i_vec.T
        if self.affinity_weight > 0 and len(users) and len(items):
            a = self._a
            i_idx = self._indices(items)
            col_of_ent = np.full(a.n_ent + 1, -1, np.int64)
            known = i_idx >= 0
            uniq, inv = np.unique(i_idx[known], return_inverse=True)
            col_of_ent[uniq] = np.arange(len(uniq))
            aff = np.zeros((len(users), len(uniq) + 1), np.float64)
            K.affinity_kernel(self._indices(users), a.ent_head, a.row_next, a.row_pair_head,
                              a.pair_next, a.pair_item_e, a.pair_val, a.pair_ts, col_of_ent,
                              self._ahl(), aff)
            top = aff.max(axis=1, keepdims=True)
            seen = aff > 0
            np.divide(aff, top, out=aff, where=top > 0)
            aff[seen] += 1.0
            cols = np.full(len(items), len(uniq), np.int64)
            cols[known] = inv
            scores = scores + np.float32(self.affinity_weight) * aff[:, cols].astype(np.float32)
        import os
        beta = float(os.environ.get("POPW", "0"))
        if beta:
            a = self._a
            i_idx = self._indices(items)
            n = a.n_row
            ref = a.row_ts[:n].max()
            mass = a.row_mass[:n] * 0.5 ** ((ref - a.row_ts[:n]) / self.half_life_s)
            pe = np.zeros(a.n_ent + 1)
            np.add.at(pe, a.row_ent[:n], mass)
            pop = np.where(i_idx >= 0, pe[i_idx], 0.0)
            pop = pop / max(pop.max(), 1e-300)
            scores = scores + np.float32(beta) * (pop if os.environ.get("LIN") else np.sqrt(pop)).astype(np.float32)
        return np.ascontiguousarray(scores, np.float32)

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> npt.NDArray[np.float32]:
        """Score candidate items for one user: row 0 of :meth:`score_matrix`."""
        return self.score_matrix([user], items)[0]

    # ------------------------------------------------------------------ persistence
    def _tables(self, rows: Iterable[int], pairs: Iterable[int], parts: Iterable[int]) -> S.Tables:
        a, ids = self._a, self._ids
        t = S.Tables()
        for r in rows:
            win = None
            slot = int(a.row_slot[r])
            if slot >= 0:
                n = int(a.win_len[slot])
                win = [(ids[int(a.win_e[slot, k])], float(a.win_ts[slot, k]),
                        float(a.win_w[slot, k])) for k in range(n)]
            t.rows.append(S.RowRec(int(a.row_part[r]), ids[int(a.row_ent[r])], int(a.row_cnt[r]),
                                   float(a.row_ts[r]), float(a.row_mass[r]),
                                   a.rows[r].copy(), win))
        for q in pairs:
            ur = int(a.pair_user_row[q])
            t.pairs.append(S.PairRec(int(a.row_part[ur]), ids[int(a.row_ent[ur])],
                                     ids[int(a.pair_item_e[q])], float(a.pair_val[q]),
                                     float(a.pair_ts[q])))
        for k in parts:
            t.parts.append(S.PartRec(int(a.part_id[k]), float(a.part_mass[k]), float(a.part_ts[k])))
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
        recs = S.encode(self._tables(rows, pairs, parts))
        a.row_sdirty[rows] = 0
        a.pair_sdirty[pairs] = 0
        a.part_sdirty[parts] = 0
        if not self._meta_emitted:
            recs[S.META_KEY] = self._meta_bytes()
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
        meta, tables = S.decode(records, self.dim)
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
        d = S.to_arrays(t, self.dim)
        d["params"] = np.array(self._meta_bytes()[1:].decode())
        return d

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one produced by :meth:`state_dict`.

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
        self._rebuild(S.from_arrays(state, self.dim))
        self._meta_emitted = False

    def _rebuild(self, t: S.Tables) -> None:
        self._reset()
        a = self._a
        new: list[int] = []
        for rec in sorted(t.rows, key=lambda x: (x.entity, x.partition)):
            e = self._eid.get(rec.entity)
            if e is None:
                e = self._entity(rec.entity, new)
            if ((rec.partition << _SHIFT) | e) in self._row_of:
                msg = f"cooc state has two rows for {rec.entity!r} in partition {rec.partition}"
                raise StateError(msg)
            r = self._row(rec.partition, e, user=rec.window is not None)
            a = self._a
            a.rows[r] = rec.vector
            a.row_cnt[r], a.row_ts[r], a.row_mass[r] = rec.count, rec.last_ts, rec.mass
        for rec in t.rows:
            if rec.window is None:
                continue
            r = self._row_of[(rec.partition << _SHIFT) | self._eid[rec.entity]]
            slot = int(a.row_slot[r])
            if len(rec.window) > self.window:
                msg = (f"cooc state window of {rec.entity!r} has {len(rec.window)} items, "
                       f"more than window={self.window}")
                raise StateError(msg)
            for k, (item, ts, w) in enumerate(rec.window):
                ir = self._row_of.get((rec.partition << _SHIFT) | self._eid.get(item, -1))
                if ir is None:
                    msg = (f"cooc state window of {rec.entity!r} names {item!r}, which has no row "
                           f"in partition {rec.partition}")
                    raise StateError(msg)
                a.win_e[slot, k], a.win_row[slot, k] = a.row_ent[ir], ir
                a.win_ts[slot, k], a.win_w[slot, k] = ts, w
            a.win_len[slot] = len(rec.window)
        for prec in sorted(t.pairs, key=lambda x: (x.user, x.partition, x.item)):
            ur = self._row_of.get((prec.partition << _SHIFT) | self._eid.get(prec.user, -1))
            ie = self._eid.get(prec.item)
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
