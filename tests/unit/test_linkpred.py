"""Temporal link prediction harness (TGB protocol): hand-computed MRRs, baselines, bad input,
and the protocol check against TGB's published EdgeBank numbers on the real Wikipedia stream.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.bench.linkpred import (
    BASELINES,
    EdgeBank,
    LinkPredStream,
    Recency,
    SplitMetrics,
    _Popularity,
    baseline_scorers,
    evaluate_scorer,
    evaluate_scorers,
    load_linkpred_stream,
    run_linkpred,
    split_points,
    to_task_results,
)
from streamer.errors import BadRequest, ConfigError
from streamer.eval.prequential import Popularity
from streamer.learn.base import EventBatch
from streamer.topology import TopologySpec

# 20 events at ts 0..19; with val_frac = test_frac = 0.25 the split times are the 50% and
# 75% quantiles, 9.5 and 14.25: train = ts 0..9, validation = 10..14, test = 15..19.
TRAIN = [("u", "a", 0), ("v", "c", 1), ("v", "d", 2), ("w", "a", 3), ("w", "b", 4),
         ("x", "c", 5), ("x", "c", 6), ("y", "d", 7), ("y", "a", 8), ("z", "b", 9)]
VAL = [("u", "a", 10), ("u", "b", 11), ("u", "b", 12), ("v", "a", 13), ("v", "c", 14)]
TEST = [("u", "b", 15), ("x", "c", 16), ("q", "a", 17), ("u", "c", 18), ("u", "c", 19)]
CANDS = ["a", "b", "c", "d"]


def _batch(rows):
    return EventBatch.from_rows((u, i, 1.0, float(t)) for u, i, t in rows)


def _stream(rows=TRAIN + VAL + TEST, **kw):
    kw.setdefault("candidates", CANDS)
    return LinkPredStream.from_events("hand", _batch(rows), val_frac=0.25, test_frac=0.25, **kw)


class Constant:
    """Scores every candidate 0: the true item is tied with all of them."""

    def learn_many(self, batch):
        pass

    def score_items(self, user, items):
        return np.zeros(len(items), np.float32)


def test_split_points_are_tgb_quantiles():
    assert split_points(np.arange(20.0), 0.25, 0.25) == (9.5, 14.25)
    assert split_points(np.arange(21.0)) == (14.0, 17.0)


def test_split_indices_and_repeat_flags_of_the_hand_stream():
    s = _stream()
    assert (s.n_train, s.n_val_end, s.val_time, s.test_time) == (10, 15, 9.5, 14.25)
    assert s.test_span_s == pytest.approx(4.75) and s.train_span_s == pytest.approx(9.5)
    # repeat = the pair occurred earlier anywhere in the stream (even in the same batch)
    assert s.repeat[10:15].tolist() == [True, False, True, False, True]
    assert s.repeat[15:].tolist() == [True, True, False, False, True]


def test_events_sharing_a_boundary_time_stay_on_one_side_and_input_is_sorted():
    ts = [0, 1, 2, 3, 3, 3, 3, 4, 5, 6]  # 60% quantile = 3, 80% = 4.2
    rows = [(f"u{j}", "a", t) for j, t in enumerate(ts)]
    s = LinkPredStream.from_events("ties", _batch(rows[::-1]), val_frac=0.2, test_frac=0.2)
    assert s.events.ts.tolist() == sorted(ts)
    assert (s.val_time, s.test_time) == (3.0, pytest.approx(4.2))
    assert (s.n_train, s.n_val_end) == (7, 8)  # all four ts=3 events are train


def test_constant_scorer_gets_the_middle_rank():
    res = evaluate_scorer(Constant(), _stream(), batch_size=200, k=2)
    for m in res.values():  # 4 candidates all tied: rank (1 + 4) / 2 = 2.5
        assert m.n == 5 and m.mrr == pytest.approx(0.4) and m.recall == 0.0
    res = evaluate_scorer(Constant(), _stream(), batch_size=200, k=3)
    assert res["test"].recall == 1.0


def test_edgebank_inf_by_hand_score_then_learn_per_batch():
    res = evaluate_scorer(EdgeBank(None), _stream(), batch_size=5, k=2)
    val, test = res["validation"], res["test"]
    # validation, scored with the train memory only (one batch of 5):
    # (u,a) 1 | (u,b) a above, b/c/d tied: 3 | (u,b) again, still unknown: 3 |
    # (v,a) c,d above, a/b tied: 3.5 | (v,c) c,d tied: 1.5
    want = [1, 1 / 3, 1 / 3, 2 / 7, 2 / 3]
    assert val.mrr == pytest.approx(np.mean(want))
    assert val.mrr_repeat == pytest.approx(np.mean([1, 1 / 3, 2 / 3]))
    assert val.mrr_new == pytest.approx(np.mean([1 / 3, 2 / 7]))
    assert (val.n_repeat, val.n_new, val.recall) == (3, 2, pytest.approx(2 / 5))
    # test: the memory now holds validation too: (u,b) a,b tied: 1.5 | (x,c) 1 |
    # (q,a) unknown user, all tied: 2.5 | (u,c) twice: a,b above, c,d tied: 3.5
    want = [2 / 3, 1, 0.4, 2 / 7, 2 / 7]
    assert test.mrr == pytest.approx(np.mean(want))
    assert test.mrr_repeat == pytest.approx(np.mean([2 / 3, 1, 2 / 7]))
    assert test.mrr_new == pytest.approx(np.mean([0.4, 2 / 7]))
    assert test.recall == pytest.approx(2 / 5)


def test_batch_size_one_learns_each_event_before_the_next():
    val = evaluate_scorer(EdgeBank(None), _stream(), batch_size=1, k=2)["validation"]
    # (u,b) second time: a,b tied at 1 -> 1.5; (v,c) after (v,a): a,c,d tied -> 2
    assert val.mrr == pytest.approx(np.mean([1, 1 / 3, 2 / 3, 2 / 7, 1 / 2]))


def test_per_event_scores_a_shared_timestamp_together():
    rows = TRAIN + [("u", "a", 10), ("u", "b", 11), ("u", "b", 11), ("v", "a", 13),
                    ("v", "c", 14)] + TEST
    s = _stream(rows)
    assert (s.n_train, s.n_val_end) == (10, 15)
    val = evaluate_scorer(EdgeBank(None), s, per_event=True)["validation"]
    # both (u,b) at ts 11 are scored before either is learned: 3 and 3
    assert val.mrr == pytest.approx(np.mean([1, 1 / 3, 1 / 3, 2 / 7, 1 / 2]))
    # the same events one by one (batch_size=1) would see the first (u,b)
    one = evaluate_scorer(EdgeBank(None), s, batch_size=1)["validation"]
    assert one.mrr > val.mrr


def test_edgebank_time_window_expires_old_pairs_inclusively():
    eb = EdgeBank(window_s=6.0)
    eb.learn_many(_batch([("u", "a", 0), ("u", "b", 4), ("u", "c", 3), ("v", "c", 10)]))
    # now = 10, window start = 4: b (4) kept (>=, as TGB), c (3) and a (0) expired
    assert eb.score_matrix(["u:u", "u:v"], ["i:a", "i:b", "i:c"]).tolist() == [
        [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    eb.learn_many(_batch([("w", "z", 20)]))  # time moves on: everything of u expires
    assert eb.score_items("u:u", ["i:a", "i:b", "i:c"]).tolist() == [0.0, 0.0, 0.0]
    inf = EdgeBank(None)
    inf.learn_many(_batch([("u", "a", 0), ("w", "z", 1e9)]))
    assert inf.score_items("u:u", ["i:a", "i:z"]).tolist() == [1.0, 0.0]


def test_edgebank_window_on_the_hand_stream_uses_the_test_span_or_tgb_rule():
    s = _stream()
    assert baseline_scorers(s)["edgebank_tw"]().window_s == pytest.approx(4.75)
    assert baseline_scorers(s, edgebank_window="tgb")["edgebank_tw"]().window_s == (
        pytest.approx(0.15 * 9.5))
    res = evaluate_scorer(baseline_scorers(s)["edgebank_tw"](), s, batch_size=5)
    # validation (now = 9, window from 4.25): u's and v's train pairs expired, all tied
    assert res["validation"].mrr == pytest.approx(0.4)
    # test (now = 14, from 9.25): (u,b) 1.5 | (x,c) learned at 6, expired: 2.5 (EdgeBank-inf
    # ranks it 1st) | (q,a) 2.5 | (u,c) twice 3.5
    assert res["test"].mrr == pytest.approx(np.mean([2 / 3, 0.4, 0.4, 2 / 7, 2 / 7]))


def test_recency_orders_by_last_engagement_and_ties_unseen_at_the_bottom():
    r = Recency()
    r.learn_many(_batch([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("u", "a", 4)]))
    items = ["i:a", "i:b", "i:c", "i:d", "i:e"]
    s = r.score_matrix(["u:u"], items)
    from streamer.eval.prequential import tie_averaged_ranks

    ranks = tie_averaged_ranks(np.repeat(s, 5, axis=0), np.arange(5))
    assert ranks.tolist() == [1.0, 3.0, 2.0, 4.5, 4.5]


def test_fast_popularity_matches_prequential_popularity_and_sees_new_items():
    for hl in (None, 5.0):
        fast, ref = _Popularity(hl), Popularity(hl)
        items = ["i:a", "i:b", "i:c", "i:zz"]
        for rows in (TRAIN, VAL, [("q", "zz", 30)]):
            fast.learn_many(_batch(rows))
            ref.learn_many(_batch(rows))
            np.testing.assert_allclose(fast.score_matrix(["u:u", "u:v"], items),
                                       ref.score_matrix(["u:u", "u:v"], items))
        assert fast.score_items("u:u", items)[3] > 0
    base = baseline_scorers(_stream())
    assert base["popularity"]().half_life_s is None
    assert sorted(f().half_life_s for f in base["popularity_recent"].values()) == [
        3600.0, 21600.0, 86400.0, 604800.0]


def test_evaluate_scorers_selects_variants_on_validation_and_shapes_output():
    s = _stream()
    out = evaluate_scorers(
        {"mine": lambda: EdgeBank(None), "const": Constant,
         "pick": {"flat": Constant, "bank": lambda: EdgeBank(None)}},
        s, batch_size=5, k=2, baselines=["const", "pick"])
    assert out["details"]["selected"] == {"pick": "bank"}
    assert out["mrr"]["pick"] == out["mrr"]["mine"] == pytest.approx(
        np.mean([2 / 3, 1, 0.4, 2 / 7, 2 / 7]))
    assert out["validation"]["mrr"]["const"] == pytest.approx(0.4)
    assert (out["n_test"], out["n_validation"], out["details"]["n_train"]) == (5, 5, 10)
    # the only dict-valued keys are the metrics, "validation" and "details"
    assert {m for m, v in out.items() if isinstance(v, dict)} == {
        "mrr", "recall_at_2", "mrr_repeat", "mrr_new", "recall_at_2_repeat", "recall_at_2_new",
        "validation", "details"}
    assert out["types"] == ["mine"] and out["baselines"] == ["const", "pick"]
    assert set(out) >= {"mrr", "recall_at_2", "mrr_repeat", "mrr_new", "recall_at_2_repeat",
                        "recall_at_2_new", "validation", "protocol", "dataset"}
    assert "batches of 5" in out["protocol"] and "50%/75%" in out["protocol"]
    json.dumps(out)  # JSON-ready
    tr = to_task_results(out)
    assert [t.details["type"] for t in tr] == ["mine"]
    assert tr[0].task == "linkpred" and tr[0].n == 5
    assert tr[0].metrics["mrr"] == out["mrr"]["mine"]
    assert tr[0].baselines["const"]["recall_at_2"] == 0.0
    assert tr[0].details["validation"]["mrr"] == out["validation"]["mrr"]["mine"]


def test_split_metrics_handle_empty_groups():
    m = SplitMetrics.from_ranks([1.0, 2.0], [True, True], k=1)
    assert (m.mrr, m.recall, m.n_new) == (0.75, 0.5, 0)
    assert np.isnan(m.mrr_new) and np.isnan(m.recall_new)


@pytest.mark.parametrize(("kwargs", "exc", "words"), [
    ({"dataset": "nope"}, ConfigError, "wikipedia, collegemsg, enron"),
    ({"dataset": "lastfm-asia"}, ConfigError, "not supported"),
    ({"dataset": "wikipedia", "batch_size": 0}, BadRequest, "batch_size"),
    ({"dataset": "wikipedia", "batch_size": 2.5}, BadRequest, "batch_size"),
    ({"dataset": "wikipedia", "k": 0}, BadRequest, "k must be"),
    ({"dataset": "wikipedia", "val_frac": 0.6, "test_frac": 0.5}, BadRequest, "< 1"),
    ({"dataset": "wikipedia", "test_frac": 0}, BadRequest, "test_frac"),
    ({"dataset": "wikipedia", "edgebank_window": "week"}, BadRequest, "edgebank_window"),
])
def test_bad_input_is_one_line(kwargs, exc, words):
    with pytest.raises(exc) as err:
        run_linkpred(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_types_and_streams():
    with pytest.raises(ConfigError, match="clashes"):
        run_linkpred("wikipedia", [TopologySpec(name="recency", algorithm="cooc")])
    with pytest.raises(ConfigError, match="unknown algorithm"):
        run_linkpred("wikipedia", [TopologySpec(name="x", algorithm="nope")])
    with pytest.raises(BadRequest, match="not among the 2 candidates"):
        _stream(candidates=["a", "b"])
    with pytest.raises(BadRequest, match="non-empty"):
        LinkPredStream.from_events("empty", EventBatch.empty())
    with pytest.raises(BadRequest, match="window_s"):
        EdgeBank(window_s=0)
    with pytest.raises(BadRequest, match="batch_size"):
        evaluate_scorer(Constant(), _stream(), batch_size=-1)


# ---------------------------------------------------------------------- real data
def test_protocol_matches_tgb_edgebank_on_wikipedia():
    """TGB tgbl-wiki-v2 test MRR: EdgeBank-tw 0.571, EdgeBank-inf 0.495 (±0.03)."""
    s = load_linkpred_stream("wikipedia")
    assert len(s.candidates) == 1000
    assert (s.n_train, s.n_val_end - s.n_train, len(s.events) - s.n_val_end) == (
        110_232, 23_621, 23_621)
    base = baseline_scorers(s)
    inf = evaluate_scorer(base["edgebank_inf"](), s)["test"]
    tw = evaluate_scorer(base["edgebank_tw"](), s)["test"]
    tgb_tw = evaluate_scorer(baseline_scorers(s, edgebank_window="tgb")["edgebank_tw"](),
                             s)["test"]
    assert abs(inf.mrr - 0.495) <= 0.03, inf
    assert abs(tw.mrr - 0.571) <= 0.03, tw
    assert abs(tgb_tw.mrr - 0.571) <= 0.03, tgb_tw
    assert inf.n == 23_621 and 0 < inf.n_new < inf.n
    assert inf.mrr_new < 0.003  # a never-seen pair ties with ~all 1,000 pages


def test_run_linkpred_wikipedia_types_beat_the_baselines_that_the_issue_names():
    out = run_linkpred("wikipedia")
    names = set(out["types"]) | set(BASELINES)
    assert set(out["mrr"]) == set(out["recall_at_10"]) == names
    assert {"wiki-cooc", "wiki-sgns", "demo-cooc"} <= set(out["types"])
    best = max(out["types"], key=lambda n: out["validation"]["mrr"][n])  # chosen on validation
    assert out["mrr"][best] > out["mrr"]["edgebank_tw"] + 0.1
    assert out["mrr_new"][best] > out["mrr_new"]["popularity"]
    assert out["validation"]["mrr_new"][best] > out["validation"]["mrr_new"]["popularity"]
    assert out["mrr"][best] > out["mrr"]["recency"]
