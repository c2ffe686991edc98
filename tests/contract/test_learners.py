"""Every built-in algorithm x every param set x every learner contract check; the registry."""

from __future__ import annotations

import functools
import sys
import types
from importlib.metadata import EntryPoint

import pytest

from streamer.checks.learners import yield_checks
from streamer.errors import ConfigError
from streamer.learn import registry
from streamer.learn.cooccurrence import DecayedCooccurrence
from streamer.learn.registry import _BUILTIN

CASES = [
    pytest.param(functools.partial(cls, **params), check,
                 id=f"{name}[{k}]:{check.__name__}")
    for name, cls in sorted(_BUILTIN.items())
    for k, params in enumerate(cls._unit_test_params())
    for check in yield_checks(functools.partial(cls, **params))
]


def test_every_builtin_has_cases():
    names = {c.id.split("[")[0] for c in CASES}
    assert names == set(_BUILTIN)


@pytest.mark.parametrize(("make", "check"), CASES)
def test_learner_contract(make, check):
    check(make)


# --- registry ---------------------------------------------------------------------------


def _fake_entry_points(*eps):
    def entry_points(group):
        return [ep for ep in eps if ep.group == group]
    return entry_points


def test_builtin_algorithm_by_name():
    assert registry.get_algorithm("cooc") is DecayedCooccurrence
    assert "cooc" in registry.available_algorithms()


def test_unknown_algorithm_lists_available(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(
        EntryPoint("zeta", "streamer.learn.cooccurrence:DecayedCooccurrence",
                   "streamer.algorithms")))
    with pytest.raises(ConfigError, match=r"unknown algorithm 'nope'; available: cooc, zeta"):
        registry.get_algorithm("nope")


def test_plugin_from_entry_point(monkeypatch):
    class Plugin(DecayedCooccurrence):
        name = "plug"

    mod = types.ModuleType("fake_streamer_plugin")
    mod.Plugin = Plugin
    mod.not_a_learner = len
    monkeypatch.setitem(sys.modules, "fake_streamer_plugin", mod)
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(
        EntryPoint("plug", "fake_streamer_plugin:Plugin", "streamer.algorithms"),
        EntryPoint("bad", "fake_streamer_plugin:not_a_learner", "streamer.algorithms"),
        EntryPoint("broken", "no_such_module_xyz:Thing", "streamer.algorithms"),
        EntryPoint("cooc", "fake_streamer_plugin:Plugin", "streamer.algorithms"),
        EntryPoint("other", "fake_streamer_plugin:Plugin", "other.group"),
    ))
    assert registry.get_algorithm("plug") is Plugin
    assert registry.get_algorithm("cooc") is DecayedCooccurrence  # built-ins win
    assert registry.available_algorithms() == ["bad", "broken", "cooc", "plug"]
    with pytest.raises(ConfigError, match="expected an OnlineLearner subclass"):
        registry.get_algorithm("bad")
    with pytest.raises(ConfigError, match="failed to import"):
        registry.get_algorithm("broken")
