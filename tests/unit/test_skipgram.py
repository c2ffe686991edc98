"""Online SGNS: gensim's incremental failure modes are absent; semantics; eviction; transfer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.errors import ConfigError, DimensionMismatch, InvalidVector, StateError
from streamer.learn import _sgns_kernel as K
from streamer.learn.base import EventBatch
from streamer.learn.registry import build_learner
from streamer.learn.skipgram import SkipGram, id_hash

SMALL = {"capacity": 4096, "noise_table_size": 4096}


def _batch(rows, first_offset=0):
    return EventBatch.from_rows(rows, first_offset=first_offset)


def _sessions(users, items, ts, gap):
    last, cur, out = {}, {}, []
    for u, i, t in zip(users, items, ts, strict=True):
        if u in last and t - last[u] > gap:
            out.append(cur.pop(u))
        cur.setdefault(u, []).append(i)
        last[u] = t
    return out + list(cur.values())


def _gensim_pairs(sentences, window):
    return sum(min(k, window) + min(len(s) - 1 - k, window)
               for s in sentences for k in range(len(s)))


def _random_stream(seed, n=3000, n_users=40, n_items=60, mean_gap=30.0):
    rng = np.random.default_rng(seed)
    users = [str(u) for u in rng.integers(0, n_users, n)]
    items = [str(i) for i in np.minimum(rng.zipf(1.5, n), n_items)]
    ts = np.cumsum(rng.exponential(mean_gap, n))
    return users, items, ts


# --- gensim failure mode 1: min_count per batch -----------------------------------------


def test_id_seen_3x_per_batch_over_10_batches_gets_a_vector_with_threshold_5():
    sg = SkipGram(dim=8, min_count=5, seed=1, **SMALL)
    admitted_at = None
    for b in range(10):
        rows = [(f"u{k}", "x", 1.0, b * 100.0 + k) for k in range(3)]
        rows += [(f"u{k}", f"other{b}-{k}", 1.0, b * 100.0 + 10 + k) for k in range(3)]
        sg.learn_many(_batch(rows))
        _, mask = sg.vectors(["i:x"])
        if mask[0] and admitted_at is None:
            admitted_at = b
    assert admitted_at == 1, "admission must count the 5th occurrence across batches"
    # ids seen once per batch (3 < 5 in total? no: once per batch, never 5) stay out
    _, mask = sg.vectors(["i:other0-0", "i:other9-2"])
    assert not mask.any()
    assert sg.update_counts(["i:x"])[0] == 30


def test_admission_threshold_counts_decayed_occurrences():
    # half-life 100 s: 5 occurrences 1000 s apart never add up to 5
    sg = SkipGram(dim=8, min_count=3, count_half_life_s=100.0, seed=1, **SMALL)
    for b in range(5):
        sg.learn_many(_batch([("u", "slow", 1.0, b * 1000.0)]))
    assert not sg.vectors(["i:slow"])[1][0]
    # 4 occurrences 1 s apart: decayed sum 3.96 >= 3 (3 would be 2.98)
    sg.learn_many(_batch([("u", "fast", 1.0, 5000.0 + k) for k in range(4)]))
    assert sg.vectors(["i:fast"])[1][0]


# --- gensim failure mode 2: the learning rate restarts at every train() -------------------


def test_learning_rate_is_monotone_across_batches_and_independent_of_cuts():
    users, items, ts = _random_stream(3)
    ev = EventBatch(users, items, np.ones(len(users), np.float32), ts)
    sg = SkipGram(dim=8, lr=0.05, lr_min=0.001, lr_decay_pairs=2000.0, seed=1, **SMALL)
    rates = [sg.learning_rate]
    for s in range(0, len(ev), 137):
        sg.learn_many(ev.slice(s, s + 137))
        rates.append(sg.learning_rate)
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False)), "rate went up"
    assert rates[-1] < rates[0] / 3, "rate did not decay over the stream"
    assert rates[-1] >= 0.001
    one = SkipGram(dim=8, lr=0.05, lr_min=0.001, lr_decay_pairs=2000.0, seed=1, **SMALL)
    one.learn_many(ev)
    assert one.learning_rate == rates[-1]
    assert one.pairs_trained == sg.pairs_trained


# --- gensim failure mode 3: admitting ids rebuilds O(vocabulary) --------------------------


def _known_vocab(n_known, seed=0, negatives=5):
    sg = SkipGram(dim=16, window=5, negatives=negatives, capacity=1 << 18,
                  noise_table_size=1 << 18, seed=seed)
    rng = np.random.default_rng(seed)
    n = n_known * 2
    items = [f"old{k}" for k in rng.permutation(np.arange(n) % n_known)]
    users = [f"u{k}" for k in rng.integers(0, 2000, n)]
    sg.learn_many(EventBatch(users, items, np.ones(n, np.float32), np.arange(n, dtype=float)))
    sg.changed()
    sg.state_changes()
    return sg


def _pointers(sg):
    a = sg._a
    return {k: getattr(a, k).__array_interface__["data"][0]
            for k in ("syn0", "syn1", "i_keys", "i_count", "table", "u_vec")}


@pytest.mark.parametrize("n_known", [5_000, 50_000])
def test_admitting_new_ids_touches_o_batch_rows_not_o_vocabulary(n_known):
    sg = _known_vocab(n_known)
    assert sg.num_items == n_known
    before = _pointers(sg)
    rng = np.random.default_rng(1)
    n = 1000
    items = [f"new{k}" if k % 2 else f"old{int(rng.integers(0, n_known))}" for k in range(n)]
    users = [f"u{k}" for k in rng.integers(0, 2000, n)]
    sg.learn_many(EventBatch(users, items, np.ones(n, np.float32),
                             1e6 + np.arange(n, dtype=float)))
    stats = sg.stats()
    assert sg.num_items == n_known + 500
    assert _pointers(sg) == before, "an array was reallocated while admitting ids"
    # rows written: the batch's items, their window items and sampled negatives only
    bound = n * (2 + 5 * (1 + 5) * 2)
    assert stats["dirty_item_rows"] <= bound
    assert stats["dirty_user_rows"] <= n
    records = sg.state_changes()
    item_records = sum(1 for k in records if k[:1] == b"i")
    assert item_records == stats["dirty_item_rows"]
    assert sum(1 for k in records if k[:1] == b"t") <= stats["noise_slots_replaced"] + 1


def test_rows_written_per_batch_are_bounded_by_the_batch_not_the_vocabulary():
    """Without negatives (whose syn1 rows are the SGD itself, bounded above) a batch writes
    its items and their window items: at most events x (1 + window) rows, whatever the
    vocabulary size, and no noise-table rebuild (only the slots the new mass takes)."""
    for n_known in (5_000, 50_000):
        sg = _known_vocab(n_known, negatives=0)
        rng = np.random.default_rng(2)
        n = 1000
        items = [f"new{k}" for k in range(n)]
        users = [f"u{k}" for k in rng.integers(0, 2000, n)]
        sg.learn_many(EventBatch(users, items, np.ones(n, np.float32),
                                 1e6 + np.arange(n, dtype=float)))
        st = sg.stats()
        assert st["dirty_item_rows"] <= n * (1 + 5)
        assert st["dirty_user_rows"] <= n
        # 1000 new ids add ~1000 units of noise mass: ~1000 table slots, a few chunks
        assert st["dirty_noise_chunks"] <= 1000 // K.CHUNK + 2
        if n_known == 50_000:
            assert st["dirty_item_rows"] < 0.12 * n_known


# --- semantics ------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "gap"), [(5, math.inf), (5, 60.0), (2, 20.0), (1, 1e9)])
def test_pairs_equal_gensim_skipgram_pairs_on_sessions(window, gap):
    users, items, ts = _random_stream(4, n=2000)
    sg = SkipGram(dim=8, window=window, max_gap_s=gap, seed=1, **SMALL)
    ev = EventBatch(users, items, np.ones(len(users), np.float32), ts)
    for s in range(0, len(ev), 300):
        sg.learn_many(ev.slice(s, s + 300))
    want = _gensim_pairs(_sessions(users, items, ts, gap), window)
    assert sg.pairs_trained == want


def test_user_vector_is_decayed_mean_of_item_vectors():
    hl = 100.0
    sg = SkipGram(dim=8, window=1, negatives=0, user_half_life_s=hl, seed=2, **SMALL)
    sg.learn_many(_batch([("u", "a", 2.0, 0.0)]))
    va = sg.vectors(["i:a"])[0][0].copy()
    assert np.array_equal(sg.vectors(["u:u"])[0][0], va), "first event: user = item vector"
    # a second user engages b alone, so b's vector after u's event is known exactly
    sg.learn_many(_batch([("u", "b", 1.0, 100.0)]))
    vb = sg.vectors(["i:b"])[0][0].astype(np.float64)
    # syn1 starts at zero, so the first pair (a -> b) leaves syn0[a] as it was
    assert np.array_equal(sg.vectors(["i:a"])[0][0], va)
    w_a = 2.0 * 0.5  # one half-life later
    want = (w_a * va.astype(np.float64) + 1.0 * vb) / (w_a + 1.0)
    np.testing.assert_allclose(sg.vectors(["u:u"])[0][0], want, rtol=1e-5, atol=1e-7)


def test_session_gap_restarts_the_window():
    sg = SkipGram(dim=8, window=5, max_gap_s=10.0, seed=1, **SMALL)
    sg.learn_many(_batch([("u", "a", 1.0, 0.0), ("u", "b", 1.0, 5.0)]))
    assert sg.pairs_trained == 2
    sg.learn_many(_batch([("u", "c", 1.0, 100.0)]))  # new session: no pair with a/b
    assert sg.pairs_trained == 2
    sg.learn_many(_batch([("u", "d", 1.0, 105.0)]))
    assert sg.pairs_trained == 4


def test_sgns_learns_planted_clusters():
    """Users browse within one of 8 topics; neighbours of an item are from its topic."""
    rng = np.random.default_rng(5)
    n_topics, per_topic, n = 8, 15, 40_000
    user_topic = rng.integers(0, n_topics, 400)
    users = rng.integers(0, 400, n)
    items = [f"{user_topic[u]}-{int(rng.integers(0, per_topic))}" for u in users]
    sg = SkipGram(dim=32, window=5, negatives=5, lr=0.05, seed=3, **SMALL)
    ev = EventBatch([str(u) for u in users], items, np.ones(n, np.float32),
                    np.arange(n, dtype=float))
    for s in range(0, n, 1000):
        sg.learn_many(ev.slice(s, s + 1000))
    ids = [f"i:{t}-{k}" for t in range(n_topics) for k in range(per_topic)]
    vecs, mask = sg.vectors(ids)
    assert mask.all()
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :5]
    topic = np.repeat(np.arange(n_topics), per_topic)
    precision = float((topic[top] == topic[:, None]).mean())
    assert precision > 0.9, precision
    # users are co-embedded: a user's best items are from its topic
    scores = sg.score_matrix([f"u:{u}" for u in range(50)], ids)
    best = np.argmax(scores, axis=1)
    assert float((topic[best] == user_topic[:50]).mean()) > 0.9


def test_noise_table_tracks_unigram_power():
    """Kaji & Kobayashi's incremental table: slot shares follow count^0.75."""
    counts = {f"w{k}": c for k, c in enumerate([4000, 2000, 1000, 500, 250, 120, 60, 30])}
    seq = [w for w, c in counts.items() for _ in range(c)]
    rng = np.random.default_rng(0)
    rng.shuffle(seq)
    sg = SkipGram(dim=4, window=1, negatives=0, capacity=64, noise_table_size=1 << 16, seed=4)
    n = len(seq)
    sg.learn_many(EventBatch(["u"] * n, seq, np.ones(n, np.float32), np.arange(n, dtype=float)))
    filled = sg.stats()["noise_table_filled"]
    assert 0 < filled < len(sg._a.table)
    table = sg._a.table[:filled]
    share = {}
    for w in counts:
        row = int(K.ht_find(sg._a.i_keys, sg._a.i_vals, id_hash(w)))
        share[w] = float((table == row).mean())
    want = np.array([c ** 0.75 for c in counts.values()])
    want /= want.sum()
    got = np.array([share[w] for w in counts])
    assert (table >= 0).all()
    np.testing.assert_allclose(got, want, rtol=0.12, atol=0.004)


# --- eviction and capacity -----------------------------------------------------------------


def test_stale_ids_are_evicted_and_reported():
    sg = SkipGram(dim=8, window=2, count_half_life_s=10.0, evict_below=0.1,
                  sweep_per_event=4, capacity=64, noise_table_size=256, seed=1)
    sg.learn_many(_batch([("old", "stale", 1.0, 0.0), ("old", "stale2", 1.0, 1.0)]))
    sg.changed()
    # 100 half-lives later a steady stream sweeps the stale rows away
    sg.learn_many(_batch([(f"n{k % 3}", f"fresh{k % 5}", 1.0, 1000.0 + k)
                          for k in range(50)]))
    _, mask = sg.vectors(["i:stale", "i:stale2", "u:old", "i:fresh0"])
    assert mask.tolist() == [False, False, False, True]
    assert {"i:stale", "i:stale2", "u:old"} <= sg.changed()
    st = sg.stats()
    assert st["items_evicted"] == 2 and st["users_evicted"] == 1
    # a freed row is reused, not a new one
    assert st["items_tracked"] == 5
    recs = sg.state_changes()
    assert any(v is None for k, v in recs.items() if k[:1] in (b"i", b"u")) or \
        st["items_tracked"] < 7


def test_full_vocabulary_drops_new_ids_and_counts_them():
    sg = SkipGram(dim=4, capacity=3, user_capacity=2, noise_table_size=16, seed=1)
    sg.learn_many(_batch([(f"u{k}", f"i{k}", 1.0, float(k)) for k in range(5)]))
    st = sg.stats()
    assert st["items_tracked"] == 3 and st["items_dropped"] == 2
    assert st["users_tracked"] == 2 and st["users_dropped"] == 3
    assert sg.vectors(["i:i0", "i:i4"])[1].tolist() == [True, False]


# --- warm start, params ------------------------------------------------------------------------


def test_warm_start_sets_vectors_then_learning_continues():
    sg = SkipGram(dim=4, seed=1, **SMALL)
    vecs = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32)
    assert sg.warm_start(["i:a", "u:x", "bad-id"], vecs) == 2
    got, mask = sg.vectors(["i:a", "u:x"])
    assert mask.all() and np.array_equal(got, vecs[:2])
    assert sg.changed() == {"i:a", "u:x"}
    sg.learn_many(_batch([("x", "a", 1.0, 10.0), ("x", "b", 1.0, 11.0)]))
    assert sg.pairs_trained == 2
    # the user's transferred vector is kept in its mean (mass 1, not decayed away)
    assert float(sg.vectors(["u:x"])[0][0][1]) > 0.1
    with pytest.raises(StateError, match="fresh learner"):
        sg.warm_start(["i:c"], vecs[:1])


def test_warm_start_rejects_bad_vectors():
    sg = SkipGram(dim=4, seed=1, **SMALL)
    with pytest.raises(DimensionMismatch, match=r"expected \(1, 4\)"):
        sg.warm_start(["i:a"], np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidVector, match="finite"):
        sg.warm_start(["i:a"], np.array([[np.nan, 0, 0, 0]], np.float32))


@pytest.mark.parametrize(("params", "msg"), [
    ({"dim": 0}, "sgns: dim must be an integer >= 1, got 0"),
    ({"window": 2.5}, "sgns: window must be an integer >= 1, got 2.5"),
    ({"lr": 0.01, "lr_min": 0.1}, "lr_min must be <= lr"),
    ({"max_gap_s": -1}, "max_gap_s must be a number > 0"),
    ({"min_count": float("nan")}, "min_count must be a number > 0"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"noise_table_size": 1 << 31}, "noise_table_size must be"),
])
def test_bad_params_are_one_line_config_errors(params, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        build_learner("sgns", params)
    assert "\n" not in str(e.value)


def test_state_records_written_with_other_params_are_refused():
    a = SkipGram(dim=4, seed=1, **SMALL)
    a.learn_many(_batch([("u", "a", 1.0, 0.0), ("u", "b", 1.0, 1.0)]))
    recs = [(k, v) for k, v in a.state_changes().items() if v is not None]
    b = SkipGram(dim=4, seed=2, **SMALL)
    with pytest.raises(StateError, match="other parameters"):
        b.load_state_records(recs)


@pytest.mark.parametrize(("params", "msg"), [
    ({"capacity": 10**12}, "capacity must be <= 2147483647"),
    ({"window": 10**9}, "window must be <= 1024"),
    ({"negatives": 10**9}, "negatives must be <= 1024"),
    ({"seed": 2**70}, "seed must be <= "),
    ({"lr": 1.0}, "lr must be <= 0.5"),
])
def test_out_of_range_params_are_refused_before_allocating(params, msg):
    with pytest.raises(ConfigError, match=msg):
        build_learner("sgns", params)


def test_params_that_are_not_a_mapping_are_a_config_error():
    with pytest.raises(ConfigError, match="params must be a mapping"):
        build_learner("sgns", None)


@pytest.mark.parametrize(("slot", "value"), [(K.G_I_HWM, 10**8), (K.G_U_HWM, 5000),
                                              (K.G_I_FREE, -3), (K.G_TAB_FILL, 10**9)])
def test_corrupt_global_record_is_a_state_error_not_a_crash(slot, value):
    a = SkipGram(dim=4, seed=1, **SMALL)
    a.learn_many(_batch([("u", "a", 1.0, 0.0), ("u", "b", 1.0, 1.0)]))
    recs = {k: v for k, v in a.state_changes().items() if v is not None}
    gi = np.frombuffer(recs[b"g"][: 8 * K.G_LEN], "<i8").copy()
    gi[slot] = value
    recs[b"g"] = gi.tobytes() + recs[b"g"][8 * K.G_LEN:]
    with pytest.raises(StateError, match="corrupt"):
        SkipGram(dim=4, seed=1, **SMALL).load_state_records(list(recs.items()))
