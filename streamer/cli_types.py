"""``streamer types``: list, describe, promote and retire embedding types (the registry).

Reads declared types (``topologies`` + ``streamer.types`` entry points) and the
registry decisions from the compacted ``registry`` topic (:mod:`streamer.registry`).
``list``/``describe`` still answer when the broker is down (status ``unknown``, a
warning on stderr); ``promote``/``retire`` need it (exit 1 otherwise).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

types_app = typer.Typer(add_completion=False, no_args_is_help=False,
                        help="The registry of embedding types: list, describe, promote, retire.")
err = Console(stderr=True)
out = Console()

_JSON = typer.Option("--json", help="Print JSON")
_TIMEOUT = 5.0  # wall seconds to read the registry / ask for lag before giving up


def _settings() -> Any:
    from streamer.cli import _settings as settings

    return settings()


def _state(settings: Any, *, required: bool) -> Any:
    """Read the registry; None (with a warning) when unreachable unless ``required``."""
    from streamer.registry import REGISTRY_TOPIC, RegistryUnavailable, read_registry

    try:
        return read_registry(settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC),
                             timeout_s=_TIMEOUT, quiet=True)
    except RegistryUnavailable as exc:
        if required:
            raise
        err.print(f"[yellow]warning:[/] {exc}; showing declared types only (status unknown)",
                  highlight=False, soft_wrap=True)
        return None


def _offline_freshness(settings: Any, spec: Any, *, lag: bool) -> tuple[dict[str, Any],
                                                                       dict[str, float]]:
    """Freshness and latest scores from the snapshot store (+ consumer lag from Kafka)."""
    from streamer.registry import consumer_lag, latest_scores
    from streamer.scheduler import read_results
    from streamer.snapshot import store_for

    fresh: dict[str, Any] = {}
    store = store_for(settings, spec)
    snaps = store.list() if store.dir.is_dir() else []
    if snaps:
        last = snaps[-1]
        fresh["latest_snapshot"] = {"id": last.id, "event_time": last.manifest.get("event_time"),
                                    "events_applied": last.manifest.get("events_applied"),
                                    "created_at": last.manifest.get("created_at")}
        fresh["last_event_ts"] = last.manifest.get("event_time")
    if lag:
        fresh.update(consumer_lag(settings.kafka_bootstrap, _group(settings, spec),
                                  settings.topic(spec.source), timeout_s=_TIMEOUT))
    scores = latest_scores(read_results(store.dir / "results.jsonl"))
    return fresh, scores


def _group(settings: Any, spec: Any) -> str:
    from streamer.registry import consumer_group_of

    return consumer_group_of(spec, settings.consumer_group, settings.topic_prefix)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


@types_app.callback(invoke_without_command=True)
def types_main(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """List the declared types with their registry status (same as `types list`)."""
    if ctx.invoked_subcommand is None:
        list_cmd(as_json=as_json)


@types_app.command("list")
def list_cmd(as_json: Annotated[bool, _JSON] = False) -> None:
    """List every declared type version: status (live/candidate/retired), algorithm, dim."""
    from streamer.registry import declared_types, entry

    settings = _settings()
    specs = declared_types()
    state = _state(settings, required=False)
    rows = [entry(s, specs, state, consumer_group=_group(settings, s))
            for s in sorted(specs, key=lambda s: (s.name, s.version))]
    if as_json:
        _print_json({"types": rows, "registry": state is not None})
        return
    table = Table(title="embedding types (`streamer types describe NAME` for the rest)")
    table.add_column("type", no_wrap=True)
    for col in ("status", "algorithm", "dim", "codec", "ttl (s)", "half-life (s)"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["ref"], r["status"], r["algorithm"], str(r["dim"]), r["storage_codec"],
                      "–" if r["ttl_s"] is None else f"{r['ttl_s']:g}",
                      " ".join(f"{v:g}" for v in r["half_life_s"].values()) or "–")
    out.print(table)


@types_app.command("describe")
def describe_cmd(
    ref: Annotated[str, typer.Argument(metavar="NAME", help="NAME (live version) or NAME.vN")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Describe one type version: metadata, versions, freshness (lag), latest scores."""
    from streamer.registry import declared_types, entry, expand_refs, resolve

    settings = _settings()
    specs = declared_types()
    expand_refs(specs, [ref])  # an unknown name or version: one line at once, no Kafka
    state = _state(settings, required=False)
    spec = resolve(specs, state, ref, allow_retired=True)
    fresh, scores = _offline_freshness(settings, spec, lag=state is not None)
    e = entry(spec, specs, state, freshness=fresh, scores=scores,
              consumer_group=_group(settings, spec))
    if as_json:
        _print_json(e)
        return
    table = Table(title=f"{e['ref']} ({e['status']})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in e.items():
        if k in ("name", "version", "ref"):
            continue
        if k == "created_at" and isinstance(v, float):
            v = datetime.fromtimestamp(v, UTC).isoformat(timespec="seconds")
        shown = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        table.add_row(k, shown)
    out.print(table)


def _check_published(settings: Any, spec: Any, ref: str) -> None:
    """Refuse to promote a version that has published nothing (a missing or empty topic).

    Readers of the type would get no vectors at all; ``--force`` skips this check.
    """
    from streamer.errors import BadRequest, ConfigError
    from streamer.kafka_io import end_offsets

    topic = settings.topic(spec.output_topic)
    try:
        published = sum(end_offsets(settings.kafka_bootstrap, topic).values())
        what = "is empty"
    except ConfigError:  # the topic does not exist
        published, what = 0, "does not exist"
    if not published:
        msg = (f"{ref} has published no vectors yet (topic {topic} {what}); backfill it "
               f"first (streamer backfill --type {spec.name}.v{spec.version} --until latest) "
               "or promote anyway with --force")
        raise BadRequest(msg)


def _change(ref: str, action: str, *, force: bool = False) -> None:
    from streamer.errors import BadRequest
    from streamer.registry import (
        REGISTRY_TOPIC,
        declared_types,
        expand_refs,
        parse_ref,
        promote_records,
        publish_records,
        resolve,
        retire_record,
    )

    if parse_ref(ref)[1] is None:
        msg = f"{action} needs a version: NAME.vN, e.g. {ref}.v2 (see `streamer types list`)"
        raise BadRequest(msg)
    settings = _settings()
    specs = declared_types()
    expand_refs(specs, [ref])  # an unknown name or version: one line at once, no Kafka
    state = _state(settings, required=True)
    spec = resolve(specs, state, ref, allow_retired=True)
    now = time.time()
    if action == "promote":
        if not force:
            _check_published(settings, spec, ref)
        records = promote_records(state, spec, now=now)
    else:
        records = [retire_record(state, specs, spec, now=now)]
    publish_records(settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC), records)
    out.print(json.dumps({"action": action, "type": spec.name, "version": spec.version,
                          "records": len(records)}), highlight=False)


@types_app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(metavar="NAME.vN", help="The version to make live")],
    force: Annotated[bool, typer.Option(
        "--force", help="Promote even if the version has published no vectors yet")] = False,
) -> None:
    """Make NAME.vN the version readers of NAME get (one registry record: atomic switch).

    Refused (exit 2) while the version's embeddings topic is missing or empty, i.e. it
    was neither backfilled nor run: readers would get no vectors. ``--force`` skips that.
    """
    _change(ref, "promote", force=force)


@types_app.command("retire")
def retire_cmd(
    ref: Annotated[str, typer.Argument(metavar="NAME.vN", help="The version to retire")],
) -> None:
    """Retire NAME.vN: readers stop serving it and its worker refuses to start.

    The live version cannot be retired (promote another first). Stored data is kept.
    """
    _change(ref, "retire")
