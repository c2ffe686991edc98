"""Engine (decode -> learn -> atomic commit -> index -> publish) on a real RocksDB table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.engine import Engine, RawMessage, open_engine
from streamer.errors import StateError
from streamer.events.deadletter import MemoryDeadLetters
from streamer.store.rocks import RocksFeatureTable
from streamer.topology import TopologySpec
from streamer.types import ManualClock

NOW = 1_700_000_000.0
SPEC = TopologySpec(name="t-cooc", algorithm="cooc",
                    params={"dim": 16, "half_life_s": 3600.0, "seed": 3})


def _event(i: int, user: int, item: int, *, event_id: str | None = None) -> bytes:
    doc = {"user_id": f"{user}", "item_id": f"{item}", "action": "click",
           "ts": NOW - 10_000 + i}
    if event_id:
        doc["event_id"] = event_id
    return json.dumps(doc).encode()


def _stream(n: int = 600, seed: int = 0) -> list[RawMessage]:
    """Valid events over 4 partitions (keyed by user), plus bad ones and duplicates."""
    rng = np.random.default_rng(seed)
    offsets = [0, 0, 0, 0]
    out = []
    prev = (0, b"")
    for i in range(n):
        user = int(rng.integers(0, 30))
        p = user % 4
        if i % 50 == 7:
            value = b'{"user_id": "x", "item_id"'  # truncated JSON
        elif i % 50 == 21:
            user, value = prev  # a producer retry: same event, same key, same partition
            p = user % 4
        else:
            value = _event(i, user, int(rng.zipf(1.5)) % 80, event_id=f"e{i}")
            prev = (user, value)
        out.append(RawMessage(value=value, topic="eng", partition=p, offset=offsets[p]))
        offsets[p] += 1
    return out


def _open(path: Path, dead: MemoryDeadLetters, spec: TopologySpec = SPEC) -> Engine:
    return open_engine(spec, state_dir=path, dead_letters=dead, clock=ManualClock(NOW),
                       with_index=True, index_params={"initial_capacity": 64, "background": True})


def _table_state(path: Path) -> tuple[dict, dict, dict]:
    t = RocksFeatureTable(path / f"{SPEC.state_dirname}", dim=16, read_only=True)
    try:
        feats = {k: (r.vector.tobytes(), r.updated_at, r.update_count)
                 for k, r in t.iter_features()}
        return feats, dict(t.iter_state()), t.offsets()
    finally:
        t.close()


def test_bad_messages_go_to_dead_letters_and_good_ones_are_applied(tmp_path):
    dead = MemoryDeadLetters()
    eng = _open(tmp_path, dead)
    msgs = _stream()
    published: list[str] = []
    eng.publish = lambda ids, recs: published.extend(ids)
    for s in range(0, len(msgs), 97):
        eng.process(msgs[s:s + 97])
    reasons = sorted(r.reason for r in dead)
    n_trunc = sum(1 for i in range(600) if i % 50 == 7)
    n_dup = sum(1 for i in range(600) if i % 50 == 21)
    assert reasons.count("not_json") == n_trunc
    assert reasons.count("duplicate") == n_dup
    assert len(reasons) == n_trunc + n_dup
    m = eng.metrics()
    assert m["accepted"] == 600 - n_trunc - n_dup
    assert m["rejected_by_reason"] == {"duplicate": n_dup, "not_json": n_trunc}
    from streamer.events.decode import NATIVE_AVAILABLE

    assert m["decoder"] == ("native" if NATIVE_AVAILABLE else "python")
    # per-user counts in the table equal the number of accepted events of that user
    want: dict[str, int] = {}
    for i, msg in enumerate(msgs):
        if i % 50 in (7, 21):
            continue
        u = "u:" + json.loads(msg.value)["user_id"]
        want[u] = want.get(u, 0) + 1
    recs = eng.table.get_many(sorted(want))
    assert {u: r.update_count for u, r in zip(sorted(want), recs, strict=True)} == want
    assert set(published) >= set(want)
    # the live index answers with other items, in the same space as the users
    res = eng.index.knn(recs[0].vector, 5, kind="item")
    assert len(res) == 5 and all(i.startswith("i:") for i, _ in res)
    eng.close()


def test_redelivered_offsets_are_skipped(tmp_path):
    dead = MemoryDeadLetters()
    eng = _open(tmp_path, dead)
    msgs = _stream(200)
    eng.process(msgs[:120])
    before = eng.metrics()
    res = eng.process(msgs[:150])  # 120 re-delivered, 30 new
    assert res.skipped == 120
    after = eng.metrics()
    assert after["accepted"] + after["rejected"] == before["accepted"] + before["rejected"] + 30
    eng.close()


def test_restart_from_the_table_equals_an_uninterrupted_run(tmp_path):
    msgs = _stream(900, seed=4)
    a = tmp_path / "a"
    eng = _open(a, MemoryDeadLetters())
    for s in range(0, len(msgs), 100):
        eng.process(msgs[s:s + 100])
    eng.close()

    b = tmp_path / "b"
    eng = _open(b, MemoryDeadLetters())
    eng.process(msgs[:333])
    eng.close()  # "crash" after a commit; restart, with re-delivery and other cuts
    eng = _open(b, MemoryDeadLetters())
    eng.process(msgs[250:611])
    eng.process(msgs[611:])
    eng.close()
    assert _table_state(b) == _table_state(a)


def test_a_table_of_other_params_is_refused(tmp_path):
    eng = _open(tmp_path, MemoryDeadLetters())
    eng.close()
    other = TopologySpec(name="t-cooc", algorithm="cooc",
                         params={"dim": 16, "half_life_s": 60.0, "seed": 3})
    with pytest.raises(StateError, match="t-cooc"):
        _open(tmp_path, MemoryDeadLetters(), other)


def test_native_and_python_decoders_give_the_same_table(tmp_path):
    from streamer.events.decode import Decoder

    msgs = _stream(900, seed=5)
    extra = [b'{"user_id": "3", "item_id": "4", "action": "click", "ts": "x"}']  # bad_ts
    extra += [b'{"user_id": "3", "item_id": "%d", "action": "click", "ts": %d}'
              % (i, int(NOW) - 500 + i) for i in range(4)]  # integer ts: decode()'s floats
    extra += [b'{"user_id": "3", "item_id": "9", "action": "click", '
              b'"ts": "2023-11-14T22:00:00Z"}']  # an ISO ts: only decode() takes it
    msgs += [RawMessage(v, "eng", 3, 1000 + i) for i, v in enumerate(extra)]
    states, letters = [], []
    for native in (True, False):
        dead = MemoryDeadLetters()
        eng = _open(tmp_path / str(native), dead)
        eng.decoder = Decoder(actions=SPEC.action_weights, clock=ManualClock(NOW),
                              native=native)
        for s in range(0, len(msgs), 128):
            eng.process(msgs[s:s + 128])
        assert eng.metrics()["decoder"] == ("native" if native else "python")
        eng.close()
        t = RocksFeatureTable(tmp_path / str(native) / SPEC.state_dirname, dim=16,
                              read_only=True)
        states.append((dict(t.iter_encoded_features()), dict(t.iter_state()), t.offsets()))
        t.close()
        letters.append([(r.reason, r.detail, r.partition, r.offset, r.raw) for r in dead])
    assert states[0] == states[1] and letters[0] == letters[1]
    assert {r[0] for r in letters[0]} == {"not_json", "duplicate", "bad_ts"}
    assert len(states[0][0]) > 50
