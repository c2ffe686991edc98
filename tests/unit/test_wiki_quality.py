"""Predict-then-learn quality of the declared `wiki-cooc` type on the real Wikipedia stream.

Issue 2: Recall@10 over the last 15% (rank the true page among all 1,000 pages before
learning each batch of 200) must beat the popularity baseline computed the same way.
"""

from __future__ import annotations

import numpy as np

from streamer.datasets import load_events
from streamer.eval.prequential import Popularity, prequential
from streamer.learn.base import EventBatch
from streamer.learn.registry import build_learner
from topologies import TOPOLOGIES


def _stream() -> tuple[list[EventBatch], list[str], int]:
    events = list(load_events("wikipedia"))
    assert len(events) == 157_474
    batches = []
    for s in range(0, len(events), 1000):
        chunk = events[s:s + 1000]
        batches.append(EventBatch.from_rows(
            ((e.user_id, e.item_id, e.weight, e.ts) for e in chunk), first_offset=s))
    pages = sorted({e.item_id for e in events})
    assert len(pages) == 1000
    return batches, pages, int(0.85 * len(events))


def test_wiki_cooc_beats_popularity_on_the_last_15_percent():
    spec = next(s for s in TOPOLOGIES if s.name == "wiki-cooc")
    batches, pages, eval_from = _stream()
    ours = prequential(build_learner(spec.algorithm, spec.params), batches, pages,
                       eval_from=eval_from, batch_size=200, k=10)
    pop = prequential(Popularity(), batches, pages, eval_from=eval_from, batch_size=200, k=10)
    assert ours.n_events == pop.n_events == 157_474 - eval_from
    assert np.isfinite(ours.recall_at_k) and np.isfinite(pop.recall_at_k)
    assert ours.recall_at_k > pop.recall_at_k + 0.2, (ours, pop)
    assert ours.mrr > pop.mrr


def test_wiki_sgns_beats_popularity_and_its_user_half_life_is_the_better_one():
    """The declared `wiki-sgns` type, and the reason for its 1-day user half-life."""
    spec = next(s for s in TOPOLOGIES if s.name == "wiki-sgns")
    batches, pages, eval_from = _stream()
    ours = prequential(build_learner(spec.algorithm, spec.params), batches, pages,
                       eval_from=eval_from, batch_size=200, k=10)
    week = prequential(build_learner(spec.algorithm,
                                     {**spec.params, "user_half_life_s": 7 * 86_400.0}),
                       batches, pages, eval_from=eval_from, batch_size=200, k=10)
    pop = prequential(Popularity(), batches, pages, eval_from=eval_from, batch_size=200, k=10)
    assert ours.n_events == pop.n_events == 157_474 - eval_from
    assert ours.recall_at_k > pop.recall_at_k + 0.5, (ours, pop)
    assert ours.mrr > pop.mrr + 0.5
    assert ours.mrr > week.mrr, (ours.mrr, week.mrr)
