"""The Wikipedia stream of the integration tests: bad-message mixing and table reads.

Fixtures that use it (``wiki_produced``, ``wiki_uninterrupted``) are in this folder's
``conftest.py``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from streamer.datasets import load_events
from streamer.store.rocks import RocksFeatureTable
from streamer.testing.badevents import bad_messages
from topologies import TOPOLOGIES

WIKI_TYPE = "wiki-cooc"
N_BAD = 1000


def mix_in_bad_messages(valid: list, *, n_bad: int, seed: int) -> tuple[list, list]:
    """Return (stream with bad messages inserted at seeded positions, the bad messages).

    A duplicate re-sends an earlier event (same event_id, key and content) 1..2000
    messages after its original, well inside the event-time dedup window, as a producer
    retry would; other bad messages go anywhere.
    """
    originals = list(load_events("wikipedia"))
    bad = bad_messages(n_bad, seed=seed, now_s=time.time(), originals=originals)
    rng = np.random.default_rng(seed)
    n = len(valid)
    inserts: dict[int, list] = collections.defaultdict(list)
    for b in bad:
        if b.kind == "duplicate":
            event_id = json.loads(b.value)["event_id"]
            orig = int(event_id.split(":")[1]) - 1  # wikipedia:<1-based line>
            assert valid[orig][1] == b.value
            pos = min(n, orig + 1 + int(rng.integers(0, 2000)))
        else:
            pos = int(rng.integers(0, n + 1))
        inserts[pos].append((b.key, b.value, b.timestamp_ms))
    out = []
    for i in range(n + 1):
        out.extend(inserts.get(i, ()))
        if i < n:
            out.append(valid[i])
    return out, bad


@dataclasses.dataclass
class Produced:
    prefix: str
    total: int
    user_counts: collections.Counter
    bad: list  # streamer.testing.badevents.BadMessage


def table_snapshot(path: Path, dim: int) -> tuple[dict, dict, dict]:
    """Read a closed feature table: ({id: (vector bytes, updated_at, count, version)},
    {state key: value}, {(topic, partition): last offset})."""
    t = RocksFeatureTable(path, dim=dim, read_only=True)
    try:
        feats = {k: (r.vector.tobytes(), r.updated_at, r.update_count, r.model_version)
                 for k, r in t.iter_features()}
        state = dict(t.iter_state())
        return feats, state, t.offsets()
    finally:
        t.close()


def wiki_dim() -> int:
    """Vector dim of the ``wiki-cooc`` type."""
    spec = next(s for s in TOPOLOGIES if s.name == WIKI_TYPE)
    return int(spec.params["dim"])


def wiki_dirname() -> str:
    """State folder name of the ``wiki-cooc`` type (without the topic prefix)."""
    return next(s for s in TOPOLOGIES if s.name == WIKI_TYPE).state_dirname


