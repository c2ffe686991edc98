"""The served catalog: every declared type version a replica serves, and which one is live.

``streamer serve`` keeps one :class:`~streamer.serve.served.ServedType` per declared
type version (``wiki-cooc.v1`` and ``wiki-cooc.v2`` side by side, each tailing its own
``embeddings.<name>.v<n>`` topic). A reference ``NAME`` resolves to the live version
(:mod:`streamer.registry`); ``NAME.vN`` to that version. :class:`RegistryPoller`
re-reads the compacted ``registry`` topic every few seconds and swaps the registry
state in one assignment, so a ``streamer types promote`` switches every reader of
``NAME`` at once, between two requests, never within one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from streamer.errors import RegistryUnavailable, StreamerError, UnknownType
from streamer.registry import RegistryState, entry, resolve
from streamer.serve.served import ServedType
from streamer.topology import TopologySpec

log = logging.getLogger(__name__)


class Catalog(Mapping[str, ServedType]):
    """Served type versions, resolved through the registry.

    As a mapping it holds the *live* version of each name (``catalog["wiki-cooc"]``),
    so code written for a plain ``{name: ServedType}`` keeps working.

    Parameters
    ----------
    specs
        The declared specs being served (one per ServedType).
    served
        ``"name.vN"`` -> ServedType.
    state
        Registry decisions at start (None: not read yet; ``NAME`` then resolves only
        when one version is declared).
    """

    def __init__(self, specs: Sequence[TopologySpec], served: Mapping[str, ServedType],
                 state: RegistryState | None = None) -> None:
        self.specs = tuple(specs)
        self._served = dict(served)
        self._state = state
        self.lags: dict[str, dict[str, Any]] = {}
        #: ``"name.vN"`` -> the worker's actual consumer group (set by ``streamer serve``)
        self.groups: dict[str, str] = {}
        self.registry_error: str | None = None

    @property
    def state(self) -> RegistryState | None:
        """The registry decisions in use (replaced atomically by :meth:`set_state`)."""
        return self._state

    def set_state(self, state: RegistryState) -> None:
        """Switch to new registry decisions (one reference assignment: atomic for readers)."""
        self._state = state
        self.registry_error = None

    def resolve(self, ref: str, *, allow_retired: bool = False) -> ServedType:
        """Return the ServedType ``ref`` (``NAME`` or ``NAME.vN``) names.

        Parameters
        ----------
        ref
            ``NAME`` (the live version) or ``NAME.vN``.
        allow_retired
            Whether a retired version named explicitly (``NAME.vN``) resolves: True for
            its metadata, False (the default) for reads of its data.

        Raises
        ------
        BadRequest, UnknownType, RetiredType
            As :func:`streamer.registry.resolve`; also UnknownType when the version
            is declared but not served by this replica (``serve --type``).
        """
        spec = resolve(self.specs, self._state, ref, allow_retired=allow_retired)
        st = self._served.get(f"{spec.name}.v{spec.version}")
        if st is None:
            served = ", ".join(sorted(self._served)) or "(none)"
            msg = f"type {spec.name}.v{spec.version} is not served here; served: {served}"
            raise UnknownType(msg)
        return st

    def versions(self) -> dict[str, ServedType]:
        """Return every served version, ``"name.vN"`` -> ServedType."""
        return dict(self._served)

    def spec_of(self, st: ServedType) -> TopologySpec:
        """Return the declared spec of a served type version."""
        return next(s for s in self.specs if s.name == st.name and s.version == st.version)

    def entry(self, st: ServedType, scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return the registry entry of one served version with its live freshness."""
        ref = f"{st.name}.v{st.version}"
        desc = st.describe()
        fresh = {"last_event_ts": desc.get("last_event_ts"), "caught_up": st.caught_up,
                 "entities": len(st), **self.lags.get(ref, {"lag": None})}
        e = entry(self.spec_of(st), self.specs, self._state, dim=st.dim, freshness=fresh,
                  scores=scores, consumer_group=self.groups.get(ref))
        # the served metadata too (entities, caught_up, last_event_ts, ttl_s...)
        e.update({k: v for k, v in desc.items() if k not in e})
        return e

    # Mapping of live versions -------------------------------------------------------

    def _live(self) -> dict[str, ServedType]:
        out: dict[str, ServedType] = {}
        for name in sorted({s.name for s in self.specs}):
            try:
                out[name] = self.resolve(name)
            except StreamerError:  # retired, ambiguous or not served: no live version here
                pass
        return out

    def __getitem__(self, name: str) -> ServedType:
        live = self._live()
        if name not in live:
            raise KeyError(name)
        return live[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())


class RegistryPoller(threading.Thread):
    """Background thread re-reading the registry (and consumer lags) into a Catalog.

    Parameters
    ----------
    catalog
        Where the state goes.
    read
        Returns the current :class:`RegistryState` (e.g. a partial of
        :func:`streamer.registry.read_registry`); raises RegistryUnavailable.
    lag
        ``spec -> {"lag": int | None, ...}`` (e.g. a partial of
        :func:`streamer.registry.consumer_lag`), or None to skip lag.
    every_s
        Wall seconds between reads: the delay before a promotion reaches this replica.
    """

    def __init__(self, catalog: Catalog, read: Callable[[], RegistryState],
                 lag: Callable[[TopologySpec], dict[str, Any]] | None = None,
                 *, every_s: float = 2.0) -> None:
        super().__init__(name="registry-poller", daemon=True)
        self.catalog = catalog
        self.read = read
        self.lag = lag
        self.every_s = every_s
        self.reads = 0
        self._stop_evt = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        """Ask the thread to stop."""
        self._stop_evt.set()

    def poll_once(self, *, lag: bool = True) -> None:
        """Read the registry (and the lags, unless ``lag`` is False) once.

        Errors are kept in ``catalog.registry_error`` / the lag entries, never raised.
        """
        try:
            self.catalog.set_state(self.read())
            self.reads += 1
        except RegistryUnavailable as exc:
            self.catalog.registry_error = str(exc)
            log.warning("registry read failed: %s", exc)
        if lag and self.lag is not None:
            for ref, st in self.catalog.versions().items():
                try:
                    self.catalog.lags[ref] = self.lag(self.catalog.spec_of(st))
                except Exception as exc:  # noqa: BLE001 - freshness must never stop serving
                    log.exception("consumer lag of %s failed", ref)
                    self.catalog.lags[ref] = {"lag": None,
                                              "error": f"{type(exc).__name__}: {exc}"}
        self.ready.set()

    def run(self) -> None:
        """Poll until stopped."""
        while not self._stop_evt.is_set():
            self.poll_once()
            self._stop_evt.wait(self.every_s)
