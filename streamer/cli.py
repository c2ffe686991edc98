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
        _fail(f"bad setting STREAMER_{where.upper().replace('.', '__')}: {first['msg']}")
    except SettingsError as exc:  # e.g. a list/dict setting that is not JSON
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        _fail(f"bad setting: {exc}{cause}; list and mapping settings take JSON, e.g. "
              "STREAMER_BENCH__TASKS='[\"stability\"]'")


def _spec(name: str) -> Any:
    from streamer.topology import find_type
    from topologies import TOPOLOGIES

    return find_type(TOPOLOGIES, name)


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


@app.command()
def serve(
    type_names: Annotated[list[str] | None, typer.Option(
        "--type", help="Types to serve (repeatable; default: every declared type)")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080)", min=0,
                                             max=65535)] = None,
) -> None:
    """Serve the HTTP API as a reader replica tailing embeddings.<type>.v<n> topics."""
    from functools import partial

    import uvicorn

    from streamer.bench.results import BENCHMARKS_TOPIC
    from streamer.index.hnsw import HnswIndex
    from streamer.index.kinded import KindedIndex
    from streamer.learn.registry import build_learner
    from streamer.serve.api import create_api
    from streamer.serve.benchboard import BenchBoard, BenchmarksTail
    from streamer.serve.replica import EmbeddingTail
    from streamer.serve.served import ServedType
    from topologies import TOPOLOGIES

    settings = _settings()
    idx = settings.index
    specs = [_spec(n) for n in type_names] if type_names else list(TOPOLOGIES)
    served: dict[str, ServedType] = {}
    tails = []
    for spec in specs:
        dim = build_learner(spec.algorithm, spec.params).dim
        st = ServedType(
            name=spec.name, version=spec.version, dim=dim, algorithm=spec.algorithm,
            description=spec.description, params=dict(spec.params),
            index=KindedIndex(dim, factory=partial(HnswIndex, **idx.hnsw_params())),
        )
        served[spec.name] = st
        tail = EmbeddingTail(settings.kafka_bootstrap, settings.topic(spec.output_topic), st)
        tail.start()
        tails.append(tail)
    board = BenchBoard()
    bench_tail = BenchmarksTail(settings.kafka_bootstrap, settings.topic(BENCHMARKS_TOPIC),
                                board)
    bench_tail.start()
    tails.append(bench_tail)
    api = create_api(served, token=settings.api_token, board=board)
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
    api: Annotated[str, typer.Option(help="API base URL", envvar="STREAMER_API_URL")] =
        "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Print the k nearest neighbours of an id from a running `streamer serve`."""
    from streamer.client import Client
    from streamer.serve.served import check_entity_id, check_k

    check_entity_id(entity)
    check_k(k)
    if kind not in (None, "user", "item"):
        _fail(f"--kind {kind!r}; expected 'user' or 'item'")
    settings = _settings()
    with Client(api, token=settings.api_token) as c:
        res = c.neighbours(type_name, entity, k=k, kind=kind)
    if as_json:
        out.print_json(json.dumps({"id": entity, "neighbours": [
            {"id": i, "score": s} for i, s in res]}))
        return
    table = Table(title=f"{type_name}: neighbours of {entity}")
    table.add_column("id")
    table.add_column("cosine", justify="right")
    for i, s in res:
        table.add_row(i, f"{s:.4f}")
    out.print(table)


@app.command()
def get(
    type_name: Annotated[str, typer.Argument(help="Embedding type")],
    ids: Annotated[list[str], typer.Argument(help="Namespaced ids (u:... / i:...)")],
    api: Annotated[str, typer.Option(help="API base URL", envvar="STREAMER_API_URL")] =
        "http://127.0.0.1:8080",
) -> None:
    """Print vectors (JSON lines) of ids from a running `streamer serve`."""
    from streamer.client import Client
    from streamer.serve.served import check_entity_id

    for i in ids:
        check_entity_id(i)
    settings = _settings()
    with Client(api, token=settings.api_token) as c:
        for item in c.get(type_name, ids):
            out.print(json.dumps(item), soft_wrap=True, highlight=False)


@app.command("types")
def types_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the declared embedding types."""
    from topologies import TOPOLOGIES

    rows = [{"name": s.name, "version": s.version, "algorithm": s.algorithm,
             "topic": s.output_topic, "params": dict(s.params), "description": s.description}
            for s in TOPOLOGIES]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="embedding types")
    for col in ("name", "version", "algorithm", "topic", "params"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["version"]), r["algorithm"], r["topic"],
                      json.dumps(r["params"]))
    out.print(table)


def _register() -> None:
    from streamer.cli_bench import bench_app, snapshot_cmd
    from streamer.export import export_cmd

    app.command("snapshot")(snapshot_cmd)
    app.command("export")(export_cmd)
    app.add_typer(bench_app, name="bench")


_register()


def main() -> None:
    """Console-script entry point: maps StreamerError to a one-line message and exit code."""
    import httpx

    _setup_logging("WARNING")
    try:
        app(standalone_mode=True)
    except StreamerError as exc:
        code = 2 if 400 <= exc.http_status < 500 else 1
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(code)
    except httpx.TransportError as exc:
        err.print(f"[bold red]error:[/] cannot reach the API: {exc}; is `streamer serve` "
                  "running (see --api)?", highlight=False, soft_wrap=True)
        sys.exit(1)
