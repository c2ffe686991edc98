"""Drift detection on metric series: river change detectors plus thresholds (DESIGN §7).

A :class:`DriftMonitor` receives metric values one at a time, per named *series* (e.g.
``"prequential.mrr"`` fed once per predict-then-learn mini-batch, or
``"linkpred/wikipedia.mrr"`` fed once per snapshot benchmark), and returns the
:class:`~streamer.bench.results.Alert` records a value triggers. Which series are
watched, by which detectors, in which direction, with which thresholds, is a
:class:`DriftConfig` (validated; bad input raises a one-line
:class:`~streamer.errors.ConfigError`).

Detectors
---------
* ``adwin``: :class:`river.drift.ADWIN` (A. Bifet and R. Gavaldà, "Learning from
  Time-Changing Data with Adaptive Windowing", SDM 2007). ADWIN reports a change of the
  window mean in *either* direction. On a detection, river's ADWIN drops the oldest part
  of its window; the monitor reads the window's ``total``/``width`` just before and just
  after the update, so it knows the mean of the dropped (older) part and of the kept
  (recent) part exactly. The detection is an alert only if the recent mean is below the
  older one for ``direction="down"`` (above it for ``"up"``; either for ``"both"``).
  A detection in the good direction is not an alert: it *resolves* the series' active
  ``adwin`` and ``page_hinkley`` alerts (the metric recovered).
  Its bound has a range term for values in ``[0, 1]``, so it is conservative: on the
  synthetic shift of ``benchmarks/drift.py`` (per-batch MRR 0.37 -> 0.02, noise sd
  ~0.03, 250 values before the change) it fires 29-30 values after the change, 59-90
  for a drop to 0.20, and misses a drop to 0.30; it raised no false alarm on 3,000
  stationary values, nor on i.i.d. noise of sd up to 0.1.
* ``page_hinkley``: :class:`river.drift.PageHinkley` (E. S. Page, "Continuous
  Inspection Schemes", Biometrika 1954), run in river's ``mode`` equal to the
  direction (``"down"`` watches only decreases of the mean, ``"up"`` increases,
  ``"both"`` both), so every detection is a change in the bad direction. ``delta`` and
  ``threshold`` are in the metric's own units; the defaults (0.01, 1.0) suit metrics
  in ``[0, 1]`` with per-value noise sd up to ~0.05: on the same benchmark it fires 2
  values after the drop to 0.02, 5-6 after a drop to 0.20, 10-32 after a drop to 0.30,
  with no false alarm on 3,000 stationary values; on i.i.d. noise it raises 0.04 false
  alarms per 1,000 values at sd 0.05 but ~3 at sd 0.1, so scale both with the noise
  of a noisier series (see :class:`PageHinkleyParams`).
* thresholds ``min``/``max``: an alert when the value *crosses* out of range (from
  in-range, or on the first value watched), once per crossing: no further threshold
  alert while the value stays out of range; the alert is active until a value is back
  in range, which also re-arms it.

A change alert also resolves when the metric is back: once the mean of the last
``recover_after`` values (20) since the alert is on the good side of the mean before the
change (ADWIN's older window mean; Page-Hinkley's mean since its previous reset).

After a detection, river resets a detector (its next ``update`` starts from scratch);
the monitor replaces it by a fresh one at once, so the next value starts a new window.

Warm-up, missing values
-----------------------
The first ``warmup`` values of a series (counted from the first value the monitor
sees, NaN included) are ignored by every detector and threshold: a cold learner's
score climbs while it learns, and that transient must not become the reference mean.
NaN/inf values are counted (they advance ``at``) and otherwise ignored.

Persistence
-----------
river's ADWIN keeps its window in a Rust object that cannot be pickled, and the project
never uses pickle as a storage format, so :meth:`DriftMonitor.state` stores, for each
series and detector, the values fed since that detector's last reset, and
:meth:`DriftMonitor.from_state` replays them into fresh detectors. Both detectors are
deterministic functions of their inputs, so a resumed monitor behaves exactly like an
uninterrupted one. To bound the state, when a detector's history exceeds
``DriftConfig.max_history`` values the monitor keeps the most recent half and rebuilds
the detector from it (an upper bound on ADWIN's window; Page-Hinkley's reference mean
then covers the kept half), in a live and in a resumed monitor alike.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from river import drift as river_drift

from streamer.bench.results import Alert, TaskResult
from streamer.errors import BadRequest, ConfigError, StateError
from streamer.eval.prequential import tie_averaged_ranks
from streamer.learn.base import EventBatch
from streamer.types import item_key, user_key

__all__ = [
    "AdwinParams",
    "BatchScore",
    "DriftConfig",
    "DriftMonitor",
    "PageHinkleyParams",
    "SeriesRule",
    "default_direction",
    "prequential_series",
    "series_name",
]

Direction = Literal["down", "up", "both"]
DetectorName = Literal["adwin", "page_hinkley"]

STATE_FORMAT = 1

#: Words of a metric name that make a *rise* the bad change (distances, losses...).
_UP_WORDS = frozenset({
    "distance", "dist", "loss", "error", "err", "latency", "drift", "shift", "rank",
    "divergence", "rmse", "mae", "mse", "perplexity", "staleness", "lag",
})


def series_name(task: str, metric: str, dataset: str = "") -> str:
    """Return the series name of one metric of one task: ``task[/dataset].metric``.

    Parameters
    ----------
    task, metric
        Task name (``"linkpred"``, ``"prequential"``...) and metric name (``"mrr"``).
    dataset
        Data set of the task, ``""`` when none (the name is then ``task.metric``).

    Examples
    --------
    >>> series_name("prequential", "mrr")
    'prequential.mrr'
    >>> series_name("topic", "accuracy", "lastfm-tags")
    'topic/lastfm-tags.accuracy'
    """
    return f"{task}/{dataset}.{metric}" if dataset else f"{task}.{metric}"


def default_direction(series: str) -> Direction:
    """Return the bad direction of change guessed from a series name.

    ``"up"`` if the metric part (after the last ``.``) contains a word such as
    ``distance``, ``loss``, ``error``, ``latency``, ``rank`` or ``drift`` (split on
    ``_``/``-``); ``"down"`` otherwise (MRR, recall, accuracy, F1, Jaccard,
    correlations: quality metrics where higher is better).

    Examples
    --------
    >>> default_direction("prequential.mrr"), default_direction("stability.procrustes_distance")
    ('down', 'up')
    """
    metric = series.rsplit(".", 1)[-1].lower()
    words = set(re.split(r"[^a-z0-9]+", metric))
    return "up" if words & _UP_WORDS else "down"


def _one_line(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    text = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    tail = "" if isinstance(got, Mapping) else f" (got {got!r})"
    msg = f"drift config {loc}: {text}{tail}"
    return ConfigError(msg)


class AdwinParams(BaseModel):
    """Parameters of :class:`river.drift.ADWIN` (see its documentation).

    Attributes
    ----------
    delta
        Significance value in ``(0, 1)``; smaller means fewer false alarms and slower
        detection.
    clock
        Check for a change every ``clock`` values (river's default is 32; 1 here, since
        a metric series is short and cheap).
    max_buckets
        Buckets of each size kept before merging (ADWIN2 compression), >= 2.
    min_window_length
        Smallest sub-window compared, >= 1.
    grace_period
        Values before the first check, >= 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    delta: float = Field(0.002, gt=0, lt=1)
    clock: int = Field(1, ge=1)
    max_buckets: int = Field(5, ge=2)
    min_window_length: int = Field(5, ge=1)
    grace_period: int = Field(10, ge=1)


class PageHinkleyParams(BaseModel):
    """Parameters of :class:`river.drift.PageHinkley` (``mode`` comes from the direction).

    Attributes
    ----------
    min_instances
        Values before the test may fire, >= 1.
    delta
        Magnitude of change tolerated, in the metric's units, >= 0 (river's default
        0.005; 0.01 here).
    threshold
        Detection threshold (lambda), in the metric's units times values, > 0: the
        cumulative deviation below (above) the running mean that fires (river's default
        50 suits values of order 10; 1.0 here, for metrics in ``[0, 1]``).
    alpha
        Forgetting factor in ``(0, 1]`` of the cumulative sums.

    Notes
    -----
    Defaults chosen with ``benchmarks/drift.py`` and i.i.d. Gaussian noise: with
    ``threshold=0.5, delta=0.005`` the test fires sooner (4-11 values after an MRR drop
    0.37 -> 0.30 instead of 10-32) but raises ~2.8 false alarms per 1,000 values at
    noise sd 0.05 (what a worker's 64-event sampled MRR has), against ~0.13 here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_instances: int = Field(30, ge=1)
    delta: float = Field(0.01, ge=0)
    threshold: float = Field(1.0, gt=0)
    alpha: float = Field(0.9999, gt=0, le=1)


class SeriesRule(BaseModel):
    """How the series whose names match ``match`` are watched.

    Attributes
    ----------
    match
        A glob (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[...]``), e.g.
        ``"prequential.mrr"``, ``"*.accuracy"``, ``"linkpred/*"``.
    detectors
        Change detectors to run: any of ``"adwin"``, ``"page_hinkley"`` (no repeats;
        may be empty to use thresholds only).
    direction
        Bad direction of change, ``"down"``, ``"up"`` or ``"both"``; ``None`` guesses
        it from the series name (:func:`default_direction`).
    min, max
        Alert when the value falls below ``min`` / rises above ``max`` (``None``: no
        bound). ``min < max`` when both are set.
    warmup
        Values of the series ignored before anything may fire, >= 0.
    recover_after
        A change alert (``adwin``/``page_hinkley``) resolves once the mean of the last
        ``recover_after`` values since the alert is back on the good side of the mean
        before the change (>= 1; default 20).
    adwin, page_hinkley
        Detector parameters.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    match: str = Field(min_length=1)
    detectors: tuple[DetectorName, ...] = ("adwin", "page_hinkley")
    direction: Direction | None = None
    min: float | None = None
    max: float | None = None
    warmup: int = Field(0, ge=0)
    recover_after: int = Field(20, ge=1)
    adwin: AdwinParams = AdwinParams()
    page_hinkley: PageHinkleyParams = PageHinkleyParams()

    @model_validator(mode="after")
    def _check(self) -> SeriesRule:
        if len(set(self.detectors)) != len(self.detectors):
            msg = f"detectors must not repeat, got {list(self.detectors)}"
            raise ValueError(msg)
        for name in ("min", "max"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                msg = f"{name} must be a finite number or null, got {v!r}"
                raise ValueError(msg)
        if self.min is not None and self.max is not None and not self.min < self.max:
            msg = f"min must be < max, got min={self.min} max={self.max}"
            raise ValueError(msg)
        return self

    def direction_for(self, series: str) -> Direction:
        """Return :attr:`direction`, or the one guessed from ``series`` when unset."""
        return self.direction or default_direction(series)


class DriftConfig(BaseModel):
    """Which series are watched and how (the first matching rule wins).

    Attributes
    ----------
    rules
        Ordered :class:`SeriesRule` list. A series no rule matches is not watched
        (:meth:`DriftMonitor.update` returns ``[]``). The default watches every series
        (``match="*"``) with both detectors and the guessed direction.
    max_history
        Values kept per series and detector for persistence (>= 10); see the module
        notes.
    max_alerts
        Alerts kept in :attr:`DriftMonitor.alerts` (oldest dropped first), >= 1.

    Examples
    --------
    >>> cfg = DriftConfig.parse({"rules": [
    ...     {"match": "prequential.mrr", "direction": "down", "min": 0.2, "warmup": 50,
    ...      "page_hinkley": {"threshold": 0.5}},
    ...     {"match": "*.accuracy", "detectors": ["adwin"]},
    ...     {"match": "stability.*", "detectors": [], "max": 0.5}]})
    >>> cfg.rule_for("topic/lastfm-tags.accuracy").detectors
    ('adwin',)
    >>> cfg.rule_for("linkpred.mrr") is None
    True
    >>> DriftConfig.parse({"rules": [{"match": "x", "min": 2, "max": 1}]})
    Traceback (most recent call last):
    ...
    streamer.errors.ConfigError: drift config rules.0: min must be < max, got min=2.0 max=1.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    rules: tuple[SeriesRule, ...] = (SeriesRule(match="*"),)
    max_history: int = Field(1000, ge=10)
    max_alerts: int = Field(1000, ge=1)

    @classmethod
    def parse(cls, data: DriftConfig | Mapping[str, Any] | str | None) -> DriftConfig:
        """Build a config from a mapping or a JSON string (``None``: the default).

        Raises
        ------
        ConfigError
            One line naming the first invalid field, what it got and what it expects.
        """
        if data is None:
            return cls()
        if isinstance(data, DriftConfig):
            return data
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                msg = f"drift config is not valid JSON: {exc}"
                raise ConfigError(msg) from None
        if not isinstance(data, Mapping):
            msg = f"drift config must be a mapping (JSON object), got {type(data).__name__}"
            raise ConfigError(msg)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _one_line(exc) from None

    def rule_for(self, series: str) -> SeriesRule | None:
        """Return the first rule whose ``match`` glob matches ``series``, or ``None``."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(series, rule.match):
                return rule
        return None


# ---------------------------------------------------------------------------- detectors
def _make(name: str, rule: SeriesRule, direction: Direction) -> Any:
    if name == "adwin":
        return river_drift.ADWIN(**rule.adwin.model_dump())
    return river_drift.PageHinkley(**rule.page_hinkley.model_dump(), mode=direction)


def _replay(name: str, rule: SeriesRule, direction: Direction,
            values: Sequence[float]) -> tuple[Any, list[float]]:
    """Feed ``values`` to a fresh detector; restart after any detection (no alerts).

    Returns the detector and the values it holds (those after the last detection), so
    that replaying the returned values into a fresh detector fires nothing.
    """
    det = _make(name, rule, direction)
    kept: list[float] = []
    for x in values:
        det.update(x)
        if det.drift_detected:
            det, kept = _make(name, rule, direction), []
        else:
            kept.append(x)
    return det, kept


@dataclass
class _Series:
    rule: SeriesRule
    direction: Direction
    n: int = 0
    below_min: bool = False
    above_max: bool = False
    detectors: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    # detector -> mean before its active change alert (the level that means "recovered")
    recover_to: dict[str, float] = field(default_factory=dict)


def _alert_from_json(d: Mapping[str, Any]) -> Alert:
    kw = {f.name: d[f.name] for f in fields(Alert)}
    kw["event_time"] = math.nan if kw["event_time"] is None else float(kw["event_time"])
    kw["value"] = math.nan if kw["value"] is None else float(kw["value"])
    return Alert(**kw)


class DriftMonitor:
    """Watches the metric series of one embedding type and raises drift alerts.

    Parameters
    ----------
    type, version
        The embedding type and version the series belong to (copied into alerts).
    config
        A :class:`DriftConfig`, a mapping/JSON string for :meth:`DriftConfig.parse`, or
        ``None`` for the default (every series, both detectors, guessed direction).

    Raises
    ------
    ConfigError
        If ``config`` is invalid, ``type`` is empty or ``version`` not an integer (one
        line).

    Notes
    -----
    One detector set per series, created on the series' first value from the first
    matching rule. :attr:`alerts` is the history (at most ``max_alerts``);
    :attr:`active` the unresolved alerts, one per ``(series, detector)`` (see the module
    notes for what resolves them; :meth:`resolve` clears them by hand).

    Thread safety: none; one caller at a time.

    Examples
    --------
    >>> mon = DriftMonitor("cooc", 1, {"rules": [{"match": "*.mrr", "detectors": [],
    ...                                            "min": 0.3}]})
    >>> [a.message for a in mon.update("prequential.mrr", 0.25)]
    ['prequential.mrr fell below min 0.3 (0.25)']
    >>> mon.update("prequential.mrr", 0.2)   # still below: no new alert
    []
    >>> sorted(mon.active)
    [('prequential.mrr', 'threshold')]
    """

    def __init__(self, type: str, version: int,
                 config: DriftConfig | Mapping[str, Any] | str | None = None) -> None:
        if not isinstance(type, str) or not type:
            msg = f"drift monitor type must be a non-empty string, got {type!r}"
            raise ConfigError(msg)
        if isinstance(version, bool) or not isinstance(version, int | np.integer):
            msg = f"drift monitor version must be an integer, got {version!r}"
            raise ConfigError(msg)
        self.type = type
        self.version = int(version)
        self.config = DriftConfig.parse(config)
        self._series: dict[str, _Series] = {}
        self._alerts: list[Alert] = []
        self._active: dict[tuple[str, str], Alert] = {}

    # ------------------------------------------------------------------ views
    @property
    def alerts(self) -> list[Alert]:
        """Return the alert history, oldest first (a copy)."""
        return list(self._alerts)

    @property
    def active(self) -> dict[tuple[str, str], Alert]:
        """Return the unresolved alerts keyed by ``(series, detector)`` (a copy).

        ``detector`` is ``"adwin"``, ``"page_hinkley"`` or ``"threshold"``.
        """
        return dict(self._active)

    def series_names(self) -> list[str]:
        """Return the names of the watched series, sorted."""
        return sorted(self._series)

    def resolve(self, series: str | None = None) -> int:
        """Clear active alerts by hand (an operator acknowledged them).

        Parameters
        ----------
        series
            Only this series' alerts; ``None`` for all. Threshold alerts stay cleared
            until the value crosses out of range again.

        Returns
        -------
        int
            How many active alerts were cleared.
        """
        keys = [k for k in self._active if series is None or k[0] == series]
        for k in keys:
            del self._active[k]
        return len(keys)

    # ------------------------------------------------------------------ updates
    def _new_series(self, name: str, rule: SeriesRule) -> _Series:
        direction = rule.direction_for(name)
        s = _Series(rule=rule, direction=direction)
        s.detectors = {d: _make(d, rule, direction) for d in rule.detectors}
        s.history = {d: [] for d in rule.detectors}
        return s

    def _emit(self, series: str, detector: str, value: float, at: int, event_time: float,
              message: str) -> Alert:
        alert = Alert(type=self.type, version=self.version, series=series, detector=detector,
                      value=float(value), at=at, event_time=float(event_time), message=message)
        self._alerts.append(alert)
        if len(self._alerts) > self.config.max_alerts:
            del self._alerts[: len(self._alerts) - self.config.max_alerts]
        self._active[(series, detector)] = alert
        return alert

    def update(self, series: str, value: float, *, event_time: float = math.nan) -> list[Alert]:
        """Feed one value of a series; return the alerts it raises (usually none).

        Parameters
        ----------
        series
            Series name, e.g. ``"prequential.mrr"`` (see :func:`series_name`).
        value
            The metric value. NaN/inf are counted and ignored.
        event_time
            Event time (epoch seconds) of the batch/snapshot that produced the value,
            copied into alerts; NaN when unknown.

        Returns
        -------
        list[Alert]
            In order: threshold, then ``adwin``, then ``page_hinkley`` alerts.

        Raises
        ------
        BadRequest
            If ``series`` is not a non-empty string or ``value`` is not a number.
        """
        if not isinstance(series, str) or not series:
            msg = f"drift series name must be a non-empty string, got {series!r}"
            raise BadRequest(msg)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            msg = f"drift value for {series!r} must be a number, got {value!r}"
            raise BadRequest(msg)
        s = self._series.get(series)
        if s is None:
            rule = self.config.rule_for(series)
            if rule is None:
                return []
            s = self._series[series] = self._new_series(series, rule)
        at = s.n
        s.n += 1
        x = float(value)
        if not math.isfinite(x) or at < s.rule.warmup:
            return []
        out: list[Alert] = []
        self._thresholds(series, s, x, at, event_time, out)
        for name in s.rule.detectors:
            det, hist = s.detectors[name], s.history[name]
            if name == "adwin":
                w0, t0 = det.width, det.total
                det.update(x)
                if det.drift_detected:
                    self._adwin_detected(series, s, x, at, event_time, w0, t0, det, out)
                    continue
            else:
                det.update(x)
                if det.drift_detected:
                    ref = sum(hist) / len(hist) if hist else math.nan
                    verb = {"down": "fell", "up": "rose", "both": "changed"}[s.direction]
                    out.append(self._emit(
                        series, name, x, at, event_time,
                        f"{series} {verb}: page_hinkley detected a change of the mean "
                        f"(mean since reset {ref:.4g}, value {x:.4g})"))
                    s.detectors[name], s.history[name] = _make(name, s.rule, s.direction), []
                    if math.isfinite(ref):
                        s.recover_to[name] = ref
                    continue
            hist.append(x)
            if len(hist) > self.config.max_history:
                keep = hist[len(hist) - self.config.max_history // 2:]
                s.detectors[name], s.history[name] = _replay(name, s.rule, s.direction, keep)
        self._recovered(series, s)
        return out

    def _recovered(self, series: str, s: _Series) -> None:
        """Resolve change alerts whose metric is back at its level before the change.

        Recovery = the mean of the last ``recover_after`` values fed to that detector since
        its alert is >= (direction ``down``) or <= (``up``) the mean before the change.
        """
        n = s.rule.recover_after
        for name, ref in list(s.recover_to.items()):
            if (series, name) not in self._active:
                del s.recover_to[name]
                continue
            hist = s.history.get(name) or []
            if len(hist) < n:
                continue
            recent = sum(hist[-n:]) / n
            ok = {"down": recent >= ref, "up": recent <= ref,
                  "both": abs(recent - ref) <= 0.05 * max(abs(ref), 1e-12)}[s.direction]
            if ok:
                del self._active[(series, name)]
                del s.recover_to[name]

    def _thresholds(self, series: str, s: _Series, x: float, at: int, event_time: float,
                    out: list[Alert]) -> None:
        lo, hi = s.rule.min, s.rule.max
        below = lo is not None and x < lo
        above = hi is not None and x > hi
        if below and not s.below_min:
            out.append(self._emit(series, "threshold", x, at, event_time,
                                  f"{series} fell below min {lo:.4g} ({x:.4g})"))
        if above and not s.above_max:
            out.append(self._emit(series, "threshold", x, at, event_time,
                                  f"{series} rose above max {hi:.4g} ({x:.4g})"))
        s.below_min, s.above_max = below, above
        if not (below or above):  # back in range: resolved, and re-armed
            self._active.pop((series, "threshold"), None)

    def _adwin_detected(self, series: str, s: _Series, x: float, at: int, event_time: float,
                        w0: float, t0: float, det: Any, out: list[Alert]) -> None:
        w1, t1 = det.width, det.total
        dropped = w0 + 1 - w1
        recent = t1 / w1 if w1 > 0 else x
        if dropped > 0:
            older = (t0 + x - t1) / dropped
        else:  # no shrink reported: compare the new value with the window before it
            older, recent = (t0 / w0 if w0 > 0 else x), x
        change = recent - older
        bad = {"down": change < 0, "up": change > 0, "both": change != 0}[s.direction]
        s.detectors["adwin"], s.history["adwin"] = _make("adwin", s.rule, s.direction), []
        if bad:
            s.recover_to["adwin"] = older
            verb = "fell" if change < 0 else "rose"
            out.append(self._emit(
                series, "adwin", x, at, event_time,
                f"{series} {verb}: adwin detected a change of the window mean from "
                f"{older:.4g} to {recent:.4g}"))
        else:  # the metric recovered: its change alerts are resolved
            self._active.pop((series, "adwin"), None)
            self._active.pop((series, "page_hinkley"), None)

    def observe(self, result: TaskResult | Mapping[str, Any], *,
                event_time: float | None = None) -> list[Alert]:
        """Feed every metric of a task result (one value per series).

        Parameters
        ----------
        result
            A :class:`~streamer.bench.results.TaskResult` or its ``to_json()`` dict
            (keys ``task``, ``dataset``, ``metrics``; an ``event_time`` key is used when
            the argument is not given). Series names come from :func:`series_name`;
            ``None`` metric values count as NaN.
        event_time
            Event time (epoch seconds) of the snapshot; overrides ``result["event_time"]``.

        Returns
        -------
        list[Alert]
            Alerts of all metrics, in metric-name order.

        Raises
        ------
        BadRequest
            If ``result`` lacks ``task`` or ``metrics``.
        """
        rec = result.to_json() if isinstance(result, TaskResult) else dict(result)
        if not isinstance(rec.get("task"), str) or not isinstance(rec.get("metrics"), Mapping):
            msg = (f"drift observe needs a task result with 'task' (str) and 'metrics' "
                   f"(mapping), got keys {sorted(rec)}")
            raise BadRequest(msg)
        t = rec.get("event_time") if event_time is None else event_time
        t = math.nan if t is None else float(t)
        out: list[Alert] = []
        for metric in sorted(rec["metrics"]):
            v = rec["metrics"][metric]
            name = series_name(rec["task"], metric, rec.get("dataset") or "")
            out += self.update(name, math.nan if v is None else v, event_time=t)
        return out

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Return the monitor's state as a JSON-ready dict (see :meth:`from_state`).

        Keys: ``format`` (1), ``type``, ``version``, ``config`` (the config as JSON),
        ``series`` (name -> ``{"n", "below_min", "above_max", "history": {detector:
        [values since its last reset]}}``), ``alerts`` and ``active`` (lists of
        ``Alert.to_json()`` dicts). All floats are finite or ``None``.
        """
        series = {}
        for name, s in sorted(self._series.items()):
            series[name] = {"n": s.n, "below_min": s.below_min, "above_max": s.above_max,
                            "history": {d: list(v) for d, v in s.history.items()},
                            "recover_to": dict(s.recover_to)}
        return {
            "format": STATE_FORMAT, "type": self.type, "version": self.version,
            "config": self.config.model_dump(mode="json"),
            "series": series,
            "alerts": [a.to_json() for a in self._alerts],
            "active": [a.to_json() for _, a in sorted(self._active.items())],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any],
                   config: DriftConfig | Mapping[str, Any] | str | None = None) -> DriftMonitor:
        """Rebuild a monitor from :meth:`state` (e.g. after ``json.loads``).

        Parameters
        ----------
        state
            A dict produced by :meth:`state`.
        config
            ``None`` to keep the stored config. Otherwise the new config applies: each
            series takes its rule from it (a series it no longer matches is dropped),
            and each detector is rebuilt by replaying the stored history with the new
            parameters (a detection during the replay only restarts the detector).

        Returns
        -------
        DriftMonitor
            Behaves exactly like the monitor that produced ``state`` (same config).

        Raises
        ------
        StateError
            If ``state`` is not a monitor state of a supported format.
        ConfigError
            If the (stored or given) config is invalid.
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            msg = (f"drift monitor state must be a mapping with format={STATE_FORMAT}, "
                   f"got {got!r}; was it written by DriftMonitor.state()?")
            raise StateError(msg)
        try:
            mon = cls(state["type"], state["version"],
                      state["config"] if config is None else config)
            for name, rec in state["series"].items():
                rule = mon.config.rule_for(name)
                if rule is None:
                    continue
                s = mon._new_series(name, rule)
                s.n, s.below_min, s.above_max = int(rec["n"]), bool(rec["below_min"]), \
                    bool(rec["above_max"])
                for d in rule.detectors:
                    s.detectors[d], s.history[d] = _replay(
                        d, rule, s.direction, [float(v) for v in rec["history"].get(d, [])])
                s.recover_to = {str(d): float(v)
                                for d, v in (rec.get("recover_to") or {}).items()}
                mon._series[name] = s
            mon._alerts = [_alert_from_json(a) for a in state["alerts"]]
            active = (_alert_from_json(a) for a in state["active"])
            mon._active = {(a.series, a.detector): a for a in active if a.series in mon._series}
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            msg = f"drift monitor state is malformed ({type(exc).__name__}: {exc})"
            raise StateError(msg) from None
        return mon


# ---------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class BatchScore:
    """Predict-then-learn score of one mini-batch.

    Attributes
    ----------
    index
        0-based position of the batch in the stream.
    n
        Events scored (0 for an empty batch; the metrics are then NaN).
    mrr
        Mean reciprocal tie-averaged rank of the true item.
    recall_at_k
        Fraction of events whose tie-averaged rank is ``<= k``.
    event_time
        Largest event time in the batch (epoch seconds), NaN if empty.
    """

    index: int
    n: int
    mrr: float
    recall_at_k: float
    event_time: float

    def to_dict(self) -> dict[str, float | int]:
        """Return the fields as a dict."""
        return asdict(self)


def _score(learner: Any, users: list[str], items: list[str]) -> np.ndarray:
    """Return ``(len(users), len(items))`` float64 scores, each distinct user scored once."""
    uniq = list(dict.fromkeys(users))
    fast = getattr(learner, "score_matrix", None)
    if fast is not None:
        rows = np.asarray(fast(uniq, items), np.float64)
    else:
        rows = np.stack([np.asarray(learner.score_items(u, items), np.float64) for u in uniq])
    if len(uniq) == len(users):
        return rows
    where = {u: r for r, u in enumerate(uniq)}
    return rows[np.fromiter((where[u] for u in users), np.int64, len(users))]


def prequential_series(
    learner: Any,
    batches: Iterable[EventBatch],
    candidates: Sequence[str] | None = None,
    *,
    n_negatives: int | None = None,
    k: int = 10,
    seed: int = 0,
) -> Iterator[BatchScore]:
    """Yield one predict-then-learn score per mini-batch: score the batch, then learn it.

    Each event's true item is ranked (ties averaged,
    :func:`~streamer.eval.prequential.tie_averaged_ranks`) among the candidates, scored
    by the learner *before* it learns the batch (river's progressive validation; the
    TGB protocol of :func:`~streamer.eval.prequential.prequential`, one value per batch).

    Parameters
    ----------
    learner
        An :class:`~streamer.learn.base.OnlineLearner` (``learn_many`` and
        ``score_items``); ``score_matrix(users, items)`` is used when present.
    batches
        Mini-batches in stream order (raw ids).
    candidates
        Raw item ids to rank against. ``None``: every item seen so far in ``batches``,
        including the current batch's, in order of first appearance.
    n_negatives
        ``None`` ranks against all candidates. Otherwise each event's true item is
        ranked against ``n_negatives`` candidates drawn uniformly with replacement from
        the others (sampled-negative MRR: cheaper on large catalogues, and higher than
        the full-ranking MRR).
    k
        Recall cut-off, >= 1.
    seed
        Seed of the negative sampler (``numpy.random.default_rng``).

    Yields
    ------
    BatchScore
        One per input batch, in order.

    Raises
    ------
    BadRequest
        If ``k`` or ``n_negatives`` < 1, ``candidates`` is empty, or an event's item is
        not among the given candidates.

    Examples
    --------
    >>> from streamer.learn.registry import build_learner
    >>> from streamer.testing.driftstream import drift_stream
    >>> s = drift_stream(n_batches=3, batch_size=50, seed=0)
    >>> scores = list(prequential_series(build_learner("cooc", {"dim": 16}), s.batches, s.items))
    >>> [b.index for b in scores], all(0 < b.mrr <= 1 for b in scores)
    ([0, 1, 2], True)
    """
    if k < 1 or (n_negatives is not None and n_negatives < 1):
        msg = f"k and n_negatives must be >= 1, got k={k}, n_negatives={n_negatives}"
        raise BadRequest(msg)
    grow = candidates is None
    cands: list[str] = [] if candidates is None else list(candidates)
    if not grow and not cands:
        msg = "prequential_series needs at least one candidate item, got none"
        raise BadRequest(msg)
    col = {c: j for j, c in enumerate(cands)}
    keys = [item_key(c) for c in cands]
    rng = np.random.default_rng(seed)
    for index, b in enumerate(batches):
        n = len(b)
        if n == 0:
            yield BatchScore(index, 0, math.nan, math.nan, math.nan)
            continue
        if grow:
            for i in b.item_ids:
                if i not in col:
                    col[i] = len(cands)
                    cands.append(i)
                    keys.append(item_key(i))
        try:
            true = np.fromiter((col[i] for i in b.item_ids), np.int64, n)
        except KeyError as exc:
            msg = f"event item {exc.args[0]!r} is not among the {len(cands)} candidates"
            raise BadRequest(msg) from None
        users = [user_key(u) for u in b.user_ids]
        if n_negatives is None:
            ranks = tie_averaged_ranks(_score(learner, users, keys), true)
        else:
            ranks = _sampled_ranks(learner, users, keys, true, n_negatives, rng)
        learner.learn_many(b)
        yield BatchScore(index, n, float((1.0 / ranks).mean()), float((ranks <= k).mean()),
                         float(b.ts.max()))


def _sampled_ranks(learner: Any, users: list[str], keys: list[str],
                   true: npt.NDArray[np.int64], n_neg: int,
                   rng: np.random.Generator) -> npt.NDArray[np.float64]:
    m = len(keys)
    if m < 2:
        return np.ones(len(true))
    neg = rng.integers(0, m - 1, (len(true), n_neg))
    neg += neg >= true[:, None]  # skip the true column: uniform over the others
    cols = np.concatenate([true[:, None], neg], axis=1)
    uniq, inv = np.unique(cols, return_inverse=True)
    scores = _score(learner, users, [keys[j] for j in uniq.tolist()])
    sub = np.take_along_axis(scores, inv.reshape(cols.shape), axis=1)
    return tie_averaged_ranks(sub, np.zeros(len(true), np.int64))
