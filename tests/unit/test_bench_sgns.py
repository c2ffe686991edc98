"""Pure helpers of benchmarks/sgns.py and the Zipf stream generator (no timing asserts)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.eval.prequential import prequential
from streamer.learn.base import EventBatch
from streamer.testing.zipf import (
    draws_for_distinct,
    expected_distinct,
    zipf_probabilities,
    zipf_stream,
)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sgns.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sgns", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_sgns"] = mod
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ sessionisation
def _brute_sessions(users, ts, gap):
    """Reference: walk the stream, one open session per user."""
    last: dict = {}
    current: dict = {}
    out, n_sess = [], 0
    for u, t in zip(users, ts, strict=True):
        if u not in last or t - last[u] > gap:
            current[u] = n_sess
            n_sess += 1
        last[u] = t
        out.append(current[u])
    return out


def test_session_ids_split_at_gaps_and_number_by_start(bench):
    users = ["a", "b", "a", "a", "b", "c", "a"]
    ts = [0.0, 1.0, 5.0, 20.0, 30.0, 31.0, 31.0]
    # a: 0, 5 | 20 (gap 15 > 10) | 31 (gap 11 > 10); b: 1 | 30; c: 31
    assert bench.session_ids(users, ts, 10.0).tolist() == [0, 1, 0, 2, 3, 4, 5]
    assert bench.session_ids(users, ts, math.inf).tolist() == [0, 1, 0, 0, 1, 2, 0]
    # a gap of exactly max_gap_s does not split
    assert bench.session_ids(["a", "a"], [0.0, 10.0], 10.0).tolist() == [0, 0]


def test_session_ids_match_a_brute_force_walk(bench):
    rng = np.random.default_rng(7)
    users = [f"u{k}" for k in rng.integers(0, 15, 2000)]
    ts = np.cumsum(rng.exponential(3.0, 2000))
    for gap in (0.5, 10.0, 60.0, math.inf):
        assert bench.session_ids(users, ts, gap).tolist() == _brute_sessions(users, ts, gap)
    codes = rng.integers(0, 15, 500)
    t2 = np.cumsum(rng.exponential(3.0, 500))
    assert bench.session_ids(codes, t2, 10.0).tolist() == _brute_sessions(codes.tolist(), t2, 10.0)


def test_sentences_group_items_by_session_in_stream_order(bench):
    items = ["x", "y", "z", "x", "w", "v"]
    sess = np.array([0, 1, 0, 2, 1, 0])
    assert bench.sentences(items, sess) == [["x", "z", "v"], ["y", "w"], ["x"]]
    # a slice (e.g. one batch) keeps only the sessions present
    assert bench.sentences(items[3:], sess[3:]) == [["v"], ["w"], ["x"]]
    assert bench.sentences([], np.zeros(0, np.int64)) == []


def test_split_long_keeps_every_token(bench):
    sents = [list("abcdefg"), list("ab")]
    out = bench.split_long(sents, max_len=3)
    assert out == [list("abc"), list("def"), ["g"], list("ab")]
    assert sum(map(len, out)) == 9


# ------------------------------------------------------------------ pair counting
def _brute_pairs(length: int, window: int) -> int:
    """gensim's train_batch_sg loop with shrink_windows=False, counted."""
    n = 0
    for i in range(length):
        for j in range(max(0, i - window), min(length, i + window + 1)):
            if j != i:
                n += 1
    return n


@pytest.mark.parametrize("window", [0, 1, 2, 5, 9])
def test_sg_pairs_matches_brute_force(bench, window):
    lengths = list(range(0, 30)) + [57, 101]
    want = sum(_brute_pairs(n, window) for n in lengths)
    assert bench.sg_pairs(lengths, window) == want
    assert bench.sg_pairs([7], window) == _brute_pairs(7, window)


def test_sg_pairs_is_what_a_streaming_window_trains(bench):
    # Ours pairs each new item with the previous `window` items of the session, in both
    # directions: 2 * min(i, w) pairs for the i-th event; same total as gensim's.
    for length in (1, 3, 6, 40):
        streaming = sum(2 * min(i, 5) for i in range(length))
        assert bench.sg_pairs([length], 5) == streaming


# ------------------------------------------------------------------ zipf generator
def test_zipf_stream_is_deterministic_under_a_seed():
    a = zipf_stream(5000, n_items=2000, gap_s=600.0, seed=3)
    b = zipf_stream(5000, n_items=2000, gap_s=600.0, seed=3)
    c = zipf_stream(5000, n_items=2000, gap_s=600.0, seed=4)
    for field in ("users", "items", "ts", "sessions"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.items, c.items)
    assert a.to_batch().item_ids == b.to_batch().item_ids


def test_zipf_stream_reaches_the_distinct_target_at_small_scale():
    target = 3000
    n = draws_for_distinct(target, 6000, 0.8)
    s = zipf_stream(n, n_items=6000, exponent=0.8, seed=0)
    assert len(s) == n
    assert s.distinct_items() >= target
    assert s.distinct_items() == len(set(s.to_batch().item_ids))
    # the expectation the size was chosen from is close to what occurred
    exp = expected_distinct(n, zipf_probabilities(6000, 0.8))
    assert abs(s.distinct_items() - exp) < 5 * math.sqrt(exp)
    # popularity is skewed: the most frequent item is far above the mean
    counts = np.bincount(s.items)
    assert counts.max() > 20 * counts[counts > 0].mean()


def test_zipf_sessions_are_recovered_by_sessionisation(bench):
    s = zipf_stream(20_000, n_items=5000, gap_s=900.0, max_session=30, step_s=60.0, seed=1)
    assert bool((np.diff(s.ts) >= 0).all())
    assert np.array_equal(bench.session_ids(s.users, s.ts, 900.0), s.sessions)
    assert np.bincount(s.sessions).max() <= 30


def test_zipf_rejects_unreachable_targets_and_bad_users():
    with pytest.raises(ConfigError, match="n_items"):
        draws_for_distinct(1000, 1000, 0.8)
    with pytest.raises(ConfigError, match="n_users"):
        zipf_stream(100, n_items=100, n_users=2, gap_s=600.0)
    with pytest.raises(ConfigError, match="exponent"):
        zipf_probabilities(10, -1.0)


# ------------------------------------------------------------------ gensim-side scorer
def test_frozen_scorer_builds_decayed_weighted_mean_like_ours(bench):
    keys = ["a", "b", "c"]
    vec = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], np.float32)
    s = bench.FrozenItemScorer(keys, vec, half_life_s=10.0)
    s.learn_many(EventBatch.from_rows([
        ("u", "a", 1.0, 0.0),
        ("u", "b", 2.0, 10.0),      # a's mass halves: (0.5 * a + 2 * b) / 2.5
        ("u", "unknown", 5.0, 12.0),  # no vector: user unchanged
        ("v", "c", 1.0, 0.0),
    ]))
    np.testing.assert_allclose(s.user_vector("u"), [0.2, 0.8], rtol=1e-6)
    np.testing.assert_allclose(s.user_vector("v"), [3.0, 4.0])
    assert s.user_vector("w") is None
    # an event older than the user's latest is added with its own decay
    s.learn_many(EventBatch.from_rows([("u", "a", 1.0, 0.0)]))  # weight 0.5 at t=10
    # (0.5 * a + 2 * b + 0.5 * a) / 3
    np.testing.assert_allclose(s.user_vector("u"), [1 / 3, 2 / 3], rtol=1e-6)
    # infinite half-life: a plain weighted mean
    p = bench.FrozenItemScorer(keys, vec, half_life_s=math.inf)
    p.learn_many(EventBatch.from_rows([("u", "a", 1.0, 0.0), ("u", "b", 1.0, 1e9)]))
    np.testing.assert_allclose(p.user_vector("u"), [0.5, 0.5])


def test_frozen_scorer_scores_cosine_and_unknowns_zero(bench):
    keys = ["a", "b"]
    vec = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    s = bench.FrozenItemScorer(keys, vec, half_life_s=60.0)
    s.learn_many(EventBatch.from_rows([("u", "b", 1.0, 0.0)]))
    np.testing.assert_allclose(s.score_items("u:u", ["i:a", "i:b", "i:zzz"]), [0.0, 1.0, 0.0])
    assert s.score_items("u:nobody", ["i:a", "i:b"]).tolist() == [0.0, 0.0]
    m = s.score_matrix(["u:u", "u:nobody"], ["i:b", "i:a"])
    assert m.shape == (2, 2) and m[0, 0] == pytest.approx(1.0) and m[1].tolist() == [0.0, 0.0]


def test_frozen_scorer_runs_under_prequential(bench):
    # users alternate between two item clusters; the last item predicts the next one
    keys = ["a", "b", "c", "d"]
    vec = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    rows = []
    for k in range(40):
        u = f"u{k % 4}"
        item = ("a", "b") if k % 4 < 2 else ("c", "d")
        rows.append((u, item[(k // 4) % 2], 1.0, float(k)))
    stream = EventBatch.from_rows(rows)
    res = prequential(bench.FrozenItemScorer(keys, vec, 5.0), [stream], keys, eval_from=20,
                      batch_size=4)
    assert res.n_events == 20
    # The user vector leans to the last item, so the true (other) item of the user's
    # cluster ranks exactly 2nd every time; all-zero user vectors would give 2.5 (ties).
    assert res.mrr == pytest.approx(0.5)


def test_frozen_scorer_user_rule_matches_skipgram(bench):
    # With a learning rate too small to move any float32 weight, SkipGram's item vectors
    # stay at their initial values, so its user vectors must equal the scorer's when the
    # scorer is given those item vectors: the benchmark's "same rule" claim.
    from streamer.learn.skipgram import SkipGram

    sg = SkipGram(dim=8, window=2, negatives=1, lr=1e-30, lr_min=1e-30, capacity=64,
                  noise_table_size=64, user_half_life_s=50.0, seed=2)
    rows = [("u1", "a", 1.0, 0.0), ("u1", "b", 2.0, 30.0), ("u2", "c", 1.0, 31.0),
            ("u1", "c", 0.5, 100.0), ("u1", "a", 1.0, 60.0),  # older than u1's latest
            ("u2", "a", 3.0, 200.0), ("u2", "b", 1.0, 200.0)]
    batch = EventBatch.from_rows(rows)
    sg.learn_many(batch)
    items = ["a", "b", "c"]
    vecs, mask = sg.vectors([f"i:{i}" for i in items])
    assert mask.all()
    scorer = bench.FrozenItemScorer(items, vecs, half_life_s=50.0)
    scorer.learn_many(batch)
    ours, umask = sg.vectors(["u:u1", "u:u2"])
    assert umask.all()
    np.testing.assert_allclose(scorer.user_vector("u1"), ours[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scorer.user_vector("u2"), ours[1], rtol=1e-5, atol=1e-7)
    cands = [f"i:{i}" for i in items]
    np.testing.assert_allclose(scorer.score_items("u:u1", cands), sg.score_items("u:u1", cands),
                               rtol=1e-5, atol=1e-6)
