"""Drift detection: the shift acceptance test (real cooc learner) and monitor unit tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streamer.bench.drift import (
    DriftConfig,
    DriftMonitor,
    default_direction,
    prequential_series,
    series_name,
)
from streamer.bench.results import Alert, TaskResult
from streamer.errors import BadRequest, ConfigError, StateError
from streamer.learn.base import EventBatch
from streamer.learn.registry import build_learner
from streamer.testing.driftstream import drift_stream

# ---------------------------------------------------------------------------------------
# Acceptance (issue 4): a shift injected mid-stream is detected within 200 mini-batches by
# a monitor fed one predict-then-learn MRR per mini-batch; the stationary stream of the
# same length and seed raises no alarm. Three seeds each, both detectors.
# ---------------------------------------------------------------------------------------

N_BATCHES, SHIFT_AT, WITHIN = 400, 150, 200
SEEDS = (0, 1, 2)
ACCEPT = {"rules": [{"match": "prequential.mrr", "direction": "down", "warmup": 50}]}


def _monitor_stream(seed: int, shift_at: int | None) -> tuple[list[Alert], list[float]]:
    stream = drift_stream(n_batches=N_BATCHES, batch_size=200, seed=seed, shift_at=shift_at)
    learner = build_learner("cooc", {"dim": 32, "seed": seed})
    monitor = DriftMonitor("cooc", 1, ACCEPT)
    mrr = []
    for score in prequential_series(learner, stream.batches, stream.items):
        monitor.update("prequential.mrr", score.mrr, event_time=score.event_time)
        mrr.append(score.mrr)
    return monitor.alerts, mrr


@pytest.mark.parametrize("seed", SEEDS)
def test_item_remap_shift_is_detected_within_200_batches(seed):
    alerts, mrr = _monitor_stream(seed, SHIFT_AT)
    # the shift really hurts the learner (otherwise there is nothing to detect)
    assert np.mean(mrr[SHIFT_AT:SHIFT_AT + 20]) < 0.5 * np.mean(mrr[SHIFT_AT - 50:SHIFT_AT])
    assert [a.at for a in alerts if a.at < SHIFT_AT] == [], "false alarm before the shift"
    window = [a for a in alerts if SHIFT_AT <= a.at < SHIFT_AT + WITHIN]
    assert window, f"no alert within {WITHIN} batches of the shift: {alerts}"
    # each detector on its own catches it, and says the metric fell
    assert {a.detector for a in window} == {"adwin", "page_hinkley"}
    assert all(" fell" in a.message for a in window)
    first = min(window, key=lambda a: a.at)
    assert first.series == "prequential.mrr" and first.type == "cooc"
    assert math.isfinite(first.event_time)


@pytest.mark.parametrize("seed", SEEDS)
def test_stationary_stream_of_same_length_raises_no_alarm(seed):
    alerts, mrr = _monitor_stream(seed, None)
    assert len(mrr) == N_BATCHES
    assert alerts == []


# ---------------------------------------------------------------------------------------
# Monitor unit tests on synthetic series
# ---------------------------------------------------------------------------------------


def _noisy(levels: list[tuple[float, int]], seed: int = 0, sd: float = 0.02) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for level, n in levels for v in level + sd * rng.standard_normal(n)]


def _feed(mon: DriftMonitor, series: str, values: list[float], start: int = 0) -> list[Alert]:
    out = []
    for i, v in enumerate(values[start:], start):
        out += mon.update(series, v, event_time=1000.0 + i)
    return out


def test_threshold_alerts_once_per_crossing_and_rearms():
    mon = DriftMonitor("t", 2, {"rules": [{"match": "*", "detectors": [], "min": 0.3}]})
    vals = [0.5, 0.2, 0.1, 0.25, 0.4, 0.35, 0.29, 0.1]
    alerts = _feed(mon, "x.mrr", vals)
    assert [(a.at, a.detector, a.value) for a in alerts] == [(1, "threshold", 0.2),
                                                             (6, "threshold", 0.29)]
    assert alerts[0].message == "x.mrr fell below min 0.3 (0.2)"
    assert alerts[0].version == 2 and alerts[0].event_time == 1001.0
    assert list(mon.active) == [("x.mrr", "threshold")]


def test_threshold_back_in_range_resolves_and_max_works():
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "detectors": [], "min": 0.0,
                                           "max": 1.0}]})
    assert [a.message for a in mon.update("s.distance", 1.5)] == \
        ["s.distance rose above max 1 (1.5)"]
    assert mon.update("s.distance", 2.0) == []
    assert mon.update("s.distance", 0.5) == []
    assert mon.active == {}
    # jumping straight from above max to below min is a new crossing and stays active
    mon.update("s.distance", 3.0)
    low = mon.update("s.distance", -1.0)
    assert [a.message for a in low] == ["s.distance fell below min 0 (-1)"]
    assert mon.active[("s.distance", "threshold")] == low[0]
    assert len(mon.alerts) == 3


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_improvement_never_alerts_but_the_same_change_down_does(detector):
    up = _noisy([(0.3, 150), (0.7, 150)])
    down = _noisy([(0.7, 150), (0.3, 150)])
    rules = {"rules": [{"match": "*", "detectors": [detector], "direction": "down"}]}
    assert _feed(DriftMonitor("t", 1, rules), "q.mrr", up) == []
    fell = _feed(DriftMonitor("t", 1, rules), "q.mrr", down)
    assert fell and fell[0].detector == detector and 150 <= fell[0].at < 200
    # for a distance ("up" is bad), the rise alerts and the fall does not
    rules_up = {"rules": [{"match": "*", "detectors": [detector]}]}
    assert _feed(DriftMonitor("t", 1, rules_up), "s.procrustes_distance", down) == []
    rose = _feed(DriftMonitor("t", 1, rules_up), "s.procrustes_distance", up)
    assert rose and " rose" in rose[0].message


def test_adwin_recovery_resolves_active_change_alerts():
    vals = _noisy([(0.7, 150), (0.3, 150), (0.7, 200)])
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "direction": "down"}]})
    alerts = _feed(mon, "q.mrr", vals)
    assert {a.detector for a in alerts} == {"adwin", "page_hinkley"}
    assert all(a.at < 300 for a in alerts)  # the recovery is not an alert
    assert mon.active == {}  # ... and it resolved both change alerts
    assert len(mon.alerts) == len(alerts)


def test_resolve_by_hand():
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "detectors": [], "max": 1}]})
    mon.update("a.loss", 2.0)
    mon.update("b.loss", 2.0)
    assert mon.resolve("a.loss") == 1
    assert list(mon.active) == [("b.loss", "threshold")]
    assert mon.resolve() == 1 and mon.active == {}


def test_warmup_values_are_ignored_but_counted():
    vals = _noisy([(0.1, 20), (0.7, 100), (0.15, 100)])
    cfg = {"rules": [{"match": "*", "direction": "down", "warmup": 20, "min": 0.2}]}
    alerts = _feed(DriftMonitor("t", 1, cfg), "q.mrr", vals)
    # the low warm-up values neither cross the min nor become ADWIN/PH's reference...
    assert all(a.at >= 120 for a in alerts)
    # ... and the real drop after them is caught, with `at` counting warm-up values
    assert {a.detector for a in alerts} == {"threshold", "adwin", "page_hinkley"}
    without = _feed(DriftMonitor("t", 1, {"rules": [{"match": "*", "min": 0.2}]}), "q.mrr",
                    vals)
    assert without[0].at == 0  # the same series without warm-up alerts at once


def test_nan_values_are_counted_and_ignored():
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "detectors": [], "min": 0.5}]})
    assert mon.update("q.mrr", math.nan) == []
    assert mon.update("q.mrr", math.inf) == []
    assert [a.at for a in mon.update("q.mrr", 0.1)] == [2]


def test_unmatched_series_is_not_watched():
    mon = DriftMonitor("t", 1, {"rules": [{"match": "prequential.*", "min": 0.5}]})
    assert mon.update("linkpred.mrr", 0.0) == []
    assert mon.series_names() == []
    assert len(mon.update("prequential.mrr", 0.0)) == 1


def test_first_matching_rule_wins():
    cfg = DriftConfig.parse({"rules": [{"match": "linkpred/*", "detectors": ["adwin"]},
                                       {"match": "*.mrr", "detectors": []}]})
    assert cfg.rule_for("linkpred/wikipedia.mrr").detectors == ("adwin",)
    assert cfg.rule_for("prequential.mrr").detectors == ()
    assert DriftConfig().rule_for("anything").detectors == ("adwin", "page_hinkley")


def test_default_direction_and_series_name():
    assert default_direction("prequential.mrr") == "down"
    assert default_direction("topic/lastfm-tags.macro_f1") == "down"
    assert default_direction("stability.jaccard_at_10") == "down"
    assert default_direction("stability.procrustes_distance") == "up"
    assert default_direction("serve.latency_ms") == "up"
    assert series_name("linkpred", "mrr", "wikipedia") == "linkpred/wikipedia.mrr"
    assert series_name("prequential", "mrr") == "prequential.mrr"


def test_observe_feeds_every_metric_of_a_task_result():
    cfg = {"rules": [{"match": "*", "detectors": [], "min": 0.5}]}
    mon = DriftMonitor("t", 1, cfg)
    res = TaskResult("topic", "lastfm-tags", {"accuracy": 0.4, "macro_f1": 0.6})
    alerts = mon.observe(res, event_time=77.0)
    assert [(a.series, a.event_time) for a in alerts] == [("topic/lastfm-tags.accuracy", 77.0)]
    rec = {**TaskResult("prequential", "", {"mrr": None}).to_json(), "event_time": 5.0}
    assert mon.observe(rec) == []  # None metric = NaN, ignored
    assert mon.series_names() == ["prequential.mrr", "topic/lastfm-tags.accuracy",
                                  "topic/lastfm-tags.macro_f1"]
    with pytest.raises(BadRequest, match="'task'"):
        mon.observe({"metrics": {}})


@pytest.mark.parametrize("max_history", [10, 1000])
@pytest.mark.parametrize("cut", [1, 60, 170, 310])
def test_state_round_trip_resumes_with_the_same_alerts(cut, max_history):
    vals = _noisy([(0.6, 120), (0.3, 100), (0.65, 100), (0.2, 80)], seed=3, sd=0.03)
    vals[50] = math.nan
    cfg = {"max_history": max_history,
           "rules": [{"match": "*", "direction": "down", "warmup": 5, "min": 0.25,
                      "page_hinkley": {"min_instances": 10}}]}
    whole = DriftMonitor("cooc", 3, cfg)
    expected = _feed(whole, "prequential.mrr", vals)
    assert len(expected) >= 3  # the series has alerts to reproduce

    first = DriftMonitor("cooc", 3, cfg)
    got = _feed(first, "prequential.mrr", vals[:cut])
    state = json.loads(json.dumps(first.state(), allow_nan=False))
    resumed = DriftMonitor.from_state(state)
    got += _feed(resumed, "prequential.mrr", vals, start=cut)
    assert got == expected
    assert resumed.alerts == whole.alerts
    assert resumed.active == whole.active
    assert resumed.state() == whole.state()


def test_state_history_is_bounded():
    cfg = {"max_history": 20, "rules": [{"match": "*", "direction": "down"}]}
    mon = DriftMonitor("t", 1, cfg)
    _feed(mon, "q.mrr", _noisy([(0.5, 500)]))
    hist = mon.state()["series"]["q.mrr"]["history"]
    assert 0 < len(hist["adwin"]) <= 20 and 0 < len(hist["page_hinkley"]) <= 20


def test_from_state_with_new_config_replays_history():
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "detectors": ["adwin"]}]})
    _feed(mon, "q.mrr", _noisy([(0.5, 50)]))
    new = DriftMonitor.from_state(json.loads(json.dumps(mon.state())),
                                  config={"rules": [{"match": "*", "detectors": [],
                                                     "min": 0.4}]})
    assert new.config.rules[0].min == 0.4
    assert [a.detector for a in new.update("q.mrr", 0.1)] == ["threshold"]
    assert new.update("other", 0.1)[0].at == 0


def test_from_state_rejects_foreign_state():
    with pytest.raises(StateError, match="format=1"):
        DriftMonitor.from_state({"format": 99})
    with pytest.raises(StateError, match="malformed"):
        DriftMonitor.from_state({"format": 1, "type": "t", "version": 1,
                                 "config": {}, "series": {"x": {}}, "alerts": [],
                                 "active": []})


@pytest.mark.parametrize(("cfg", "match"), [
    ({"rules": [{"match": "x", "detectors": ["cusum"]}]}, r"rules\.0\.detectors\.0: .*adwin"),
    ({"rules": [{"match": "x", "min": 1, "max": 0}]}, r"rules\.0: min must be < max"),
    ({"rules": [{"match": "x", "direction": "sideways"}]}, r"rules\.0\.direction: .*'down'"),
    ({"rules": [{"match": "x", "adwin": {"delta": 2}}]}, r"rules\.0\.adwin\.delta: .*less than 1"),
    ({"rules": [{"match": "x", "page_hinkley": {"threshold": 0}}]},
     r"page_hinkley\.threshold: .*greater than 0"),
    ({"rules": [{"match": "x", "warmup": -1}]}, r"rules\.0\.warmup"),
    ({"rules": [{"match": "x", "detectors": ["adwin", "adwin"]}]}, r"must not repeat"),
    ({"rules": [{"match": "x", "threshold": 1}]}, r"rules\.0\.threshold: Extra inputs"),
    ({"rules": [{"match": ""}]}, r"rules\.0\.match"),
    ({"max_history": 1}, r"max_history"),
    ([1, 2], r"must be a mapping"),
    ("{not json", r"not valid JSON"),
])
def test_config_errors_are_one_line_and_name_the_field(cfg, match):
    with pytest.raises(ConfigError, match=match) as info:
        DriftConfig.parse(cfg)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        DriftMonitor("t", 1, cfg)


def test_config_round_trips_through_json():
    cfg = DriftConfig.parse({"rules": [{"match": "*.accuracy", "min": 0.3, "warmup": 2}]})
    assert DriftConfig.parse(json.dumps(cfg.model_dump(mode="json"))) == cfg


def test_update_rejects_bad_input():
    mon = DriftMonitor("t", 1)
    with pytest.raises(BadRequest, match="non-empty string"):
        mon.update("", 1.0)
    with pytest.raises(BadRequest, match="must be a number"):
        mon.update("q.mrr", "0.5")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="version must be an integer"):
        DriftMonitor("t", "1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="type must be a non-empty string"):
        DriftMonitor("", 1)


# ---------------------------------------------------------------------------------------
# prequential_series
# ---------------------------------------------------------------------------------------


class Oracle:
    """Scores the item the user will engage with next highest; logs calls."""

    def __init__(self, nxt: dict[str, str] | None = None, constant: bool = False) -> None:
        self.nxt, self.constant, self.calls = nxt or {}, constant, []

    def learn_many(self, batch: EventBatch) -> None:
        self.calls.append(("learn", len(batch)))

    def score_matrix(self, users, items):
        self.calls.append(("score", len(users)))
        if self.constant:
            return np.zeros((len(users), len(items)))
        return np.array([[1.0 if self.nxt.get(u) == i else 0.0 for i in items] for u in users])


def _batch(rows):
    return EventBatch.from_rows([(u, i, 1.0, float(t)) for t, (u, i) in enumerate(rows)])


def test_prequential_series_scores_before_learning_and_ranks_with_ties():
    b1 = _batch([("a", "x"), ("b", "y"), ("a", "x")])
    b2 = _batch([("c", "z")])
    oracle = Oracle({"u:a": "i:x", "u:b": "i:y"})
    got = list(prequential_series(oracle, [b1, b2], ["x", "y", "z", "w"], k=1))
    assert oracle.calls == [("score", 2), ("learn", 3), ("score", 1), ("learn", 1)]
    assert [s.index for s in got] == [0, 1]
    assert got[0].mrr == 1.0 and got[0].recall_at_k == 1.0 and got[0].n == 3
    assert got[0].event_time == 2.0
    # c is unknown: all four candidates tie -> rank 2.5
    assert got[1].mrr == pytest.approx(1 / 2.5) and got[1].recall_at_k == 0.0


def test_prequential_series_sampled_negatives_are_seeded():
    batches = drift_stream(n_batches=3, batch_size=40, seed=5).batches
    const = list(prequential_series(Oracle(constant=True), batches, None, n_negatives=9))
    # a constant scorer ties the true item with its 9 negatives: rank 5.5
    assert all(s.mrr == pytest.approx(1 / 5.5) for s in const)
    runs = [[s.mrr for s in prequential_series(build_learner("cooc", {"dim": 16}), batches,
                                               None, n_negatives=20, seed=s)]
            for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_prequential_series_grows_candidates_and_checks_given_ones():
    b = _batch([("a", "x"), ("a", "q")])
    scores = list(prequential_series(Oracle(constant=True), [b, EventBatch.empty()]))
    assert scores[0].mrr == pytest.approx(1 / 1.5)  # two candidates seen so far, tied
    assert (scores[1].index, scores[1].n) == (1, 0)
    assert math.isnan(scores[1].mrr) and math.isnan(scores[1].event_time)
    with pytest.raises(BadRequest, match="'q' is not among the 1 candidates"):
        list(prequential_series(Oracle(constant=True), [b], ["x"]))
    with pytest.raises(BadRequest, match="n_negatives"):
        list(prequential_series(Oracle(), [b], n_negatives=0))


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin"])
def test_change_alert_resolves_when_the_metric_is_back_at_its_level(detector):
    mon = DriftMonitor("t", 1, {"rules": [{"match": "*", "detectors": [detector],
                                           "recover_after": 20}]})
    dip = _noisy([(0.6, 150), (0.2, 60)], seed=3)
    alerts = _feed(mon, "prequential.mrr", dip)
    assert alerts and all(a.detector == detector for a in alerts)
    assert ("prequential.mrr", detector) in mon.active
    # still low: stays open however long it lasts
    _feed(mon, "prequential.mrr", _noisy([(0.2, 100)], seed=4))
    assert ("prequential.mrr", detector) in mon.active
    # back at the old level for recover_after values: resolved, and it survives a reload
    _feed(mon, "prequential.mrr", _noisy([(0.62, 40)], seed=5))
    assert ("prequential.mrr", detector) not in mon.active
    again = DriftMonitor.from_state(json.loads(json.dumps(mon.state())))
    assert again.active == {}
