"""Predict-then-learn harness: ranks with ties, ordering of score vs learn, baselines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamer.errors import BadRequest
from streamer.eval.prequential import Popularity, prequential, rebatch, tie_averaged_ranks
from streamer.learn.base import EventBatch
from streamer.learn.cooccurrence import DecayedCooccurrence


@settings(max_examples=200, deadline=None)
@given(scores=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)),
                         elements=st.sampled_from([0.0, 0.5, 1.0, -2.0, np.nan])),
       data=st.data())
def test_tie_averaged_rank_matches_brute_force(scores, data):
    n, m = scores.shape
    cols = np.array([data.draw(st.integers(0, m - 1)) for _ in range(n)])
    got = tie_averaged_ranks(scores, cols)
    for r in range(n):
        s = np.where(np.isnan(scores[r]), -np.inf, scores[r])
        t = s[cols[r]]
        # all orderings of the tied block are equally likely: mean position of the true one
        above = sum(1 for j in range(m) if s[j] > t)
        tied = sum(1 for j in range(m) if s[j] == t)
        assert got[r] == above + (tied + 1) / 2


def test_tie_averaged_rank_rejects_1d():
    with pytest.raises(BadRequest, match="2-D"):
        tie_averaged_ranks(np.zeros(3), [0])


class EdgeBank:
    """Scores 1 for items the user engaged with in *learned* batches; logs calls."""

    def __init__(self, fast: bool):
        self.seen: set[tuple[str, str]] = set()
        self.log: list[tuple[str, int]] = []
        if fast:
            self.score_matrix = self._matrix

    def learn_many(self, batch):
        self.log.append(("learn", len(batch)))
        pairs = zip(batch.user_ids, batch.item_ids, strict=True)
        self.seen.update(("u:" + u, "i:" + i) for u, i in pairs)

    def score_items(self, user, items):
        self.log.append(("score", 1))
        return np.array([float((user, i) in self.seen) for i in items], np.float32)

    def _matrix(self, users, items):
        self.log.append(("score", len(users)))
        return np.array([[float((u, i) in self.seen) for i in items] for u in users])


STREAM = EventBatch.from_rows([
    ("a", "x", 1, 0), ("a", "y", 1, 1), ("b", "x", 1, 2),  # warm-up
    ("a", "x", 1, 3), ("a", "z", 1, 4),  # eval batch 1
    ("b", "z", 1, 5), ("b", "x", 1, 6),  # eval batch 2
])


@pytest.mark.parametrize("fast", [True, False])
def test_scores_each_batch_before_learning_it(fast):
    bank = EdgeBank(fast)
    res = prequential(bank, [STREAM.slice(0, 2), STREAM.slice(2, 7)], ["x", "y", "z", "w"],
                      eval_from=3, batch_size=2, k=2)
    # by hand, 4 candidates, scored before the batch is learned:
    # (a,x): a has {x,y} -> x ties with y at 1: rank (1+2)/2;  (a,z): z ties with z,w at 0
    # behind 2 -> (3+4)/2;  (b,z): b has {x} -> (2+4)/2;  (b,x): alone on top -> 1
    ranks = np.array([1.5, 3.5, 3.0, 1.0])
    assert res.n_events == 4
    assert res.recall_at_k == 0.5
    assert res.mrr == pytest.approx(np.mean(1 / ranks))
    assert (res.n_repeat, res.recall_repeat, res.n_new, res.recall_new) == (2, 1.0, 2, 0.0)
    assert res.mrr_repeat == pytest.approx(np.mean(1 / ranks[[0, 3]]))
    learned = [n for kind, n in bank.log if kind == "learn"]
    assert learned == [2, 1, 2, 2]  # warm-up batches cut at eval_from, then eval batches
    kinds = [kind for kind, _ in bank.log]
    per_batch = ["score"] if fast else ["score", "score"]
    assert kinds == ["learn", "learn", *per_batch, "learn", *per_batch, "learn"]


def test_unknown_candidate_and_bad_args():
    with pytest.raises(BadRequest, match="not among"):
        prequential(EdgeBank(True), [STREAM], ["x", "y"], eval_from=0)
    with pytest.raises(BadRequest, match="batch_size"):
        prequential(EdgeBank(True), [STREAM], ["x"], eval_from=0, batch_size=0)
    with pytest.raises(BadRequest, match="candidate"):
        prequential(EdgeBank(True), [STREAM], [], eval_from=0)


def test_nothing_to_score_gives_nan():
    res = prequential(EdgeBank(True), [STREAM], ["x", "y", "z"], eval_from=100)
    assert res.n_events == 0 and np.isnan(res.recall_at_k)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 5), max_size=8), size=st.integers(1, 4))
def test_rebatch_preserves_events(sizes, size):
    rows = [(str(k), str(k), 1.0, float(k)) for k in range(sum(sizes))]
    bounds = np.cumsum([0, *sizes])
    batch = EventBatch.from_rows(rows) if rows else EventBatch.empty()
    parts = [batch.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    out = list(rebatch(parts, size))
    assert [u for b in out for u in b.user_ids] == [r[0] for r in rows]
    assert all(len(b) == size for b in out[:-1]) and all(0 < len(b) <= size for b in out)


def test_popularity_plain_and_decayed():
    ev = EventBatch.from_rows([("u", "a", 1, 0), ("u", "a", 1, 10), ("u", "b", 2, 20),
                               ("u", "c", 1, 5)])
    plain = Popularity()
    plain.learn_many(ev)
    assert plain.score_items("u:x", ["i:a", "i:b", "i:c", "i:z"]).tolist() == [2, 2, 1, 0]
    dec = Popularity(half_life_s=10.0)
    dec.learn_many(ev)
    want = [0.25 + 0.5, 2.0, 2 ** -1.5]  # decayed to t=20
    np.testing.assert_allclose(dec.score_items("u:x", ["i:a", "i:b", "i:c"]), want)
    with pytest.raises(BadRequest):
        Popularity(half_life_s=0)


def _clustered_stream(seed: int, n: int = 4000) -> tuple[EventBatch, list[str]]:
    """Users in 20 groups engage uniformly with their group's 10 items."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 200, n)
    items = (users % 20) * 10 + rng.integers(0, 10, n)
    ev = EventBatch([str(u) for u in users], [str(i) for i in items], np.ones(n, np.float32),
                    np.arange(n, dtype=np.float64) * 30.0)
    return ev, [str(i) for i in range(200)]


def test_cooc_learns_structure_that_popularity_cannot():
    ev, cands = _clustered_stream(0)
    start = int(0.7 * len(ev))
    cooc = prequential(DecayedCooccurrence(dim=64, half_life_s=1e6, affinity_weight=0.0, seed=1),
                       [ev], cands, eval_from=start)
    pop = prequential(Popularity(), [ev], cands, eval_from=start)
    # one group has 10 of 200 items: group-aware ranking puts the true item in the top 10
    assert cooc.recall_at_k > 0.8
    assert pop.recall_at_k < 0.2
    assert cooc.mrr > 3 * pop.mrr
