"""Deliberately broken variants of the example plug-in, one realistic bug each.

Each function takes the (discovered) ``ExampleLearner`` class and returns a subclass
with one defect; the contract tests assert that the named check catches it.
"""

from __future__ import annotations

import numpy as np

from streamer.learn.base import EventBatch


def changed_misses_ids(base: type) -> type:
    """changed() forgets item ids that were touched only by their first event."""

    class ChangedMissesIds(base):
        def changed(self):
            got = super().changed()
            return {k for k in got if not (k.startswith("i:") and self.update_counts([k])[0] == 1)}

    return ChangedMissesIds


def decay_sign_error(base: type) -> type:
    """Decay with the sign flipped: an event 1e13 s late is amplified to inf, then NaN."""

    class DecaySignError(base):
        def _decay(self, age_s):
            with np.errstate(over="ignore"):
                return float(np.exp2(age_s / self.half_life_s))

    return DecaySignError


def scales_weights_in_place(base: type) -> type:
    """Rescales the caller's weight column in place before learning."""

    class ScalesWeightsInPlace(base):
        def learn_many(self, batch: EventBatch) -> None:
            if len(batch):
                np.divide(batch.weights, batch.weights.max(), out=batch.weights)
            super().learn_many(batch)

    return ScalesWeightsInPlace


def unseeded_random_vectors(base: type) -> type:
    """Draws the per-entity random vectors from an unseeded generator."""

    class UnseededRandomVectors(base):
        def _random_vector(self, entity):
            r = np.random.default_rng().standard_normal(self.dim)
            return r / np.sqrt(r @ r)

    return UnseededRandomVectors


def ignores_seed(base: type) -> type:
    """Keys the per-entity random vectors by id only: every seed gives the same vectors."""

    class IgnoresSeed(base):
        def _random_vector(self, entity):
            r = np.random.default_rng(list(entity.encode())).standard_normal(self.dim)
            return r / np.sqrt(r @ r)

    return IgnoresSeed


def warm_start_not_persisted(base: type) -> type:
    """warm_start sets vectors but does not mark their state records dirty."""

    class WarmStartNotPersisted(base):
        def warm_start(self, ids, vectors):
            done = super().warm_start(ids, vectors)
            self._dirty.clear()
            return done

    return WarmStartNotPersisted


def warm_start_after_events(base: type) -> type:
    """warm_start silently overwrites a learner that has already learned events."""

    class WarmStartAfterEvents(base):
        def warm_start(self, ids, vectors):
            n, self._n_events = self._n_events, 0
            try:
                return super().warm_start(ids, vectors)
            finally:
                self._n_events = n

    return WarmStartAfterEvents


def warm_start_no_shape_check(base: type) -> type:
    """warm_start takes the first ``dim`` columns of whatever it is given."""

    class WarmStartNoShapeCheck(base):
        def warm_start(self, ids, vectors):
            v = np.atleast_2d(np.asarray(vectors))[: len(ids), : self.dim]
            v = np.resize(v, (len(ids), self.dim))
            return super().warm_start(ids, v)

    return WarmStartNoShapeCheck


def counts_saturate(base: type) -> type:
    """Reports event counts from a bounded 1,024-event window instead of the full history."""

    class CountsSaturate(base):
        def update_counts(self, ids):
            return np.minimum(super().update_counts(ids), 1024)

    return CountsSaturate
