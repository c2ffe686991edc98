"""Algorithm registry: built-in learners plus plug-ins from entry points (DESIGN §3).

A plug-in package declares, in its ``pyproject.toml``::

    [project.entry-points."streamer.algorithms"]
    my_algo = "my_pkg.learner:MyLearner"

and its class (an :class:`~streamer.learn.base.OnlineLearner` subclass) is then
available as ``get_algorithm("my_algo")``. Built-in names win over plug-ins of the same
name. Entry points are read with :func:`importlib.metadata.entry_points` on each call
(cheap; no import-time scanning) and loaded only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from streamer.errors import ConfigError
from streamer.learn.base import OnlineLearner
from streamer.learn.cooccurrence import DecayedCooccurrence

__all__ = ["ENTRY_POINT_GROUP", "available_algorithms", "get_algorithm"]

ENTRY_POINT_GROUP = "streamer.algorithms"

_BUILTIN: dict[str, type[OnlineLearner]] = {
    "cooc": DecayedCooccurrence,
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
    try:
        return cls(**dict(params))
    except TypeError as exc:
        msg = f"algorithm {name!r} rejected params {dict(params)}: {exc}"
        raise ConfigError(msg) from exc
