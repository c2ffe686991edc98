"""HTML benchmark report of one embedding type: one PNG per metric series (DESIGN §7).

:func:`write_report` turns the benchmark records of a type (task results of its
snapshots, and drift alerts) into ``out_dir/index.html`` plus one PNG per metric
series. Plots use matplotlib's object API on the Agg canvas (no pyplot, no global
state, no display), so it can run inside a worker thread. The page is static HTML with
inline CSS: no JavaScript, nothing fetched from the network. Every string that comes
from the records (type, task, metric, baseline and data set names, messages, manifest
values) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from streamer.bench.drift import series_name
from streamer.errors import BadRequest

__all__ = ["write_report"]


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


def _fmt(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.4g}"


def _iso(t: float) -> str:
    if not math.isfinite(t):
        return "–"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _file_name(series: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", series).strip("._")[:80] or "metric"
    return f"{stem}-{hashlib.sha1(series.encode()).hexdigest()[:8]}.png"  # noqa: S324 - a name


@dataclass
class _Series:
    name: str
    task: str
    dataset: str
    metric: str
    x_time: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    baselines: dict[str, list[float]] = field(default_factory=dict)


def _check_record(i: int, rec: Any) -> None:
    if not isinstance(rec, Mapping):
        msg = (f"result record {i} must be a mapping (TaskResult.to_json()), "
               f"got {type(rec).__name__}")
        raise BadRequest(msg)
    if not isinstance(rec.get("task"), str) or not isinstance(rec.get("metrics"), Mapping):
        msg = (f"result record {i} needs 'task' (str) and 'metrics' (mapping of metric -> "
               f"number), got keys {sorted(map(str, rec))}")
        raise BadRequest(msg)


def _collect(records: Sequence[Mapping[str, Any]]) -> dict[str, _Series]:
    out: dict[str, _Series] = {}
    for rec in records:
        task, dataset = rec["task"], str(rec.get("dataset") or "")
        t = _num(rec.get("event_time"))
        base = rec.get("baselines") if isinstance(rec.get("baselines"), Mapping) else {}
        for metric, value in rec["metrics"].items():
            name = series_name(task, str(metric), dataset)
            s = out.get(name)
            if s is None:
                s = out[name] = _Series(name, task, dataset, str(metric))
            k = len(s.values)
            s.x_time.append(t)
            s.values.append(_num(value))
            s.snapshots.append(str(rec.get("snapshot", k)))
            for b, vals in base.items():
                if isinstance(vals, Mapping) and metric in vals:
                    s.baselines.setdefault(str(b), [math.nan] * k)
            for b, col in s.baselines.items():
                vals = base.get(b)
                col.append(_num(vals.get(metric)) if isinstance(vals, Mapping) else math.nan)
    return out


def _plot(s: _Series, alerts: list[Mapping[str, Any]], path: Path, type_name: str) -> None:
    use_time = all(math.isfinite(t) for t in s.x_time)
    xs: list[Any] = ([datetime.fromtimestamp(t, tz=UTC) for t in s.x_time] if use_time
                     else list(range(len(s.values))))
    fig = Figure(figsize=(7.5, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, s.values, marker="o", markersize=3, linewidth=1.6, label=type_name)
    for b, col in sorted(s.baselines.items()):
        ax.plot(xs, col, linestyle="--", linewidth=1.1, label=b)
    marked = False
    for a in alerts:
        if use_time:
            t = _num(a.get("event_time"))
            if not math.isfinite(t):
                continue
            x: Any = datetime.fromtimestamp(t, tz=UTC)
        else:
            at = a.get("at")
            if not (isinstance(at, int) and 0 <= at < len(xs)):
                continue
            x = at
        ax.axvline(x, color="red", alpha=0.35, linewidth=1.0)
        ax.plot([x], [_num(a.get("value"))], marker="x", color="red", markersize=8,
                linestyle="none", label=None if marked else "drift alert")
        marked = True
    if use_time:
        loc = AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
        ax.set_xlabel("snapshot event time (UTC)")
    else:
        ax.set_xlabel("snapshot (sequence)")
    title = f"{s.task}.{s.metric}" + (f" ({s.dataset})" if s.dataset else "")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(s.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, format="png", bbox_inches="tight")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;font-size:0.9em}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.alert{color:#b00} .empty{padding:1em;background:#fff6e0;border:1px solid #e0c080}
img{max-width:100%;border:1px solid #eee}
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows are pre-escaped HTML cells."""
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _td(text: str, *, num: bool = False) -> str:
    cls = ' class="num"' if num else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def write_report(type_name: str, results: Sequence[Mapping[str, Any]],
                 alerts: Sequence[Mapping[str, Any]], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` and one PNG per metric series of type ``type_name``.

    Parameters
    ----------
    type_name
        The embedding type reported on.
    results
        Task-result records, one per (snapshot, task, data set), in any order. Each is
        ``TaskResult.to_json()`` augmented by the worker; the keys read are (others are
        ignored)::

            task        str, required        e.g. "linkpred"
            metrics     {str: number|null}, required   e.g. {"mrr": 0.71, "recall_at_10": 0.8}
            dataset     str, optional        "" or missing when the task has none
            baselines   {str: {str: number|null}}, optional   e.g. {"popularity": {"mrr": 0.04}}
            type        str, optional        records of another type are skipped
            version     int, optional        listed in the summary
            snapshot    str|int, optional    snapshot id (shown in the metrics table)
            event_time  number|null, optional   snapshot event time, epoch seconds
            manifest    {str: JSON}, optional   the snapshot manifest (latest one shown)

        A series is ``task.metric`` (``task/dataset.metric`` with a data set, see
        :func:`~streamer.bench.drift.series_name`); its points are the records in the
        order given, sorted by ``event_time`` when every record has one. The x axis is
        event time (UTC) when every point of the series has a finite ``event_time``,
        else the point's position (0, 1, ...). Baselines are dashed lines; a baseline
        missing from some records is drawn with gaps. ``null`` values are gaps.
    alerts
        ``Alert.to_json()`` records (``series``, ``detector``, ``value``, ``at``,
        ``event_time``, ``message``; ``type`` when present must equal ``type_name``).
        An alert is marked on its series' plot at its event time on a time axis, or at
        position ``at`` on a position axis (right when the monitor was fed exactly that
        series' values, as :meth:`~streamer.bench.drift.DriftMonitor.observe` does);
        every alert is listed in the alerts table.
    out_dir
        Created if needed. ``index.html`` and the PNGs (names derived from the series
        names) are overwritten; other files are left alone.

    Returns
    -------
    pathlib.Path
        The path of ``index.html``. With no result records for the type, the page says
        so (and still lists alerts); no PNG is written.

    Raises
    ------
    BadRequest
        If ``type_name`` is empty, a record is not a mapping or lacks ``task``/``metrics``,
        or ``out_dir`` exists and is not a directory.
    """
    if not isinstance(type_name, str) or not type_name:
        msg = f"report type name must be a non-empty string, got {type_name!r}"
        raise BadRequest(msg)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"report output {str(out)!r} exists and is not a directory"
        raise BadRequest(msg)
    for i, rec in enumerate(results):
        _check_record(i, rec)
    mine = [r for r in results if r.get("type", type_name) == type_name]
    if mine and all(math.isfinite(_num(r.get("event_time"))) for r in mine):
        mine = sorted(mine, key=lambda r: _num(r.get("event_time")))
    my_alerts = [a for a in alerts
                 if isinstance(a, Mapping) and a.get("type", type_name) == type_name]
    out.mkdir(parents=True, exist_ok=True)
    series = _collect(mine)
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
             f"<title>Benchmarks: {esc(type_name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Benchmarks of type <code>{esc(type_name)}</code></h1>"]
    times = [t for r in mine if math.isfinite(t := _num(r.get("event_time")))]
    versions = sorted({str(r["version"]) for r in mine if "version" in r})
    snaps = {str(r["snapshot"]) for r in mine if "snapshot" in r}
    summary = [f"{len(mine)} task results", f"{len(snaps)} snapshots",
               f"{len(my_alerts)} drift alerts"]
    if versions:
        summary.append("versions " + ", ".join(versions))
    if times:
        summary.append(f"event time {_iso(min(times))} to {_iso(max(times))}")
    parts.append(f"<p>{esc('; '.join(summary))}</p>")
    if not mine:
        parts.append(f'<p class="empty">No benchmark results for type '
                     f"<code>{esc(type_name)}</code> yet.</p>")

    alerts_by_series: dict[str, list[Mapping[str, Any]]] = {}
    for a in my_alerts:
        alerts_by_series.setdefault(str(a.get("series", "")), []).append(a)

    if series:
        rows = []
        for name, s in sorted(series.items()):
            last = next((v for v in reversed(s.values) if math.isfinite(v)), math.nan)
            bl = []
            for b, col in sorted(s.baselines.items()):
                bv = next((v for v in reversed(col) if math.isfinite(v)), math.nan)
                bl.append(f"{b} {_fmt(bv)}")
            n_alert = len(alerts_by_series.get(name, []))
            link = f'<td><a href="#{esc(_file_name(name))}">{esc(name)}</a></td>'
            rows.append([link, _td(_fmt(last), num=True), _td(s.snapshots[-1]),
                         _td("; ".join(bl) or "–"), _td(str(len(s.values)), num=True),
                         f'<td class="num{" alert" if n_alert else ""}">{n_alert}</td>'])
        parts.append("<h2>Metrics (latest value vs baselines)</h2>")
        parts.append(_table(["series", "latest", "snapshot", "baselines (latest)", "points",
                             "alerts"], rows))

    parts.append("<h2>Drift alerts</h2>")
    if my_alerts:
        rows = [[_td(_iso(_num(a.get("event_time")))), _td(str(a.get("series", ""))),
                 _td(str(a.get("detector", ""))), _td(_fmt(_num(a.get("value"))), num=True),
                 _td(str(a.get("at", "")), num=True), _td(str(a.get("message", "")))]
                for a in my_alerts]
        parts.append(_table(["event time", "series", "detector", "value", "at", "message"],
                            rows))
    else:
        parts.append("<p>No drift alerts.</p>")

    manifest = next((r["manifest"] for r in reversed(mine)
                     if isinstance(r.get("manifest"), Mapping)), None)
    if manifest is not None:
        parts.append("<h2>Latest snapshot manifest</h2>")
        rows = [[_td(str(k)), f"<td><code>{esc(json.dumps(v, sort_keys=True, default=str))}"
                 "</code></td>"] for k, v in sorted(manifest.items(), key=lambda kv: str(kv[0]))]
        parts.append(_table(["key", "value"], rows))

    if series:
        parts.append("<h2>Plots</h2>")
    for name, s in sorted(series.items()):
        fname = _file_name(name)
        _plot(s, alerts_by_series.get(name, []), out / fname, type_name)
        parts.append(f'<h3 id="{esc(fname)}">{esc(name)}</h3>'
                     f'<img src="{esc(fname)}" alt="{esc(name)} over snapshots">')
    parts.append("</body></html>\n")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
