"""Example third-party streamer algorithm: decayed means of seeded random vectors.

This module is what a plug-in author ships (see ``pyproject.toml`` beside it for the
``streamer.algorithms`` entry point). It is deliberately small but complete: it passes
the whole learner contract suite (``streamer.checks.learners.yield_checks``),
including warm start.

The algorithm
-------------
Every entity ``e`` has a fixed random unit vector ``r_e`` drawn from ``(seed, e)``.
For each event ``(u, i, w, t)``, in stream order, with ``a = log1p(w)``:

* the item accumulates its users' random vectors: ``s_i += a * r_u``; the item's vector
  is ``v_i = s_i / |s_i|`` (items engaged by the same users point the same way);
* the user keeps an exponentially decayed sum of the vectors of the items it engaged
  with: ``z_u = 2^(-(t - t_u) / half_life_s) * z_u + a * v_i`` (a late event is added
  decayed instead: ``z_u += 2^(-(t_u - t) / half_life_s) * a * v_i``), and its vector is
  ``z_u / |z_u|``, so users and items share one space.

``log1p`` damps absurd weights, decay is in event seconds (never wall time), and every
event is applied in order, so the state is bitwise independent of batch boundaries.
It is a toy version of item-based collaborative filtering with random indexing
(M. Sahlgren, "An Introduction to Random Indexing", TKE 2005) and decayed counts
(Satuluri et al., "SimClusters", KDD 2020 §5.2); it is an example, not a tuned model.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, ConfigError, DimensionMismatch, InvalidVector, StateError
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.types import EntityId, Matrix, item_key, user_key

__all__ = ["ExampleLearner"]

_META = b"m"
_ENT = b"e:"
_HEAD = struct.Struct("<dq")  # last_ts (s, NaN = never), event count


class ExampleLearner(OnlineLearner):
    """Items: mean of their users' random vectors; users: decayed mean of their items.

    Parameters
    ----------
    dim
        Vector dimension, >= 1.
    half_life_s
        Half-life of a user's memory, in event seconds (``inf``: never forget).
    seed
        Seed of the per-entity random vectors (with the id, keys a BLAKE2b hash).

    Raises
    ------
    ConfigError
        If a parameter is out of range.

    Notes
    -----
    State per entity: ``acc`` (``(dim,)`` float64: ``s_i`` or ``z_u``), ``last_ts``
    (event seconds of the latest event, NaN if none) and an event count. Published
    vectors are ``acc / |acc|`` as float32. Not per-partition: events of all partitions
    are applied in batch order. Thread safety: none (one writer).

    Examples
    --------
    >>> m = ExampleLearner(dim=4, seed=1)
    >>> m.learn_many(EventBatch.from_rows([("ann", "a", 1.0, 0.0)]))
    >>> sorted(m.changed())
    ['i:a', 'u:ann']
    """

    name = "example"
    per_partition_state = False

    def __init__(self, dim: int = 32, half_life_s: float = 86_400.0, seed: int = 0) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            msg = f"example: dim must be an integer >= 1, got {dim!r}"
            raise ConfigError(msg)
        if (not isinstance(half_life_s, int | float) or isinstance(half_life_s, bool)
                or not half_life_s > 0):
            msg = f"example: half_life_s must be a number > 0 (event seconds), got {half_life_s!r}"
            raise ConfigError(msg)
        if not isinstance(seed, int) or isinstance(seed, bool):
            msg = f"example: seed must be an integer, got {seed!r}"
            raise ConfigError(msg)
        self._dim = dim
        self.half_life_s = float(half_life_s)
        self.seed = seed
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=16,
                                    person=b"example-plugin").digest()
        self._reset()

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, object]]:
        """Yield small, fast constructor params for the contract suite."""
        yield {"dim": 8, "half_life_s": 60.0, "seed": 5}
        yield {"dim": 16, "half_life_s": math.inf, "seed": 0}

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        d = self._dim
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._rand = np.zeros((0, d), np.float64)
        self._acc = np.zeros((0, d), np.float64)
        self._last_ts = np.zeros(0, np.float64)
        self._count = np.zeros(0, np.int64)
        self._pub = np.zeros((0, d), np.float32)
        self._ok = np.zeros(0, np.bool_)
        self._n_events = 0
        self._before: dict[int, tuple[bool, np.ndarray]] = {}  # published at last changed()
        self._dirty: set[int] = set()  # entities whose records are not flushed
        self._meta_dirty = False

    def _random_vector(self, entity: str) -> npt.NDArray[np.float64]:
        h = hashlib.blake2b(entity.encode(), digest_size=8, key=self._key).digest()
        r = np.random.default_rng(int.from_bytes(h, "little")).standard_normal(self._dim)
        return r / np.sqrt(r @ r)

    def _entity(self, key: str) -> int:
        e = self._index.get(key)
        if e is not None:
            return e
        e = len(self._ids)
        if e == len(self._acc):
            cap = max(16, 2 * e)
            for name in ("_rand", "_acc", "_pub"):
                old = getattr(self, name)
                new = np.zeros((cap, self._dim), old.dtype)
                new[:e] = old
                setattr(self, name, new)
            self._last_ts = np.concatenate([self._last_ts, np.full(cap - e, np.nan)])
            self._count = np.concatenate([self._count, np.zeros(cap - e, np.int64)])
            self._ok = np.concatenate([self._ok, np.zeros(cap - e, np.bool_)])
        self._index[key] = e
        self._ids.append(key)
        self._rand[e] = self._random_vector(key)
        return e

    def _touch(self, e: int) -> None:
        if e not in self._before:
            self._before[e] = (bool(self._ok[e]), self._pub[e].copy())
        self._dirty.add(e)

    def _publish(self, e: int) -> npt.NDArray[np.float64]:
        """Set the published vector of ``e`` from its ``acc``; return the float64 unit vector."""
        x = self._acc[e]
        n2 = float(x @ x)
        if not 1e-250 < n2 < math.inf:  # tiny or huge: rescale by max |x| first
            s = float(np.abs(x).max())
            if s == 0.0:
                self._ok[e] = False
                self._pub[e] = 0.0
                return x
            x = x / s
            n2 = float(x @ x)
        y = x / math.sqrt(n2)
        self._pub[e] = y
        self._ok[e] = True
        return y

    # ------------------------------------------------------------------ learning
    def _decay(self, age_s: float) -> float:
        """Return ``2^(-age_s / half_life_s)``: what is left of a unit after ``age_s`` >= 0 s."""
        return math.exp2(-age_s / self.half_life_s)

    def learn_many(self, batch: EventBatch) -> None:
        """Apply a batch of events in batch order.

        Parameters
        ----------
        batch
            Raw user/item ids, weights (finite, > 0) and event times (finite seconds).

        Raises
        ------
        BadRequest
            If a weight is not finite and > 0, or a ts is not finite.
        """
        n = len(batch)
        if n == 0:
            return
        w = np.asarray(batch.weights, np.float64)
        if not (np.isfinite(w).all() and (w > 0).all()):
            bad = w[~(np.isfinite(w) & (w > 0))][0]
            msg = f"example: event weights must be finite and > 0, got {bad!r}"
            raise BadRequest(msg)
        if not np.isfinite(batch.ts).all():
            msg = "example: event ts must be finite event seconds"
            raise BadRequest(msg)
        users = [self._entity(user_key(u)) for u in batch.user_ids]
        items = [self._entity(item_key(i)) for i in batch.item_ids]
        amounts = np.log1p(w).tolist()
        acc, rand, last_ts = self._acc, self._rand, self._last_ts
        for u, i, a, t in zip(users, items, amounts, batch.ts.tolist(), strict=True):
            self._touch(u)
            self._touch(i)
            acc[i] += a * rand[u]
            v = self._publish(i)
            lu = last_ts[u]
            if math.isnan(lu):
                acc[u] += a * v
                last_ts[u] = t
            elif t >= lu:
                acc[u] *= self._decay(t - lu)
                acc[u] += a * v
                last_ts[u] = t
            else:
                acc[u] += (a * self._decay(lu - t)) * v
            self._publish(u)
            li = last_ts[i]
            if math.isnan(li) or t > li:
                last_ts[i] = t
            self._count[u] += 1
            self._count[i] += 1
        self._n_events += n
        self._meta_dirty = True

    def warm_start(self, ids: Sequence[EntityId], vectors: Matrix) -> int:
        """Set the accumulators of ``ids`` to ``vectors`` before any event (transfer).

        Ids without a ``u:``/``i:`` prefix and all-zero rows are skipped. A warm-started
        user has no ``last_ts``, so its first event adds to the prior without decaying it.

        Parameters
        ----------
        ids
            Namespaced ids, no duplicates.
        vectors
            Shape ``(len(ids), dim)``, finite.

        Returns
        -------
        int
            How many ids got a vector.

        Raises
        ------
        StateError
            If the learner has already learned events.
        DimensionMismatch
            If ``vectors`` is not ``(len(ids), dim)``.
        InvalidVector
            If a vector has NaN or inf.
        """
        if self._n_events:
            msg = (f"example: warm_start needs a fresh learner, this one has learned "
                   f"{self._n_events} events")
            raise StateError(msg)
        arr = np.asarray(vectors)
        if arr.shape != (len(ids), self._dim):
            msg = (f"example: warm_start expects vectors of shape ({len(ids)}, {self._dim}), "
                   f"got {arr.shape}")
            raise DimensionMismatch(msg)
        if not np.isfinite(arr).all():
            msg = "example: warm_start vectors must be finite (NaN or inf found)"
            raise InvalidVector(msg)
        done = 0
        for key, v in zip(ids, arr.astype(np.float64), strict=True):
            if not key.startswith(("u:", "i:")) or not v.any():
                continue
            e = self._entity(key)
            self._touch(e)
            self._acc[e] = v
            self._publish(e)
            done += 1
        if done:
            self._meta_dirty = True
        return done

    # ------------------------------------------------------------------ reading
    def vectors(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return read-only ``(len(ids), dim)`` float32 unit vectors and a bool mask."""
        idx = np.fromiter((self._index.get(k, -1) for k in ids), np.int64, len(ids))
        mask = np.zeros(len(ids), np.bool_)
        mask[idx >= 0] = self._ok[idx[idx >= 0]]
        out = np.zeros((len(ids), self._dim), np.float32)
        out[mask] = self._pub[idx[mask]]
        out.flags.writeable = False
        mask.flags.writeable = False
        return out, mask

    def changed(self) -> set[EntityId]:
        """Return ids whose published vector differs bitwise from the last call; reset."""
        out = {self._ids[e] for e, (ok, v) in self._before.items()
               if ok != self._ok[e] or (ok and not np.array_equal(v, self._pub[e]))}
        self._before = {}
        return out

    def entity_ids(self) -> list[EntityId]:
        """Return every id with a vector, sorted."""
        return sorted(self._ids[e] for e in np.flatnonzero(self._ok[: len(self._ids)]).tolist())

    def update_counts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        """Return how many events touched each id (0 if unknown); ``(len(ids),)`` int64."""
        return np.array([self._count[self._index[k]] if k in self._index else 0 for k in ids],
                        np.int64)

    def last_event_ts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.float64]:
        """Return the latest event time (s) of each id (NaN if unknown or never)."""
        return np.array([self._last_ts[self._index[k]] if k in self._index else np.nan
                         for k in ids], np.float64)

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> bytes:
        return json.dumps({"dim": self._dim, "n_events": self._n_events}).encode()

    def state_changes(self) -> dict[bytes, bytes | None]:
        """Return records of entities changed since the last call (and the meta record).

        Layout: ``b"m"`` -> JSON ``{"dim", "n_events"}``; ``b"e:" + id`` ->
        ``<d last_ts, <q count`` + ``dim`` little-endian float64 of ``acc``.
        """
        out: dict[bytes, bytes | None] = {}
        for e in sorted(self._dirty):
            out[_ENT + self._ids[e].encode()] = (
                _HEAD.pack(float(self._last_ts[e]), int(self._count[e]))
                + self._acc[e].astype("<f8").tobytes())
        if self._meta_dirty or out:
            out[_META] = self._meta()
        self._dirty = set()
        self._meta_dirty = False
        return out

    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild the state from every stored record (see :meth:`state_changes`).

        Raises
        ------
        StateError
            If a record is malformed or was written with another ``dim``.
        """
        self._reset()
        size = _HEAD.size + 8 * self._dim
        for key, value in sorted(records):
            if key == _META:
                meta = json.loads(value)
                if meta.get("dim") != self._dim:
                    msg = f"example: state has dim={meta.get('dim')}, learner has dim={self._dim}"
                    raise StateError(msg)
                self._n_events = int(meta["n_events"])
            elif key.startswith(_ENT) and len(value) == size:
                e = self._entity(key[len(_ENT):].decode())
                ts, count = _HEAD.unpack_from(value)
                self._last_ts[e], self._count[e] = ts, count
                self._acc[e] = np.frombuffer(value, "<f8", offset=_HEAD.size)
                self._publish(e)
            else:
                msg = f"example: malformed state record {key[:40]!r} ({len(value)} bytes)"
                raise StateError(msg)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the state as arrays sorted by id.

        Returns
        -------
        dict
            ``ids`` (n,) str, ``acc`` (n, dim) float64, ``last_ts`` (n,) float64 (event
            seconds, NaN = none), ``count`` (n,) int64, ``n_events`` (1,) int64.
        """
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        idx = np.asarray(order, np.int64)
        return {
            "ids": np.array([self._ids[e] for e in order], dtype=np.str_),
            "acc": self._acc[idx].copy(),
            "last_ts": self._last_ts[idx].copy(),
            "count": self._count[idx].copy(),
            "n_events": np.array([self._n_events], np.int64),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with one from :meth:`state_dict`.

        Raises
        ------
        DimensionMismatch
            If ``acc`` is not ``(n, dim)``.
        """
        acc = np.asarray(state["acc"], np.float64)
        ids = [str(k) for k in np.asarray(state["ids"]).tolist()]
        if acc.shape != (len(ids), self._dim):
            msg = f"example: state acc has shape {acc.shape}, expected ({len(ids)}, {self._dim})"
            raise DimensionMismatch(msg)
        self._reset()
        for k, key in enumerate(ids):
            e = self._entity(key)
            self._acc[e] = acc[k]
            self._last_ts[e] = state["last_ts"][k]
            self._count[e] = state["count"][k]
            self._publish(e)
        self._n_events = int(np.asarray(state["n_events"])[0])


def _types() -> tuple:
    """Types this plug-in declares (the ``streamer.types`` entry point).

    ``demo-cooc`` v2 sits beside the built-in v1 (a candidate until promoted): the same
    learner, int8 storage and a 5,000 event-second TTL (the demo's events are 1 s
    apart). ``example-type`` runs this plug-in's own algorithm.
    """
    from streamer.topology import TopologySpec

    return (
        TopologySpec(name="demo-cooc", algorithm="cooc",
                     params={"dim": 64, "half_life_s": 1e12, "seed": 7}, version=2,
                     description="Demo v2: demo-cooc with int8 storage and a 5,000 s TTL.",
                     owner="example-plugin", storage_codec="int8", ttl_s=5_000.0),
        TopologySpec(name="example-type", algorithm="example", params={"dim": 16},
                     description="The example plug-in's decayed means of random vectors.",
                     owner="example-plugin"),
    )


TYPES = _types()
