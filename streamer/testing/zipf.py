"""Seeded synthetic engagement stream with Zipf item popularity (benchmarks, scale tests).

Item popularity follows a truncated Zipf law over ``n_items`` ranks,
``P(rank k) ∝ k ** -exponent`` for ``k = 1..n_items`` (G. K. Zipf, *Human Behavior and
the Principle of Least Effort*, 1949; the truncated form is the usual model of catalogue
popularity, e.g. Breslau et al., "Web Caching and Zipf-like Distributions", INFOCOM
1999). Ranks map to item ids through a seeded permutation, so popular items do not have
small ids.

Events come in *sessions*: session ``s`` starts at ``start_s + s * start_every_s``, its
``j``-th event is at ``+ j * step_s``, its length is geometric with mean
``mean_session`` capped at ``max_session``, and its items are i.i.d. Zipf draws.
Sessions are dealt round-robin to ``n_users`` users (through a seeded permutation of
user ids); ``n_users`` is large enough that a user's consecutive sessions are more than
``gap_s`` apart, so splitting each user's events at gaps ``> gap_s`` (with ``step_s <=
gap_s``) gives back exactly the generated sessions.

How many events are needed for a number of *distinct* items to actually occur follows
from ``E[distinct] = sum_k 1 - (1 - p_k) ** n`` (the occupancy problem;
:func:`expected_distinct`); :func:`draws_for_distinct` inverts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError
from streamer.learn.base import EventBatch

__all__ = [
    "ZipfStream",
    "draws_for_distinct",
    "expected_distinct",
    "zipf_probabilities",
    "zipf_stream",
]


def zipf_probabilities(n_items: int, exponent: float) -> npt.NDArray[np.float64]:
    """Return the truncated Zipf probabilities of ranks ``1..n_items``.

    Parameters
    ----------
    n_items
        Number of ranks, ``>= 1``.
    exponent
        Zipf exponent ``s >= 0`` (0 is uniform).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_items,)`` float64, ``p[k-1] ∝ k ** -s``, summing to 1, non-increasing.

    Raises
    ------
    ConfigError
        If ``n_items < 1`` or ``exponent`` is negative or not finite.

    Examples
    --------
    >>> zipf_probabilities(3, 1.0).round(4).tolist()
    [0.5455, 0.2727, 0.1818]
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
        msg = f"n_items must be an integer >= 1, got {n_items!r}"
        raise ConfigError(msg)
    if not (isinstance(exponent, int | float) and math.isfinite(exponent) and exponent >= 0):
        msg = f"exponent must be a finite number >= 0, got {exponent!r}"
        raise ConfigError(msg)
    p = np.arange(1, int(n_items) + 1, dtype=np.float64) ** -float(exponent)
    return p / p.sum()


def expected_distinct(n_draws: float, probs: npt.NDArray[np.float64]) -> float:
    """Return the expected number of distinct outcomes in ``n_draws`` i.i.d. draws.

    Parameters
    ----------
    n_draws
        Number of draws, ``>= 0``.
    probs
        Shape ``(m,)`` float64 outcome probabilities.

    Returns
    -------
    float
        ``sum_k 1 - (1 - p_k) ** n_draws``.

    Examples
    --------
    >>> expected_distinct(1, np.array([0.5, 0.5]))
    1.0
    """
    p = np.asarray(probs, np.float64)
    return float((-np.expm1(float(n_draws) * np.log1p(-np.minimum(p, 1.0 - 1e-16)))).sum())


def draws_for_distinct(target: int, n_items: int, exponent: float, *,
                       margin: float = 0.02) -> int:
    """Return how many Zipf draws make ``target * (1 + margin)`` distinct items expected.

    Parameters
    ----------
    target
        Distinct items wanted, ``1 <= target``.
    n_items, exponent
        As :func:`zipf_probabilities`.
    margin
        Relative head-room over ``target`` (the realised count fluctuates by about
        ``sqrt(target)``).

    Returns
    -------
    int
        The smallest draw count (to within 0.1%) whose expectation reaches the goal.

    Raises
    ------
    ConfigError
        If the goal is not below ``0.99 * n_items`` (the tail would need an unbounded
        number of draws): raise ``n_items`` or lower ``exponent``.
    """
    goal = target * (1.0 + margin)
    if target < 1 or goal >= 0.99 * n_items:
        msg = (f"cannot expect {goal:.0f} distinct items among n_items={n_items}; "
               "expected target * (1 + margin) < 0.99 * n_items (raise n_items)")
        raise ConfigError(msg)
    p = zipf_probabilities(n_items, exponent)
    lo, hi = 1.0, float(target)
    while expected_distinct(hi, p) < goal:
        lo, hi = hi, hi * 2.0
    while hi - lo > max(1.0, 1e-3 * lo):
        mid = 0.5 * (lo + hi)
        if expected_distinct(mid, p) >= goal:
            hi = mid
        else:
            lo = mid
    return int(math.ceil(hi))


@dataclass(frozen=True)
class ZipfStream:
    """A generated stream, columnar, in event-time order.

    Attributes
    ----------
    users
        Shape ``(n,)`` int64 user ids in ``[0, n_users)``.
    items
        Shape ``(n,)`` int64 item ids in ``[0, n_items)`` (permuted Zipf ranks).
    ts
        Shape ``(n,)`` float64 event time in seconds since the epoch, non-decreasing.
    sessions
        Shape ``(n,)`` int64 generating session of each event, numbered in order of
        session start (``0, 1, ...``).
    n_users, n_items
        Sizes of the id spaces.
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    sessions: npt.NDArray[np.int64]
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return len(self.items)

    def distinct_items(self) -> int:
        """Return how many distinct item ids occur in the stream."""
        return int(np.count_nonzero(np.bincount(self.items, minlength=self.n_items)))

    def to_batch(self, start: int = 0, stop: int | None = None) -> EventBatch:
        """Return events ``[start, stop)`` as an :class:`EventBatch` of string ids.

        Ids are decimal strings (``"123"``); weights are 1.0 and offsets the stream
        positions.
        """
        stop = len(self) if stop is None else stop
        n = max(0, stop - start)
        return EventBatch(
            user_ids=list(map(str, self.users[start:stop].tolist())),
            item_ids=list(map(str, self.items[start:stop].tolist())),
            weights=np.ones(n, np.float32),
            ts=self.ts[start:stop].copy(),
            partitions=np.zeros(n, np.int32),
            offsets=np.arange(start, start + n, dtype=np.int64),
            actions=["view"] * n,
        )


def zipf_stream(
    n_events: int,
    *,
    n_items: int = 2_000_000,
    exponent: float = 0.8,
    mean_session: float = 8.0,
    max_session: int = 200,
    step_s: float = 60.0,
    start_every_s: float = 1.0,
    gap_s: float = 3600.0,
    n_users: int | None = None,
    start_s: float = 1_388_534_400.0,
    seed: int = 0,
) -> ZipfStream:
    """Generate a seeded session-structured stream with Zipf item popularity.

    Parameters
    ----------
    n_events
        Events to generate, ``>= 0`` (the last session is cut to fit).
    n_items, exponent
        Item catalogue size and Zipf exponent (see :func:`zipf_probabilities`).
    mean_session, max_session
        Session length: ``min(Geometric(1 / mean_session), max_session)``, ``>= 1``.
    step_s
        Event-time seconds between consecutive events of a session, ``0 < step_s <=
        gap_s``.
    start_every_s
        Event-time seconds between consecutive session starts, ``> 0``.
    gap_s
        Sessionisation gap: a user's consecutive sessions are more than ``gap_s``
        seconds apart.
    n_users
        Number of users; default (``None``) the smallest that keeps the gap guarantee,
        ``ceil((gap_s + (max_session - 1) * step_s) / start_every_s) + 1``.
    start_s
        Event time of the first session start (default 2014-01-01T00:00:00Z).
    seed
        Seed of the one ``numpy.random.Generator`` used for lengths, items and the two
        id permutations (in that order).

    Returns
    -------
    ZipfStream

    Raises
    ------
    ConfigError
        A parameter out of range, or ``n_users`` too small for the gap guarantee.

    Examples
    --------
    >>> s = zipf_stream(1000, n_items=500, seed=1)
    >>> len(s), bool((s.ts[1:] >= s.ts[:-1]).all())
    (1000, True)
    """
    if n_events < 0 or max_session < 1 or not mean_session >= 1.0:
        msg = (f"need n_events >= 0, max_session >= 1, mean_session >= 1; got "
               f"{n_events}, {max_session}, {mean_session}")
        raise ConfigError(msg)
    if not (0 < step_s <= gap_s and start_every_s > 0 and math.isfinite(gap_s)):
        msg = (f"need 0 < step_s <= gap_s < inf and start_every_s > 0; got step_s={step_s}, "
               f"gap_s={gap_s}, start_every_s={start_every_s}")
        raise ConfigError(msg)
    probs = zipf_probabilities(n_items, exponent)
    need = math.floor((gap_s + (max_session - 1) * step_s) / start_every_s) + 1
    if n_users is None:
        n_users = need
    elif n_users < need:
        msg = (f"n_users={n_users} is too few to keep sessions {gap_s} s apart; expected "
               f">= {need} (or None to derive it)")
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    # Session lengths: draw in chunks until they cover n_events, then cut the last one.
    parts: list[npt.NDArray[np.int64]] = []
    total = 0
    while total < n_events:
        chunk = max(1024, int((n_events - total) / mean_session * 1.1) + 1)
        lens = np.minimum(rng.geometric(1.0 / mean_session, chunk), max_session)
        parts.append(lens.astype(np.int64))
        total += int(lens.sum())
    lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    n_sess = int(np.searchsorted(ends, n_events, side="left")) + 1 if n_events else 0
    lengths = lengths[:n_sess].copy()
    if n_sess:
        lengths[-1] -= int(ends[n_sess - 1]) - n_events
    sess = np.repeat(np.arange(n_sess, dtype=np.int64), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n_sess else sess
    pos = np.arange(n_events, dtype=np.int64) - np.repeat(first, lengths)
    ts = start_s + sess * float(start_every_s) + pos * float(step_s)
    cdf = np.cumsum(probs)
    ranks = np.searchsorted(cdf, rng.random(n_events) * cdf[-1], side="right")
    ranks = np.minimum(ranks, n_items - 1)
    item_perm = rng.permutation(n_items).astype(np.int64)
    user_perm = rng.permutation(n_users).astype(np.int64)
    order = np.lexsort((sess, ts))  # event time, ties by session start
    return ZipfStream(
        users=user_perm[sess[order] % n_users],
        items=item_perm[ranks[order]],
        ts=ts[order],
        sessions=sess[order],
        n_users=int(n_users),
        n_items=int(n_items),
    )
