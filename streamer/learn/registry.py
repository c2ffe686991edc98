"""Algorithm registry: built-in learners plus plug-ins from entry points (DESIGN §3).

Names resolve to :class:`~streamer.learn.base.OnlineLearner` subclasses: first the
built-ins (``_BUILTIN``: ``cooc``, ``sgns``), then the entry points of group
``streamer.algorithms``. Built-in names win over plug-ins of the same name. Entry points
are read with :func:`importlib.metadata.entry_points` on each call (cheap; nothing is
scanned at import time) and a plug-in module is imported only when its name is asked
for, so a broken plug-in cannot break the others.

Writing a plug-in algorithm
---------------------------
1. Subclass :class:`~streamer.learn.base.OnlineLearner` in your own package and
   implement ``dim``, ``learn_many``, ``vectors``, ``changed``, ``entity_ids``,
   ``state_changes``/``load_state_records`` and ``state_dict``/``load_state_dict``.
   Keep it pure (no I/O, no wall clock), seed every random source, and decay in event
   time. Take constructor keyword arguments (a topology's ``params``), raise
   :class:`~streamer.errors.ConfigError` for bad ones, and set ``name``. Optional:
   ``per_partition_state = True`` if state is kept per source partition (then the
   suite also checks partition-interleaving invariance), ``warm_start`` for
   ``--init-from`` transfer, ``update_counts``/``last_event_ts`` for metadata, and a
   ``_unit_test_params`` classmethod yielding small, fast parameter sets.
2. Declare it in your ``pyproject.toml``::

       [project.entry-points."streamer.algorithms"]
       my-algo = "my_pkg.learner:MyLearner"

   and ``pip install`` the package next to streamer: :func:`available_algorithms`
   now lists ``my-algo``, and an embedding type uses it with
   ``TopologySpec(name=..., algorithm="my-algo", params={...})`` in ``topologies/``
   (:func:`build_learner` passes ``params`` as keyword arguments).
3. Run the contract suite (every built-in passes it) in your own tests::

       import functools, pytest
       from streamer.checks.learners import yield_checks
       from my_pkg.learner import MyLearner

       MAKE = functools.partial(MyLearner, dim=16, seed=1)

       @pytest.mark.parametrize("check", list(yield_checks(MAKE)),
                                ids=lambda c: c.__name__)
       def test_contract(check):
           check(MAKE)

   ``yield_checks`` picks the optional checks from the class (per-partition state,
   a ``seed`` keyword, an overridden ``warm_start``). Each check raises
   ``AssertionError`` naming what broke. ``tests/plugins/example_plugin`` in this
   repository is a complete example; ``tests/contract/test_learners.py`` installs it as
   a distribution and runs the suite over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from streamer.errors import ConfigError
from streamer.learn.base import OnlineLearner
from streamer.learn.cooccurrence import DecayedCooccurrence
from streamer.learn.skipgram import SkipGram

__all__ = ["ENTRY_POINT_GROUP", "available_algorithms", "build_learner", "get_algorithm"]

ENTRY_POINT_GROUP = "streamer.algorithms"

_BUILTIN: dict[str, type[OnlineLearner]] = {
    "cooc": DecayedCooccurrence,
    "sgns": SkipGram,
}


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_algorithms() -> list[str]:
    """Return the sorted names of built-in and installed plug-in algorithms."""
    return sorted(set(_BUILTIN) | set(_plugins()))


def get_algorithm(name: str) -> type[OnlineLearner]:
    """Return the learner class registered under ``name``.

    Parameters
    ----------
    name
        A built-in name (``"cooc"``) or an entry-point name in group
        ``streamer.algorithms``.

    Returns
    -------
    type[OnlineLearner]

    Raises
    ------
    ConfigError
        If no algorithm has that name (the message lists the available ones), or the
        plug-in fails to import or is not an ``OnlineLearner`` subclass.

    Examples
    --------
    >>> get_algorithm("cooc").__name__
    'DecayedCooccurrence'
    """
    if name in _BUILTIN:
        return _BUILTIN[name]
    ep = _plugins().get(name)
    if ep is None:
        msg = f"unknown algorithm {name!r}; available: {', '.join(available_algorithms())}"
        raise ConfigError(msg)
    try:
        cls = ep.load()
    except Exception as exc:
        msg = f"algorithm plug-in {name!r} ({ep.value}) failed to import: {exc}"
        raise ConfigError(msg) from exc
    if not (isinstance(cls, type) and issubclass(cls, OnlineLearner)):
        msg = (f"algorithm plug-in {name!r} ({ep.value}) is {cls!r}, "
               "expected an OnlineLearner subclass")
        raise ConfigError(msg)
    return cls


def build_learner(name: str, params: Mapping[str, object]) -> OnlineLearner:
    """Instantiate algorithm ``name`` with keyword ``params`` (a topology's ``params``).

    Raises
    ------
    ConfigError
        If the algorithm is unknown or rejects the parameters (message names both).
    """
    cls = get_algorithm(name)
    if not isinstance(params, Mapping):
        msg = f"algorithm {name!r} params must be a mapping of keyword arguments, got {params!r}"
        raise ConfigError(msg)
    try:
        return cls(**dict(params))
    except TypeError as exc:
        msg = f"algorithm {name!r} rejected params {dict(params)}: {exc}"
        raise ConfigError(msg) from exc
