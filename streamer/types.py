"""Shared type aliases and the injectable clock.

Arrays are float32 unless stated. Time in these APIs is in seconds (float); event
time is the engagement's own timestamp, wall time only ever comes from a :class:`Clock`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

EntityId = str
"""A namespaced entity id inside an embedding type: ``u:<user_id>`` or ``i:<item_id>``."""

Vector = npt.NDArray[np.float32]
"""Shape ``(dim,)``, float32."""

Matrix = npt.NDArray[np.float32]
"""Shape ``(n, dim)``, float32."""

USER_PREFIX = "u:"
ITEM_PREFIX = "i:"


def user_key(user_id: str) -> EntityId:
    """Return the namespaced entity id of a user (``u:<user_id>``)."""
    return USER_PREFIX + user_id


def item_key(item_id: str) -> EntityId:
    """Return the namespaced entity id of an item (``i:<item_id>``)."""
    return ITEM_PREFIX + item_id


def entity_kind(entity: EntityId) -> str:
    """Return ``"user"`` or ``"item"`` for a namespaced id.

    Raises
    ------
    ValueError
        If the id carries neither the ``u:`` nor the ``i:`` prefix.
    """
    if entity.startswith(USER_PREFIX):
        return "user"
    if entity.startswith(ITEM_PREFIX):
        return "item"
    msg = f"entity id {entity!r} has no 'u:' or 'i:' prefix"
    raise ValueError(msg)


class Clock(Protocol):
    """Source of wall time in seconds since the epoch (injectable for tests)."""

    def now_s(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``), seconds since the epoch."""

    def now_s(self) -> float:
        """Return ``time.time()``."""
        return time.time()


@dataclass
class ManualClock:
    """A clock that only moves when told to; for tests.

    Examples
    --------
    >>> c = ManualClock(10.0)
    >>> c.advance(5)
    >>> c.now_s()
    15.0
    """

    t: float = 0.0

    def now_s(self) -> float:
        """Return the current manual time in seconds."""
        return self.t

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by ``dt_s`` seconds."""
        self.t += dt_s
