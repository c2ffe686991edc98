"""Records the benchmark pipeline produces: task results and drift alerts.

Both are plain JSON objects once serialised (:meth:`TaskResult.to_json`,
:meth:`Alert.to_json`): they are the values of the ``benchmarks`` Kafka topic, the lines
of a type's local results log, and what the API and reports read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BENCHMARKS_TOPIC", "Alert", "TaskResult", "json_safe"]

BENCHMARKS_TOPIC = "benchmarks"
"""Topic of benchmark records (snapshots, results, alerts; key = type name), one partition."""


def json_safe(x: Any) -> Any:
    """Return ``x`` with NaN/inf floats (in nested dicts/lists) replaced by None: standard JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


@dataclass(frozen=True)
class TaskResult:
    """One task evaluated on one set of embeddings.

    Attributes
    ----------
    task
        ``"linkpred"``, ``"topic"``, ``"metadata"``, ``"follow-jaccard"``, ``"stability"``
        or ``"prequential"``.
    dataset
        Data set whose labels/graph/stream the task used (``""`` when none, e.g. stability).
    metrics
        Metric name -> value for the embeddings under test (e.g. ``{"accuracy": 0.41,
        "macro_f1": 0.22}``). NaN when undefined.
    baselines
        Baseline name (``"majority"``, ``"random"``, ``"edgebank_inf"``...) -> the same
        metric names -> values.
    n
        Number of scored examples (users, pairs, events).
    details
        Free-form JSON-ready extras (fold scores, class counts, parameters).
    """

    task: str
    dataset: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    n: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (non-finite floats become ``None``)."""
        return json_safe(asdict(self))


@dataclass(frozen=True)
class Alert:
    """A drift alert on one metric series of one embedding type.

    Attributes
    ----------
    type, version
        Embedding type and version the series belongs to.
    series
        Metric series name, ``"<task>.<metric>"`` (e.g. ``"prequential.mrr"``).
    detector
        ``"adwin"``, ``"page_hinkley"`` or ``"threshold"``.
    value
        The value that triggered the alert.
    at
        Position of the value in its series (0-based count of values seen).
    event_time
        Event time (epoch seconds) of the snapshot/batch that produced the value, or NaN.
    message
        One line saying what changed, e.g. ``"prequential.mrr fell below 0.30 (0.21)"``.
    """

    type: str
    version: int
    series: str
    detector: str
    value: float
    at: int
    event_time: float
    message: str

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict with ``"kind": "alert"``."""
        return json_safe({"kind": "alert", **asdict(self)})
