"""RocksDB-specific behaviour of RocksFeatureTable (the shared contract is in tests/contract)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rocksdict import AccessType, Options, Rdict

from streamer.errors import BadRequest, StateError
from streamer.store import codec, quant
from streamer.store.base import FeatureRecord
from streamer.store.quant import CODECS
from streamer.store.rocks import COLUMN_FAMILIES, RocksFeatureTable, is_lock_error


def _rec(*values: float) -> FeatureRecord:
    return FeatureRecord(np.array(values, np.float32), 1.0, 1, 1)


def _raw(path: Path, extra_cfs: tuple[str, ...] = ()) -> Rdict:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    cfs = {name: Options(raw_mode=True) for name in (*COLUMN_FAMILIES, *extra_cfs)}
    return Rdict(str(path), opts, column_families=cfs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IO error: While lock file: /x/t/LOCK: Resource temporarily unavailable", True),
        (
            "IO error: lock hold by current process, acquire time 1795980493 acquiring "
            "thread 139623640533888: /x/t/LOCK: No locks available",
            True,
        ),
        ("IO error: No such file or directory: While opening a file: /x/t/CURRENT", False),
        ("Invalid argument: Column families not opened: extra", False),
        ("Corruption: LOCK file garbled", False),
        ("", False),
    ],
)
def test_is_lock_error_reads_rocksdb_status_text(text: str, expected: bool) -> None:
    assert is_lock_error(Exception(text)) is expected


def test_is_lock_error_matches_what_rocksdict_really_raises(tmp_path: Path) -> None:
    holder = _raw(tmp_path / "db")
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - rocksdict raises bare Exception
            Rdict(str(tmp_path / "db"), Options(raw_mode=True))
        assert is_lock_error(info.value), str(info.value)
    finally:
        holder.close()
    with pytest.raises(Exception) as info:  # noqa: PT011
        Rdict(str(tmp_path / "absent"), Options(raw_mode=True), access_type=AccessType.read_only())
    assert not is_lock_error(info.value), str(info.value)


def test_corrupt_stored_value_is_a_state_error_naming_key_and_path(tmp_path: Path) -> None:
    path = tmp_path / "t"
    with RocksFeatureTable(path, 2) as t:
        t.commit({"i:good": _rec(1, 2), "i:bad": _rec(3, 4)}, {}, {})
    with _raw(path) as db:
        good = db.get_column_family("features")[b"i:good"]
        db.get_column_family("features")[b"i:bad"] = good[:-1] + bytes([good[-1] ^ 0xFF])
        db.get_column_family("meta")[codec.offset_key("e", 0)] = b"\x01\x02"
    with RocksFeatureTable(path, 2) as t:
        assert t.get("i:good") == _rec(1, 2)
        with pytest.raises(StateError, match="i:bad.*checksum"):
            t.get_many(["i:good", "i:bad"])
        with pytest.raises(StateError, match="i:bad"):
            list(t.iter_features())
        with pytest.raises(StateError, match="corrupt offset"):
            t.offsets()


def test_foreign_rocksdb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    with _raw(path) as db:
        db.get_column_family("features")[b"k"] = b"v"
    with pytest.raises(StateError, match="no format record"):
        RocksFeatureTable(path, 2)
    with pytest.raises(StateError, match="no format record|not initialised"):
        RocksFeatureTable(path, 2, read_only=True)


def test_unknown_column_family_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "t"
    RocksFeatureTable(path, 2).close()
    _raw(path, extra_cfs=("extra",)).close()
    with pytest.raises(StateError, match=f"cannot open feature table {path}"):
        RocksFeatureTable(path, 2)


def test_other_table_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t"
    RocksFeatureTable(path, 2).close()
    with _raw(path) as db:
        db.get_column_family("meta")[codec.system_key("format")] = codec.encode_offset(99)
    with pytest.raises(StateError, match="format version 99"):
        RocksFeatureTable(path, 2)


def test_writer_creates_parents_and_readers_see_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "item2vec.v3"
    with RocksFeatureTable(path, 8) as w:
        assert "writer" in repr(w) and w.path == path
        with RocksFeatureTable(path, 8, secondary_path=tmp_path / "sec") as r:
            assert r.read_only and "secondary" in repr(r)
            assert r.count() == 0 and r.offsets() == {}
        with RocksFeatureTable(path, 8, read_only=True) as r:
            assert r.read_only and r.get("i:x") is None


def _stored(rec: FeatureRecord, name: str) -> FeatureRecord:
    vec = quant.dequantize(*quant.quantize(rec.vector[None, :], name), name)[0]
    return FeatureRecord(vec, rec.updated_at, rec.update_count, rec.model_version)


@pytest.mark.parametrize("name", CODECS)
def test_secondary_follows_writer_across_memtable_flushes(tmp_path: Path, name: str) -> None:
    path = tmp_path / "t"
    rng = np.random.default_rng(3)
    with (
        RocksFeatureTable(path, 4, codec=name) as w,
        RocksFeatureTable(path, 4, secondary_path=tmp_path / "sec") as r,
    ):
        assert r.codec == name
        expected: dict[str, FeatureRecord] = {}
        for step in range(6):
            batch = {
                f"i:{int(k)}": FeatureRecord(
                    rng.standard_normal(4).astype(np.float32), step, step, 1
                )
                for k in rng.integers(0, 300, size=100)
            }
            w.commit(batch, {b"step": bytes([step])}, {("e", 0): step})
            expected.update({k: _stored(v, name) for k, v in batch.items()})
            if step % 2:
                w._db.flush()  # noqa: SLF001 - force SST files + MANIFEST changes
            r.refresh()
            assert r.offsets() == {("e", 0): step}
            got = dict(r.iter_features())
            assert got == expected
            assert r.count() == len(expected)


def test_sync_writes_commit_and_reopen(tmp_path: Path) -> None:
    with RocksFeatureTable(tmp_path / "t", 2, sync_writes=True) as t:
        t.commit({"i:a": _rec(1, 2)}, {b"s": b"x"}, {("e", 3): 4})
    with RocksFeatureTable(tmp_path / "t", 2) as t:
        assert t.get("i:a") == _rec(1, 2) and t.offsets() == {("e", 3): 4}


@pytest.mark.parametrize("name", CODECS)
def test_large_batch_commit_round_trips(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((5000, 32)).astype(np.float32)
    want = quant.dequantize(*quant.quantize(vecs, name), name)
    ids = [f"i:{i:05d}" for i in range(5000)]
    with RocksFeatureTable(tmp_path / "t", 32, codec=name) as t:
        t.commit(
            {i: FeatureRecord(v, 1.0, 1, 1) for i, v in zip(ids, vecs, strict=True)},
            {b"s%05d" % i: bytes(1024) for i in range(5000)},
            {("e", 0): 4999},
        )
        got = t.get_many(ids[::-1])
        assert np.stack([g.vector for g in got]).tobytes() == want[::-1].tobytes()
        assert t.count() == 5000


def test_new_table_records_its_codec_and_a_writer_without_one_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "t"
    with RocksFeatureTable(path, 2) as t:  # codec=None on a new table: float32
        assert t.codec == "float32" and "codec='float32'" in repr(t)
    with RocksFeatureTable(tmp_path / "q", 2, codec="float16") as t:
        assert t.codec == "float16" and "codec='float16', mode=writer" in repr(t)
    with _raw(tmp_path / "q") as db:
        raw = db.get_column_family("meta")[codec.system_key("codec")]
    assert quant.codec_from_id(codec.decode_offset(raw)) == "float16"
    with RocksFeatureTable(tmp_path / "q", 2) as t, RocksFeatureTable(
        tmp_path / "q", 2, read_only=True
    ) as r:
        assert (t.codec, r.codec) == ("float16", "float16")
        with pytest.raises(BadRequest, match="i:a.*overflows float16"):
            t.commit({"i:a": _rec(1, 70000)}, {}, {})
        assert t.count() == 0


def test_a_state_dir_in_the_way_is_a_one_line_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(StateError) as info:
        RocksFeatureTable(blocker / "wiki-cooc.v2", dim=4)
    msg = str(info.value)
    assert "\n" not in msg and "cannot create the feature table folder" in msg
    assert "Not a directory" in msg and "STREAMER_STATE_DIR" in msg
