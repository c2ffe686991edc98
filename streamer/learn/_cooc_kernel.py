"""Compiled kernels and growable arrays of the decayed co-occurrence learner.

Private module. Every kernel is ``numba.njit(cache=True)`` without ``fastmath``, so the
floating-point operations are the IEEE ones in program order: the same event sequence
gives bitwise-identical state on a given platform (``pow`` comes from the platform libm).

Layout (all indices are int64):

* entity ``e``: random vector ``rand[e]``, published unit vector ``pub[e]`` (float32),
  ``pub_ok[e]``, head of its row list ``ent_head[e]`` (rows sorted by partition).
* row ``r`` = one entity in one source partition: accumulator ``rows[r]`` (float32),
  ``row_ts`` (event s of the last touch), ``row_cnt`` (events that touched it),
  ``row_mass`` (decayed engagement mass), ``row_next`` (next row of the same entity),
  ``row_slot`` (window slot of a user row, else -1), ``row_pair_head`` (user rows).
* window slot ``s``: the user's distinct recent items, oldest first, in
  ``win_e/win_row/win_ts/win_w[s, :win_len[s]]``.
* pair ``q`` = (user row, item): decayed affinity ``pair_val`` at ``pair_ts``.
* partition index ``k``: decayed total engagement mass ``part_mass`` at ``part_ts``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

NO_TS = -np.inf
CTX_NONE = 0
CTX_IDF = 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def rademacher_rows(states: npt.NDArray[np.uint64], dim: int) -> npt.NDArray[np.float32]:
    """Expand 64-bit seeds into dense ``±1/sqrt(dim)`` rows with SplitMix64 (integer-exact).

    Parameters
    ----------
    states
        Shape ``(n,)`` uint64 per-entity seeds.
    dim
        Row length.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, dim)`` float32, each row of unit L2 norm.

    Notes
    -----
    SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
    OOPSLA 2014) uses only integer arithmetic, so the rows are identical on every platform.
    Dense ±1 entries are Achlioptas' database-friendly random projection (JCSS 2003).
    """
    n = len(states)
    words = (dim + 63) // 64
    k = np.arange(1, words + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = states.astype(np.uint64)[:, None] + _GOLDEN * k[None, :]
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    bits = np.unpackbits(z.astype("<u8").view(np.uint8).reshape(n, words * 8), axis=1,
                         bitorder="little")[:, :dim]
    scale = np.float32(1.0 / np.sqrt(dim))
    return np.where(bits.astype(bool), scale, -scale).astype(np.float32)


@njit(cache=True)
def _decay(age: float, half_life_s: float) -> float:  # pragma: no cover - compiled
    if age <= 0.0:
        return 1.0
    return 0.5 ** (age / half_life_s)


@njit(cache=True)
def _touch(r, t, rows, row_ts, row_mass, hl):  # pragma: no cover - compiled
    """Bring row ``r`` forward to ``t``; return the factor for a contribution made at ``t``."""
    last = row_ts[r]
    if t >= last:
        if last != NO_TS and t > last:
            f = 0.5 ** ((t - last) / hl)
            for d in range(rows.shape[1]):
                rows[r, d] = rows[r, d] * f
            row_mass[r] = row_mass[r] * f
        row_ts[r] = t
        return 1.0
    return 0.5 ** ((last - t) / hl)


IDF_MAX_LOG_RATIO = 30.0
MAX_COEF = 1e30  # contributions are clamped so float32 rows cannot overflow to inf


@njit(cache=True)
def _coef(x):  # pragma: no cover - compiled
    return np.float32(x if x < MAX_COEF else MAX_COEF)


@njit(cache=True)
def _weight(mode, mass, mass_ts, total, total_ts, hl):  # pragma: no cover - compiled
    """Context weight ``log(1 + N/m)`` of an item, both decayed to a common time.

    ``N/m`` does not depend on the time it is read at, so it is computed from the stored
    ``(value, last_ts)`` pairs in the log domain: ``log N - log m + (t_N - t_m) ln2 / hl``,
    capped at ``IDF_MAX_LOG_RATIO`` so an underflowed marginal cannot give inf.
    """
    if mode != CTX_IDF:
        return 1.0
    if mass > 0.0 and total > 0.0:
        x = np.log(total) - np.log(mass) + (total_ts - mass_ts) * np.log(2.0) / hl
        x = min(x, IDF_MAX_LOG_RATIO)
    else:
        x = IDF_MAX_LOG_RATIO
    if x > 0.0:
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@njit(cache=True)
def _mark(r, row_ent, row_sdirty, ent_vdirty, out_rows, out_ents, counts):  # pragma: no cover
    if row_sdirty[r] == 0:
        row_sdirty[r] = 1
        out_rows[counts[0]] = r
        counts[0] += 1
    e = row_ent[r]
    if ent_vdirty[e] == 0:
        ent_vdirty[e] = 1
        out_ents[counts[1]] = e
        counts[1] += 1


@njit(cache=True)
def learn_kernel(  # pragma: no cover - compiled
    ev_ur, ev_ir, ev_ie, ev_pr, ev_pk, ev_w, ev_t,
    rand, rows, row_ts, row_cnt, row_mass, row_ent, row_slot, row_sdirty,
    win_e, win_row, win_ts, win_w, win_len,
    pair_val, pair_ts, pair_sdirty,
    part_mass, part_ts, part_sdirty,
    ent_vdirty,
    hl, ahl, max_gap, self_w, ctx_mode, user_ctx,
    out_rows, out_ents, out_pairs, out_parts, counts,
):
    """Apply events strictly in order. ``counts`` = [n_rows, n_ents, n_pairs, n_parts] out."""
    dim = rows.shape[1]
    window = win_e.shape[1]
    for ev in range(ev_t.shape[0]):
        t = ev_t[ev]
        w = np.float64(ev_w[ev])
        ur = ev_ur[ev]
        ir = ev_ir[ev]
        ie = ev_ie[ev]
        pk = ev_pk[ev]
        slot = row_slot[ur]

        # partition total mass (for idf weighting)
        lastn = part_ts[pk]
        if t >= lastn:
            if lastn != NO_TS and t > lastn:
                part_mass[pk] = part_mass[pk] * 0.5 ** ((t - lastn) / hl)
            part_ts[pk] = t
            part_mass[pk] += w
        else:
            part_mass[pk] += w * 0.5 ** ((lastn - t) / hl)
        if part_sdirty[pk] == 0:
            part_sdirty[pk] = 1
            out_parts[counts[3]] = pk
            counts[3] += 1
        total, total_ts = part_mass[pk], part_ts[pk]

        # the item's own row: marginal mass, then the self term
        fi = _touch(ir, t, rows, row_ts, row_mass, hl)
        row_mass[ir] += w * fi
        row_cnt[ir] += 1
        wi = _weight(ctx_mode, row_mass[ir], row_ts[ir], total, total_ts, hl)
        c = _coef(self_w * w * fi)
        if c != 0.0:
            for d in range(dim):
                rows[ir, d] += c * rand[ie, d]
        _mark(ir, row_ent, row_sdirty, ent_vdirty, out_rows, out_ents, counts)

        # pairs with the user's recent distinct items (oldest first)
        n_win = win_len[slot]
        for k in range(n_win):
            j = win_e[slot, k]
            if j == ie:
                continue
            gap = t - win_ts[slot, k]
            if gap < 0.0:
                gap = -gap
            if gap > max_gap:
                continue
            jr = win_row[slot, k]
            pw = w * np.float64(win_w[slot, k])
            wj = _weight(ctx_mode, row_mass[jr], row_ts[jr], total, total_ts, hl)
            c = _coef(pw * wj * fi)
            for d in range(dim):
                rows[ir, d] += c * rand[j, d]
            fj = _touch(jr, t, rows, row_ts, row_mass, hl)
            c = _coef(pw * wi * fj)
            for d in range(dim):
                rows[jr, d] += c * rand[ie, d]
            row_cnt[jr] += 1
            _mark(jr, row_ent, row_sdirty, ent_vdirty, out_rows, out_ents, counts)

        # the user's row: decayed sum of engaged items' random vectors
        fu = _touch(ur, t, rows, row_ts, row_mass, hl)
        row_mass[ur] += w * fu
        row_cnt[ur] += 1
        c = _coef(w * (wi if user_ctx else 1.0) * fu)
        for d in range(dim):
            rows[ur, d] += c * rand[ie, d]
        _mark(ur, row_ent, row_sdirty, ent_vdirty, out_rows, out_ents, counts)

        # decayed user-item affinity
        pr = ev_pr[ev]
        lastp = pair_ts[pr]
        if t >= lastp:
            if lastp != NO_TS and t > lastp:
                pair_val[pr] = pair_val[pr] * 0.5 ** ((t - lastp) / ahl)
            pair_ts[pr] = t
            pair_val[pr] += w
        else:
            pair_val[pr] += w * 0.5 ** ((lastp - t) / ahl)
        if pair_sdirty[pr] == 0:
            pair_sdirty[pr] = 1
            out_pairs[counts[2]] = pr
            counts[2] += 1

        # window: move-to-newest if present, else append (dropping the oldest when full)
        if window > 0:
            pos = -1
            for k in range(n_win):
                if win_e[slot, k] == ie:
                    pos = k
                    break
            if pos < 0 and n_win == window:
                pos = 0
            if pos >= 0:
                for k in range(pos, n_win - 1):
                    win_e[slot, k] = win_e[slot, k + 1]
                    win_row[slot, k] = win_row[slot, k + 1]
                    win_ts[slot, k] = win_ts[slot, k + 1]
                    win_w[slot, k] = win_w[slot, k + 1]
                n_win -= 1
            win_e[slot, n_win] = ie
            win_row[slot, n_win] = ir
            win_ts[slot, n_win] = t
            win_w[slot, n_win] = ev_w[ev]
            win_len[slot] = n_win + 1


@njit(cache=True)
def publish_kernel(ents, ent_head, row_next, rows, row_ts, hl,
                   pub, pub_ok, changed):  # pragma: no cover - compiled
    """Recompute published vectors of ``ents``; set ``changed[a]`` where they differ bitwise.

    The merge sums each partition row (in partition order) decayed to the entity's latest
    ``row_ts``, in float64, then L2-normalises (after max-abs scaling, so tiny values
    neither underflow nor overflow) and rounds to float32. A zero sum gives no vector.
    """
    dim = rows.shape[1]
    acc = np.zeros(dim, np.float64)
    for a in range(ents.shape[0]):
        e = ents[a]
        ref = NO_TS
        r = ent_head[e]
        while r >= 0:
            if row_ts[r] > ref:
                ref = row_ts[r]
            r = row_next[r]
        for d in range(dim):
            acc[d] = 0.0
        r = ent_head[e]
        while r >= 0:
            f = 1.0 if row_ts[r] >= ref else 0.5 ** ((ref - row_ts[r]) / hl)
            if f > 0.0:
                for d in range(dim):
                    acc[d] += np.float64(rows[r, d]) * f
            r = row_next[r]
        m = 0.0
        for d in range(dim):
            v = abs(acc[d])
            if v > m:
                m = v
        ok = m > 0.0 and np.isfinite(m)
        if ok:
            s = 0.0
            for d in range(dim):
                acc[d] = acc[d] / m
                s += acc[d] * acc[d]
            nrm = np.sqrt(s)
            for d in range(dim):
                acc[d] = acc[d] / nrm
        diff = ok != pub_ok[e]
        for d in range(dim):
            v32 = np.float32(acc[d]) if ok else np.float32(0.0)
            if v32 != pub[e, d]:
                diff = True
            pub[e, d] = v32
        pub_ok[e] = ok
        changed[a] = diff


@njit(cache=True)
def log_affinity_kernel(user_ents, ent_head, row_next, row_pair_head, pair_next, pair_item_e,
                        pair_val, pair_ts, col_of_ent, ahl, out):  # pragma: no cover
    """Fill ``out[a, col]`` with ``log`` of user ``a``'s decayed affinity to each column.

    Affinities are decayed to the user's latest pair time (the ranking of one user's
    items does not depend on the reference time) and merged over the user's partition
    rows, in the log domain, so a pair many half-lives old keeps a finite log-affinity
    (it would underflow to 0 in linear scale and stop counting as engaged). ``out`` must
    be filled with ``-inf`` (no pair).
    """
    ln2 = math.log(2.0)
    for a in range(user_ents.shape[0]):
        ue = user_ents[a]
        if ue < 0:
            continue
        ref = -np.inf
        r = ent_head[ue]
        while r >= 0:
            q = row_pair_head[r]
            while q >= 0:
                if pair_ts[q] > ref:
                    ref = pair_ts[q]
                q = pair_next[q]
            r = row_next[r]
        r = ent_head[ue]
        while r >= 0:
            q = row_pair_head[r]
            while q >= 0:
                col = col_of_ent[pair_item_e[q]]
                if col >= 0 and pair_val[q] > 0.0:
                    age = ref - pair_ts[q]
                    lv = math.log(pair_val[q])
                    if age > 0.0:
                        lv -= age / ahl * ln2
                    cur = out[a, col]
                    if cur == -np.inf:
                        out[a, col] = lv
                    elif lv > cur:
                        out[a, col] = lv + math.log1p(math.exp(cur - lv))
                    else:
                        out[a, col] = cur + math.log1p(math.exp(lv - cur))
                q = pair_next[q]
            r = row_next[r]


@njit(cache=True)
def mass_kernel(ents, ent_head, row_next, row_mass, row_ts, hl, out):  # pragma: no cover
    """Fill ``out[a]`` with entity ``ents[a]``'s decayed mass, all read at one common time.

    The common time is the latest ``row_ts`` among the given entities' rows, so the
    masses are comparable (their ranking does not depend on that time). ``-1`` gives 0.
    """
    ref = NO_TS
    for a in range(ents.shape[0]):
        if ents[a] < 0:
            continue
        r = ent_head[ents[a]]
        while r >= 0:
            if row_ts[r] > ref:
                ref = row_ts[r]
            r = row_next[r]
    for a in range(ents.shape[0]):
        out[a] = 0.0
        if ents[a] < 0:
            continue
        r = ent_head[ents[a]]
        while r >= 0:
            out[a] += row_mass[r] * _decay(ref - row_ts[r], hl)
            r = row_next[r]


def _grown(arr: np.ndarray, size: int, fill: float | int) -> np.ndarray:
    new = np.full((size, *arr.shape[1:]), fill, dtype=arr.dtype)
    new[: len(arr)] = arr
    return new


class Arrays:
    """Growable state arrays (capacity doubles). Not thread-safe."""

    ENT = {"rand": 0.0, "pub": 0.0, "pub_ok": False, "ent_head": -1, "ent_vdirty": 0}
    ROW = {"rows": 0.0, "row_ts": NO_TS, "row_cnt": 0, "row_mass": 0.0, "row_ent": -1,
           "row_part": 0, "row_next": -1, "row_slot": -1, "row_pair_head": -1, "row_sdirty": 0}
    WIN = {"win_e": -1, "win_row": -1, "win_ts": 0.0, "win_w": 0.0, "win_len": 0}
    PAIR = {"pair_val": 0.0, "pair_ts": NO_TS, "pair_next": -1, "pair_item_e": -1,
            "pair_user_row": -1, "pair_sdirty": 0}
    PART = {"part_mass": 0.0, "part_ts": NO_TS, "part_sdirty": 0, "part_id": 0}

    def __init__(self, dim: int, window: int) -> None:
        c = 16
        i64, f64, f32, u8 = np.int64, np.float64, np.float32, np.uint8
        self.rand = np.zeros((c, dim), f32)
        self.pub = np.zeros((c, dim), f32)
        self.pub_ok = np.zeros(c, np.bool_)
        self.ent_head = np.full(c, -1, i64)
        self.ent_vdirty = np.zeros(c, u8)
        self.rows = np.zeros((c, dim), f32)
        self.row_ts = np.full(c, NO_TS, f64)
        self.row_cnt = np.zeros(c, i64)
        self.row_mass = np.zeros(c, f64)
        self.row_ent = np.full(c, -1, i64)
        self.row_part = np.zeros(c, np.int32)
        self.row_next = np.full(c, -1, i64)
        self.row_slot = np.full(c, -1, i64)
        self.row_pair_head = np.full(c, -1, i64)
        self.row_sdirty = np.zeros(c, u8)
        w = window
        self.win_e = np.full((c, w), -1, i64)
        self.win_row = np.full((c, w), -1, i64)
        self.win_ts = np.zeros((c, w), f64)
        self.win_w = np.zeros((c, w), f32)
        self.win_len = np.zeros(c, i64)
        self.pair_val = np.zeros(c, f64)
        self.pair_ts = np.full(c, NO_TS, f64)
        self.pair_next = np.full(c, -1, i64)
        self.pair_item_e = np.full(c, -1, i64)
        self.pair_user_row = np.full(c, -1, i64)
        self.pair_sdirty = np.zeros(c, u8)
        self.part_mass = np.zeros(c, f64)
        self.part_ts = np.full(c, NO_TS, f64)
        self.part_sdirty = np.zeros(c, u8)
        self.part_id = np.zeros(c, np.int32)
        self.n_ent = self.n_row = self.n_win = self.n_pair = self.n_part = 0

    def _ensure(self, group: dict[str, object], need: int) -> None:
        first = next(iter(group))
        cap = len(getattr(self, first))
        if need <= cap:
            return
        size = max(need, 2 * cap)
        for name, fill in group.items():
            setattr(self, name, _grown(getattr(self, name), size, fill))  # type: ignore[arg-type]

    def add_entities(self, k: int) -> int:
        """Reserve ``k`` entity slots; return the first index."""
        self._ensure(self.ENT, self.n_ent + k)
        first = self.n_ent
        self.n_ent += k
        return first

    def add_row(self) -> int:
        """Reserve one row; return its index."""
        self._ensure(self.ROW, self.n_row + 1)
        self.n_row += 1
        return self.n_row - 1

    def add_slot(self) -> int:
        """Reserve one window slot; return its index."""
        self._ensure(self.WIN, self.n_win + 1)
        self.n_win += 1
        return self.n_win - 1

    def add_pair(self) -> int:
        """Reserve one pair; return its index."""
        self._ensure(self.PAIR, self.n_pair + 1)
        self.n_pair += 1
        return self.n_pair - 1

    def add_part(self, partition: int) -> int:
        """Reserve one partition index for source ``partition``; return it."""
        self._ensure(self.PART, self.n_part + 1)
        self.part_id[self.n_part] = partition
        self.n_part += 1
        return self.n_part - 1
