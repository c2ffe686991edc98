"""Half-life maths in event time (DESIGN §3, CONVENTIONS C5).

A decayed count is stored lazily as ``(value, last_ts)``: it is only rescaled when it
is read or touched, never by a timer. An observation ``x`` made at event time ``t``
contributes ``x * 0.5 ** ((T - t) / half_life_s)`` to the value read at a later time
``T``. When an event arrives *older* than ``last_ts`` (out of order), the incoming
contribution is decayed instead of the stored value, so the stored pair always equals
the sum above, whatever the arrival order: merges are order-insensitive in exact
arithmetic (floating-point rounding still follows the order of application).

This is the scheme of Twitter's SimClusters real-time tweet embeddings, whose
favourite counts decay with an 8 h half-life and are updated lazily on read
(Satuluri et al., "SimClusters: Community-Based Representations for Heterogeneous
Recommendations at Twitter", KDD 2020, §5.2).

All times are event seconds (the engagement's own timestamp), never wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamer.errors import ConfigError

__all__ = ["DecayedValue", "HalfLife", "decay_factor", "merge_decayed"]


def decay_factor(age_s: float, half_life_s: float) -> float:
    """Return ``0.5 ** (age_s / half_life_s)``, the weight of an observation ``age_s`` old.

    Parameters
    ----------
    age_s
        Age in event seconds. Ages ``<= 0`` give ``1.0`` (no growth into the past).
    half_life_s
        Half-life in event seconds, ``> 0``; ``math.inf`` means no decay.

    Returns
    -------
    float
        In ``[0, 1]``; underflows to ``0.0`` after about 1075 half-lives.

    Examples
    --------
    >>> decay_factor(3600.0, 3600.0)
    0.5
    >>> decay_factor(-5.0, 10.0)
    1.0
    """
    if age_s <= 0.0:
        return 1.0
    return 0.5 ** (age_s / half_life_s)


@dataclass(frozen=True, slots=True)
class HalfLife:
    """A half-life in event seconds.

    Parameters
    ----------
    seconds
        Half-life in event seconds, ``> 0`` (``math.inf`` disables decay).

    Raises
    ------
    ConfigError
        If ``seconds`` is not a positive number.

    Examples
    --------
    >>> HalfLife(10.0).weight(20.0)
    0.25
    """

    seconds: float

    def __post_init__(self) -> None:
        s = self.seconds
        if not isinstance(s, int | float) or isinstance(s, bool) or math.isnan(s) or s <= 0:
            msg = f"half_life_s must be a positive number of event seconds, got {s!r}"
            raise ConfigError(msg)

    def weight(self, age_s: float) -> float:
        """Return the weight of a count ``age_s`` event seconds old (1 now, 0.5 at a half-life)."""
        return decay_factor(age_s, self.seconds)


@dataclass(slots=True)
class DecayedValue:
    """A lazily decayed scalar ``(value, last_ts)``: the pure-Python reference of the kernels.

    Attributes
    ----------
    value
        The count as of ``last_ts``.
    last_ts
        Event time (s) the value refers to; ``-inf`` before the first observation.

    Examples
    --------
    >>> d = DecayedValue()
    >>> d.add(1.0, ts=0.0, half_life_s=10.0)
    >>> d.add(1.0, ts=10.0, half_life_s=10.0)
    >>> d.value, d.last_ts
    (1.5, 10.0)
    >>> d.add(1.0, ts=0.0, half_life_s=10.0)   # out of order: the newcomer is decayed
    >>> d.value
    2.0
    """

    value: float = 0.0
    last_ts: float = -math.inf

    def add(self, x: float, *, ts: float, half_life_s: float) -> None:
        """Add observation ``x`` made at event time ``ts`` (seconds)."""
        if ts >= self.last_ts:
            if self.last_ts != -math.inf:
                self.value *= decay_factor(ts - self.last_ts, half_life_s)
            self.value += x
            self.last_ts = ts
        else:
            self.value += x * decay_factor(self.last_ts - ts, half_life_s)

    def at(self, ts: float, half_life_s: float) -> float:
        """Return the value read at event time ``ts`` (not decayed if ``ts <= last_ts``)."""
        if self.last_ts == -math.inf:
            return 0.0
        return self.value * decay_factor(ts - self.last_ts, half_life_s)


def merge_decayed(parts: list[DecayedValue], half_life_s: float) -> DecayedValue:
    """Merge decayed values (e.g. one per source partition) at their common latest time.

    Parameters
    ----------
    parts
        Values to merge, summed in the given order (callers pass partition order).
    half_life_s
        Half-life in event seconds.

    Returns
    -------
    DecayedValue
        ``last_ts`` is the max of the parts' ``last_ts``; ``value`` the sum of each part
        decayed to it. An empty list gives ``DecayedValue()``.
    """
    live = [p for p in parts if p.last_ts != -math.inf]
    if not live:
        return DecayedValue()
    ref = max(p.last_ts for p in live)
    total = 0.0
    for p in live:
        total += p.value * decay_factor(ref - p.last_ts, half_life_s)
    return DecayedValue(total, ref)
