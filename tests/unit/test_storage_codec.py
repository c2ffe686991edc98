"""Vector storage codecs (float32 / float16 / int8) in the feature table and the engine.

Table level: what RocksDB stores per codec (record layout and size), the codec record
that fixes a table's codec, reading tables and records from before the codecs, and
corrupt codec bytes. Engine level: a real Engine over the first Wikipedia events with
``storage_codec="int8"`` against the same run in float32 (the learners are seeded and
deterministic, so the two tables differ only by the codec): table values, what is
published and indexed, snapshots, the ``stability`` task and hnswlib recall.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from rocksdict import Options, Rdict

from streamer.bench.tasks import evaluate
from streamer.datasets import load_wire
from streamer.engine import RawMessage, open_engine
from streamer.errors import ConfigError, StateError
from streamer.events.deadletter import MemoryDeadLetters
from streamer.index.hnsw import HnswIndex
from streamer.snapshot import SnapshotStore, capture
from streamer.store import codec, quant
from streamer.store.base import FeatureRecord
from streamer.store.memory import MemoryFeatureTable
from streamer.store.quant import CODECS
from streamer.store.rocks import COLUMN_FAMILIES, RocksFeatureTable
from streamer.types import ManualClock
from topologies.cooccurrence import WIKI_COOC

DIM = 128


def _raw(path: Path) -> Rdict:
    opts = Options(raw_mode=True)
    cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
    return Rdict(str(path), opts, column_families=cfs)


def _vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs *= np.logspace(-4, 4, n, dtype=np.float32)[:, None]  # many magnitudes
    return vecs


def _reconstruction(vecs: np.ndarray, name: str) -> np.ndarray:
    return quant.dequantize(*quant.quantize(vecs, name), name)


def _v1_value(vec: np.ndarray, updated_at: float, count: int, version: int) -> bytes:
    """A value exactly as the format-1 encoder (before the codecs) wrote it."""
    body = struct.pack("<BBHIdqi", 1, 1, 0, len(vec), updated_at, count, version)
    body += vec.astype("<f4").tobytes()
    return body + zlib.crc32(body).to_bytes(4, "little")


# ------------------------------------------------------------------------ table level


@pytest.mark.parametrize("name", CODECS)
def test_rocksdb_round_trip_is_the_quant_reconstruction(tmp_path: Path, name: str) -> None:
    vecs = _vectors(300)
    ids = [f"i:{j:04d}" for j in range(len(vecs))]
    want = _reconstruction(vecs, name)
    with RocksFeatureTable(tmp_path / "t", DIM, codec=name) as t:
        assert t.codec == name and f"codec={name!r}" in repr(t)
        t.commit({i: FeatureRecord(v, 5.0, 2, 1) for i, v in zip(ids, vecs, strict=True)},
                 {}, {("e", 0): 1})
    with RocksFeatureTable(tmp_path / "t", DIM, read_only=True) as r:  # no codec given
        assert r.codec == name
        got = np.stack([rec.vector for rec in r.get_many(ids)])
        assert got.tobytes() == want.tobytes()
        assert np.stack([rec.vector for _, rec in r.iter_features()]).tobytes() == want.tobytes()
    if name == "float32":
        assert want.tobytes() == vecs.tobytes()
    else:
        assert not np.array_equal(got, vecs)
    with _raw(tmp_path / "t") as db:  # what RocksDB holds: header | payload | CRC
        value = db.get_column_family("features")[ids[7].encode()]
        stored_codec = db.get_column_family("meta")[codec.system_key("codec")]
    assert codec.decode_offset(stored_codec) == quant.CODEC_IDS[name]
    assert len(value) == codec.record_size(DIM, name) == 28 + quant.vector_nbytes(DIM, name) + 4
    assert value[0] == codec.FORMAT_VERSION == 2 and value[1] == quant.CODEC_IDS[name]
    assert value[28:-4] == quant.encode_vector(vecs[7], name)


def test_record_sizes_on_disk_at_dim_128(tmp_path: Path) -> None:
    v = _vectors(1)[0]
    sizes = {}
    for name in CODECS:
        with RocksFeatureTable(tmp_path / name, DIM, codec=name) as t:
            t.commit({"i:a": FeatureRecord(v, 0.0, 0, 0)}, {}, {})
        with _raw(tmp_path / name) as db:
            sizes[name] = len(db.get_column_family("features")[b"i:a"])
    assert sizes == {"float32": 28 + 512 + 4, "float16": 28 + 256 + 4, "int8": 28 + 132 + 4}
    assert sizes["int8"] == 164


def test_max_abs_error_per_codec_is_within_its_bound() -> None:
    vecs = _vectors(2000, seed=3)
    maxabs = np.abs(vecs).max(axis=1, keepdims=True)
    err = {name: np.abs(_reconstruction(vecs, name) - vecs) for name in CODECS}
    assert not err["float32"].any()
    assert (err["float16"] <= np.maximum(np.abs(vecs) * 2.0**-11, 2.0**-25)).all()
    assert (err["int8"] <= maxabs / 254).all()
    # relative to each vector's largest component, int8's step is 1/127
    assert (err["int8"] / maxabs).max() > 0.9 / 254


def test_writer_with_another_codec_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t"
    with RocksFeatureTable(path, 4, codec="int8") as t:
        t.commit({"i:a": FeatureRecord([1, 2, 3, 4], 0.0, 0, 0)}, {}, {})
    for other in ("float32", "float16"):
        with pytest.raises(StateError) as info:
            RocksFeatureTable(path, 4, codec=other)
        text = str(info.value)
        assert "\n" not in text
        assert f"stores vectors as int8, but codec {other} was asked" in text
        assert "Bump the type's version" in text and str(path) in text
    with pytest.raises(StateError, match="stores vectors as int8"):  # an explicit reader too
        RocksFeatureTable(path, 4, codec="float32", read_only=True)
    with RocksFeatureTable(path, 4) as t:  # codec=None: whatever the table has
        assert t.codec == "int8"
        t.commit({"i:b": FeatureRecord([4, 3, 2, 1], 0.0, 0, 0)}, {}, {})
    with _raw(path) as db:
        assert db.get_column_family("features")[b"i:b"][1] == quant.CODEC_IDS["int8"]
    with pytest.raises(ConfigError, match="'int4'"):
        RocksFeatureTable(path, 4, codec="int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'int4'"):
        MemoryFeatureTable(4, "int4")  # type: ignore[arg-type]


def test_tables_and_records_from_before_the_codecs_still_open(tmp_path: Path) -> None:
    path = tmp_path / "t"
    old = {f"i:{j}": _vectors(1, 8, seed=j)[0] for j in range(5)}
    RocksFeatureTable(path, 8).close()
    with _raw(path) as db:  # turn it into a pre-codec table: v1 records, no codec record
        del db.get_column_family("meta")[codec.system_key("codec")]
        feats = db.get_column_family("features")
        for j, (i, v) in enumerate(old.items()):
            feats[i.encode()] = _v1_value(v, 10.0 + j, j, 1)
        del feats  # a column family handle keeps the DB and its lock alive
    with RocksFeatureTable(path, 8, read_only=True) as r:
        assert r.codec == "float32"
        got = r.get_many(list(old))
        assert [g.vector.tobytes() for g in got] == [v.tobytes() for v in old.values()]
        assert [g.updated_at for g in got] == [10.0, 11.0, 12.0, 13.0, 14.0]
    with pytest.raises(StateError, match="stores vectors as float32, but codec int8"):
        RocksFeatureTable(path, 8, codec="int8")
    with RocksFeatureTable(path, 8, codec="float32") as w:  # the writer records the codec
        assert w.codec == "float32"
        w.commit({"i:new": FeatureRecord(np.ones(8, np.float32), 1.0, 1, 1)}, {}, {})
        assert w.get("i:0").vector.tobytes() == old["i:0"].tobytes()  # v1 and v2 side by side
        assert w.count() == 6
    with _raw(path) as db:
        assert codec.decode_offset(db.get_column_family("meta")[codec.system_key("codec")]) == 1
        assert db.get_column_family("features")[b"i:new"][0] == 2
        assert db.get_column_family("features")[b"i:0"][0] == 1


@pytest.mark.parametrize(
    ("code", "fix_crc", "match"),
    [(9, True, "codec id 9, this code reads ids 1 .float32., 2 .float16., 3 .int8."),
     (0, True, "codec id 0"),
     (255, False, "codec id 255"),  # an unknown id is named before the checksum
     (2, False, "checksum mismatch"),  # a flip to another valid id: the CRC catches it
     (1, False, "40 bytes, expected 48 for dim=4 float32")],  # the size check first
)
def test_corrupt_codec_byte_is_a_state_error(
    tmp_path: Path, code: int, fix_crc: bool, match: str
) -> None:
    path = tmp_path / "t"
    with RocksFeatureTable(path, 4, codec="int8") as t:
        t.commit({"i:a": FeatureRecord([1, 2, 3, 4], 0.0, 0, 0), "i:ok": FeatureRecord(
            [1, 1, 1, 1], 0.0, 0, 0)}, {}, {})
    with _raw(path) as db:
        feats = db.get_column_family("features")
        value = bytearray(feats[b"i:a"])
        value[1] = code
        if fix_crc:  # a valid checksum: a value from newer code, not a flipped bit
            value[-4:] = zlib.crc32(bytes(value[:-4])).to_bytes(4, "little")
        feats[b"i:a"] = bytes(value)
        del feats  # a column family handle keeps the DB and its lock alive
    with RocksFeatureTable(path, 4, read_only=True) as r:
        assert r.get("i:ok") is not None
        with pytest.raises(StateError, match=match) as info:
            r.get("i:a")
        assert "i:a" in str(info.value) and "restore the table" in str(info.value)


def test_corrupt_codec_record_is_a_state_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "t"
    RocksFeatureTable(path, 4, codec="float16").close()
    with _raw(path) as db:
        db.get_column_family("meta")[codec.system_key("codec")] = codec.encode_offset(7)
    for kwargs in ({}, {"read_only": True}):
        with pytest.raises(StateError, match=f"{path} has a corrupt codec record.*id 7"):
            RocksFeatureTable(path, 4, **kwargs)  # type: ignore[arg-type]


def test_memory_twin_stores_the_same_lossy_values_as_rocksdb(tmp_path: Path) -> None:
    vecs = _vectors(50, dim=16, seed=9)
    feats = {f"u:{j}": FeatureRecord(v, 1.0, 1, 1) for j, v in enumerate(vecs)}
    for name in CODECS:
        mem = MemoryFeatureTable(16, name)
        mem.commit(feats, {}, {})
        with RocksFeatureTable(tmp_path / name, 16, codec=name) as rocks:
            rocks.commit(feats, {}, {})
            assert dict(mem.iter_features()) == dict(rocks.iter_features())
        assert mem.codec == name and f"codec={name!r}" in repr(mem)


# ----------------------------------------------------------------------- engine level

N_EVENTS = 5000
"""The first Wikipedia events: about 1,300 entities of the 128-dim wiki-cooc type."""


def _wiki_messages(n: int) -> list[RawMessage]:
    return [RawMessage(value=v, topic="engagements", partition=0, offset=i, key=k)
            for i, (k, v, _ts) in enumerate(itertools.islice(load_wire("wikipedia"), n))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Run wiki-cooc over the same events with each of float32 and int8 storage.

    Per codec: the final table contents, the records published (last per id), the live
    index's vectors, and two snapshots (half way and at the end).
    """
    msgs = _wiki_messages(N_EVENTS)
    out: dict[str, dict[str, object]] = {}
    for name in ("float32", "int8"):
        root = tmp_path_factory.mktemp(name)
        spec = dataclasses.replace(WIKI_COOC, storage_codec=name)
        eng = open_engine(spec, state_dir=root / "state", dead_letters=MemoryDeadLetters(),
                          clock=ManualClock(2e9), with_index=True)
        published: dict[str, FeatureRecord] = {}
        eng.publish = lambda ids, recs, p=published: p.update(zip(ids, recs, strict=True))
        store = SnapshotStore(root / "snaps", spec, clock=ManualClock(0.0))
        snaps = []
        for s in range(0, N_EVENTS, 500):
            eng.process(msgs[s:s + 500])
            if s + 500 in (N_EVENTS // 2, N_EVENTS):
                snaps.append(store.write(capture(eng.table, trigger="events")))
        table = dict(eng.table.iter_features())
        ids = sorted(table)
        index_vecs, found = eng.index.get(ids)  # type: ignore[union-attr]
        assert found.all()
        out[name] = {"table": table, "published": published, "ids": ids,
                     "index": index_vecs, "snaps": snaps, "codec": eng.table.codec,
                     "path": eng.table.path}  # type: ignore[attr-defined]
        eng.close()
    return out


def _matrix(records: dict[str, FeatureRecord], ids: list[str]) -> np.ndarray:
    return np.stack([records[i].vector for i in ids])


def test_int8_engine_table_is_the_quantised_float32_table(runs) -> None:
    f32, i8 = runs["float32"], runs["int8"]
    assert (f32["codec"], i8["codec"]) == ("float32", "int8")
    ids = f32["ids"]
    assert ids == i8["ids"] and len(ids) > 1000
    exact = _matrix(f32["table"], ids)
    got = _matrix(i8["table"], ids)
    # the seeded learners are identical: the int8 table is exactly Q(float32 table)
    assert got.tobytes() == _reconstruction(exact, "int8").tobytes()
    maxabs = np.abs(exact).max(axis=1, keepdims=True)
    err = np.abs(got - exact)
    assert (err <= maxabs / 254).all()
    assert 0 < err.max() < 2e-3  # unit-norm rows: max|v| <= 1, step <= 1/127
    meta = [(r.updated_at, r.update_count, r.model_version) for r in i8["table"].values()]
    assert meta == [(r.updated_at, r.update_count, r.model_version)
                    for r in f32["table"].values()]
    with _raw(i8["path"]) as db:  # the records on disk are 164-byte int8 values
        sizes = {len(v) for v in db.get_column_family("features").values()}
    assert sizes == {codec.record_size(128, "int8")} == {164}


def test_engine_refuses_its_table_under_another_codec(runs) -> None:
    path = runs["int8"]["path"]
    spec = dataclasses.replace(WIKI_COOC, storage_codec="float32")
    with pytest.raises(StateError, match="stores vectors as int8, but codec float32.*version"):
        open_engine(spec, state_dir=path.parent, dead_letters=MemoryDeadLetters(),
                    clock=ManualClock(2e9), with_index=False)


def test_published_and_indexed_vectors_are_the_table_values(runs) -> None:
    i8 = runs["int8"]
    table, published = i8["table"], i8["published"]
    assert set(published) == set(table)
    for entity in i8["ids"][::7]:
        rec = published[entity]
        assert rec == table[entity]  # bitwise vector and metadata
        # a replica decodes the topic's float32 value (EmbeddingPublisher) bit for bit
        back = codec.decode_record(codec.encode_record(rec), 128)
        assert back.vector.tobytes() == rec.vector.tobytes()
        # ... and so would an int8 topic value: re-encoding int8 values is idempotent
        back = codec.decode_record(codec.encode_record(rec, "int8"), 128)
        assert back.vector.tobytes() == rec.vector.tobytes()
    unit = _matrix(table, i8["ids"])
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(i8["index"], unit, rtol=0, atol=1e-6)
    exact = _matrix(runs["float32"]["table"], i8["ids"])
    exact = exact / np.linalg.norm(exact, axis=1, keepdims=True)
    assert np.abs(i8["index"] - exact).max() > 1e-5  # the index holds the int8 values


def test_snapshots_and_stability_work_on_an_int8_table(runs) -> None:
    f32, i8 = runs["float32"], runs["int8"]
    half, last = (s.load() for s in i8["snaps"])
    assert half.dim == last.dim == 128 and len(half) < len(last)
    assert list(last.ids) == i8["ids"]
    assert last.vectors.tobytes() == _matrix(i8["table"], i8["ids"]).tobytes()
    assert i8["snaps"][1].manifest["offsets"] == {"engagements[0]": N_EVENTS - 1}
    res = evaluate("stability", last, "", prev=half)
    ref = evaluate("stability", f32["snaps"][1].load(), "", prev=f32["snaps"][0].load())
    assert res.task == "stability" and res.n > 0
    assert res.metrics["n_common"] == ref.metrics["n_common"] == len(half)
    assert 0.0 < res.metrics["jaccard_at_10"] <= 1.0
    assert abs(res.metrics["jaccard_at_10"] - ref.metrics["jaccard_at_10"]) < 0.05
    assert abs(res.metrics["procrustes_distance"] - ref.metrics["procrustes_distance"]) < 0.01


def _exact_topk(queries: np.ndarray, base: np.ndarray, k: int,
                self_rows: np.ndarray | None) -> np.ndarray:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    sims = q @ b.T
    if self_rows is not None:
        sims[np.arange(len(q)), self_rows] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("queries", ["items", "users"])
def test_hnsw_over_int8_vectors_keeps_recall_at_10(runs, queries: str) -> None:
    """Items searched by item (self excluded) or by user, as the kinded index does."""
    f32, i8 = runs["float32"], runs["int8"]
    items = [i for i in i8["ids"] if i.startswith("i:")]
    users = [u for u in i8["ids"] if u.startswith("u:")]
    assert len(items) > 300 and len(users) > 600
    index = HnswIndex(128, seed=1)
    index.upsert(items, _matrix(i8["table"], items))
    qids = items if queries == "items" else users
    truth = _exact_topk(_matrix(f32["table"], qids), _matrix(f32["table"], items), 10,
                        np.arange(len(items)) if queries == "items" else None)
    hits = 0
    for j, qid in enumerate(qids):
        exclude = (qid,) if queries == "items" else ()
        got = index.knn(i8["table"][qid].vector, 10, exclude=exclude)
        want = {items[r] for r in truth[j]}
        hits += len(want & {i for i, _ in got})
    recall = hits / (10 * len(qids))
    assert recall >= 0.95, recall
    index.close()
