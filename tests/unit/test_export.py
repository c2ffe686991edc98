"""Offline export (Parquet / npy) of snapshots: exact round trips, atomic writes, bad input.

Real RocksDB tables, real snapshots, real pyarrow; the CLI cases run `python -m streamer`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamer.engine import COUNTERS_KEY
from streamer.errors import BadRequest, ConfigError, UnknownType
from streamer.export import MANIFEST_META_KEY, export_cmd, export_snapshot, read_export
from streamer.snapshot import Snapshot, SnapshotStore, capture
from streamer.store.base import FeatureRecord, claim_manifest
from streamer.store.rocks import RocksFeatureTable
from streamer.topology import TopologySpec
from streamer.types import ManualClock
from topologies.cooccurrence import DEMO_COOC

DIM = 5
SPEC = TopologySpec(name="export-test", algorithm="cooc", params={"dim": DIM, "seed": 1})
ODD_IDS = ["u:ünïcødé-用户", "i:a/b?c#d", "i:plain", "u:42", "i:😀 space&=%20", "u:"]
FORMATS = ("parquet", "npy")


def _records(rng: np.random.Generator, ids: list[str]) -> dict[str, FeatureRecord]:
    vecs = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    stamps = rng.uniform(1e9, 2e9, len(ids))
    counts = rng.integers(1, 1000, len(ids))
    if len(ids) >= 3:
        vecs[0, 0] = -0.0                      # sign of zero must survive
        vecs[1, 1] = np.float32(1.4e-45)       # smallest subnormal
        vecs[2, 2] = np.finfo(np.float32).max
        stamps[0] = 1_700_000_000.123456789    # full float64 precision
        counts[1] = 2**62
    return {e: FeatureRecord(vecs[j], float(stamps[j]), int(counts[j]), 1)
            for j, e in enumerate(ids)}


def _snapshot(tmp: Path, ids: list[str], *, seed: int = 0) -> tuple[Snapshot, dict]:
    table = RocksFeatureTable(tmp / "table", dim=DIM)
    try:
        recs = _records(np.random.default_rng(seed), ids)
        if recs:
            table.commit(recs, {}, {("engagements", 0): 41, ("engagements", 3): 7})
        snap = SnapshotStore(tmp / "snaps", SPEC, clock=ManualClock(99.5)).write(
            capture(table, events_applied=123, trigger="manual"))
    finally:
        table.close()
    return snap, recs


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_exact(tmp_path, fmt):
    snap, recs = _snapshot(tmp_path, ODD_IDS)
    out = export_snapshot(snap, tmp_path / "out" / f"e.{fmt}", fmt)
    got = read_export(out)
    want_ids = sorted(recs, key=lambda e: e.encode())  # RocksDB key order
    assert got.ids == want_ids == list(snap.load().ids)
    want_vecs = np.stack([recs[e].vector for e in want_ids])
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(ODD_IDS), DIM)
    assert np.array_equal(_bits(got.vectors), _bits(want_vecs))
    assert np.signbit(got.vectors[want_ids.index(ODD_IDS[0]), 0])
    assert got.updated_at.dtype == np.float64
    assert np.array_equal(_bits(got.updated_at),
                          _bits(np.array([recs[e].updated_at for e in want_ids])))
    assert got.update_count.dtype == np.int64
    assert got.update_count.tolist() == [recs[e].update_count for e in want_ids]
    assert got.manifest == snap.manifest
    assert got.manifest["offsets"] == {"engagements[0]": 41, "engagements[3]": 7}
    assert got.manifest["events_applied"] == 123
    # nothing but the export is left beside it (temporary files renamed away)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_parquet_schema_kinds_and_metadata(tmp_path):
    snap, _ = _snapshot(tmp_path, ODD_IDS)
    out = export_snapshot(snap, tmp_path / "e.parquet", "parquet")
    table = pq.read_table(out)
    assert table.column_names == ["id", "kind", "vector", "updated_at", "update_count"]
    assert table.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("updated_at").type == pa.float64()
    assert table.schema.field("update_count").type == pa.int64()
    kinds = dict(zip(table.column("id").to_pylist(), table.column("kind").to_pylist(),
                     strict=True))
    assert kinds == {e: "user" if e.startswith("u:") else "item" for e in ODD_IDS}
    meta = json.loads(table.schema.metadata[MANIFEST_META_KEY])
    assert meta == snap.manifest
    # a plain Parquet reader sees one row per entity
    assert pq.ParquetFile(out).metadata.num_rows == len(ODD_IDS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_snapshot_round_trips(tmp_path, fmt):
    snap, _ = _snapshot(tmp_path, [])
    assert snap.manifest["n_entities"] == 0
    got = read_export(export_snapshot(snap, tmp_path / f"e.{fmt}", fmt))
    assert got.ids == []
    assert got.vectors.shape == (0, DIM) and got.vectors.dtype == np.float32
    assert got.updated_at.shape == (0,) and got.update_count.shape == (0,)
    assert got.manifest == snap.manifest


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_out_is_refused_unless_forced(tmp_path, fmt):
    first, _ = _snapshot(tmp_path / "a", ODD_IDS, seed=1)
    second, recs = _snapshot(tmp_path / "b", ODD_IDS[:2], seed=2)
    out = export_snapshot(first, tmp_path / f"e.{fmt}", fmt)
    with pytest.raises(BadRequest, match="already exists; choose another path or pass --force"):
        export_snapshot(second, out, fmt)
    assert len(read_export(out).ids) == len(ODD_IDS)  # untouched
    export_snapshot(second, out, fmt, force=True)
    assert sorted(read_export(out).ids) == sorted(recs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", f"e.{fmt}"]


def test_force_replaces_a_file_with_a_folder(tmp_path):
    snap, _ = _snapshot(tmp_path, ODD_IDS)
    out = tmp_path / "e"
    out.write_text("not an export")
    export_snapshot(snap, out, "npy", force=True)
    assert out.is_dir() and read_export(out).ids == list(snap.load().ids)


def test_bad_inputs_are_streamer_errors(tmp_path):
    snap, _ = _snapshot(tmp_path, ODD_IDS)
    with pytest.raises(BadRequest, match=r"--format 'csv': expected one of parquet, npy"):
        export_snapshot(snap, tmp_path / "e.csv", "csv")  # type: ignore[arg-type]
    assert not (tmp_path / "e.csv").exists()
    with pytest.raises(BadRequest, match="does not exist"):
        read_export(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadRequest, match="not a readable Parquet file"):
        read_export(junk)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["i:x"]}), plain)
    with pytest.raises(BadRequest, match="is not a streamer export"):
        read_export(plain)
    half = tmp_path / "half"
    half.mkdir()
    (half / "ids.json").write_text("[]")
    with pytest.raises(BadRequest, match="missing vectors.npy"):
        read_export(half)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the export to"):
        export_snapshot(snap, blocker / "sub" / "e.parquet", "parquet")


# ------------------------------------------------------------------ CLI over a live table
@pytest.fixture
def live(tmp_path, monkeypatch):
    """A demo-cooc feature table under a fresh state dir, as a worker would leave it."""
    state = tmp_path / "state"
    monkeypatch.setenv("STREAMER_STATE_DIR", str(state))
    monkeypatch.delenv("STREAMER_TOPIC_PREFIX", raising=False)
    monkeypatch.delenv("STREAMER_BENCH__SNAPSHOT_DIR", raising=False)
    dim = DEMO_COOC.params["dim"]
    table = RocksFeatureTable(state / DEMO_COOC.state_dirname, dim=dim)
    claim_manifest(table, {"fingerprint": DEMO_COOC.fingerprint(), **DEMO_COOC.manifest()})
    rng = np.random.default_rng(3)
    recs = {e: FeatureRecord(rng.standard_normal(dim).astype(np.float32), 10.0 + j, j + 1, 1)
            for j, e in enumerate(ODD_IDS)}
    table.commit(recs, {COUNTERS_KEY: json.dumps({"accepted": 77}).encode()},
                 {("engagements", 0): 5})
    yield state, recs
    table.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_cmd_snapshots_the_live_table_then_reexports_it(live, tmp_path, fmt, capsys):
    state, recs = live  # the writer stays open: a secondary reader does not disturb it
    out = tmp_path / f"live.{fmt}"
    export_cmd("demo-cooc", out=out, fmt=fmt)
    assert f"exported snapshot 000001 of demo-cooc v1 ({len(recs)} entities" in \
        capsys.readouterr().out
    got = read_export(out)
    assert sorted(got.ids) == sorted(recs)
    for e, v in zip(got.ids, got.vectors, strict=True):
        assert np.array_equal(_bits(v), _bits(recs[e].vector))
    assert got.manifest["trigger"] == "export" and got.manifest["events_applied"] == 77
    assert got.manifest["offsets"] == {"engagements[0]": 5}
    stored = state / "snapshots" / "demo-cooc.v1" / "000001"
    assert stored.is_dir()  # the fresh snapshot is kept, so it can be re-exported
    again = tmp_path / f"again.{fmt}"
    export_cmd("demo-cooc", out=again, fmt=fmt, snapshot="1", as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["snapshot"] == "000001" and doc["n_entities"] == len(recs)
    back = read_export(again)
    assert back.ids == got.ids and back.manifest == got.manifest
    assert np.array_equal(_bits(back.vectors), _bits(got.vectors))


def test_export_cmd_errors(live, tmp_path):
    state, _ = live
    with pytest.raises(UnknownType):
        export_cmd("no-such-type", out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="no feature table for wiki-cooc"):
        export_cmd("wiki-cooc", out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="has no snapshots"):
        export_cmd("demo-cooc", out=tmp_path / "x.parquet", snapshot="7")
    export_cmd("demo-cooc", out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="has no snapshot '000007'"):
        export_cmd("demo-cooc", out=tmp_path / "y.parquet", snapshot="7")
    with pytest.raises(BadRequest, match="already exists"):
        export_cmd("demo-cooc", out=tmp_path / "x.parquet", snapshot="latest")
    with pytest.raises(BadRequest, match="--format 'csv'"):
        export_cmd("demo-cooc", out=tmp_path / "z", fmt="csv")
    # refusals happen before anything is written: still one stored snapshot
    assert [p.name for p in (state / "snapshots" / "demo-cooc.v1").iterdir()
            if not p.name.endswith(".jsonl")] == ["000001"]


_MAIN = ("from streamer.cli import app, main\n"
         "from streamer.export import export_cmd\n"
         "if 'export' not in {c.name for c in app.registered_commands}:\n"
         "    app.command('export')(export_cmd)\n"
         "main()\n")


@pytest.mark.parametrize(("args", "text"), [
    (["nope", "--out", "{tmp}/a.parquet"], "nope"),
    (["wiki-cooc", "--out", "{tmp}/a.parquet"], "no feature table for wiki-cooc"),
    (["demo-cooc", "--snapshot", "9", "--out", "{tmp}/a.parquet"], "has no snapshots"),
    (["demo-cooc", "--format", "csv", "--out", "{tmp}/a"], "expected one of parquet, npy"),
    (["demo-cooc", "--out", "{tmp}"], "already exists"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, text):
    env = {"STREAMER_STATE_DIR": str(tmp_path / "state"), "PATH": os.environ["PATH"],
           "COLUMNS": "200"}
    res = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _MAIN, "export", *(a.format(tmp=tmp_path) for a in args)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).parents[2])
    assert res.returncode == 2, res.stderr
    assert text in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

