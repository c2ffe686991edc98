"""Online skip-gram with negative sampling (SGNS, item2vec-style) for live streams (DESIGN §3).

Each engagement ``(user, item, weight, ts)`` extends the user's current *session* (a new
session starts when the user's previous event is more than ``max_gap_s`` event seconds
earlier); the item is paired with each of the previous ``window`` items of the session in
both directions, so a session yields exactly the (context, center) pairs of gensim's
skip-gram with ``window=w, shrink_windows=False`` on that session read as a sentence.
Each pair is one SGD step of SGNS with ``negatives`` noise items.

What a live stream needs and gensim's incremental ``Word2Vec`` does not give:

* **Admission counted across batches** — an id gets a vector once its decayed count
  (half-life ``count_half_life_s``) reaches ``min_count``, however the stream is cut.
* **No per-batch vocabulary rebuild** — a hash vocabulary with preallocated row storage;
  admitting ids writes only their rows (never copies or rescans the vocabulary), and the
  unigram^0.75 noise distribution is a table updated in place (Kaji & Kobayashi 2017).
* **Learning rate that never restarts** — ``lr_min + (lr - lr_min) * T / (T + n)`` with
  ``n`` the pairs trained so far in the stream (``T = lr_decay_pairs``): monotone, never
  below ``lr_min``, so new items keep learning.
* **Bounded memory** — ids whose decayed count falls below ``evict_below`` are evicted by
  an incremental sweep (``sweep_per_event`` rows per event, so O(1) per event), as
  Monolith expires stale ids (Liu et al., "Monolith: Real Time Recommendation System With
  Collisionless Embedding Table", 2022); at ``capacity`` new ids are dropped and counted.

Users are co-embedded: a user's vector is the decayed weighted mean (half-life
``user_half_life_s``, event seconds, weights = event weights) of the input vectors
(``syn0``) of the items it engaged with, each taken just after that event's update. So
"items for a user" is one cosine ANN query against item vectors.

Sources
-------
* T. Mikolov et al., "Distributed Representations of Words and Phrases and their
  Compositionality", NIPS 2013 (SGNS, unigram^0.75 noise).
* O. Barkan & N. Koenigstein, "Item2Vec: Neural Item Embedding for Collaborative
  Filtering", MLSP 2016.
* N. Kaji & H. Kobayashi, "Incremental Skip-gram Model with Negative Sampling", EMNLP 2017
  (incremental noise table, per-stream learning-rate schedule).
* gensim ``word2vec_inner.pyx`` (``fast_sentence_sg_neg``): the reference update, sigmoid
  table and LCG; kept bitwise-free of gensim itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from xxhash import xxh3_64_intdigest

from streamer.errors import ConfigError, DimensionMismatch, InvalidVector, StateError
from streamer.learn import _sgns_kernel as K
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.types import EntityId, Matrix, item_key, user_key

__all__ = ["SkipGram", "id_hash"]

_FORMAT = 1


def id_hash(raw: str) -> int:
    """Return the stable signed 64-bit hash of a raw id (XXH3-64 of its UTF-8; never 0).

    The vocabulary is keyed by this hash (a "collisionless" table in Monolith's sense: two
    of a million ids collide with probability ~3e-8). Independent of the seed and of
    Python's salted ``hash``, so it is the same in every process (xxhash library,
    https://github.com/Cyan4973/xxHash).
    """
    h = xxh3_64_intdigest(raw.encode("utf-8", "surrogatepass"))
    if h >= 1 << 63:
        h -= 1 << 64
    return h or 1


def _hashes(raws: Sequence[str]) -> npt.NDArray[np.int64]:
    out = np.fromiter((xxh3_64_intdigest(r.encode("utf-8", "surrogatepass")) for r in raws),
                      np.uint64, len(raws)).view(np.int64)
    out[out == 0] = 1
    return out


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (int(n) - 1).bit_length())


def _num(name: str, v: object, *, lo: float, lo_open: bool, inf: bool, integer: bool = False,
         what: str = "") -> None:
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if ok and integer:
        ok = isinstance(v, int)
    if ok:
        x = float(v)  # type: ignore[arg-type]
        ok = not math.isnan(x) and (inf or math.isfinite(x)) and (x > lo if lo_open else x >= lo)
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        msg = f"sgns: {name} must be {what or kind + ' ' + bound}, got {v!r}"
        raise ConfigError(msg)


class _Arrays:
    """Preallocated storage (see ``_sgns_kernel``); shapes fixed by capacities."""

    def __init__(self, dim: int, window: int, cap: int, ucap: int, tau: int) -> None:
        # hash tables: key and row of a slot side by side (one cache line per probe)
        self.i_tab = np.zeros((_pow2_at_least(2 * cap), 2), np.int64)
        self.i_keys = self.i_tab[:, 0]
        self.i_vals = self.i_tab[:, 1]
        self.i_hash = np.zeros(cap, np.int64)
        self.i_state = np.zeros(cap, np.uint8)
        self.i_count = np.zeros(cap, np.float64)
        self.i_cts = np.zeros(cap, np.float64)
        self.i_nupd = np.zeros(cap, np.int64)
        self.syn0 = np.zeros((cap, dim), np.float32)
        self.syn1 = np.zeros((cap, dim), np.float32)
        self.i_free = np.zeros(cap, np.int64)
        self.u_tab = np.zeros((_pow2_at_least(2 * ucap), 2), np.int64)
        self.u_keys = self.u_tab[:, 0]
        self.u_vals = self.u_tab[:, 1]
        self.u_hash = np.zeros(ucap, np.int64)
        self.u_state = np.zeros(ucap, np.uint8)
        self.u_act = np.zeros(ucap, np.float64)
        self.u_ats = np.zeros(ucap, np.float64)
        self.u_mass = np.zeros(ucap, np.float64)
        self.u_mts = np.zeros(ucap, np.float64)
        self.u_last = np.zeros(ucap, np.float64)
        self.u_nupd = np.zeros(ucap, np.int64)
        self.u_hlen = np.zeros(ucap, np.int64)
        self.u_hpos = np.zeros(ucap, np.int64)
        self.u_hist_r = np.zeros((ucap, window), np.int64)
        self.u_hist_h = np.zeros((ucap, window), np.int64)
        self.u_vec = np.zeros((ucap, dim), np.float32)
        self.u_free = np.zeros(ucap, np.int64)
        self.table = np.full(tau, -1, np.int32)
        self.gi = np.zeros(K.G_LEN, np.int64)
        self.gf = np.zeros(K.F_LEN, np.float64)
        self.gf[K.F_NOW] = -np.inf
        # dirty flags + lists, consumed by changed() (dv) and state_changes() (ds, t, f)
        self.i_dv = np.zeros(cap, np.uint8)
        self.dv_i = np.zeros(cap, np.int64)
        self.i_ds = np.zeros(cap, np.uint8)
        self.ds_i = np.zeros(cap, np.int64)
        self.u_dv = np.zeros(ucap, np.uint8)
        self.dv_u = np.zeros(ucap, np.int64)
        self.u_ds = np.zeros(ucap, np.uint8)
        self.ds_u = np.zeros(ucap, np.int64)
        nt = (tau + K.CHUNK - 1) // K.CHUNK
        self.t_d = np.zeros(nt, np.uint8)
        self.t_list = np.zeros(nt, np.int64)
        nfi = cap // K.CHUNK + 1
        self.fi_d = np.zeros(nfi, np.uint8)
        self.fi_list = np.zeros(nfi, np.int64)
        nfu = ucap // K.CHUNK + 1
        self.fu_d = np.zeros(nfu, np.uint8)
        self.fu_list = np.zeros(nfu, np.int64)
        self.cnt = np.zeros(K.C_LEN, np.int64)
        # published-vector bookkeeping for an exact changed(): pub[r] = the row's id had a
        # vector at the last changed(); pre[k] = that vector, for the k-th flagged row
        self.i_pub = np.zeros(cap, np.uint8)
        self.pre_i = np.zeros((cap, dim), np.float32)
        self.pre_ok_i = np.zeros(cap, np.uint8)
        self.u_pub = np.zeros(ucap, np.uint8)
        self.pre_u = np.zeros((ucap, dim), np.float32)
        self.pre_ok_u = np.zeros(ucap, np.uint8)
        self.work = np.zeros(dim, np.float32)

    def learn_args(self) -> tuple[np.ndarray, ...]:
        return (
            self.i_keys, self.i_vals, self.i_hash, self.i_state, self.i_count, self.i_cts,
            self.i_nupd, self.syn0, self.syn1, self.i_free,
            self.u_keys, self.u_vals, self.u_hash, self.u_state, self.u_act, self.u_ats,
            self.u_mass, self.u_mts, self.u_last, self.u_nupd, self.u_hlen, self.u_hpos,
            self.u_hist_r, self.u_hist_h, self.u_vec, self.u_free,
            self.table, self.gi, self.gf,
            self.i_dv, self.dv_i, self.i_ds, self.ds_i, self.u_dv, self.dv_u, self.u_ds,
            self.ds_u, self.t_d, self.t_list, self.fi_d, self.fi_list, self.fu_d, self.fu_list,
            self.cnt, self.i_pub, self.pre_i, self.pre_ok_i, self.u_pub, self.pre_u,
            self.pre_ok_u,
        )

    def take(self, flags: np.ndarray, lst: np.ndarray, which: int) -> np.ndarray:
        """Return the listed rows (sorted) and reset their flags."""
        n = int(self.cnt[which])
        rows = np.sort(lst[:n])
        flags[rows] = 0
        self.cnt[which] = 0
        return rows


# record layouts (little-endian, fixed part then the raw id in UTF-8)
def _item_dtype(dim: int) -> np.dtype:
    return np.dtype([("hash", "<i8"), ("state", "u1"), ("count", "<f8"), ("cts", "<f8"),
                     ("nupd", "<i8"), ("syn0", "<f4", (dim,)), ("syn1", "<f4", (dim,))])


def _user_dtype(dim: int, window: int) -> np.dtype:
    return np.dtype([("hash", "<i8"), ("state", "u1"), ("act", "<f8"), ("ats", "<f8"),
                     ("mass", "<f8"), ("mts", "<f8"), ("last", "<f8"), ("nupd", "<i8"),
                     ("hlen", "<i8"), ("hpos", "<i8"), ("hist_r", "<i8", (window,)),
                     ("hist_h", "<i8", (window,)), ("vec", "<f4", (dim,))])


_ITEM_FIELDS = {"hash": "i_hash", "state": "i_state", "count": "i_count", "cts": "i_cts",
                "nupd": "i_nupd", "syn0": "syn0", "syn1": "syn1"}
_USER_FIELDS = {"hash": "u_hash", "state": "u_state", "act": "u_act", "ats": "u_ats",
                "mass": "u_mass", "mts": "u_mts", "last": "u_last", "nupd": "u_nupd",
                "hlen": "u_hlen", "hpos": "u_hpos", "hist_r": "u_hist_r",
                "hist_h": "u_hist_h", "vec": "u_vec"}


class SkipGram(OnlineLearner):
    """Online SGNS over users' session windows, users co-embedded as decayed item means.

    Parameters
    ----------
    dim
        Vector dimension (>= 1).
    window
        How many previous items of the user's session each new item is paired with (>= 1).
    max_gap_s
        Session gap in event seconds: a user's window restarts when its previous event is
        more than this earlier (``inf``: one endless session).
    negatives
        Noise items per pair (>= 0).
    lr, lr_min, lr_decay_pairs
        Learning rate ``lr_min + (lr - lr_min) * T / (T + n)`` after ``n`` trained pairs
        (``T = lr_decay_pairs`` > 0; ``0 < lr_min <= lr``).
    min_count
        Admission threshold on an item's decayed occurrence count (> 0): the item gets a
        vector (and takes part in pairs) once its count reaches it, counted across batches.
    count_half_life_s
        Half-life of occurrence counts (items and users) and of the noise distribution, in
        event seconds (``inf``: no decay).
    evict_below
        Evict items/users whose decayed count is below this (0 disables eviction).
    sweep_per_event
        Rows of each kind checked for eviction per event (>= 1).
    capacity, user_capacity
        Maximum items / users held (rows are preallocated lazily; ids beyond are dropped and
        counted in :meth:`stats`). ``user_capacity=None`` means ``capacity``.
    noise_table_size
        Slots of the unigram^``noise_power`` table (Kaji & Kobayashi's ``tau``).
    noise_power
        Exponent of the noise distribution (0.75 in word2vec).
    user_half_life_s
        Half-life of the user vector's decayed mean, in event seconds.
    seed
        Seed of initial vectors and of the noise-sampling LCG.

    Raises
    ------
    ConfigError
        On any invalid parameter (one-line message naming it).

    Notes
    -----
    State is *shared* across source partitions (one model), so the result depends on how
    partitions interleave; for a fixed interleaving it is bitwise independent of batch
    boundaries (every event is applied in order, random draws come from one LCG in the
    state). Published vectors: ``syn0`` rows for items (float32, not normalised), the
    decayed mean for users.

    Examples
    --------
    >>> sg = SkipGram(dim=8, capacity=64, noise_table_size=64, seed=1)
    >>> sg.learn_many(EventBatch.from_rows([("u1", "a", 1.0, 0.0), ("u1", "b", 1.0, 1.0)]))
    >>> sg.pairs_trained, sorted(sg.changed())
    (2, ['i:a', 'i:b', 'u:u1'])
    """

    name = "sgns"
    per_partition_state = False

    def __init__(
        self,
        dim: int = 64,
        window: int = 5,
        max_gap_s: float = math.inf,
        negatives: int = 5,
        lr: float = 0.025,
        lr_min: float = 0.0025,
        lr_decay_pairs: float = 2_000_000.0,
        min_count: float = 1.0,
        count_half_life_s: float = math.inf,
        evict_below: float = 0.0,
        sweep_per_event: int = 2,
        capacity: int = 1 << 20,
        user_capacity: int | None = None,
        noise_table_size: int = 1 << 20,
        noise_power: float = 0.75,
        user_half_life_s: float = 7 * 86_400.0,
        seed: int = 0,
    ) -> None:
        self._dim = dim
        self.window = window
        self.max_gap_s = max_gap_s
        self.negatives = negatives
        self.lr = lr
        self.lr_min = lr_min
        self.lr_decay_pairs = lr_decay_pairs
        self.min_count = min_count
        self.count_half_life_s = count_half_life_s
        self.evict_below = evict_below
        self.sweep_per_event = sweep_per_event
        self.capacity = capacity
        self.user_capacity = user_capacity
        self.noise_table_size = noise_table_size
        self.noise_power = noise_power
        self.user_half_life_s = user_half_life_s
        self.seed = seed
        self._validate()
        self._bounds()
        self._etab = K.exp_table()
        self._reset()

    # ------------------------------------------------------------------ params
    def _validate(self) -> None:
        _num("dim", self._dim, lo=1, lo_open=False, inf=False, integer=True)
        _num("window", self.window, lo=1, lo_open=False, inf=False, integer=True)
        _num("max_gap_s", self.max_gap_s, lo=0, lo_open=True, inf=True)
        _num("negatives", self.negatives, lo=0, lo_open=False, inf=False, integer=True)
        _num("lr", self.lr, lo=0, lo_open=True, inf=False)
        _num("lr_min", self.lr_min, lo=0, lo_open=True, inf=False)
        if self.lr_min > self.lr:
            msg = f"sgns: lr_min must be <= lr, got lr_min={self.lr_min!r} > lr={self.lr!r}"
            raise ConfigError(msg)
        _num("lr_decay_pairs", self.lr_decay_pairs, lo=0, lo_open=True, inf=True)
        _num("min_count", self.min_count, lo=0, lo_open=True, inf=False)
        _num("count_half_life_s", self.count_half_life_s, lo=0, lo_open=True, inf=True)
        _num("evict_below", self.evict_below, lo=0, lo_open=False, inf=False)
        _num("sweep_per_event", self.sweep_per_event, lo=1, lo_open=False, inf=False,
             integer=True)
        _num("capacity", self.capacity, lo=1, lo_open=False, inf=False, integer=True)
        if self.user_capacity is not None:
            _num("user_capacity", self.user_capacity, lo=1, lo_open=False, inf=False,
                 integer=True)
        _num("noise_table_size", self.noise_table_size, lo=1, lo_open=False, inf=False,
             integer=True)
        if self.noise_table_size > 1 << 30:
            msg = f"sgns: noise_table_size must be <= 2**30, got {self.noise_table_size!r}"
            raise ConfigError(msg)
        _num("noise_power", self.noise_power, lo=0, lo_open=True, inf=False)
        _num("user_half_life_s", self.user_half_life_s, lo=0, lo_open=True, inf=True)
        _num("seed", self.seed, lo=0, lo_open=False, inf=False, integer=True,
             what="an integer >= 0")

    _LIMITS = {"dim": 4096, "window": 1024, "negatives": 1024, "sweep_per_event": 1024,
               "capacity": (1 << 31) - 1, "user_capacity": (1 << 31) - 1,
               "seed": (1 << 63) - 1}

    def _bounds(self) -> None:
        for name, hi in self._LIMITS.items():
            v = self._dim if name == "dim" else getattr(self, name)
            if v is not None and v > hi:
                msg = f"sgns: {name} must be <= {hi}, got {v!r}"
                raise ConfigError(msg)
        if self.lr > 0.5:
            msg = (f"sgns: lr must be <= 0.5 (SGD on SGNS diverges to NaN near 1), "
                   f"got {self.lr!r}")
            raise ConfigError(msg)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._dim)

    @property
    def _ucap(self) -> int:
        return int(self.capacity if self.user_capacity is None else self.user_capacity)

    def params(self) -> dict[str, Any]:
        """Return the constructor parameters, verbatim."""
        return {
            "dim": self._dim, "window": self.window, "max_gap_s": self.max_gap_s,
            "negatives": self.negatives, "lr": self.lr, "lr_min": self.lr_min,
            "lr_decay_pairs": self.lr_decay_pairs, "min_count": self.min_count,
            "count_half_life_s": self.count_half_life_s, "evict_below": self.evict_below,
            "sweep_per_event": self.sweep_per_event, "capacity": self.capacity,
            "user_capacity": self.user_capacity, "noise_table_size": self.noise_table_size,
            "noise_power": self.noise_power, "user_half_life_s": self.user_half_life_s,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"SkipGram({args})"

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, object]]:
        """Yield small, fast constructor params for the contract suite."""
        yield {"dim": 16, "window": 3, "max_gap_s": 200.0, "negatives": 3, "capacity": 256,
               "noise_table_size": 512, "user_half_life_s": 300.0, "seed": 3}
        # decayed admission + eviction + a vocabulary that fills up
        yield {"dim": 8, "window": 2, "negatives": 2, "min_count": 2.0,
               "count_half_life_s": 120.0, "evict_below": 0.3, "capacity": 30,
               "user_capacity": 20, "noise_table_size": 64, "lr": 0.1, "seed": 5}

    def _meta_bytes(self) -> bytes:
        return bytes([_FORMAT]) + json.dumps(self.params(), sort_keys=True).encode()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._a = _Arrays(self.dim, int(self.window), int(self.capacity), self._ucap,
                          int(self.noise_table_size))
        self._a.gi[K.G_RNG] = (int(self.seed) * 0x9E3779B97F4A7C15 + 1) & ((1 << 48) - 1)
        self._item_ids: list[str | None] = []
        self._user_ids: list[str | None] = []
        self._hcache: dict[str, int] = {}
        # ids evicted since the last changed() while published: id -> its old row
        self._evicted_pub: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._g_dirty = False
        self._meta_written = False
        self._idt = _item_dtype(self.dim)
        self._udt = _user_dtype(self.dim, int(self.window))

    @property
    def pairs_trained(self) -> int:
        """Positive (context, center) pairs trained so far in the stream."""
        return int(self._a.gi[K.G_PAIRS])

    @property
    def num_items(self) -> int:
        """Items that currently have a vector (admitted, not evicted)."""
        return int(self._a.gi[K.G_I_LIVE])

    @property
    def learning_rate(self) -> float:
        """The learning rate the next pair will use (a function of pairs trained only)."""
        n = self.pairs_trained
        t = float(self.lr_decay_pairs)
        return float(np.float32(self.lr_min + (self.lr - self.lr_min) * t / (t + n)))

    def stats(self) -> dict[str, int | float]:
        """Return vocabulary and training counters (for /metrics and benchmarks).

        Keys: ``events``, ``pairs``, ``items_live``, ``items_tracked`` (admitted or
        counting), ``users_live``, ``users_tracked``, ``items_evicted``, ``users_evicted``,
        ``items_dropped``/``users_dropped`` (at capacity), ``noise_slots_replaced``,
        ``noise_mass`` (``z``), ``noise_table_filled`` (slots in use: the table fills first,
        then slots are overwritten), ``learning_rate``, and the rows/chunks written since the
        last :meth:`state_changes` (``dirty_item_rows``, ``dirty_user_rows``,
        ``dirty_noise_chunks``).
        """
        a = self._a
        gi = a.gi
        return {
            "events": int(gi[K.G_EVENTS]), "pairs": int(gi[K.G_PAIRS]),
            "items_live": int(gi[K.G_I_LIVE]),
            "items_tracked": int(gi[K.G_I_HWM] - gi[K.G_I_FREE]),
            "users_live": int(gi[K.G_U_LIVE]),
            "users_tracked": int(gi[K.G_U_HWM] - gi[K.G_U_FREE]),
            "items_evicted": int(gi[K.G_I_EVICTED]), "users_evicted": int(gi[K.G_U_EVICTED]),
            "items_dropped": int(gi[K.G_I_DROPPED]), "users_dropped": int(gi[K.G_U_DROPPED]),
            "noise_slots_replaced": int(gi[K.G_SLOTS]), "noise_mass": float(a.gf[K.F_Z]),
            "noise_table_filled": int(gi[K.G_TAB_FILL]),
            "learning_rate": self.learning_rate,
            "dirty_item_rows": int(a.cnt[K.C_DS_I]), "dirty_user_rows": int(a.cnt[K.C_DS_U]),
            "dirty_noise_chunks": int(a.cnt[K.C_TAB]),
        }

    # ------------------------------------------------------------------ learning
    def learn_many(self, batch: EventBatch) -> None:
        """Apply ``batch`` event by event, in order (see the class docstring)."""
        n = len(batch)
        if n == 0:
            return
        items = list(dict.fromkeys(batch.item_ids))
        ipos = {x: k for k, x in enumerate(items)}
        ev_ib = np.fromiter(map(ipos.__getitem__, batch.item_ids), np.int64, n)
        users = list(dict.fromkeys(batch.user_ids))
        upos = {x: k for k, x in enumerate(users)}
        ev_ub = np.fromiter(map(upos.__getitem__, batch.user_ids), np.int64, n)
        log = np.empty((n * (2 + 2 * int(self.sweep_per_event)) + 2, 4), np.int64)
        log_n = np.zeros(1, np.int64)
        ih, uh = _hashes(items), _hashes(users)
        # hashes of this batch's ids, for the runtime's lookups right after (a pure
        # function of the id, so the cache is never stale; it only holds one batch)
        self._hcache = dict(zip(map(item_key, items), ih.tolist(), strict=True))
        self._hcache.update(zip(map(user_key, users), uh.tolist(), strict=True))
        K.learn(
            ev_ib, ev_ub, np.ascontiguousarray(batch.weights, np.float32),
            np.ascontiguousarray(batch.ts, np.float64), ih, uh,
            *self._a.learn_args(), log, log_n,
            int(self.seed), int(self.window), int(self.negatives), float(self.max_gap_s),
            float(self.lr), float(self.lr_min), float(self.lr_decay_pairs),
            float(self.min_count), float(self.count_half_life_s),
            float(self.user_half_life_s), float(self.evict_below), int(self.sweep_per_event),
            float(self.noise_power), self._etab, self._a.work,
            np.empty(n * 2 * int(self.window) * int(self.negatives) + 1, np.int64),
        )
        self._apply_log(log[: int(log_n[0])], items, users)
        self._g_dirty = True

    def _apply_log(self, log: np.ndarray, items: list[str], users: list[str]) -> None:
        for op, kind, row, b in log.tolist():
            ids, names = (self._item_ids, items) if kind == 0 else (self._user_ids, users)
            if op == K.OP_EVICT:
                old = ids[row]
                if b and old is not None:
                    self._evicted_pub[kind][old] = row
                ids[row] = None
            else:
                while len(ids) <= row:
                    ids.append(None)
                ids[row] = names[b]

    # ------------------------------------------------------------------ warm start
    def warm_start(self, ids: Sequence[EntityId], vectors: Matrix) -> int:
        """Give ``ids`` the vectors of another type (transfer, ``--init-from``).

        Items become admitted with ``syn0 = vector`` (``syn1`` zero) and enter the noise
        distribution when first seen; users get the vector as their decayed mean with mass
        1 and no event time yet (their first event does not decay it). Ids beyond capacity
        or not namespaced are skipped.

        Parameters
        ----------
        ids
            Namespaced ids, no duplicates.
        vectors
            Shape ``(len(ids), dim)`` float32, finite.

        Returns
        -------
        int
            How many ids got a vector.

        Raises
        ------
        StateError
            If events were already learned.
        DimensionMismatch
            If ``vectors`` is not ``(len(ids), dim)``.
        InvalidVector
            If a vector has NaN or inf.
        """
        a = self._a
        if a.gi[K.G_EVENTS] > 0 or a.gi[K.G_I_HWM] > 0 or a.gi[K.G_U_HWM] > 0:
            msg = "sgns: warm_start needs a fresh learner (events or vectors already present)"
            raise StateError(msg)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape != (len(ids), self.dim):
            msg = (f"sgns: warm_start vectors have shape {vecs.shape}, "
                   f"expected ({len(ids)}, {self.dim})")
            raise DimensionMismatch(msg)
        if not np.isfinite(vecs).all():
            msg = "sgns: warm_start vectors must be finite (found NaN or inf)"
            raise InvalidVector(msg)
        done = 0
        for k, eid in enumerate(ids):
            kind, _, raw = eid.partition(":")
            if kind == "i":
                r = K._alloc(a.i_keys, a.i_vals, a.i_hash, a.i_state, a.i_free, a.gi, K.G_I_HWM,
                             K.G_I_FREE, id_hash(raw), int(self.capacity), a.fi_d, a.fi_list,
                             a.cnt, K.C_FREE_I)
                if r < 0:
                    continue
                a.i_state[r] = K.LIVE
                a.gi[K.G_I_LIVE] += 1
                a.i_count[r] = 0.0
                a.i_cts[r] = np.nan
                a.i_nupd[r] = 0
                a.syn0[r] = vecs[k]
                a.syn1[r] = 0.0
                self._mark(a.i_dv, a.dv_i, K.C_DV_I, r)
                a.pre_ok_i[a.cnt[K.C_DV_I] - 1] = 0
                self._mark(a.i_ds, a.ds_i, K.C_DS_I, r)
                self._item_ids.append(raw)
            elif kind == "u":
                r = K._alloc(a.u_keys, a.u_vals, a.u_hash, a.u_state, a.u_free, a.gi, K.G_U_HWM,
                             K.G_U_FREE, id_hash(raw), self._ucap, a.fu_d, a.fu_list,
                             a.cnt, K.C_FREE_U)
                if r < 0:
                    continue
                a.u_state[r] = K.LIVE
                a.gi[K.G_U_LIVE] += 1
                a.u_act[r] = 1.0
                a.u_ats[r] = np.nan
                a.u_mass[r] = 1.0
                a.u_mts[r] = np.nan
                a.u_last[r] = np.nan
                a.u_nupd[r] = 0
                a.u_hlen[r] = 0
                a.u_hpos[r] = 0
                a.u_vec[r] = vecs[k]
                self._mark(a.u_dv, a.dv_u, K.C_DV_U, r)
                a.pre_ok_u[a.cnt[K.C_DV_U] - 1] = 0
                self._mark(a.u_ds, a.ds_u, K.C_DS_U, r)
                self._user_ids.append(raw)
            else:
                continue
            done += 1
        self._g_dirty = True
        return done

    def _mark(self, flags: np.ndarray, lst: np.ndarray, which: int, row: int) -> None:
        if not flags[row]:
            flags[row] = 1
            lst[self._a.cnt[which]] = row
            self._a.cnt[which] += 1

    # ------------------------------------------------------------------ reading
    def _rows(self, ids: Sequence[EntityId], kind: str, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (positions in ids, rows) of the ids of ``kind`` whose row state >= want."""
        pos = [k for k, e in enumerate(ids) if e.startswith(kind)]
        if not pos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        a = self._a
        cache = self._hcache
        hashes = np.fromiter((cache.get(ids[k]) or id_hash(ids[k][2:]) for k in pos),
                             np.int64, len(pos))
        if kind == "i:":
            rows = K.ht_lookup_many(a.i_keys, a.i_vals, hashes, a.i_state, want)
        else:
            rows = K.ht_lookup_many(a.u_keys, a.u_vals, hashes, a.u_state, want)
        p = np.asarray(pos, np.int64)
        ok = rows >= 0
        return p[ok], rows[ok]

    def vectors(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return ``((len(ids), dim)`` float32 read-only, ``(len(ids),)`` bool mask)``."""
        out = np.zeros((len(ids), self.dim), np.float32)
        mask = np.zeros(len(ids), np.bool_)
        p, r = self._rows(ids, "i:", K.LIVE)
        out[p] = self._a.syn0[r]
        mask[p] = True
        p, r = self._rows(ids, "u:", K.LIVE)
        out[p] = self._a.u_vec[r]
        mask[p] = True
        out.setflags(write=False)
        return out, mask

    def changed(self) -> set[EntityId]:
        """Return ids whose vector changed (appeared, moved, evicted) since the last call.

        Exact: candidates (flagged rows, ids evicted while published) are compared bitwise
        with the vector each had at the previous call (kept by the kernel on first write).
        """
        a = self._a
        out: set[EntityId] = set()
        for kind, key, which, flags, lst, pre, pre_ok, pub, state, names in (
            (0, item_key, K.C_DV_I, a.i_dv, a.dv_i, a.pre_i, a.pre_ok_i, a.i_pub, a.i_state,
             self._item_ids),
            (1, user_key, K.C_DV_U, a.u_dv, a.dv_u, a.pre_u, a.pre_ok_u, a.u_pub, a.u_state,
             self._user_ids),
        ):
            n = int(a.cnt[which])
            rows = lst[:n].copy()
            evicted = self._evicted_pub[kind]
            if not evicted:
                # fast path: no eviction, so every flagged row kept its id; compare rows
                vecs = a.syn0 if kind == 0 else a.u_vec
                live = state[rows] == K.LIVE
                ok = pre_ok[:n].astype(bool)
                moved = rows[live & (~ok | (pre[:n] != vecs[rows]).any(axis=1))]
                hashes = (a.i_hash if kind == 0 else a.u_hash)[moved]
                keys = [key(names[r]) for r in moved.tolist()]  # type: ignore[arg-type]
                out.update(keys)
                self._hcache.update(zip(keys, hashes.tolist(), strict=True))
                flags[rows] = 0
                pub[rows] = live
                a.cnt[which] = 0
                continue
            by_row = {r: i for i, r in evicted.items()}
            refs: dict[str, np.ndarray] = {}
            for k in np.flatnonzero(pre_ok[:n]).tolist():
                r = int(rows[k])
                owner = by_row.get(r)
                if owner is None:
                    owner = names[r]
                if owner is not None:
                    refs[owner] = pre[k]
            live = rows[state[rows] == K.LIVE]
            cands = sorted({names[r] for r in live.tolist()} | set(evicted))  # type: ignore[arg-type]
            keys = [key(c) for c in cands]
            cur, mask = self.vectors(keys)
            for c, kk, v, ok in zip(cands, keys, cur, mask.tolist(), strict=True):
                ref = refs.get(c)
                if (ref is None) != (not ok) or (ref is not None and not np.array_equal(ref, v)):
                    out.add(kk)
            flags[rows] = 0
            pub[rows] = state[rows] == K.LIVE
            a.cnt[which] = 0
            evicted.clear()
        return out

    def entity_ids(self) -> list[EntityId]:
        """Return users then items that have a vector, each in row order (deterministic)."""
        a = self._a
        nu, ni = int(a.gi[K.G_U_HWM]), int(a.gi[K.G_I_HWM])
        users = [user_key(self._user_ids[r])  # type: ignore[arg-type]
                 for r in np.flatnonzero(a.u_state[:nu] == K.LIVE).tolist()]
        items = [item_key(self._item_ids[r])  # type: ignore[arg-type]
                 for r in np.flatnonzero(a.i_state[:ni] == K.LIVE).tolist()]
        return users + items

    def update_counts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        """Return how many events touched each id (0 if unknown or evicted)."""
        out = np.zeros(len(ids), np.int64)
        p, r = self._rows(ids, "i:", K.CAND)
        out[p] = self._a.i_nupd[r]
        p, r = self._rows(ids, "u:", K.CAND)
        out[p] = self._a.u_nupd[r]
        return out

    def last_event_ts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.float64]:
        """Return the stream time (max event s so far) of each id's last event (NaN if none)."""
        out = np.full(len(ids), np.nan)
        p, r = self._rows(ids, "i:", K.CAND)
        out[p] = self._a.i_cts[r]
        p, r = self._rows(ids, "u:", K.CAND)
        out[p] = self._a.u_ats[r]
        return out

    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> Matrix:
        """Cosine of user and item vectors: shape ``(len(users), len(items))`` float32.

        Unknown users or items score 0.
        """
        u, _ = self.vectors(users)
        v, _ = self.vectors(items)
        un = np.linalg.norm(u, axis=1, keepdims=True)
        vn = np.linalg.norm(v, axis=1, keepdims=True)
        u = np.divide(u, un, out=np.zeros_like(u), where=un > 0)
        v = np.divide(v, vn, out=np.zeros_like(v), where=vn > 0)
        return (u @ v.T).astype(np.float32)

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> npt.NDArray[np.float32]:
        """Cosine of the user's vector with each item's (0 when either is unknown)."""
        return self.score_matrix([user], items)[0]

    # ------------------------------------------------------------------ persistence
    def _encode_rows(self, rows: np.ndarray, kind: str) -> dict[bytes, bytes | None]:
        a = self._a
        if kind == "i":
            dt, fields, state, names = self._idt, _ITEM_FIELDS, a.i_state, self._item_ids
        else:
            dt, fields, state, names = self._udt, _USER_FIELDS, a.u_state, self._user_ids
        rec = np.zeros(len(rows), dt)
        for f, attr in fields.items():
            rec[f] = getattr(a, attr)[rows]
        # one buffer for all rows, sliced per record (numpy scalar tobytes is ~5x slower)
        buf = rec.tobytes()
        size = dt.itemsize
        keys = np.zeros(len(rows), [("kind", "u1"), ("row", ">u4")])
        keys["kind"] = ord(kind)
        keys["row"] = rows
        kbuf = keys.tobytes()  # b"i" / b"u" + the row as 4 big-endian bytes
        out: dict[bytes, bytes | None] = {}
        free = (state[rows] == K.FREE).tolist()
        for k, r in enumerate(rows.tolist()):
            key = kbuf[5 * k:5 * k + 5]
            if free[k]:
                out[key] = None
            else:
                name = names[r].encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
                out[key] = buf[k * size:(k + 1) * size] + name
        return out

    def state_changes(self) -> dict[bytes, bytes | None]:
        """Return state records changed since the last call (rows, noise chunks, globals)."""
        a = self._a
        out: dict[bytes, bytes | None] = {}
        if not self._meta_written:
            out[b"m"] = self._meta_bytes()
            self._meta_written = True
        out.update(self._encode_rows(a.take(a.i_ds, a.ds_i, K.C_DS_I), "i"))
        out.update(self._encode_rows(a.take(a.u_ds, a.ds_u, K.C_DS_U), "u"))
        c = K.CHUNK
        for ch in a.take(a.t_d, a.t_list, K.C_TAB).tolist():
            out[b"t" + ch.to_bytes(4, "big")] = a.table[ch * c:(ch + 1) * c].tobytes()
        for ch in a.take(a.fi_d, a.fi_list, K.C_FREE_I).tolist():
            out[b"f" + ch.to_bytes(4, "big")] = a.i_free[ch * c:(ch + 1) * c].tobytes()
        for ch in a.take(a.fu_d, a.fu_list, K.C_FREE_U).tolist():
            out[b"F" + ch.to_bytes(4, "big")] = a.u_free[ch * c:(ch + 1) * c].tobytes()
        if self._g_dirty:
            out[b"g"] = a.gi.astype("<i8").tobytes() + a.gf.astype("<f8").tobytes()
            self._g_dirty = False
        return out

    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild the learner from every stored record (as written by :meth:`state_changes`).

        Raises
        ------
        StateError
            If the records were written with other parameters or are malformed.
        """
        self._reset()
        a = self._a
        c = K.CHUNK
        ni, nu = self._idt.itemsize, self._udt.itemsize
        try:
            for key, value in records:
                tag = key[:1]
                if tag == b"m":
                    if value != self._meta_bytes():
                        stored = value[1:].decode(errors="replace").replace("\n", " ")[:300]
                        msg = f"sgns: stored state was written with other parameters: {stored}"
                        raise StateError(msg)
                elif tag in (b"i", b"u"):
                    r = int.from_bytes(key[1:5], "big")
                    is_item = tag == b"i"
                    dt, fields, size, ids = ((self._idt, _ITEM_FIELDS, ni, self._item_ids)
                                             if is_item else
                                             (self._udt, _USER_FIELDS, nu, self._user_ids))
                    rec = np.frombuffer(value[:size], dt)[0]
                    for f, attr in fields.items():
                        getattr(a, attr)[r] = rec[f]
                    while len(ids) <= r:
                        ids.append(None)
                    ids[r] = value[size:].decode("utf-8", "surrogatepass")
                elif tag == b"t":
                    ch = int.from_bytes(key[1:5], "big")
                    a.table[ch * c:(ch + 1) * c] = np.frombuffer(value, "<i4")
                elif tag in (b"f", b"F"):
                    ch = int.from_bytes(key[1:5], "big")
                    arr = a.i_free if tag == b"f" else a.u_free
                    arr[ch * c:(ch + 1) * c] = np.frombuffer(value, "<i8")
                elif tag == b"g":
                    a.gi[:] = np.frombuffer(value[: 8 * K.G_LEN], "<i8")
                    a.gf[:] = np.frombuffer(value[8 * K.G_LEN:], "<f8")
                else:
                    msg = f"sgns: unknown state record key {key[:16]!r}"
                    raise StateError(msg)
        except (ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            msg = f"sgns: malformed state record: {exc}"
            raise StateError(msg) from exc
        self._check_loaded()
        self._finish_load()
        self._meta_written = True

    def _check_loaded(self) -> None:
        """Refuse loaded globals that do not fit this learner (corrupt or foreign state)."""
        gi = self._a.gi
        cap, ucap, tau = int(self.capacity), self._ucap, int(self.noise_table_size)
        checks = (("item high-water mark", gi[K.G_I_HWM], cap),
                  ("user high-water mark", gi[K.G_U_HWM], ucap),
                  ("item free-list size", gi[K.G_I_FREE], gi[K.G_I_HWM]),
                  ("user free-list size", gi[K.G_U_FREE], gi[K.G_U_HWM]),
                  ("noise-table fill", gi[K.G_TAB_FILL], tau))
        for what, v, hi in checks:
            if not 0 <= int(v) <= int(hi):
                msg = f"sgns: stored state is corrupt: {what} {int(v)} outside [0, {int(hi)}]"
                raise StateError(msg)
        a = self._a
        ni, nu = int(gi[K.G_I_HWM]), int(gi[K.G_U_HWM])
        bad = ((a.i_state[:ni] > K.LIVE).any() or (a.u_state[:nu] > K.LIVE).any()
               or (a.table[: int(gi[K.G_TAB_FILL])] < 0).any()
               or (a.table[: int(gi[K.G_TAB_FILL])] >= max(ni, 1)).any()
               or (a.u_hist_r[:nu] < 0).any() or (a.u_hist_r[:nu] >= cap).any())
        if bad:
            msg = ("sgns: stored state is corrupt: a row state, noise slot or window row is "
                   "out of range")
            raise StateError(msg)

    def _finish_load(self) -> None:
        a = self._a
        ni, nu = int(a.gi[K.G_I_HWM]), int(a.gi[K.G_U_HWM])
        for ids, n in ((self._item_ids, ni), (self._user_ids, nu)):
            del ids[n:]
            ids.extend([None] * (n - len(ids)))
        for r in np.flatnonzero(a.i_state[:ni] == K.FREE).tolist():
            self._item_ids[r] = None
        for r in np.flatnonzero(a.u_state[:nu] == K.FREE).tolist():
            self._user_ids[r] = None
        K.ht_rebuild(a.i_keys, a.i_vals, a.i_hash, a.i_state, ni)
        K.ht_rebuild(a.u_keys, a.u_vals, a.u_hash, a.u_state, nu)
        a.i_pub[:ni] = a.i_state[:ni] == K.LIVE
        a.u_pub[:nu] = a.u_state[:nu] == K.LIVE

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the full state as arrays (rows up to the high-water marks, free rows zeroed)."""
        a = self._a
        ni, nu = int(a.gi[K.G_I_HWM]), int(a.gi[K.G_U_HWM])
        out: dict[str, np.ndarray] = {}
        ilive = a.i_state[:ni] != K.FREE
        ulive = a.u_state[:nu] != K.FREE
        for attr in _ITEM_FIELDS.values():
            x = getattr(a, attr)[:ni].copy()
            keep = (a.i_state[:ni] == K.LIVE) if attr in ("syn0", "syn1") else ilive
            x[~keep] = 0
            out[attr] = x
        for attr in _USER_FIELDS.values():
            x = getattr(a, attr)[:nu].copy()
            keep = (a.u_state[:nu] == K.LIVE) if attr == "u_vec" else ulive
            x[~keep] = 0
            out[attr] = x
        out["item_ids"] = np.array([s or "" for s in self._item_ids[:ni]], dtype=np.str_)
        out["user_ids"] = np.array([s or "" for s in self._user_ids[:nu]], dtype=np.str_)
        out["table"] = a.table.copy()
        out["i_free"] = a.i_free[: int(a.gi[K.G_I_FREE])].copy()
        out["u_free"] = a.u_free[: int(a.gi[K.G_U_FREE])].copy()
        out["gi"] = a.gi.copy()
        out["gf"] = a.gf.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one from :meth:`state_dict` (same parameters).

        Raises
        ------
        StateError
            If arrays are missing or do not fit this learner's capacities.
        """
        self._reset()
        a = self._a
        try:
            a.gi[:] = state["gi"]
            a.gf[:] = state["gf"]
            ni, nu = int(a.gi[K.G_I_HWM]), int(a.gi[K.G_U_HWM])
            for attr in (*_ITEM_FIELDS.values(), *_USER_FIELDS.values()):
                n = ni if attr in _ITEM_FIELDS.values() else nu
                getattr(a, attr)[:n] = state[attr]
            a.table[:] = state["table"]
            a.i_free[: len(state["i_free"])] = state["i_free"]
            a.u_free[: len(state["u_free"])] = state["u_free"]
            self._item_ids = [str(s) for s in np.asarray(state["item_ids"]).tolist()]
            self._user_ids = [str(s) for s in np.asarray(state["user_ids"]).tolist()]
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            msg = f"sgns: state_dict does not fit this learner: {exc}"
            raise StateError(msg) from exc
        self._check_loaded()
        self._finish_load()
        self._meta_written = False
