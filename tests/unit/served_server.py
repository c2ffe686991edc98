"""Shared by the API, served-type and client tests: a small served type and a real server.

``make_served`` builds type ``t`` (dim 8, exact index) with 20 users and 30 items whose
``updated_at`` is ``T0 + row`` (event seconds), so with ``ttl_s=TTL`` the watermark is
``T0 + 49`` and rows ``< 39`` are expired. ``write_snapshot`` writes a real snapshot
folder (:class:`streamer.snapshot.SnapshotStore`). ``Server`` runs uvicorn in a thread
on a free loopback port.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from streamer.index.exact import ExactIndex
from streamer.index.kinded import KindedIndex
from streamer.serve.api import create_api
from streamer.serve.served import ServedType
from streamer.snapshot import Capture, SnapshotStore
from streamer.store.base import FeatureRecord
from streamer.testing.procs import free_port
from streamer.topology import TopologySpec
from streamer.types import ManualClock

DIM = 8
T0 = 1e9
TTL = 10.0
IDS = [f"u:{i}" for i in range(20)] + [f"i:{i}" for i in range(29)] + ["i:a/b?c#d %"]
SPEC = TopologySpec(name="t", algorithm="cooc", params={"dim": DIM, "seed": 1})


def records(seed: int = 0, t0: float = T0) -> list[FeatureRecord]:
    """One record per id of :data:`IDS`: random float32 vectors, ``updated_at = t0 + row``."""
    rng = np.random.default_rng(seed)
    return [FeatureRecord(vector=rng.standard_normal(DIM).astype(np.float32),
                          updated_at=t0 + j, update_count=j + 1, model_version=1)
            for j in range(len(IDS))]


def expired_ids(ttl: float = TTL, t0: float = T0) -> set[str]:
    """The ids of :data:`IDS` expired under ``ttl`` when the watermark is the newest row."""
    wm = t0 + len(IDS) - 1
    return {e for j, e in enumerate(IDS) if wm - (t0 + j) > ttl}


def make_served(*, ttl_s: float | None = None, snapshot_root: Path | None = None,
                seed: int = 0) -> ServedType:
    """Type ``t`` v1 with every id of :data:`IDS` applied."""
    store = None if snapshot_root is None else SnapshotStore(snapshot_root, SPEC,
                                                              clock=ManualClock(5.0))
    st = ServedType(name="t", version=1, dim=DIM, index=KindedIndex(DIM, factory=ExactIndex),
                    ttl_s=ttl_s, snapshot_store=store)
    st.apply(IDS, records(seed))
    st.caught_up = True
    return st


def write_snapshot(root: Path, ids: list[str], recs: list[FeatureRecord],
                   events_applied: int = 0) -> str:
    """Write ``ids``/``recs`` as the next snapshot of :data:`SPEC` under ``root``; its id."""
    store = SnapshotStore(root, SPEC, clock=ManualClock(5.0))
    pairs = sorted(zip(ids, recs, strict=True))  # snapshots are in key order
    cap = Capture(offsets={("embeddings.t.v1", 0): 41}, records=iter(pairs),
                  events_applied=events_applied, trigger="manual")
    return store.write(cap).id


class Server:
    """uvicorn serving ``create_api({"t": served})`` in a thread on a free port."""

    def __init__(self, served: ServedType, token: str | None = None):
        self.served = served
        self.port = free_port()
        cfg = uvicorn.Config(create_api({"t": served}, token=token), host="127.0.0.1",
                             port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"
