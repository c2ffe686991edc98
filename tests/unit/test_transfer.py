"""Transfer (``--init-from``) and several types side by side, on real RocksDB tables.

A tiny test-only learner that implements ``warm_start`` is registered by monkeypatching
the registry's built-ins; the source and target types live under one ``tmp_path``
state dir with a topic prefix, as two workers would.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamer.engine import Engine, RawMessage, open_engine, warm_start_from
from streamer.errors import (
    ConfigError,
    DimensionMismatch,
    StateError,
    StreamerError,
    UnknownType,
)
from streamer.events.deadletter import MemoryDeadLetters
from streamer.learn import registry
from streamer.learn.base import EventBatch, OnlineLearner
from streamer.settings import Settings
from streamer.store.rocks import RocksFeatureTable
from streamer.topology import TopologySpec, find_type
from streamer.transfer import INIT_FROM_META_KEY, WarmStart, table_path
from streamer.types import EntityId, ManualClock, Matrix, item_key, user_key

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0
PREFIX = "tx."
DIM = 8
_META = struct.Struct("<qd")


class TinyLearner(OnlineLearner):
    """Test-only learner with warm start: item vectors are seeded random and fixed,
    a user's vector moves halfway to each engaged item's vector.
    """

    name = "tiny"

    def __init__(self, dim: int = DIM, seed: int = 0) -> None:
        self._dim = dim
        self.seed = seed
        self._vec: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}
        self._ts: dict[str, float] = {}
        self._changed: set[str] = set()
        self._dirty: set[str] = set()
        self._learned = False

    @property
    def dim(self) -> int:
        return self._dim

    def _init_item(self, key: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        return rng.standard_normal(self._dim).astype(np.float32)

    def _touch(self, key: str, vec: np.ndarray, ts: float) -> None:
        self._vec[key] = vec.astype(np.float32)
        self._count[key] = self._count.get(key, 0) + 1
        self._ts[key] = ts
        self._changed.add(key)
        self._dirty.add(key)

    def learn_many(self, batch: EventBatch) -> None:
        for u, i, t in zip(batch.user_ids, batch.item_ids, batch.ts, strict=True):
            uk, ik = user_key(u), item_key(i)
            iv = self._vec.get(ik)
            if iv is None:
                iv = self._init_item(ik)
            self._touch(ik, iv, float(t))
            uv = self._vec.get(uk, np.zeros(self._dim, np.float32))
            self._touch(uk, 0.5 * (uv + iv), float(t))
            self._learned = True

    def vectors(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        out = np.zeros((len(ids), self._dim), np.float32)
        mask = np.zeros(len(ids), bool)
        for j, e in enumerate(ids):
            v = self._vec.get(e)
            if v is not None:
                out[j], mask[j] = v, True
        return out, mask

    def changed(self) -> set[EntityId]:
        out, self._changed = self._changed, set()
        return out

    def entity_ids(self) -> list[EntityId]:
        return sorted(self._vec)

    def state_changes(self) -> dict[bytes, bytes | None]:
        out: dict[bytes, bytes | None] = {
            k.encode(): _META.pack(self._count.get(k, 0), self._ts.get(k, np.nan))
            + self._vec[k].tobytes()
            for k in sorted(self._dirty)}
        out[b"#learned"] = b"1" if self._learned else b"0"
        self._dirty = set()
        return out

    def load_state_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        for k, v in records:
            if k == b"#learned":
                self._learned = v == b"1"
                continue
            key = k.decode()
            count, ts = _META.unpack_from(v)
            self._vec[key] = np.frombuffer(v[_META.size:], np.float32).copy()
            if count:
                self._count[key] = count
            if ts == ts:
                self._ts[key] = ts

    def state_dict(self) -> dict[str, np.ndarray]:
        keys = sorted(self._vec)
        return {"keys": np.array(keys), "vec": np.stack([self._vec[k] for k in keys])}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self._vec = {str(k): v.copy() for k, v in zip(state["keys"], state["vec"], strict=True)}

    def warm_start(self, ids: Sequence[EntityId], vectors: Matrix) -> int:
        if self._learned:
            msg = "warm_start on a learner that has learned events"
            raise StateError(msg)
        if vectors.shape != (len(ids), self._dim):
            msg = f"vectors {vectors.shape}, expected ({len(ids)}, {self._dim})"
            raise DimensionMismatch(msg)
        for e, v in zip(ids, vectors, strict=True):
            self._vec[e] = np.array(v, np.float32)
            self._changed.add(e)
            self._dirty.add(e)
        return len(ids)

    def update_counts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.int64]:
        return np.array([self._count.get(e, 0) for e in ids], np.int64)

    def last_event_ts(self, ids: Sequence[EntityId]) -> npt.NDArray[np.float64]:
        return np.array([self._ts.get(e, np.nan) for e in ids], np.float64)


SRC = TopologySpec(name="src-tiny", algorithm="tiny", params={"dim": DIM, "seed": 1})
DST = TopologySpec(name="dst-tiny", algorithm="tiny", params={"dim": DIM, "seed": 2})
WIDE = TopologySpec(name="wide-tiny", algorithm="tiny", params={"dim": 2 * DIM, "seed": 2})
COOC = TopologySpec(name="dst-cooc", algorithm="cooc",
                    params={"dim": DIM, "half_life_s": 3600.0, "seed": 3})


@pytest.fixture(autouse=True)
def _tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._BUILTIN, "tiny", TinyLearner)


def _stream(n: int, *, seed: int, first_offset: int = 0) -> list[RawMessage]:
    """``n`` valid events on one partition: 12 users, 30 items."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        doc = {"user_id": str(int(rng.integers(0, 12))),
               "item_id": str(int(rng.integers(0, 30))), "action": "click",
               "ts": NOW - 5_000 + first_offset + j}
        out.append(RawMessage(json.dumps(doc).encode(), "eng", 0, first_offset + j))
    return out


def _open(state: Path, spec: TopologySpec, published: list | None = None) -> Engine:
    eng = open_engine(spec, state_dir=state, dead_letters=MemoryDeadLetters(),
                      clock=ManualClock(NOW), with_index=True,
                      index_params={"initial_capacity": 64, "background": False},
                      path_prefix=PREFIX)
    if published is not None:
        eng.publish = lambda ids, recs: published.extend(zip(ids, recs, strict=True))
    return eng


def _source(state: Path, n: int = 300) -> Engine:
    """An open source engine (writer lock held) that has applied ``n`` events."""
    eng = _open(state, SRC)
    eng.process(_stream(n, seed=5))
    return eng


def _snapshot(state: Path, spec: TopologySpec) -> tuple[dict, dict, dict, bytes | None]:
    t = RocksFeatureTable(table_path(spec, state_dir=state, path_prefix=PREFIX),
                          dim=int(spec.params["dim"]), read_only=True)
    try:
        feats = {k: (r.vector.tobytes(), r.updated_at, r.update_count)
                 for k, r in t.iter_features()}
        return feats, dict(t.iter_state()), t.offsets(), t.get_meta(INIT_FROM_META_KEY)
    finally:
        t.close()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert isinstance(exc.value, StreamerError)
    assert text and "\n" not in text
    return text


# -- the warm start itself ---------------------------------------------------------------


def test_fresh_target_gets_the_source_vectors_while_the_source_runs(tmp_path):
    src = _source(tmp_path)  # stays open: the secondary read must not need its lock
    src_feats = {e: r for e, r in src.table.iter_features()}
    published: list = []
    dst = _open(tmp_path, DST, published)
    assert dst.is_fresh() and dst.init_from is None

    report = warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)

    assert report == WarmStart(source="src-tiny", source_version=1, source_algorithm="tiny",
                               offered=len(src_feats), ids=len(src_feats))
    assert len(src_feats) == 12 + 30
    got = {e: r for e, r in dst.table.iter_features()}
    assert got.keys() == src_feats.keys()
    for e, r in got.items():
        assert r.vector.tobytes() == src_feats[e].vector.tobytes(), e
        assert r.updated_at == src_feats[e].updated_at  # no event yet: the source's time
        assert r.update_count == 0
    assert dst.offsets() == {}  # consumption starts at the beginning of the topic
    assert not dst.is_fresh()
    assert sorted(e for e, _ in published) == sorted(src_feats)
    # the live index answers at once, in the transferred space
    some = next(e for e in got if e.startswith("u:"))
    hits = dst.index.knn(got[some].vector, 3, kind="user")
    assert hits[0][0] == some
    m = dst.metrics()
    assert m["init_from"] == {"source": "src-tiny", "source_version": 1,
                              "source_algorithm": "tiny", "offered": 42, "ids": 42}
    # the source worker was not disturbed: it keeps committing
    src.process(_stream(50, seed=6, first_offset=300))
    assert src.offsets() == {("eng", 0): 349}
    src.close()
    dst.close()
    assert json.loads(_snapshot(tmp_path, DST)[3]) == m["init_from"]


def test_learning_continues_from_the_transferred_vectors(tmp_path):
    _source(tmp_path).close()
    events = _stream(200, seed=9)
    warm = _open(tmp_path, DST)
    warm_start_from(warm, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    warm.process(events)
    cold = _open(tmp_path / "cold", DST)
    cold.process(events)
    users = sorted(e for e in cold.learner.entity_ids() if e.startswith("u:"))
    w = warm.table.get_many(users)
    c = cold.table.get_many(users)
    # same events, same counts; different vectors, since learning started from the source's
    assert [r.update_count for r in w] == [r.update_count for r in c]
    assert sum(r.update_count for r in w) == 200
    assert all(a.vector.tobytes() != b.vector.tobytes() for a, b in zip(w, c, strict=True))
    warm.close()
    cold.close()


def test_a_restart_does_not_reapply(tmp_path):
    src = _source(tmp_path)
    dst = _open(tmp_path, DST)
    first = warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    dst.close()
    before = _snapshot(tmp_path, DST)
    src.process(_stream(100, seed=7, first_offset=300))  # the source moves on
    src.close()

    dst = _open(tmp_path, DST)  # restart with the same --init-from
    assert dst.init_from == first
    assert warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX) is None
    dst.close()
    assert _snapshot(tmp_path, DST) == before

    dst = _open(tmp_path, DST)  # after consuming events, too
    dst.process(_stream(40, seed=8))
    assert warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX) is None
    assert dst.metrics()["init_from"]["offered"] == first.offered
    with pytest.raises(StateError) as exc:  # the engine-level call refuses outright
        dst.warm_start(SRC, ["u:x"], np.ones((1, DIM), np.float32), np.zeros(1))
    assert "already has state" in _one_line(exc)
    dst.close()


def test_a_crash_between_the_meta_record_and_the_commit_leaves_the_type_fresh(tmp_path):
    _source(tmp_path).close()
    dst = _open(tmp_path, DST)
    stale = WarmStart("src-tiny", 1, "tiny", 5, 5)
    dst.table.put_meta(INIT_FROM_META_KEY, stale.to_bytes())  # ...then "kill -9"
    dst.close()
    dst = _open(tmp_path, DST)
    assert dst.is_fresh() and dst.init_from is None
    report = warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    assert report is not None and report.offered == 42
    assert dst.init_from == report
    dst.close()


def test_sgns_to_sgns_transfer_on_rocksdb(tmp_path):
    small = {"dim": DIM, "capacity": 256, "noise_table_size": 256, "negatives": 2}
    src_spec = TopologySpec(name="src-sgns", algorithm="sgns", params={**small, "seed": 1})
    dst_spec = TopologySpec(name="dst-sgns", algorithm="sgns",
                            params={**small, "window": 2, "seed": 2})
    src = _open(tmp_path, src_spec)
    src.process(_stream(300, seed=5))
    src_feats = dict(src.table.iter_features())
    src.close()
    dst = _open(tmp_path, dst_spec)
    report = warm_start_from(dst, src_spec, state_dir=tmp_path, path_prefix=PREFIX)
    assert report is not None and report.offered == report.ids == len(src_feats) == 42
    got = dict(dst.table.iter_features())
    assert got.keys() == src_feats.keys()
    assert all(got[k].vector.tobytes() == r.vector.tobytes() for k, r in src_feats.items())
    dst.close()
    dst = _open(tmp_path, dst_spec)  # restart: the learner state came back with the vectors
    vecs, mask = dst.learner.vectors(sorted(src_feats))
    assert mask.all()
    assert np.array_equal(vecs, np.stack([src_feats[k].vector for k in sorted(src_feats)]))
    dst.process(_stream(100, seed=6))
    assert sum(r.update_count for k, r in dst.table.iter_features() if k.startswith("u:")) == 100
    dst.close()


# -- errors: each one line, nothing written -----------------------------------------------


def test_unknown_source_type():
    from topologies import TOPOLOGIES

    with pytest.raises(UnknownType) as exc:
        find_type(TOPOLOGIES, "nope")
    assert "'nope'" in _one_line(exc) and "wiki-cooc" in str(exc.value)


def test_missing_source_table(tmp_path):
    dst = _open(tmp_path, DST)
    with pytest.raises(ConfigError) as exc:
        warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    text = _one_line(exc)
    assert "no feature table" in text and f"{PREFIX}src-tiny.v1" in text
    assert dst.is_fresh()
    dst.close()


def test_empty_source_table(tmp_path):
    _open(tmp_path, SRC).close()  # created and claimed, no event yet
    dst = _open(tmp_path, DST)
    with pytest.raises(ConfigError) as exc:
        warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    assert "holds no vectors" in _one_line(exc)
    assert dst.is_fresh()
    dst.close()


def test_dimension_mismatch(tmp_path):
    _source(tmp_path).close()
    dst = _open(tmp_path, WIDE)
    with pytest.raises(DimensionMismatch) as exc:
        warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    text = _one_line(exc)
    assert f"dim {DIM}" in text and f"dim {2 * DIM}" in text
    assert dst.is_fresh()
    dst.close()


def test_algorithm_without_warm_start(tmp_path):
    _source(tmp_path).close()
    dst = _open(tmp_path, COOC)
    with pytest.raises(ConfigError) as exc:
        warm_start_from(dst, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    assert "does not support warm start" in _one_line(exc)
    dst.close()
    feats, state, offsets, meta = _snapshot(tmp_path, COOC)
    assert feats == {} and state == {} and offsets == {} and meta is None


def test_source_is_target(tmp_path):
    src = _source(tmp_path)
    with pytest.raises(ConfigError) as exc:
        warm_start_from(src, SRC, state_dir=tmp_path, path_prefix=PREFIX)
    assert "itself" in _one_line(exc)
    src.close()


def test_source_table_of_other_params_is_refused(tmp_path):
    _source(tmp_path).close()
    other = TopologySpec(name="src-tiny", algorithm="tiny", params={"dim": DIM, "seed": 99})
    dst = _open(tmp_path, DST)
    with pytest.raises(StateError) as exc:
        warm_start_from(dst, other, state_dir=tmp_path, path_prefix=PREFIX)
    assert "seed" in str(exc.value) or "params" in str(exc.value)
    assert dst.is_fresh()
    dst.close()


# -- several types side by side ----------------------------------------------------------


def test_two_types_share_no_app_id_group_path_topic_or_datadir(tmp_path):
    from streamer.runtime.app import create_app, worker_group
    from topologies import TOPOLOGIES

    settings = Settings(state_dir=tmp_path, topic_prefix=PREFIX, _env_file=None)
    cooc = find_type(TOPOLOGIES, "wiki-cooc")
    sgns = find_type(TOPOLOGIES, "wiki-sgns")
    assert worker_group(settings, cooc) == f"{PREFIX}streamer-wiki-cooc-v2"
    assert worker_group(settings, sgns) == f"{PREFIX}streamer-wiki-sgns-v1"
    assert cooc.output_topic == "embeddings.wiki-cooc.v2"
    assert sgns.output_topic == "embeddings.wiki-sgns.v1"
    paths = {table_path(s, state_dir=tmp_path, path_prefix=PREFIX) for s in (cooc, sgns)}
    assert len(paths) == 2
    apps = [create_app(settings, s) for s in (cooc, sgns)]
    assert apps[0].conf.id != apps[1].conf.id
    assert Path(apps[0].conf.datadir) != Path(apps[1].conf.datadir)
    assert cooc.source == sgns.source  # one input stream for both


def test_consumer_group_override_substitutes_type_and_version(tmp_path):
    from streamer.runtime.app import worker_group
    from topologies import TOPOLOGIES

    settings = Settings(state_dir=tmp_path, consumer_group="team-{type}-v{version}",
                        _env_file=None)
    groups = {worker_group(settings, find_type(TOPOLOGIES, n)) for n in ("wiki-cooc", "wiki-sgns")}
    assert groups == {"team-wiki-cooc-v2", "team-wiki-sgns-v1"}
    fixed = Settings(state_dir=tmp_path, consumer_group="one-group", _env_file=None)
    assert worker_group(fixed, find_type(TOPOLOGIES, "wiki-sgns")) == "one-group"


def test_a_taken_web_port_is_a_one_line_config_error(tmp_path):
    from streamer.runtime.app import check_web_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        settings = Settings(state_dir=tmp_path, worker={"web_port": port}, _env_file=None)
        with pytest.raises(ConfigError) as exc:
            check_web_port(settings)
        assert str(port) in _one_line(exc)
    check_web_port(settings)  # released: fine


# -- the CLI -----------------------------------------------------------------------------


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMER_STATE_DIR": str(state), "STREAMER_TOPIC_PREFIX": PREFIX,
           "STREAMER_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # never reached: errors come first
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "streamer", *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False)


@pytest.mark.parametrize(("args", "expect"), [
    (("--init-from", "nope"), "unknown embedding type 'nope'"),
    (("--init-from", "wiki-cooc"), "cannot warm-start from itself"),
    (("--init-from", "demo-cooc"), "no feature table"),
])
def test_cli_init_from_errors_exit_2_with_one_line(tmp_path, args, expect):
    done = _cli("worker", "--type", "wiki-cooc", *args, state=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], done.stderr


def test_cli_taken_web_port_exits_2_before_any_broker_call(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = _cli("worker", "--type", "wiki-cooc", "--web-port", str(port), state=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"web port {port}" in lines[0], done.stderr
