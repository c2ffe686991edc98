"""Half-life maths: monotonicity, order-insensitive lazy decay, merges (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.errors import ConfigError
from streamer.learn.decay import DecayedValue, HalfLife, decay_factor, merge_decayed

times = st.floats(-1e6, 1e6, allow_nan=False)
weights = st.floats(1e-3, 1e3)


def test_decay_factor_values():
    assert decay_factor(0.0, 10.0) == 1.0
    assert decay_factor(10.0, 10.0) == 0.5
    assert decay_factor(30.0, 10.0) == 0.125
    assert decay_factor(-1.0, 10.0) == 1.0
    assert decay_factor(1e9, 1.0) == 0.0  # underflows to zero, never NaN
    assert decay_factor(1e9, math.inf) == 1.0


@settings(max_examples=200, deadline=None)
@given(age=st.floats(0, 1e7), more=st.floats(0, 1e7), hl=st.floats(1, 1e6))
def test_decay_is_monotone(age, more, hl):
    h = HalfLife(hl)
    assert h.weight(age + more) <= h.weight(age) <= 1.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1h", None, True])
def test_half_life_must_be_positive(bad):
    with pytest.raises(ConfigError, match="half_life_s"):
        HalfLife(bad)


def _from_scratch(events, at, hl):
    return sum(w * 0.5 ** ((at - t) / hl) for t, w in events)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(times, weights), min_size=1, max_size=30),
       hl=st.floats(10, 1e6), data=st.data())
def test_lazy_decay_is_order_insensitive(events, hl, data):
    order = data.draw(st.permutations(events))
    a, b = DecayedValue(), DecayedValue()
    for t, w in events:
        a.add(w, ts=t, half_life_s=hl)
    for t, w in order:
        b.add(w, ts=t, half_life_s=hl)
    t_max = max(t for t, _ in events)
    assert a.last_ts == b.last_ts == t_max
    want = _from_scratch(events, t_max, hl)
    assert a.value == pytest.approx(want, rel=1e-9)
    assert b.value == pytest.approx(want, rel=1e-9)
    later = t_max + data.draw(st.floats(0, 1e6))
    assert a.at(later, hl) == pytest.approx(_from_scratch(events, later, hl), rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.lists(st.tuples(times, weights), min_size=1, max_size=10),
                      min_size=1, max_size=5), hl=st.floats(10, 1e6))
def test_merge_equals_one_stream(parts, hl):
    vals = []
    for evs in parts:
        d = DecayedValue()
        for t, w in evs:
            d.add(w, ts=t, half_life_s=hl)
        vals.append(d)
    merged = merge_decayed(vals, hl)
    every = [e for evs in parts for e in evs]
    t_max = max(t for t, _ in every)
    assert merged.last_ts == t_max
    assert merged.value == pytest.approx(_from_scratch(every, t_max, hl), rel=1e-9)


def test_merge_of_nothing_and_unseen_value():
    assert merge_decayed([], 5.0) == DecayedValue()
    assert merge_decayed([DecayedValue()], 5.0).last_ts == -math.inf
    assert DecayedValue().at(100.0, 5.0) == 0.0
