"""``streamer demo``: the whole flow in one process, no broker (DESIGN §1, demo mode).

Reads the vendored LastFM Asia mutual-follow graph (MIT, ``data/lastfm-asia``; each
undirected edge becomes two ``follow`` engagements), runs the decayed co-occurrence
learner through the same :class:`streamer.engine.Engine` the worker uses (RocksDB
feature table, dead letters to a JSONL file), prints neighbours for a few users and
then serves the HTTP API until Ctrl-C.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streamer.datasets import load_wire
from streamer.engine import Engine, RawMessage, iter_chunks, open_engine
from streamer.events.deadletter import JsonlDeadLetters
from streamer.index.hnsw import HnswIndex
from streamer.index.kinded import KindedIndex
from streamer.serve.served import ServedType
from streamer.settings import Settings
from streamer.topology import TopologySpec
from streamer.types import Clock, SystemClock


@dataclass
class DemoResult:
    """What the demo built."""

    engine: Engine
    served: ServedType
    events: int
    seconds: float
    dead_letters_path: Path


def run_demo(
    spec: TopologySpec,
    *,
    state_dir: Path | None,
    clock: Clock,
    dataset: str = "lastfm-asia",
    data_dir: Path | None = None,
    batch_size: int = 20_000,
) -> DemoResult:
    """Stream ``dataset`` through an engine of ``spec`` and return what is served.

    Parameters
    ----------
    spec
        The embedding type (``demo-cooc`` by default in the CLI).
    state_dir
        Root for the RocksDB path; a fresh temporary folder when ``None``.
    clock
        Wall clock for the far-future rule.
    """
    root = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="streamer-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    dlq_path = root / "engagements.deadletter.jsonl"
    dead = JsonlDeadLetters(dlq_path)
    engine = open_engine(spec, state_dir=root, dead_letters=dead, clock=clock,
                         with_index=False)
    t0 = time.perf_counter()
    n = 0
    msgs = (RawMessage(value=value, key=key, topic=f"file:{dataset}", partition=0, offset=i)
            for i, (key, value, _ts_ms) in enumerate(load_wire(dataset, data_dir)))
    for chunk in iter_chunks(msgs, batch_size):
        engine.process(chunk)
        n += len(chunk)
    seconds = time.perf_counter() - t0
    # Serve what the feature table holds: one bulk index build instead of re-inserting
    # every changed vector after every micro-batch (the worker/serve path does that).
    dim = engine.learner.dim
    served = ServedType(name=spec.name, version=spec.version, dim=dim,
                        index=KindedIndex(dim, factory=HnswIndex),
                        algorithm=spec.algorithm, description=spec.description,
                        params=dict(spec.params), ttl_s=spec.ttl_s)
    ids, recs = [], []
    for entity, rec in engine.table.iter_features():
        ids.append(entity)
        recs.append(rec)
    if ids:
        served.apply(ids, recs)
    served.caught_up = True
    return DemoResult(engine=engine, served=served, events=n, seconds=seconds,
                      dead_letters_path=dlq_path)


def _print_neighbours(res: DemoResult, console: Console) -> None:
    users = [e for e in ("u:0", "u:1", "u:2") if res.served.get_many([e])[0] is not None]
    for user in users:
        table = Table(title=f"{user}: items to recommend (users it may follow) / similar users")
        table.add_column("item", style="cyan")
        table.add_column("score", justify="right")
        table.add_column("user", style="magenta")
        table.add_column("score", justify="right")
        items = res.served.neighbours_by_id(user, 5, "item")
        peers = res.served.neighbours_by_id(user, 5, "user")
        for j in range(max(len(items), len(peers))):
            a = items[j] if j < len(items) else ("", float("nan"))
            b = peers[j] if j < len(peers) else ("", float("nan"))
            table.add_row(a[0], f"{a[1]:.3f}", b[0], f"{b[1]:.3f}")
        console.print(table)


def demo_command(settings: Settings, spec: TopologySpec, *, once: bool, host: str, port: int,
                 state_dir: Path | None, console: Console) -> None:
    """``streamer demo``: stream, print neighbours, then serve the API until Ctrl-C.

    Without ``state_dir`` the state lives in a temporary folder removed on exit.

    Raises
    ------
    OSError
        If ``state_dir`` cannot be created or written.
    """
    console.print(f"[bold]streamer demo[/]: streaming the LastFM Asia follow graph (MIT) "
                  f"through type [cyan]{spec.name}[/] ({spec.algorithm}) ...")
    tmp = None if state_dir else Path(tempfile.mkdtemp(prefix="streamer-demo-"))
    try:
        res = run_demo(spec, state_dir=state_dir or tmp, clock=SystemClock(),
                       data_dir=settings.data_dir)
        try:
            m = res.engine.metrics()
            dead = (str(res.dead_letters_path) if res.dead_letters_path.exists()
                    else "none")
            console.print(f"applied {m['accepted']:,} events, dead-lettered {m['rejected']:,} "
                          f"in {res.seconds:.2f} s "
                          f"({res.events / max(res.seconds, 1e-9):,.0f} events/s); "
                          f"{len(res.served):,} vectors; dead letters: {dead}")
            _print_neighbours(res, console)
            if not once:
                _serve(res, settings, host, port, console)
        finally:
            res.engine.close()
            res.served.index.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _serve(res: DemoResult, settings: Settings, host: str, port: int, console: Console) -> None:
    import uvicorn

    from streamer.serve.api import create_api

    api = create_api({res.served.name: res.served}, token=settings.api_token)
    url = f"http://{host}:{port}"
    console.print(f"serving the API on {url}; try {url}/v1/types/{res.served.name}/"
                  "neighbours/u:0?kind=item ; Ctrl-C stops", soft_wrap=True)
    uvicorn.run(api, host=host, port=port, log_level="warning")
