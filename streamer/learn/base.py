"""The learner interface every embedding algorithm implements (DESIGN §3, CONVENTIONS C2).

A learner is pure: no I/O, no wall clock, no global RNG. It takes columnar
micro-batches of decoded engagements and keeps one vector per namespaced entity
(``u:<user_id>``, ``i:<item_id>``) in one shared space (users co-embedded with items).

Exactly-once delivery (DESIGN §6) needs the learner to hand over *all state changed
since the last flush* as opaque byte records (:meth:`OnlineLearner.state_changes`) so the
runtime can write them in the same RocksDB ``WriteBatch`` as the vectors and offsets,
and to rebuild itself from those records on restart (:meth:`OnlineLearner.load_state_records`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamer.types import EntityId, Matrix


@dataclass(frozen=True)
class EventBatch:
    """A columnar micro-batch of valid engagements, in stream order.

    Attributes
    ----------
    user_ids, item_ids
        Raw (not namespaced) ids, ``n`` strings each.
    weights
        Shape ``(n,)`` float32, > 0: event weight times the type's action weight.
    ts
        Shape ``(n,)`` float64, event time in seconds since the epoch.
    partitions
        Shape ``(n,)`` int32, source Kafka partition (0 when there is none).
    offsets
        Shape ``(n,)`` int64, source offset (or row number when there is no Kafka).
    actions
        ``n`` action names (already validated).
    """

    user_ids: list[str]
    item_ids: list[str]
    weights: npt.NDArray[np.float32]
    ts: npt.NDArray[np.float64]
    partitions: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    offsets: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    actions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if len(self.partitions) == 0 and n:
            object.__setattr__(self, "partitions", np.zeros(n, np.int32))
        if len(self.offsets) == 0 and n:
            object.__setattr__(self, "offsets", np.arange(n, dtype=np.int64))
        if not self.actions and n:
            object.__setattr__(self, "actions", [""] * n)
        lengths = {
            len(self.item_ids), len(self.weights), len(self.ts),
            len(self.partitions), len(self.offsets), len(self.actions),
        }
        if lengths != {n}:
            msg = f"EventBatch columns differ in length: user_ids={n}, others={sorted(lengths)}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, float, float]],
        *,
        partition: int = 0,
        first_offset: int = 0,
    ) -> EventBatch:
        """Build a batch from ``(user_id, item_id, weight, ts)`` tuples (tests, demo).

        Offsets are ``first_offset, first_offset + 1, ...``; all rows get ``partition``.
        """
        rows = list(rows)
        n = len(rows)
        return cls(
            user_ids=[r[0] for r in rows],
            item_ids=[r[1] for r in rows],
            weights=np.fromiter((r[2] for r in rows), np.float32, n),
            ts=np.fromiter((r[3] for r in rows), np.float64, n),
            partitions=np.full(n, partition, np.int32),
            offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
            actions=[""] * n,
        )

    @classmethod
    def empty(cls) -> EventBatch:
        """Return a batch with no events."""
        return cls([], [], np.zeros(0, np.float32), np.zeros(0, np.float64))

    def slice(self, start: int, stop: int) -> EventBatch:
        """Return rows ``[start, stop)`` as a new batch."""
        return EventBatch(
            self.user_ids[start:stop], self.item_ids[start:stop], self.weights[start:stop],
            self.ts[start:stop], self.partitions[start:stop], self.offsets[start:stop],
            self.actions[start:stop],
        )


class OnlineLearner(abc.ABC):
    """Updates embeddings from micro-batches of engagements. No I/O.

    Contract (checked by ``streamer.checks.learners``):

    * Determinism: the same params, seed and event sequence give bitwise-identical
      vectors and state, whatever the batch boundaries (state is a function of the
      per-partition event order, so a restart that re-cuts batches ends in the same state).
    * ``changed()`` is exact: every id whose vector changed since the last call, no other.
    * No NaN/inf ever appears in a vector.
    * ``state_changes()`` + ``load_state_records()`` round-trip: a fresh learner loaded
      with every record ever emitted (last write per key wins, ``None`` deletes) behaves
      exactly like the original from then on.
    """

    #: Algorithm name as registered (entry-point group ``streamer.algorithms``).
    name: str = "base"

    #: True when every state record belongs to exactly one source partition (or is
    #: global and derived from the params), so a partition's state can move to another
    #: worker with the partition (scale-out, :mod:`streamer.runtime.changelog`). A model
    #: whose parameters are shared by all partitions (SGNS) is not partition-scoped.
    partition_scoped: bool = False

    def state_key_partition(self, key: bytes) -> int | None:
        """Return the source partition a state record key belongs to, or ``None``.

        ``None`` means a global record (e.g. the params record), rebuilt by any worker.
        Only meaningful when :attr:`partition_scoped` is true; the base class says
        ``None`` for every key.

        Raises
        ------
        StateError
            If a partition-scoped learner does not recognise the key.
        """
        return None

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension."""

    @abc.abstractmethod
    def learn_many(self, batch: EventBatch) -> None:
        """Apply a batch of events, in order. Returns ``None``."""

    @abc.abstractmethod
    def vectors(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return current vectors for namespaced ``ids``.

        Returns
        -------
        vectors, mask
            ``(len(ids), dim)`` float32 (zero rows where there is no vector) and a
            ``(len(ids),)`` bool mask of the ids that have one.
        """

    @abc.abstractmethod
    def changed(self) -> set[EntityId]:
        """Return ids whose vectors changed since the last call, and reset the set."""

    @abc.abstractmethod
    def entity_ids(self) -> list[EntityId]:
        """Return every id that has a vector, in a deterministic order."""

    @abc.abstractmethod
    def state_changes(self) -> dict[bytes, bytes | None]:
        """Return the serialised state records changed since the last call, and reset.

        Keys are opaque bytes owned by the learner; ``None`` means delete. Writing them
        with the vectors and offsets in one batch gives exactly-once state (DESIGN §6).
        """

    @abc.abstractmethod
    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild state from all stored records (as written by :meth:`state_changes`)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the full state as plain arrays (for equality checks and snapshots)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one produced by :meth:`state_dict`."""

    def warm_start(self, ids: Sequence[EntityId], vectors: Matrix) -> int:
        """Initialise the vectors of ``ids`` from another type's vectors (transfer).

        Called once on a *fresh* learner, before any event (``streamer worker
        --init-from TYPE``). Ids the learner cannot hold are skipped. The initialised ids
        are reported by :meth:`changed` and their state by :meth:`state_changes`, so the
        runtime commits them like any update.

        Parameters
        ----------
        ids
            Namespaced ids (``u:...`` / ``i:...``), no duplicates.
        vectors
            Shape ``(len(ids), dim)`` float32, finite.

        Returns
        -------
        int
            How many ids got a vector.

        Raises
        ------
        ConfigError
            If the algorithm does not support warm start (the default).
        StateError
            If the learner has already learned events.
        DimensionMismatch
            If ``vectors`` is not ``(len(ids), dim)``.
        """
        from streamer.errors import ConfigError

        msg = f"algorithm {self.name!r} does not support warm start (--init-from)"
        raise ConfigError(msg)

    def update_counts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        """Return how many events have touched each id (0 if unknown); shape ``(len(ids),)``."""
        return np.zeros(len(ids), np.int64)

    def last_event_ts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.float64]:
        """Return the event time (s) of the last update of each id (NaN if unknown)."""
        return np.full(len(ids), np.nan)

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> npt.NDArray[np.float32]:
        """Score candidate items for a user (higher is better); default: cosine of vectors.

        Used by predict-then-learn evaluation. Unknown users or items score 0.
        """
        vecs, mask = self.vectors([user, *items])
        if not mask[0]:
            return np.zeros(len(items), np.float32)
        u = vecs[0]
        m = vecs[1:]
        norms = np.linalg.norm(m, axis=1) * float(np.linalg.norm(u))
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(norms > 0, m @ u / norms, 0.0)
        return s.astype(np.float32)

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, object]]:
        """Yield small, fast constructor params for the contract suite."""
        yield {}
