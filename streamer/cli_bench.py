"""``streamer snapshot`` and ``streamer bench ...`` (DESIGN §7), registered by :mod:`streamer.cli`.

* ``streamer snapshot TYPE [--list]``: take a snapshot now from the type's feature table
  (a RocksDB secondary reader: a running worker is not disturbed), or list them.
* ``streamer bench linkpred|topic|metadata|follow-jaccard --dataset D [--type T]``: train
  every (or the given) declared type in-process on a data set and score it with its
  baselines.
* ``streamer bench run TYPE [--snapshot ID] [--task T]``: run snapshot tasks now.
* ``streamer bench stability TYPE``: stability between consecutive stored snapshots.
* ``streamer bench report TYPE --out DIR``: HTML + PNG report of the type's results.
* ``streamer bench --check [--type T]``: exit 3 if a drift alert is open (active).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streamer.errors import ConfigError
from streamer.snapshot import store_for

bench_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                        invoke_without_command=True,
                        help="Benchmark embedding types (offline on data sets, or on "
                             "snapshots) and check drift alerts.")

CHECK_FAILED = 3
"""Exit code of ``bench --check`` when an alert is open (threshold breached)."""


def _print_json(obj: Any) -> None:
    """Print strict JSON: NaN/inf (e.g. MRR of an empty repeat/new split) become null."""
    from streamer.bench.results import json_safe

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        if hasattr(x, "to_json"):
            return plain(x.to_json())
        if hasattr(x, "item") and callable(x.item):  # numpy scalars
            return x.item()
        return x

    sys.stdout.write(json.dumps(json_safe(plain(obj)), indent=1, allow_nan=False,
                                default=str) + "\n")


def _types(names: list[str] | None) -> list[Any]:
    """Return the types named NAME or NAME.vN (default: every declared type version)."""
    from streamer.cli import _spec
    from streamer.registry import declared_types, first_versions

    if not names:
        return list(first_versions(declared_types()))
    return [_spec(n) for n in names]


def _table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    console = Console(width=max(160, Console().width))
    if not rows:
        console.print(f"{title}: nothing")
        return
    for col in rows[0]:
        t.add_column(str(col))
    for r in rows:
        t.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(t)


def _metric_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn ``{metric: {name: value}}`` into one row per name."""
    metrics = [k for k, v in result.items() if isinstance(v, dict)
               and k not in ("n_by_type", "seconds")
               and all(isinstance(x, int | float | None) for x in v.values())]
    names: list[str] = []
    for m in metrics:
        for n in result[m]:
            if n not in names:
                names.append(n)
    return [{"name": n, **{m: result[m].get(n) for m in metrics}} for n in names]


# --------------------------------------------------------------------- snapshot
def snapshot_cmd(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="Embedding type")],
    list_: Annotated[bool, typer.Option("--list", help="List stored snapshots")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Take a snapshot of TYPE now (vectors + manifest), or list its snapshots.

    Reads the type's feature table as a RocksDB secondary, so a running worker is not
    disturbed; the snapshot holds every batch committed before the command started.
    Old snapshots beyond the type's retention (STREAMER_BENCH__SNAPSHOT_RETAIN) are pruned.
    """
    from streamer.cli import _settings, _spec

    settings = _settings()
    spec = _spec(type_name)
    store = store_for(settings, spec)
    if list_:
        rows = [{"id": s.id, "event_time": s.manifest.get("event_time"),
                 "entities": s.manifest.get("n_entities"),
                 "events_applied": s.manifest.get("events_applied"),
                 "trigger": s.manifest.get("trigger"), "path": str(s.path)}
                for s in store.list()]
        if as_json:
            _print_json(rows)
        else:
            _table(rows, f"snapshots of {spec.name} v{spec.version}")
        return
    from streamer.export import take_snapshot

    before = {x.id for x in store.list()}
    snap = take_snapshot(settings, spec, trigger="cli")  # a secondary reader, then prune
    pruned = sorted(before - {x.id for x in store.list()})
    if as_json:
        _print_json({**snap.manifest, "path": str(snap.path), "pruned": pruned})
    else:
        sys.stdout.write(f"snapshot {snap.id} of {spec.name} v{spec.version}: "
                         f"{snap.manifest['n_entities']} entities, event time "
                         f"{snap.manifest['event_time']}, at {snap.path}\n")


# --------------------------------------------------------------------- bench
@bench_app.callback()
def bench_main(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 3 if a drift alert is open (active in the type's drift "
        "monitor: its metric has not recovered)")] = False,
    type_names: Annotated[list[str] | None, typer.Option(
        "--type", help="With --check: types to check (default: every declared type)")] = None,
) -> None:
    """Benchmark embedding types; with --check, gate on drift alerts."""
    if ctx.invoked_subcommand is not None:
        if check:
            msg = "--check takes no subcommand; run `streamer bench --check` on its own"
            raise ConfigError(msg)
        return
    if not check:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from streamer.cli import _settings

    settings = _settings()
    from streamer.scheduler import read_results

    open_alerts = []
    checked, empty = [], []
    from streamer.registry import declared_types, expand_refs

    # every declared version (of NAME): a candidate's alerts count too
    declared = declared_types()
    for spec in expand_refs(declared, type_names) if type_names else declared:
        store = store_for(settings, spec)
        recs = read_results(store.dir / "results.jsonl")
        (checked if recs else empty).append(f"{spec.name} ({store.dir})")
        open_alerts.extend(open_alerts_of(recs))
    for a in open_alerts:
        sys.stderr.write(f"ALERT {a.get('type')} v{a.get('version')} {a.get('series')} "
                         f"[{a.get('detector')}]: {a.get('message')}\n")
    if open_alerts:
        raise typer.Exit(CHECK_FAILED)
    if not checked:
        msg = (f"no benchmark results to check for {', '.join(empty)}; is "
               "STREAMER_STATE_DIR / STREAMER_TOPIC_PREFIX the worker's, and does it "
               "snapshot (STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS)?")
        raise ConfigError(msg)
    note = f"; no results yet for {', '.join(e.split(' ')[0] for e in empty)}" if empty else ""
    sys.stderr.write(f"no open drift alerts ({', '.join(c.split(' ')[0] for c in checked)})"
                     f"{note}\n")


def open_alerts_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the open alerts of one type's record log, in order.

    Open = the drift monitor's active alerts in the latest ``status`` record (written
    whenever the active set changes and after each snapshot) plus any alert after it (a
    crash between the two); without any status record, every alert. An alert stops
    being active when its metric is back in range or back at its level before a change.
    """
    last = max((j for j, r in enumerate(records) if r.get("kind") == "status"), default=-1)
    out = list(records[last].get("active_alerts") or []) if last >= 0 else []
    out += [r for r in records[last + 1:] if r.get("kind") == "alert"]
    seen = set()
    unique = []
    for a in out:
        key = (a.get("series"), a.get("detector"), a.get("at"))
        if key not in seen:
            seen.add(key)
            unique.append(a)
    return unique


def _offline(task: str, dataset: str, types: list[str] | None, as_json: bool,
             seed: int, *, per_event: bool = False) -> None:
    from streamer.cli import _settings

    settings = _settings()
    specs = _types(types)
    if task == "linkpred":
        from streamer.bench.linkpred import run_linkpred

        res = run_linkpred(dataset, specs, data_dir=settings.data_dir, per_event=per_event)
    else:
        from streamer.bench.tasks import run_task

        res = run_task(task, dataset, specs, data_dir=settings.data_dir, seed=seed)
    if as_json:
        _print_json(res)
    else:
        split = " (test split; --json has validation too)" if task == "linkpred" else ""
        _table(_metric_rows(res), f"{task} on {dataset}{split}")


def _dataset_opt() -> Any:
    return typer.Option("--dataset", help="Data set (see `streamer produce --help`)")


_TYPE_OPT = typer.Option("--type", help="Types to train (repeatable; default: every declared)")


@bench_app.command("linkpred")
def linkpred_cmd(
    dataset: Annotated[str, _dataset_opt()] = "wikipedia",
    type_names: Annotated[list[str] | None, _TYPE_OPT] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    per_event: Annotated[bool, typer.Option(
        "--per-event", help="Score each event knowing every earlier one (the regime of "
        "leaderboard models that read same-batch history) instead of batches of 200")] = False,
) -> None:
    """Temporal link prediction (TGB protocol) against EdgeBank, popularity and recency.

    Chronological 70/15/15 split, score-then-learn in batches of 200 over validation and
    test, one-vs-all ranking with ties averaged; the test split is the headline.
    """
    _offline("linkpred", dataset, type_names, as_json, 0, per_event=per_event)


@bench_app.command("topic")
def topic_cmd(
    dataset: Annotated[str, _dataset_opt()] = "lastfm-tags",
    type_names: Annotated[list[str] | None, _TYPE_OPT] = None,
    seed: Annotated[int, typer.Option(help="Seed of folds and baselines")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """User topic prediction (Last.fm tags; logistic regression, stratified 5-fold CV)."""
    _offline("topic", dataset, type_names, as_json, seed)


@bench_app.command("metadata")
def metadata_cmd(
    dataset: Annotated[str, _dataset_opt()] = "lastfm-asia",
    type_names: Annotated[list[str] | None, _TYPE_OPT] = None,
    seed: Annotated[int, typer.Option(help="Seed of folds and baselines")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """User metadata prediction (LastFM Asia country, Deezer gender)."""
    _offline("metadata", dataset, type_names, as_json, seed)


@bench_app.command("follow-jaccard")
def follow_jaccard_cmd(
    dataset: Annotated[str, _dataset_opt()] = "lastfm-asia",
    type_names: Annotated[list[str] | None, _TYPE_OPT] = None,
    seed: Annotated[int, typer.Option(help="Seed of held-out edges and pair sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Spearman correlation of user-vector cosine with friend-set Jaccard."""
    _offline("follow-jaccard", dataset, type_names, as_json, seed)


@bench_app.command("run")
def run_cmd(
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    snapshot: Annotated[str, typer.Option(help="Snapshot id (default: the latest)")] = "latest",
    tasks: Annotated[list[str] | None, typer.Option(
        "--task", help="Task 'stability', 'topic:<dataset>', 'metadata:<dataset>', "
        "'follow-jaccard:<dataset>' (repeatable; default: the type's configured tasks)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Run snapshot tasks on one stored snapshot now (prints; does not record)."""
    from streamer.bench.tasks import evaluate
    from streamer.cli import _settings, _spec
    from streamer.scheduler import parse_task

    settings = _settings()
    spec = _spec(type_name)
    bench = settings.bench_for(dict(spec.benchmarks))
    from streamer.bench.tasks import task_needs

    chosen = [parse_task(t) for t in (tasks or bench.tasks)]
    for task, dataset in chosen:
        if task != "stability":
            task_needs(task, dataset)  # before any file is read
    if not chosen:
        msg = (f"no tasks for {spec.name}: give --task (e.g. --task stability --task "
               "metadata:lastfm-asia) or configure STREAMER_BENCH__TASKS")
        raise ConfigError(msg)
    store = store_for(settings, spec)
    snap = store.get(f"{int(snapshot):06d}" if snapshot.isdigit() else snapshot)
    emb = snap.load()
    prev = None
    results = []
    for task, dataset in chosen:
        if task == "stability":
            older = [s for s in store.list() if s.id < snap.id]
            if not older:
                msg = f"stability needs a snapshot older than {snap.id} of {spec.name}"
                raise ConfigError(msg)
            prev = prev or older[-1].load()
        res = evaluate(task, emb, dataset, prev=prev if task == "stability" else None,
                       seed=bench.seed, data_dir=settings.data_dir)
        results.append({"snapshot": snap.id, **res.to_json()})
    if as_json:
        _print_json(results)
    else:
        for r in results:
            _table([{"name": spec.name, **r["metrics"]},
                    *({"name": b, **v} for b, v in r["baselines"].items())],
                   f"{r['task']} {r['dataset'] or ''} on snapshot {snap.id}".replace("  ", " "))


@bench_app.command("stability")
def stability_cmd(
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Jaccard@10 and Procrustes distance between each pair of consecutive snapshots."""
    from streamer.bench.tasks import evaluate
    from streamer.cli import _settings, _spec

    settings = _settings()
    spec = _spec(type_name)
    bench = settings.bench_for(dict(spec.benchmarks))
    snaps = store_for(settings, spec).list()
    if len(snaps) < 2:
        msg = (f"stability needs two snapshots of {spec.name}, found {len(snaps)}; take "
               f"them with `streamer snapshot {spec.name}`")
        raise ConfigError(msg)
    rows = []
    prev = snaps[0].load()
    for s in snaps[1:]:
        cur = s.load()
        r = evaluate("stability", cur, "", prev=prev, seed=bench.seed, data_dir=None)
        rows.append({"from": snaps[snaps.index(s) - 1].id, "to": s.id, **r.metrics})
        prev = cur
    if as_json:
        _print_json(rows)
    else:
        _table(rows, f"stability of {spec.name}")


@bench_app.command("report")
def report_cmd(
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for index.html and PNGs")],
) -> None:
    """Write an HTML page with PNG plots of every metric over snapshots, with baselines."""
    from streamer.bench.report import write_report
    from streamer.cli import _settings, _spec
    from streamer.scheduler import read_results

    settings = _settings()
    spec = _spec(type_name)
    store = store_for(settings, spec)
    recs = read_results(store.dir / "results.jsonl")
    results = [r for r in recs if r.get("kind") == "result"]
    alerts = [r for r in recs if r.get("kind") == "alert"]
    if not results:
        msg = (f"no benchmark results for {spec.name} in {store.dir / 'results.jsonl'}; "
               "schedule snapshots with tasks (STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS, "
               "STREAMER_BENCH__TASKS) and let the worker run")
        raise ConfigError(msg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        page = write_report(spec.name, results, alerts, out_dir)
    except OSError as exc:
        msg = f"cannot write the report to {out_dir}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    sys.stdout.write(f"{page}\n")
