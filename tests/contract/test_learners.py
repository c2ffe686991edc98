"""The learner contract suite over every built-in and a real, entry-point-discovered plug-in.

* Every built-in algorithm (``registry._BUILTIN``) x each of its ``_unit_test_params()``
  x every check ``yield_checks`` gives for it.
* The example plug-in (``tests/plugins/example_plugin``): installed like ``pip install``
  would (module + ``example_streamer_plugin-0.1.dist-info/`` with ``entry_points.txt``)
  into a tmp dir on ``sys.path``, found by ``importlib.metadata.entry_points`` through
  the registry (no monkeypatched registry), and run through the same checks.
* Deliberately broken variants of the plug-in, to show each check can fail.
* Registry error paths (monkeypatched entry points).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import tempfile
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import numpy as np
import pytest

from streamer.checks.learners import yield_checks
from streamer.errors import ConfigError
from streamer.learn import registry
from streamer.learn.cooccurrence import DecayedCooccurrence
from streamer.learn.registry import _BUILTIN
from tests.plugins import broken
from tests.plugins.install import EXAMPLE_MODULE, EXAMPLE_SRC, install_distribution

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


# --- the example plug-in, discovered through a real entry point ---------------------------


@contextlib.contextmanager
def _installed(site: Path) -> Iterator[Path]:
    """Install the example plug-in into ``site`` and put it on ``sys.path`` meanwhile."""
    sys.modules.pop(EXAMPLE_MODULE, None)
    install_distribution(EXAMPLE_SRC, site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop(EXAMPLE_MODULE, None)
        importlib.invalidate_caches()


def _example_cases() -> list:
    """Collection time: discover the plug-in (in a throwaway dir) to list its checks."""
    with tempfile.TemporaryDirectory() as d, _installed(Path(d) / "site"):
        cls = registry.get_algorithm("example")
        return [
            pytest.param(k, check.__name__, id=f"example[{k}]:{check.__name__}")
            for k, params in enumerate(cls._unit_test_params())
            for check in yield_checks(functools.partial(cls, **params))
        ]


EXAMPLE_CASES = _example_cases()


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """Install the example plug-in distribution into a tmp dir on sys.path; yield its dir."""
    monkeypatch.delitem(sys.modules, EXAMPLE_MODULE, raising=False)
    site = tmp_path / "site-packages"
    install_distribution(EXAMPLE_SRC, site)
    monkeypatch.syspath_prepend(str(site))  # also invalidates import caches
    yield site
    sys.modules.pop(EXAMPLE_MODULE, None)


def _example_make(k: int = 0):
    cls = registry.get_algorithm("example")
    return functools.partial(cls, **list(cls._unit_test_params())[k])


def test_example_plugin_gets_every_optional_check():
    names = {p.values[1] for p in EXAMPLE_CASES}
    assert {p.values[0] for p in EXAMPLE_CASES} == {0, 1}
    assert {"check_seed_changes_vectors", "check_long_sessions", "check_long_user_history",
            "check_learn_many_does_not_mutate_batch", "check_warm_start_round_trip",
            "check_warm_start_needs_fresh_learner",
            "check_warm_start_rejects_bad_shape"} <= names
    assert "check_partition_interleaving_invariance" not in names  # per_partition_state False


@pytest.mark.parametrize(("k", "check_name"), EXAMPLE_CASES)
def test_example_plugin_contract(example_plugin, k, check_name):
    make = _example_make(k)
    checks = {c.__name__: c for c in yield_checks(make)}
    checks[check_name](make)


def test_example_plugin_is_discovered(example_plugin):
    eps = {ep.name: ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert eps["example"].value == "example_streamer_plugin:ExampleLearner"
    assert eps["example"].dist.name == "example-streamer-plugin"
    assert eps["example"].dist.version == "0.1"
    cls = registry.get_algorithm("example")
    module = sys.modules[EXAMPLE_MODULE]
    assert cls is module.ExampleLearner
    assert Path(module.__file__).parent == example_plugin
    assert cls.name == "example"
    assert "cooc" in registry.available_algorithms()
    assert "example" in registry.available_algorithms()


def test_build_learner_with_the_plugin(example_plugin):
    m = registry.build_learner("example", {"dim": 4, "half_life_s": 10.0, "seed": 2})
    assert type(m) is registry.get_algorithm("example")
    assert m.dim == 4 and m.seed == 2
    with pytest.raises(ConfigError, match=r"algorithm 'example' rejected params \{'depth': 3\}"):
        registry.build_learner("example", {"depth": 3})
    with pytest.raises(ConfigError, match="example: dim must be an integer >= 1, got 0"):
        registry.build_learner("example", {"dim": 0})


def test_plugin_is_absent_when_not_installed():
    assert "example" not in registry.available_algorithms()
    with pytest.raises(ConfigError, match="unknown algorithm 'example'"):
        registry.get_algorithm("example")


def test_example_plugin_learns_something_sensible(example_plugin):
    """Beyond the contract: items sharing users end up closer than items that do not."""
    from streamer.learn.base import EventBatch

    m = registry.build_learner("example", {"dim": 32, "seed": 1})
    rows = [(f"u{u}", f"a{k}", 1.0, float(t)) for t, (u, k) in
            enumerate((u, k) for u in range(20) for k in range(3))]
    rows += [(f"v{u}", f"b{k}", 1.0, 100.0 + t) for t, (u, k) in
             enumerate((u, k) for u in range(20) for k in range(3))]
    m.learn_many(EventBatch.from_rows(rows))
    vecs, mask = m.vectors(["i:a0", "i:a1", "i:b0", "u:u19", "u:u0"])
    assert mask.all()
    assert float(vecs[0] @ vecs[1]) > 0.9  # same users
    assert abs(float(vecs[0] @ vecs[2])) < 0.5  # disjoint users: near-orthogonal
    # a user averages its items' vectors as they were when it engaged: the last user
    # saw (nearly) final item vectors, the first one saw only its own random vector
    assert float(vecs[3] @ vecs[0]) > 0.9
    assert abs(float(vecs[3] @ vecs[2])) < 0.5
    assert float(vecs[4] @ vecs[0]) < 0.5


# --- the suite catches broken plug-ins -----------------------------------------------------

BROKEN = [
    pytest.param(broken.changed_misses_ids, "check_changed_is_exact",
                 r"changed\(\) is not exact: extra \[\], missing \['i:", id="changed-misses-ids"),
    pytest.param(broken.decay_sign_error, "check_no_nan_or_inf",
                 r"extreme weights/ts: NaN/inf in the vectors of \['", id="decay-sign-error"),
    pytest.param(broken.scales_weights_in_place, "check_learn_many_does_not_mutate_batch",
                 r"learn_many mutated its input batch \(column 'weights'\)",
                 id="scales-weights-in-place"),
    pytest.param(broken.unseeded_random_vectors, "check_seeding_is_idempotent",
                 r"same seed: state_dict\['acc'\] differs", id="unseeded"),
    pytest.param(broken.ignores_seed, "check_seed_changes_vectors",
                 r"seed=5 and seed=6 give bitwise-identical vectors for \d+ of \d+ ids",
                 id="ignores-seed"),
    pytest.param(broken.counts_saturate, "check_long_sessions",
                 r"long sessions: update_counts\('u:binge'\) is 1024, expected 3000 events",
                 id="counts-saturate"),
    pytest.param(broken.warm_start_not_persisted, "check_warm_start_round_trip",
                 r"warm start records \(after load\): state_dict", id="warm-start-not-persisted"),
    pytest.param(broken.warm_start_after_events, "check_warm_start_needs_fresh_learner",
                 r"warm_start on a learner that has learned events: did not raise StateError",
                 id="warm-start-after-events"),
    pytest.param(broken.warm_start_no_shape_check, "check_warm_start_rejects_bad_shape",
                 r"warm_start with vectors of shape \(3, 9\) for 3 ids, dim 8: "
                 r"did not raise DimensionMismatch", id="warm-start-no-shape-check"),
]


@pytest.mark.parametrize(("defect", "check_name", "message"), BROKEN)
def test_suite_catches_broken_plugin(example_plugin, defect, check_name, message):
    good = _example_make(0)
    bad = functools.partial(defect(good.func), **good.keywords)
    checks = {c.__name__: c for c in yield_checks(bad)}
    checks[check_name](good)  # the check passes without the defect...
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match=message):
        checks[check_name](bad)  # ...and names it with it


def test_learn_many_read_only_check_fails_on_in_place_writes(example_plugin):
    """A learner that writes into a read-only batch column fails with a clear message."""
    base = registry.get_algorithm("example")

    class ClipsInPlace(base):
        def learn_many(self, batch):
            np.minimum(batch.weights, 1e6, out=batch.weights)
            super().learn_many(batch)

    checks = {c.__name__: c for c in yield_checks(ClipsInPlace)}
    with pytest.raises(AssertionError, match="learn_many failed on a batch with read-only arrays"):
        checks["check_learn_many_does_not_mutate_batch"](ClipsInPlace)


# --- registry error paths (monkeypatched entry points) ----------------------------------


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
    builtins = ", ".join(sorted(_BUILTIN))
    with pytest.raises(ConfigError,
                       match=rf"unknown algorithm 'nope'; available: {builtins}, zeta"):
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
    assert registry.available_algorithms() == sorted({*_BUILTIN, "bad", "broken", "plug"})
    with pytest.raises(ConfigError, match="expected an OnlineLearner subclass"):
        registry.get_algorithm("bad")
    with pytest.raises(ConfigError, match="failed to import"):
        registry.get_algorithm("broken")
