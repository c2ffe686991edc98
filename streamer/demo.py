"""``streamer demo``: the whole flow in one process, no broker (DESIGN §1, demo mode).

Reads the vendored LastFM Asia mutual-follow graph (MIT, ``data/lastfm-asia``; each
undirected edge becomes two ``follow`` engagements), runs the decayed co-occurrence
learner through the same :class:`streamer.engine.Engine` the worker uses (RocksDB
feature table, dead letters to a JSONL file), prints neighbours for a few users and
then serves the HTTP API until Ctrl-C.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streamer.datasets import load_wire
from streamer.engine import Engine, RawMessage, iter_chunks, open_engine
from streamer.events.deadletter import JsonlDeadLetters
from streamer.index.hnsw import HnswIndex
from streamer.index.kinded import KindedIndex
from streamer.serve.served import ServedType
from streamer.topology import TopologySpec
from streamer.types import Clock


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
                        params=dict(spec.params))
    ids, recs = [], []
    for entity, rec in engine.table.iter_features():
        ids.append(entity)
        recs.append(rec)
    if ids:
        served.apply(ids, recs)
    served.caught_up = True
    return DemoResult(engine=engine, served=served, events=n, seconds=seconds,
                      dead_letters_path=dlq_path)
