"""Seeded synthetic engagement stream with an optional concept shift (drift tests).

Model
-----
``n_items`` items fall into ``n_clusters`` clusters (a seeded assignment, as equal in
size as possible). Inside each cluster, item popularity follows a truncated Zipf law
(:func:`streamer.testing.zipf.zipf_probabilities`) over a seeded order of its items.
Each user has one *favourite cluster* (seeded, uniform). An event of user ``u`` picks,
with probability ``affinity``, a Zipf-popular item of ``u``'s favourite cluster, and
otherwise an item from the global Zipf popularity over all items. Users act uniformly
at random. So a learner that tracks who engages with what, and which items co-occur,
predicts the next item far better than chance, and the stream is stationary: every
batch is drawn from the same distribution.

Shift
-----
With ``shift_at = s``, every event of batch ``s`` and later has its *item id* replaced
by ``remap[item]``, a seeded permutation of the item ids (drawn from its own random
stream, so it does not change any other draw; ``shift_fraction`` < 1 permutes only a
seeded subset of the ids among themselves). Users keep their tastes over the latent
items, but what each id means changes at once: the learned user-item affinities,
item-item associations and popularity counts all point at the wrong ids, and a
predict-then-learn score falls until the learner has re-learned (its old counts decay).
The stationary stream of the same ``seed`` is identical to the shifted one before
batch ``s``, and after it differs only in the ids (the latent draws are the same).

Event time advances by ``step_s`` seconds per event from ``start_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError
from streamer.learn.base import EventBatch
from streamer.testing.zipf import zipf_probabilities

__all__ = ["DriftStream", "drift_stream"]


@dataclass(frozen=True)
class DriftStream:
    """A generated stream cut into mini-batches.

    Attributes
    ----------
    batches
        ``n_batches`` :class:`~streamer.learn.base.EventBatch` of ``batch_size`` events
        each, in event-time order; raw ids ``"u<k>"`` / ``"i<k>"``, weights 1.0, offsets
        the stream positions, partition 0, action ``"view"``.
    items
        Every item id (``"i0" .. "i<n_items-1>"``): the candidate set to rank against.
        The shift permutes ids *within* this set, so it is the same before and after.
    shift_at
        Index of the first remapped batch, or ``None`` for a stationary stream.
    remap
        Shape ``(n_items,)`` int64: latent item ``k`` is emitted as ``"i<remap[k]>"``
        from ``shift_at`` on (the identity when ``shift_at`` is ``None``).
    """

    batches: list[EventBatch]
    items: list[str]
    shift_at: int | None
    remap: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.batches)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        msg = f"drift_stream: {name} must be an integer >= {low}, got {value!r}"
        raise ConfigError(msg)
    return int(value)


def drift_stream(
    *,
    n_batches: int = 600,
    batch_size: int = 200,
    n_users: int = 400,
    n_items: int = 500,
    n_clusters: int = 25,
    affinity: float = 0.85,
    exponent: float = 1.0,
    shift_at: int | None = None,
    shift_fraction: float = 1.0,
    seed: int = 0,
    start_s: float = 1_700_000_000.0,
    step_s: float = 1.0,
) -> DriftStream:
    """Generate a seeded engagement stream, optionally with an item-remapping shift.

    Parameters
    ----------
    n_batches, batch_size
        Number of mini-batches and events per batch (both >= 1).
    n_users, n_items
        Number of users and items (>= 1; ``n_items >= n_clusters``).
    n_clusters
        Number of item clusters (>= 1).
    affinity
        Probability in ``[0, 1]`` that an event comes from the user's favourite cluster
        rather than from global popularity.
    exponent
        Zipf exponent (>= 0) of popularity within a cluster and over all items.
    shift_at
        First batch whose item ids are remapped (``0 <= shift_at < n_batches``), or
        ``None`` for a stationary stream.
    shift_fraction
        Fraction in ``(0, 1]`` of the item ids the shift permutes (among themselves);
        the others keep their ids. 1.0 remaps every item.
    seed
        Seed of every random draw (``numpy.random.default_rng``).
    start_s, step_s
        Event time of the first event and spacing between events, epoch seconds
        (``step_s > 0``).

    Returns
    -------
    DriftStream

    Raises
    ------
    ConfigError
        If an argument is out of range (one line naming it).

    Examples
    --------
    >>> a = drift_stream(n_batches=4, batch_size=3, seed=1)
    >>> b = drift_stream(n_batches=4, batch_size=3, seed=1, shift_at=2)
    >>> a.batches[1].item_ids == b.batches[1].item_ids
    True
    >>> a3, b3 = a.batches[3], b.batches[3]
    >>> a3.user_ids == b3.user_ids, a3.item_ids == b3.item_ids
    (True, False)
    >>> len(a), len(a.batches[0]), len(a.items)
    (4, 3, 500)
    """
    n_batches = _check_int("n_batches", n_batches, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    n_users = _check_int("n_users", n_users, 1)
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    n_items = _check_int("n_items", n_items, n_clusters)
    if not (isinstance(affinity, int | float) and 0.0 <= affinity <= 1.0):
        msg = f"drift_stream: affinity must be a probability in [0, 1], got {affinity!r}"
        raise ConfigError(msg)
    if not (isinstance(step_s, int | float) and math.isfinite(step_s) and step_s > 0):
        msg = f"drift_stream: step_s must be a finite number > 0, got {step_s!r}"
        raise ConfigError(msg)
    if not (isinstance(shift_fraction, int | float) and 0.0 < shift_fraction <= 1.0):
        msg = f"drift_stream: shift_fraction must be in (0, 1], got {shift_fraction!r}"
        raise ConfigError(msg)
    if shift_at is not None:
        shift_at = _check_int("shift_at", shift_at, 0)
        if shift_at >= n_batches:
            msg = f"drift_stream: shift_at must be < n_batches={n_batches}, got {shift_at}"
            raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    # Clusters: a seeded, balanced assignment; each cluster ranks its items by a seeded order.
    cluster_of = rng.permutation(n_items) % n_clusters
    members = [np.flatnonzero(cluster_of == c) for c in range(n_clusters)]
    members = [rng.permutation(m) for m in members]
    cluster_p = [zipf_probabilities(len(m), exponent) for m in members]
    global_order = rng.permutation(n_items)
    global_p = zipf_probabilities(n_items, exponent)
    favourite = rng.integers(0, n_clusters, n_users)

    n = n_batches * batch_size
    users = rng.integers(0, n_users, n)
    local = rng.random(n) < affinity
    items = global_order[rng.choice(n_items, size=n, p=global_p)]
    fav = favourite[users]
    for c in range(n_clusters):
        sel = np.flatnonzero(local & (fav == c))
        if len(sel):
            items[sel] = members[c][rng.choice(len(members[c]), size=len(sel), p=cluster_p[c])]
    # The shift draws from its own stream so the stationary twin shares every other draw.
    shift_rng = np.random.default_rng([int(seed), 0x5D1F7])
    remap = np.arange(n_items, dtype=np.int64)
    moved = shift_rng.choice(n_items, size=max(2, round(shift_fraction * n_items)),
                             replace=False) if n_items > 1 else remap[:0]
    if shift_at is not None:
        remap[moved] = moved[shift_rng.permutation(len(moved))]
        cut = shift_at * batch_size
        items[cut:] = remap[items[cut:]]
    ts = start_s + step_s * np.arange(n, dtype=np.float64)
    user_ids = [f"u{u}" for u in users.tolist()]
    item_ids = [f"i{i}" for i in items.tolist()]
    batches = []
    for b in range(n_batches):
        lo, hi = b * batch_size, (b + 1) * batch_size
        batches.append(EventBatch(
            user_ids=user_ids[lo:hi], item_ids=item_ids[lo:hi],
            weights=np.ones(batch_size, np.float32), ts=ts[lo:hi].copy(),
            partitions=np.zeros(batch_size, np.int32),
            offsets=np.arange(lo, hi, dtype=np.int64), actions=["view"] * batch_size,
        ))
    return DriftStream(batches=batches, items=[f"i{k}" for k in range(n_items)],
                       shift_at=shift_at, remap=remap)
