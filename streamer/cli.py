"""The ``streamer`` command line (typer). Parses arguments and delegates.

Exit codes: 0 ok, 1 runtime failure (e.g. server unreachable), 2 bad usage or bad
argument (one-line reason on stderr), 3 threshold breached (`bench --check`: a drift alert is open).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streamer.errors import StreamerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Streaming incremental embeddings: Kafka -> online learners -> "
                       "live HNSW index + RocksDB feature store.")
err = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Any:
    from pydantic_settings import SettingsError

    from streamer.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        text = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for ValueError
        _fail(f"bad setting STREAMER_{where.upper().replace('.', '__')}: {text}")
    except SettingsError as exc:  # e.g. a list/dict setting that is not JSON
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        _fail(f"bad setting: {exc}{cause}; list and mapping settings take JSON, e.g. "
              "STREAMER_BENCH__TASKS='[\"stability\"]'")


def _spec(ref: str) -> Any:
    """Resolve NAME (the live version) or NAME.vN among the declared types."""
    from streamer.registry import REGISTRY_TOPIC, resolve_ref

    settings = _settings()
    cache = settings.state_dir / f"{settings.topic_prefix}registry-cache.json"
    return resolve_ref(settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC), ref,
                       cache=cache)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="Exit after printing neighbours.")] = False,
    port: Annotated[int, typer.Option(help="API port", envvar="STREAMER_API_PORT",
                                      min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="API bind address",
                                      envvar="STREAMER_API_HOST")] = "127.0.0.1",
    state_dir: Annotated[Path | None, typer.Option(
        help="Keep demo state here (default: a fresh temp folder).")] = None,
    type_name: Annotated[str, typer.Option("--type", help="Embedding type")] = "demo-cooc",
) -> None:
    """Run the whole flow in one process on the embedded LastFM Asia follow graph."""
    from streamer.demo import demo_command

    settings = _settings()
    spec = _spec(type_name)
    try:
        demo_command(settings, spec, once=once, host=host, port=port, state_dir=state_dir,
                     console=out)
    except OSError as exc:
        _fail(f"cannot use state dir {state_dir}: {exc.strerror or exc}; expected a writable "
              "folder (or omit --state-dir for a temporary one)")


@app.command()
def worker(
    type_name: Annotated[str, typer.Option("--type", help="Embedding type to run",
                                           envvar="STREAMER_TYPE")],
    loglevel: Annotated[str, typer.Option(help="faust log level")] = "info",
    noop: Annotated[bool, typer.Option(
        "--noop", help="Benchmark baseline: only decode and ack.")] = False,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="TYPE",
        help="Warm-start a fresh type from TYPE's vectors (same dim; skipped once the "
             "type has state)", envvar="STREAMER_INIT_FROM")] = None,
    web_port: Annotated[int | None, typer.Option(
        help="/health and /metrics port (default STREAMER_WORKER__WEB_PORT, 6066; 0: off); "
             "each worker on a machine needs its own", min=0, max=65535)] = None,
) -> None:
    """Run the faust worker of one embedding type (consumer group streamer-<type>-v<n>).

    Run one worker per type; several types can read the same engagements topic.
    """
    from streamer.runtime.app import check_web_port, run_worker
    from streamer.runtime.app import init_from as run_init_from
    from streamer.transfer import check_transfer

    settings = _settings()
    if web_port is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"web_port": web_port})})
    spec = _spec(type_name)
    init = None
    if init_from is not None:
        if noop:
            _fail("--init-from cannot be used with --noop (a no-op worker keeps no state)")
        source = _spec(init_from)
        check_transfer(spec, source)
        check_web_port(settings)  # before any work: a retry after this error is clean
        init = run_init_from(settings, spec, source)
        if init.report is None:
            err.print(f"init-from {source.name}: skipped, {spec.name} already has state",
                      highlight=False)
        else:
            r = init.report
            err.print(f"init-from {source.name} v{r.source_version}: {r.ids} of {r.offered} "
                      f"ids warm-started in {spec.name} v{spec.version}", highlight=False)
    run_worker(settings, spec, loglevel=loglevel, noop=noop, init=init)


def _check_port(host: str, port: int) -> None:
    """Fail fast (exit 2) if ``host:port`` cannot be bound (taken, or not an address here)."""
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another "
                  "--port/--host (STREAMER_API_PORT, STREAMER_API_HOST)")


@app.command()
def serve(
    type_names: Annotated[list[str] | None, typer.Option(
        "--type", help="Types to serve, NAME (every declared version; NAME answers with the "
        "live one) or NAME.vN (repeatable; default: every declared type)")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080)", min=0,
                                             max=65535)] = None,
) -> None:
    """Serve the HTTP API as a reader replica tailing embeddings.<type>.v<n> topics.

    Every declared version is served side by side; NAME resolves to the live version
    (the registry topic, re-read every 2 s, so `streamer types promote` switches readers).
    """
    from functools import partial

    import uvicorn

    from streamer.bench.results import BENCHMARKS_TOPIC
    from streamer.index.hnsw import HnswIndex
    from streamer.index.kinded import KindedIndex
    from streamer.learn.registry import build_learner
    from streamer.registry import (
        REGISTRY_TOPIC,
        consumer_group_of,
        consumer_lag,
        declared_types,
        expand_refs,
        read_registry,
    )
    from streamer.serve.api import create_api
    from streamer.serve.benchboard import BenchBoard, BenchmarksTail
    from streamer.serve.catalog import Catalog, RegistryPoller
    from streamer.serve.replica import EmbeddingTail
    from streamer.serve.served import ServedType
    from streamer.snapshot import store_for

    settings = _settings()
    idx = settings.index
    _check_port(host or settings.api_host, settings.api_port if port is None else port)
    declared = declared_types()
    # NAME: every declared version (the registry picks the live one per request)
    specs = expand_refs(declared, type_names) if type_names else list(declared)
    served: dict[str, ServedType] = {}
    tails = []
    for spec in specs:
        dim = build_learner(spec.algorithm, spec.params).dim
        st = ServedType(
            name=spec.name, version=spec.version, dim=dim, algorithm=spec.algorithm,
            description=spec.description, params=dict(spec.params),
            index=KindedIndex(dim, factory=partial(HnswIndex, **idx.hnsw_params())),
            ttl_s=spec.ttl_s, snapshot_store=store_for(settings, spec),
        )
        served[f"{spec.name}.v{spec.version}"] = st
        tail = EmbeddingTail(settings.kafka_bootstrap, settings.topic(spec.output_topic), st)
        tail.start()
        tails.append(tail)
    board = BenchBoard()
    bench_tail = BenchmarksTail(settings.kafka_bootstrap, settings.topic(BENCHMARKS_TOPIC),
                                board)
    bench_tail.start()
    tails.append(bench_tail)
    catalog = Catalog(specs, served)
    catalog.groups = {f"{s.name}.v{s.version}": consumer_group_of(
        s, settings.consumer_group, settings.topic_prefix) for s in specs}
    poller = RegistryPoller(
        catalog,
        partial(read_registry, settings.kafka_bootstrap, settings.topic(REGISTRY_TOPIC),
                timeout_s=5.0, quiet=True),
        lambda spec: consumer_lag(
            settings.kafka_bootstrap,
            consumer_group_of(spec, settings.consumer_group, settings.topic_prefix),
            settings.topic(spec.source), timeout_s=5.0))
    poller.poll_once(lag=False)  # the live versions are known before the first request
    poller.start()
    tails.append(poller)
    api = create_api(catalog, token=settings.api_token, board=board)
    h = host or settings.api_host
    p = settings.api_port if port is None else port
    err.print(f"serving {', '.join(served)} on http://{h}:{p}")
    try:
        uvicorn.run(api, host=h, port=p, log_level="warning")
    finally:
        for t in tails:
            t.stop()
        for st in served.values():
            st.index.close()


@app.command()
def produce(
    dataset: Annotated[str | None, typer.Option(help="Data set name (see --help)")] = None,
    file: Annotated[Path | None, typer.Option(help="JSONL file of wire events")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data sets folder",
                                                  envvar="STREAMER_DATA_DIR")] = None,
    topic: Annotated[str, typer.Option(help="Target topic")] = "engagements",
    rate: Annotated[float | None, typer.Option(help="Events per second (default: max)",
                                               min=0.001)] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions if the topic is created",
                                                   min=1)] = None,
) -> None:
    """Load a data set or a JSONL file into a topic (record timestamp = event time).

    Data sets: wikipedia, collegemsg, enron, lastfm-tags, lastfm-plays, lastfm-asia, deezer.
    """
    from streamer.produce import produce_command

    settings = _settings()
    if (dataset is None) == (file is None):
        _fail("give exactly one of --dataset NAME or --file PATH")
    n = produce_command(settings, dataset=dataset, file=file, data_dir=data_dir,
                        topic=settings.topic(topic),
                        rate=rate, partitions=partitions or settings.engagements_partitions,
                        console=err)
    out.print(json.dumps({"topic": settings.topic(topic), "produced": n}))


@app.command()
def neighbors(
    type_name: Annotated[str, typer.Argument(help="Embedding type")],
    entity: Annotated[str, typer.Argument(help="Namespaced id: u:<user_id> or i:<item_id>")],
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours wanted (1..1000)")] = 10,
    kind: Annotated[str | None, typer.Option(help="Only 'user' or 'item' neighbours")] = None,
    fresh_only: Annotated[bool, typer.Option(
        "--fresh-only", help="Drop neighbours expired by the type's TTL")] = False,
    api: Annotated[str, typer.Option(help="API base URL", envvar="STREAMER_API_URL")] =
        "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print the k nearest neighbours of an id from a running `streamer serve`.

    Each with its cosine similarity and, when the type has a TTL, whether it is expired.
    """
    from streamer.client import Client
    from streamer.serve.served import check_entity_id, check_k

    check_entity_id(entity)
    check_k(k)
    if kind not in (None, "user", "item"):
        _fail(f"--kind {kind!r}; expected 'user' or 'item'")
    settings = _settings()
    with Client(api, token=settings.api_token) as c:
        res = c.neighbours_flagged(type_name, entity, k=k, kind=kind, fresh_only=fresh_only)
    if as_json:
        out.print_json(json.dumps({"id": entity, "neighbours": [
            {"id": n.id, "score": n.score, "expired": n.expired} for n in res]}))
        return
    table = Table(title=f"{type_name}: neighbours of {entity}")
    table.add_column("id")
    table.add_column("cosine", justify="right")
    table.add_column("expired")
    for n in res:
        table.add_row(n.id, f"{n.score:.4f}", "yes" if n.expired else "")
    out.print(table)


@app.command()
def get(
    type_name: Annotated[str, typer.Argument(help="Embedding type (NAME or NAME.vN)")],
    ids: Annotated[list[str], typer.Argument(help="Namespaced ids (u:... / i:...), 1..1000")],
    snapshot: Annotated[str | None, typer.Option(
        "--snapshot", help="Read as of this snapshot id (a positive integer) instead of live")
    ] = None,
    include_expired: Annotated[bool, typer.Option(
        "--include-expired", help="Print the vectors of expired ids too (TTL)")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the whole answer as one JSON object (type, version, ttl_s, "
        "watermark, snapshot, items) instead of one JSON line per id")] = False,
    api: Annotated[str, typer.Option(help="API base URL", envvar="STREAMER_API_URL")] =
        "http://127.0.0.1:8080",
) -> None:
    """Print vectors of ids from a running `streamer serve`: one JSON line per id.

    Each line: id, status (fresh | expired | missing), found, expired, vector (null if
    missing, or expired without --include-expired), updated_at (event seconds),
    update_count, model_version.
    """
    from streamer.client import Client
    from streamer.serve.served import check_ids
    from streamer.serve.snapshots import parse_snapshot_id

    check_ids(ids)
    sid = None if snapshot is None else parse_snapshot_id(snapshot)
    settings = _settings()
    with Client(api, token=settings.api_token) as c:
        answer = c.read(type_name, ids, snapshot=sid, include_expired=include_expired)
    if as_json:
        out.print(json.dumps(answer), soft_wrap=True, highlight=False)
        return
    snap = answer.get("snapshot")
    if snap:
        err.print(f"{answer.get('type')} v{answer.get('version')} as of snapshot {snap['id']} "
                  f"(event time {snap['event_time']})", highlight=False, soft_wrap=True)
    for item in answer["items"]:
        out.print(json.dumps(item), soft_wrap=True, highlight=False)


def _register() -> None:
    from streamer.cli_backfill import backfill_cmd
    from streamer.cli_bench import bench_app, snapshot_cmd
    from streamer.cli_types import types_app
    from streamer.export import export_cmd

    app.command("backfill")(backfill_cmd)
    app.command("snapshot")(snapshot_cmd)
    app.command("export")(export_cmd)
    app.add_typer(bench_app, name="bench")
    app.add_typer(types_app, name="types")


_register()


def main() -> None:
    """Console-script entry point: maps StreamerError to a one-line message and exit code."""
    import httpx

    _setup_logging("WARNING")
    try:
        app(standalone_mode=True)
    except StreamerError as exc:
        code = 2 if 400 <= exc.http_status < 500 else 1
        from streamer.client import Unauthorized

        hint = ("; set STREAMER_API_TOKEN to the server's token"
                if isinstance(exc, Unauthorized) else "")
        err.print(f"[bold red]error:[/] {exc}{hint}", highlight=False, soft_wrap=True)
        sys.exit(code)
    except httpx.TransportError as exc:
        err.print(f"[bold red]error:[/] cannot reach the API: {exc}; is `streamer serve` "
                  "running (see --api)?", highlight=False, soft_wrap=True)
        sys.exit(1)
