"""Compiled kernels of the online skip-gram learner (private; see ``skipgram.py``).

Everything the hot path touches is a preallocated numpy array (``np.zeros``/``np.empty``:
pages are committed by the OS only when first written, so capacity costs address space,
not memory) and a ``numba.njit`` kernel that applies one event at a time, in order:

* **Vocabulary** — open-addressing hash tables (linear probing, backward-shift deletion:
  Knuth, TAOCP vol. 3, §6.4, Algorithm R) keyed by the 64-bit hash of each id, one for
  items and one for users. Row storage never moves: admitting ids only writes their rows.
* **Rows** — ``FREE`` (unused), ``CAND`` (seen, counted, below the admission threshold /
  user without a vector yet), ``LIVE`` (item admitted: has ``syn0``/``syn1``; user has a
  vector). Freed rows go to a LIFO free stack.
* **SGNS** — Mikolov et al., "Distributed Representations of Words and Phrases and their
  Compositionality", NIPS 2013; item2vec (Barkan & Koenigstein, MLSP 2016). One update per
  (context, center) pair exactly as gensim's ``fast_sentence_sg_neg`` (``syn0[context]``
  predicts ``syn1[center]`` and ``negatives`` noise items), but with the sigmoid clamped
  at ±6 instead of skipping the pair.
* **Noise distribution** — Kaji & Kobayashi, "Incremental Skip-gram Model with Negative
  Sampling", EMNLP 2017, §3.2: a unigram table of ``tau`` slots; when an item's
  (decayed) count goes from ``f`` to ``f'``, ``tau * (f'^a - f^a) / z`` random slots (with
  stochastic rounding) are overwritten with it, ``z`` being the running ``sum f^a``.
* **Random numbers** — gensim's 48-bit LCG (``next = next * 25214903917 + 11 mod 2**48``),
  kept in the state, so a stream gives the same draws however it is cut into batches.
  Initial vectors: SplitMix64 of the id hash and the seed (Steele et al., OOPSLA 2014).

Floating point: ``fastmath`` with re-association only (no ``nnan``/``ninf``), so a given
build on a given CPU is bitwise deterministic while dot products vectorise.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FREE = 0
CAND = 1
LIVE = 2

# global integer state (gi)
G_PAIRS = 0
G_RNG = 1
G_I_HWM = 2
G_U_HWM = 3
G_I_FREE = 4
G_U_FREE = 5
G_I_SWEEP = 6
G_U_SWEEP = 7
G_EVENTS = 8
G_I_DROPPED = 9
G_U_DROPPED = 10
G_I_EVICTED = 11
G_U_EVICTED = 12
G_SLOTS = 13
G_I_LIVE = 14
G_U_LIVE = 15
G_TAB_FILL = 16
G_LEN = 17
# global float state (gf)
F_Z = 0
F_NOW = 1
F_LEN = 2
# counters of the dirty lists (cnt)
C_DV_I = 0
C_DS_I = 1
C_DV_U = 2
C_DS_U = 3
C_TAB = 4
C_FREE_I = 5
C_FREE_U = 6
C_LEN = 7
# log ops
OP_EVICT = 0
OP_ASSIGN = 1

CHUNK = 256  # slots per noise-table / free-stack state record

EXP_TABLE_SIZE = 1000
MAX_EXP = 6.0

_FM = {"reassoc", "contract", "nsz", "arcp"}
_LCG_MUL = 25214903917
_LCG_MASK = (1 << 48) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def exp_table() -> np.ndarray:
    """Return gensim's sigmoid table: ``(EXP_TABLE_SIZE,)`` float32 over ``[-6, 6)``."""
    x = (np.arange(EXP_TABLE_SIZE, dtype=np.float64) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP
    e = np.exp(x)
    return (e / (e + 1)).astype(np.float32)


# --- hash tables -------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def ht_find(keys, vals, h):  # pragma: no cover - compiled
    """Return the row of hash ``h`` (int64, != 0) or -1."""
    mask = keys.shape[0] - 1
    s = h & mask
    while True:
        k = keys[s]
        if k == 0:
            return -1
        if k == h:
            return vals[s]
        s = (s + 1) & mask


@njit(cache=True, nogil=True)
def ht_insert(keys, vals, h, row):  # pragma: no cover - compiled
    """Insert ``h -> row`` (``h`` must be absent; the table must have a free slot)."""
    mask = keys.shape[0] - 1
    s = h & mask
    while keys[s] != 0:
        s = (s + 1) & mask
    keys[s] = h
    vals[s] = row


@njit(cache=True, nogil=True)
def ht_delete(keys, vals, h):  # pragma: no cover - compiled
    """Delete ``h`` by backward shift (no tombstones). No-op when absent."""
    mask = keys.shape[0] - 1
    i = h & mask
    while True:
        k = keys[i]
        if k == 0:
            return
        if k == h:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == 0:
            break
        home = k & mask
        # the entry at j may move to i unless its home lies cyclically in (i, j]
        if i <= j:
            if i < home <= j:
                continue
        elif home > i or home <= j:
            continue
        keys[i] = k
        vals[i] = vals[j]
        i = j
    keys[i] = 0
    vals[i] = -1


@njit(cache=True, nogil=True)
def ht_lookup_many(keys, vals, hashes, state, want):  # pragma: no cover - compiled
    """Rows of ``hashes`` whose row state is ``>= want`` (else -1); shape ``(n,)`` int64."""
    out = np.full(hashes.shape[0], -1, np.int64)
    for k in range(hashes.shape[0]):
        r = ht_find(keys, vals, hashes[k])
        if r >= 0 and state[r] >= want:
            out[k] = r
    return out


@njit(cache=True, nogil=True)
def ht_rebuild(keys, vals, row_hash, state, hwm):  # pragma: no cover - compiled
    """Clear the table and insert every non-free row below ``hwm`` (after a state load)."""
    keys[:] = 0
    vals[:] = -1
    for r in range(hwm):
        if state[r] != FREE:
            ht_insert(keys, vals, row_hash[r], r)


# --- small helpers ------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _decay(age, half_life_s):  # pragma: no cover - compiled
    if not (age > 0.0) or half_life_s == np.inf:  # NaN age: warm-started, no time yet
        return 1.0
    return 0.5 ** (age / half_life_s)


@njit(cache=True, nogil=True, inline="always")
def _lcg(x):  # pragma: no cover - compiled
    """One step of the 48-bit LCG gensim uses for negative sampling."""
    return (x * _LCG_MUL + 11) & _LCG_MASK


@njit(cache=True, nogil=True, inline="always")
def _rng_next(gi):  # pragma: no cover - compiled
    x = _lcg(gi[G_RNG])
    gi[G_RNG] = x
    return x


@njit(cache=True, nogil=True, inline="always")
def _log(log, log_n, op, kind, row, b):  # pragma: no cover - compiled
    """Append ``(op, kind, row, b)`` to the per-call log read back by Python."""
    k = log_n[0]
    log[k, 0] = op
    log[k, 1] = kind
    log[k, 2] = row
    log[k, 3] = b
    log_n[0] = k + 1


@njit(cache=True, nogil=True, inline="always")
def _mark(flags, lst, cnt, which, row):  # pragma: no cover - compiled
    if flags[row] == 0:
        flags[row] = 1
        lst[cnt[which]] = row
        cnt[which] += 1


@njit(cache=True, nogil=True, inline="always")
def _touch_dv(flags, lst, cnt, which, row, pub, pre, pre_ok, vecs):  # pragma: no cover
    """Flag ``row``'s vector as changed; call *before* writing it.

    The first time a row is flagged since the last ``changed()``, the published vector
    (if the row's id had one then: ``pub[row]``) is copied to ``pre`` so that ``changed()``
    can compare against it and stay exact even when an id is evicted and comes back.
    """
    if flags[row] == 0:
        flags[row] = 1
        k = cnt[which]
        lst[k] = row
        if pub[row]:
            for d in range(vecs.shape[1]):
                pre[k, d] = vecs[row, d]
            pre_ok[k] = 1
        else:
            pre_ok[k] = 0
        cnt[which] = k + 1


@njit(cache=True, nogil=True)
def init_row(syn0, r, h, seed):  # pragma: no cover - compiled
    """Fill ``syn0[r]`` with uniform(-0.5, 0.5) / dim (gensim init), SplitMix64(hash, seed)."""
    dim = syn0.shape[1]
    base = np.uint64(h) ^ (np.uint64(seed) * _MIX2)
    for d in range(dim):
        z = base + _GOLDEN * np.uint64(d + 1)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        u = np.float64(z >> np.uint64(40)) / 16777216.0
        syn0[r, d] = np.float32((u - 0.5) / dim)


# --- the learning kernel ------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def _train_pair(ctx, center, syn0, syn1, i_state, check_state, table, filled, work, etab,
                alpha, negatives, rng, neg_buf, nb):  # pragma: no cover - compiled
    """One SGNS update: ``syn0[ctx]`` predicts ``syn1[center]`` against noise items.

    ``rng`` is the LCG state and ``nb`` the fill of ``neg_buf`` (noise rows whose ``syn1``
    was updated, marked dirty after the batch), both kept in registers by the caller;
    returns both. The hot path touches no flag arrays: ``ctx`` rows were flagged by the
    batch pre-pass, and the row-state check of a noise row is needed (``check_state``)
    only when eviction can leave stale rows in the table.
    """
    dim = syn0.shape[1]
    l1 = syn0[ctx]
    for d in range(dim):
        work[d] = 0.0
    for k in range(negatives + 1):
        if k == 0:
            target = center
            label = np.float32(1.0)
        else:
            rng = _lcg(rng)
            target = np.int64(table[((rng >> 16) * filled) >> 32])
            if target == center:
                continue
            if check_state and i_state[target] != LIVE:
                continue
            label = np.float32(0.0)
        l2 = syn1[target]
        f = np.float32(0.0)
        for d in range(dim):
            f += l1[d] * l2[d]
        if f >= MAX_EXP:
            sig = np.float32(1.0)
        elif f <= -MAX_EXP:
            sig = np.float32(0.0)
        else:
            sig = etab[int((f + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2.0))]
        g = (label - sig) * alpha
        if g == 0.0:
            continue
        for d in range(dim):
            work[d] += g * l2[d]
            l2[d] += g * l1[d]
        if k > 0:
            neg_buf[nb] = target
            nb += 1
    for d in range(dim):
        l1[d] += work[d]
    return rng, nb


@njit(cache=True, nogil=True)
def _alloc(keys, vals, row_hash, state, free, gi, hwm_k, free_k, h, cap, f_flags, f_list,
           cnt, f_which):  # pragma: no cover - compiled
    if gi[free_k] > 0:
        gi[free_k] -= 1
        r = free[gi[free_k]]
        _mark(f_flags, f_list, cnt, f_which, gi[free_k] // CHUNK)
    elif gi[hwm_k] < cap:
        r = gi[hwm_k]
        gi[hwm_k] += 1
    else:
        return -1
    row_hash[r] = h
    state[r] = CAND
    ht_insert(keys, vals, h, r)
    return r


@njit(cache=True, nogil=True)
def _free(keys, vals, row_hash, state, free, gi, free_k, r, f_flags, f_list, cnt,
          f_which):  # pragma: no cover - compiled
    ht_delete(keys, vals, row_hash[r])
    state[r] = FREE
    free[gi[free_k]] = r
    _mark(f_flags, f_list, cnt, f_which, gi[free_k] // CHUNK)
    gi[free_k] += 1


@njit(cache=True, nogil=True, fastmath=_FM)
def learn(
    # batch
    ev_ib, ev_ub, ev_w, ev_ts, bi_hash, bu_hash,
    # items
    i_keys, i_vals, i_hash, i_state, i_count, i_cts, i_nupd, syn0, syn1, i_free,
    # users
    u_keys, u_vals, u_hash, u_state, u_act, u_ats, u_mass, u_mts, u_last, u_nupd,
    u_hlen, u_hpos, u_hist_r, u_hist_h, u_vec, u_free,
    # noise table and globals
    table, gi, gf,
    # dirty flags and lists (persist until consumed)
    i_dv, dv_i, i_ds, ds_i, u_dv, dv_u, u_ds, ds_u, t_d, t_list, fi_d, fi_list, fu_d, fu_list,
    cnt, i_pub, pre_i, pre_ok_i, u_pub, pre_u, pre_ok_u,
    # per-call log of evictions/assignments: (op, kind, row, batch index)
    log, log_n,
    # params
    seed, window, negatives, max_gap_s, lr, lr_min, lr_decay_pairs, min_count,
    count_hl, user_hl, evict_below, sweep, alpha_pow, etab, work, neg_buf,
):  # pragma: no cover - compiled
    """Apply events ``0..n-1`` in order. See the module docstring for the algorithm.

    ``ev_ib``/``ev_ub`` index the batch's distinct item/user hashes ``bi_hash``/``bu_hash``.
    Weights are event weights (float32 > 0), ``ev_ts`` event time in seconds (float64).
    """
    n = ev_ib.shape[0]
    i_cap = i_state.shape[0]
    check_state = evict_below > 0.0  # only eviction leaves non-live rows in the table
    nb = 0
    # pre-pass: flag every row whose syn0 can change in this batch (the events' items and
    # their users' current windows), capturing published pre-images; rows created during
    # the batch are flagged where they are created
    pass_r = np.empty(n, np.int64)
    pass_u = np.empty(n, np.int64)
    for e in range(n):
        r0 = ht_find(i_keys, i_vals, bi_hash[ev_ib[e]])
        pass_r[e] = r0
        if r0 >= 0 and i_state[r0] == LIVE:
            _touch_dv(i_dv, dv_i, cnt, C_DV_I, r0, i_pub, pre_i, pre_ok_i, syn0)
            _mark(i_ds, ds_i, cnt, C_DS_I, r0)
        u0 = ht_find(u_keys, u_vals, bu_hash[ev_ub[e]])
        pass_u[e] = u0
        if u0 >= 0:
            for k in range(u_hlen[u0]):
                slot = (u_hpos[u0] - 1 - k) % window
                j = u_hist_r[u0, slot]
                if i_hash[j] == u_hist_h[u0, slot] and i_state[j] == LIVE:
                    _touch_dv(i_dv, dv_i, cnt, C_DV_I, j, i_pub, pre_i, pre_ok_i, syn0)
                    _mark(i_ds, ds_i, cnt, C_DS_I, j)
    u_cap = u_state.shape[0]
    tau = table.shape[0]
    dim = syn0.shape[1]
    for e in range(n):
        t = ev_ts[e]
        w = np.float64(ev_w[e])
        if not (w > 0.0) or not np.isfinite(w):
            w = 0.0
        if not np.isfinite(gf[F_NOW]):
            gf[F_NOW] = t
        elif t > gf[F_NOW]:
            # z = sum of f^a over live items, all decayed to "now": decays at rate a * ln2 / hl
            gf[F_Z] = gf[F_Z] * _decay(t - gf[F_NOW], count_hl) ** alpha_pow
            gf[F_NOW] = t
        now = gf[F_NOW]
        gi[G_EVENTS] += 1

        # ---- item: count, admission, noise table
        ih = bi_hash[ev_ib[e]]
        # the pre-pass row is still this id's unless it was evicted since (checked)
        r = pass_r[e]
        if r < 0 or i_state[r] == FREE or i_hash[r] != ih:
            r = ht_find(i_keys, i_vals, ih)
        if r < 0:
            r = _alloc(i_keys, i_vals, i_hash, i_state, i_free, gi, G_I_HWM, G_I_FREE, ih,
                       i_cap, fi_d, fi_list, cnt, C_FREE_I)
            if r < 0:
                gi[G_I_DROPPED] += 1
            else:
                i_count[r] = 0.0
                i_cts[r] = now
                i_nupd[r] = 0
                _log(log, log_n, OP_ASSIGN, 0, r, ev_ib[e])
        if r >= 0:
            i_nupd[r] += 1
            _mark(i_ds, ds_i, cnt, C_DS_I, r)
            f_old = i_count[r] * _decay(now - i_cts[r], count_hl)
            f_new = f_old + _decay(now - t, count_hl)
            i_count[r] = f_new
            i_cts[r] = now
            mass = 0.0
            if i_state[r] == CAND and f_new >= min_count:
                i_state[r] = LIVE
                gi[G_I_LIVE] += 1
                _touch_dv(i_dv, dv_i, cnt, C_DV_I, r, i_pub, pre_i, pre_ok_i, syn0)
                init_row(syn0, r, i_hash[r], seed)
                for d in range(dim):
                    syn1[r, d] = 0.0
                mass = f_new ** alpha_pow
            elif i_state[r] == LIVE:
                mass = f_new ** alpha_pow - f_old ** alpha_pow
            if mass > 0.0:
                z = gf[F_Z] + mass
                gf[F_Z] = z
                filled = gi[G_TAB_FILL]
                # fill phase: append ~mass copies (the prefix is then exactly the unigram^a
                # mass, in expectation); full table: overwrite ~tau * mass / z random slots
                x = mass if filled < tau else tau * (mass / z)
                k = int(x)
                if (_rng_next(gi) >> 24) / 16777216.0 < x - k:
                    k += 1
                if filled < tau:
                    if k > tau - filled:
                        k = tau - filled
                    for q in range(filled, filled + k):
                        table[q] = np.int32(r)
                        _mark(t_d, t_list, cnt, C_TAB, q // CHUNK)
                    gi[G_TAB_FILL] = filled + k
                else:
                    if k > tau:
                        k = tau
                    for _ in range(k):
                        s = ((_rng_next(gi) >> 16) * tau) >> 32
                        table[s] = np.int32(r)
                        _mark(t_d, t_list, cnt, C_TAB, s // CHUNK)
                gi[G_SLOTS] += k

        # ---- user: session window, pairs, co-embedded vector
        uh = bu_hash[ev_ub[e]]
        ur = pass_u[e]
        if ur < 0 or u_state[ur] == FREE or u_hash[ur] != uh:
            ur = ht_find(u_keys, u_vals, uh)
        if ur < 0:
            ur = _alloc(u_keys, u_vals, u_hash, u_state, u_free, gi, G_U_HWM, G_U_FREE, uh,
                        u_cap, fu_d, fu_list, cnt, C_FREE_U)
            if ur < 0:
                gi[G_U_DROPPED] += 1
            else:
                u_act[ur] = 0.0
                u_ats[ur] = now
                u_mass[ur] = 0.0
                u_mts[ur] = t
                u_last[ur] = np.nan
                u_nupd[ur] = 0
                u_hlen[ur] = 0
                u_hpos[ur] = 0
                _log(log, log_n, OP_ASSIGN, 1, ur, ev_ub[e])
        if ur >= 0:
            u_nupd[ur] += 1
            _mark(u_ds, ds_u, cnt, C_DS_U, ur)
            u_act[ur] = u_act[ur] * _decay(now - u_ats[ur], count_hl) + _decay(now - t, count_hl)
            u_ats[ur] = now
            last = u_last[ur]
            if not np.isnan(last) and t - last > max_gap_s:
                u_hlen[ur] = 0
            if np.isnan(last) or t > last:
                u_last[ur] = t
            if r >= 0 and i_state[r] == LIVE:
                npairs = gi[G_PAIRS]
                alpha = np.float32(lr_min + (lr - lr_min) * lr_decay_pairs
                                   / (lr_decay_pairs + npairs))
                hl = u_hlen[ur]
                rng = gi[G_RNG]
                filled = gi[G_TAB_FILL]
                neg = negatives if filled > 0 else 0
                for k in range(hl):
                    slot = (u_hpos[ur] - 1 - k) % window
                    j = u_hist_r[ur, slot]
                    if i_hash[j] != u_hist_h[ur, slot] or i_state[j] != LIVE:
                        continue  # evicted since
                    rng, nb = _train_pair(j, r, syn0, syn1, i_state, check_state, table,
                                          filled, work, etab, alpha, neg, rng, neg_buf, nb)
                    rng, nb = _train_pair(r, j, syn0, syn1, i_state, check_state, table,
                                          filled, work, etab, alpha, neg, rng, neg_buf, nb)
                    gi[G_PAIRS] += 2
                gi[G_RNG] = rng
                pos = u_hpos[ur]
                u_hist_r[ur, pos] = r
                u_hist_h[ur, pos] = ih
                u_hpos[ur] = (pos + 1) % window
                if hl < window:
                    u_hlen[ur] = hl + 1
                # decayed weighted mean of engaged items' syn0 (users co-embedded)
                if w > 0.0:
                    if np.isnan(u_mts[ur]) or t >= u_mts[ur]:
                        m = u_mass[ur] * _decay(t - u_mts[ur], user_hl)
                        c = w
                        u_mts[ur] = t
                    else:
                        m = u_mass[ur]
                        c = w * _decay(u_mts[ur] - t, user_hl)
                    changed = False
                    if u_state[ur] != LIVE or not (m > 0.0):
                        if c > 0.0:
                            changed = u_state[ur] != LIVE
                            for d in range(dim):
                                work[d] = syn0[r, d]
                                if work[d] != u_vec[ur, d]:
                                    changed = True
                            u_mass[ur] = c
                            if u_state[ur] != LIVE:
                                u_state[ur] = LIVE
                                gi[G_U_LIVE] += 1
                    else:
                        m_new = m + c
                        step = c / m_new
                        for d in range(dim):
                            old = u_vec[ur, d]
                            work[d] = np.float32(old + step * (np.float64(syn0[r, d]) - old))
                            if work[d] != old:
                                changed = True
                        u_mass[ur] = m_new
                    if changed:
                        _touch_dv(u_dv, dv_u, cnt, C_DV_U, ur, u_pub, pre_u, pre_ok_u, u_vec)
                        for d in range(dim):
                            u_vec[ur, d] = work[d]

        # ---- eviction sweep: stale rows by decayed mass (Monolith-style expiry)
        if evict_below > 0.0:
            for _ in range(sweep):
                hwm = gi[G_I_HWM]
                if hwm > 0:
                    q = gi[G_I_SWEEP] % hwm
                    gi[G_I_SWEEP] = (q + 1) % hwm
                    if i_state[q] != FREE and q != r and not np.isnan(i_cts[q]):
                        f = i_count[q] * _decay(now - i_cts[q], count_hl)
                        if f < evict_below:
                            if i_state[q] == LIVE:
                                gf[F_Z] = max(gf[F_Z] - f ** alpha_pow, 0.0)
                                gi[G_I_LIVE] -= 1
                            was_pub = i_pub[q]
                            if was_pub:
                                _touch_dv(i_dv, dv_i, cnt, C_DV_I, q, i_pub, pre_i, pre_ok_i,
                                          syn0)
                                i_pub[q] = 0
                            _mark(i_ds, ds_i, cnt, C_DS_I, q)
                            _free(i_keys, i_vals, i_hash, i_state, i_free, gi, G_I_FREE, q,
                                  fi_d, fi_list, cnt, C_FREE_I)
                            gi[G_I_EVICTED] += 1
                            _log(log, log_n, OP_EVICT, 0, q, was_pub)
                hwm = gi[G_U_HWM]
                if hwm > 0:
                    q = gi[G_U_SWEEP] % hwm
                    gi[G_U_SWEEP] = (q + 1) % hwm
                    if u_state[q] != FREE and q != ur and not np.isnan(u_ats[q]):
                        f = u_act[q] * _decay(now - u_ats[q], count_hl)
                        if f < evict_below:
                            if u_state[q] == LIVE:
                                gi[G_U_LIVE] -= 1
                            was_pub = u_pub[q]
                            if was_pub:
                                _touch_dv(u_dv, dv_u, cnt, C_DV_U, q, u_pub, pre_u, pre_ok_u,
                                          u_vec)
                                u_pub[q] = 0
                            _mark(u_ds, ds_u, cnt, C_DS_U, q)
                            _free(u_keys, u_vals, u_hash, u_state, u_free, gi, G_U_FREE, q,
                                  fu_d, fu_list, cnt, C_FREE_U)
                            gi[G_U_EVICTED] += 1
                            _log(log, log_n, OP_EVICT, 1, q, was_pub)
    # noise rows whose syn1 moved: flagged after the loop (no flag loads on the hot path)
    for k in range(nb):
        _mark(i_ds, ds_i, cnt, C_DS_I, neg_buf[k])
