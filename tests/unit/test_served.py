"""ServedType: TTL in event time, fresh-only neighbours, reads as of a snapshot (LRU, mmap)."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from served_server import DIM, IDS, SPEC, T0, TTL, expired_ids, make_served, records
from served_server import write_snapshot as _write_snapshot

from streamer.errors import BadRequest, StateError
from streamer.index.exact import ExactIndex
from streamer.index.kinded import KindedIndex
from streamer.serve.served import ServedType, check_ids, is_expired
from streamer.serve.snapshots import SnapshotCache, UnknownSnapshot, parse_snapshot_id
from streamer.snapshot import SnapshotStore
from streamer.store.base import FeatureRecord
from streamer.topology import TopologySpec


def _rec(vec, ts: float, count: int = 1) -> FeatureRecord:
    return FeatureRecord(vector=np.asarray(vec, np.float32), updated_at=ts,
                         update_count=count, model_version=1)


# ------------------------------------------------------------------- TTL

@pytest.mark.parametrize(("updated", "wm", "ttl", "want"), [
    (100.0, 200.0, 50.0, True),
    (100.0, 150.0, 50.0, False),       # exactly ttl past: not expired
    (100.0, 150.001, 50.0, True),
    (100.0, 90.0, 5.0, False),         # updated after the watermark (clock skew)
    (100.0, 1e12, None, False),        # no TTL
    (100.0, None, 5.0, False),         # no watermark yet
    (100.0, float("nan"), 5.0, False),
])
def test_is_expired(updated, wm, ttl, want):
    assert is_expired(updated, wm, ttl) is want


def test_read_reports_fresh_expired_missing_against_the_watermark():
    st = make_served(ttl_s=TTL)
    ans = st.read([*IDS, "u:nobody"])
    assert ans["watermark"] == T0 + len(IDS) - 1 and ans["ttl_s"] == TTL
    status = {i["id"]: i["status"] for i in ans["items"]}
    old = expired_ids()
    assert 0 < len(old) < len(IDS)
    assert {e for e, s in status.items() if s == "expired"} == old
    assert {e for e, s in status.items() if s == "fresh"} == set(IDS) - old
    assert status["u:nobody"] == "missing"
    for item in ans["items"]:
        assert item["expired"] == (item["status"] == "expired")
        assert item["found"] == (item["status"] != "missing")
        assert (item["vector"] is None) == (item["status"] != "fresh")
    with_old = st.read(sorted(old), include_expired=True)["items"]
    assert all(i["status"] == "expired" and i["vector"] is not None for i in with_old)


def test_expiry_follows_event_time_not_wall_time():
    st = ServedType(name="t", version=1, dim=2, index=KindedIndex(2, factory=ExactIndex),
                    ttl_s=60.0)
    st.apply(["i:a", "i:b"], [_rec([1, 0], 1000.0), _rec([0, 1], 1030.0)])
    assert [i["status"] for i in st.read(["i:a", "i:b"])["items"]] == ["fresh", "fresh"]
    st.apply(["i:c"], [_rec([1, 1], 1061.0)])  # watermark 1061: i:a is 61 s old
    assert [i["status"] for i in st.read(["i:a", "i:b", "i:c"])["items"]] == [
        "expired", "fresh", "fresh"]
    st.apply(["i:d"], [_rec([1, 2], 10.0)])  # a late (old) vector never lowers the watermark
    assert st.watermark == 1061.0
    assert st.read(["i:d"])["items"][0]["status"] == "expired"
    st.apply(["i:a"], [_rec([2, 0], 1070.0, count=2)])  # an update refreshes it
    assert st.read(["i:a"])["items"][0]["status"] == "fresh"
    st.apply(["i:b"], [None])  # a delete
    assert st.read(["i:b"])["items"][0]["status"] == "missing"
    assert st.describe()["ttl_s"] == 60.0 and st.describe()["last_event_ts"] == 1070.0


def test_without_ttl_nothing_expires():
    st = make_served(ttl_s=None)
    assert all(i["status"] == "fresh" for i in st.read(IDS)["items"])
    assert not any(n.expired for n in st.neighbours_by_id("i:28", 40))


# ------------------------------------------------------------------- neighbours

def _clustered(n_old: int, n_new: int, seed: int = 3) -> tuple[ServedType, np.ndarray, list]:
    """Items near the query direction are old (expired); fresher ones lie farther away."""
    rng = np.random.default_rng(seed)
    q = np.zeros(DIM, np.float32)
    q[0] = 1.0
    st = ServedType(name="t", version=1, dim=DIM, index=KindedIndex(DIM, factory=ExactIndex),
                    ttl_s=100.0)
    ids, recs = [], []
    for j in range(n_old):  # very close to q, updated long ago
        v = q + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        ids.append(f"i:old{j}")
        recs.append(_rec(v, 0.0))
    for j in range(n_new):  # farther, fresh
        v = q + 0.8 * rng.standard_normal(DIM).astype(np.float32)
        ids.append(f"i:new{j}")
        recs.append(_rec(v, 1000.0))
    st.apply(ids, recs)
    return st, q, list(zip(ids, recs, strict=True))


def _oracle(q: np.ndarray, pairs, keep) -> list[str]:
    kept = [(e, r.vector) for e, r in pairs if keep(e)]
    m = np.stack([v for _, v in kept])
    cos = m @ q / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return [kept[j][0] for j in np.argsort(-cos)]


def test_fresh_only_searches_deeper_to_return_k_fresh_neighbours():
    st, q, pairs = _clustered(n_old=300, n_new=50)
    plain = st.neighbours_by_vector(q, 10)
    assert all(n.expired and n.id.startswith("i:old") for n in plain)
    fresh = st.neighbours_by_vector(q, 10, fresh_only=True)
    assert [n.id for n in fresh] == _oracle(q, pairs, lambda e: "new" in e)[:10]
    assert not any(n.expired for n in fresh)
    # by id: an expired item asks for fresh neighbours
    by_id = st.neighbours_by_id("i:old0", 7, "item", fresh_only=True)
    v = dict(pairs)["i:old0"].vector
    assert [n.id for n in by_id] == _oracle(v, pairs, lambda e: "new" in e)[:7]


def test_fresh_only_returns_what_there_is_when_fewer_than_k_are_fresh():
    st, q, _ = _clustered(n_old=40, n_new=3)
    got = st.neighbours_by_vector(q, 10, fresh_only=True)
    assert sorted(n.id for n in got) == ["i:new0", "i:new1", "i:new2"]
    assert len(st.neighbours_by_vector(q, 10)) == 10


def test_neighbour_scores_and_flags():
    st = make_served(ttl_s=TTL)
    res = st.neighbours_by_id("u:3", 49)
    old = expired_ids()
    assert len(res) == 49 and "u:3" not in [n.id for n in res]
    assert all(n.expired == (n.id in old) for n in res)
    assert [n.score for n in res] == sorted((n.score for n in res), reverse=True)


# ------------------------------------------------------------------- validation

@pytest.mark.parametrize(("ids", "fragment"), [
    ([], "no ids given"),
    (["u:1"] * 1001, "too many ids: 1001; expected at most 1000"),
    ("u:1", "ids must be a list"),
    (["u:1", 3], "bad id 3 (int)"),
    (["u:"], "bad id 'u:' (2 characters)"),
    (["x:abc"], "prefix"),
])
def test_check_ids(ids, fragment):
    with pytest.raises(BadRequest, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_ids(ids)


@pytest.mark.parametrize("value", [True, False, 0, -3, 1.0, "", " 1", "1.5", "abc", "+1",
                                   "١", None, "9" * 19])
def test_parse_snapshot_id_refuses(value):
    with pytest.raises(BadRequest, match="is not a snapshot id; expected a positive integer"):
        parse_snapshot_id(value)


@pytest.mark.parametrize(("value", "want"), [(1, "000001"), ("1", "000001"),
                                             ("000042", "000042"), (1234567, "1234567")])
def test_parse_snapshot_id(value, want):
    assert parse_snapshot_id(value) == want


# ------------------------------------------------------------------- snapshots

def test_snapshot_read_uses_its_vectors_and_its_own_watermark(tmp_path):
    # the snapshot is older: its watermark is T0 + 20, so fewer ids are expired in it
    early = IDS[:21]
    early_recs = records(seed=7)[:21]
    sid = _write_snapshot(tmp_path, early, early_recs)
    st = make_served(ttl_s=TTL, snapshot_root=tmp_path)
    ans = st.read(["u:15", "u:5", "i:28"], snapshot=sid)
    assert ans["snapshot"]["id"] == sid and ans["snapshot"]["event_time"] == T0 + 20
    assert ans["watermark"] == T0 + 20
    a, b, c = ans["items"]
    assert a["status"] == "fresh"  # 5 s old in the snapshot, expired live
    assert np.array_equal(a["vector"], early_recs[15].vector)
    assert st.read(["u:15"])["items"][0]["status"] == "expired"
    assert b["status"] == "expired" and b["vector"] is None  # 15 s old in the snapshot
    assert c["status"] == "missing"  # not in the snapshot
    assert a["update_count"] == 16 and a["updated_at"] == T0 + 15


def test_snapshot_cache_is_an_lru_of_memory_maps(tmp_path):
    store = SnapshotStore(tmp_path, SPEC)
    sids = [_write_snapshot(tmp_path, IDS, records(seed=s)) for s in range(6)]
    cache = SnapshotCache(store, DIM, capacity=3)
    for sid in sids[:4]:
        snap = cache.open(sid)
        assert isinstance(snap.vectors, np.memmap) and snap.id == sid
    assert cache.cached() == sids[1:4]
    assert cache.open(int(sids[1])) is cache.open(sids[1])  # a hit, refreshed
    cache.open(sids[4])
    assert cache.cached() == [sids[3], sids[1], sids[4]]
    assert [s["id"] for s in cache.list()] == sids


def test_a_pruned_snapshot_is_a_404_even_when_cached(tmp_path):
    sids = [_write_snapshot(tmp_path, IDS, records(seed=s)) for s in range(3)]
    st = make_served(snapshot_root=tmp_path)
    assert st.read(["u:1"], snapshot=sids[0])["items"][0]["found"]
    SnapshotStore(tmp_path, SPEC).prune(retain=2)
    with pytest.raises(UnknownSnapshot, match=f"no snapshot {sids[0]}; available: "
                                              f"{sids[1]}, {sids[2]}"):
        st.read(["u:1"], snapshot=sids[0])
    shutil.rmtree(tmp_path / "t.v1")
    with pytest.raises(UnknownSnapshot, match="has no snapshots"):
        st.read(["u:1"], snapshot=sids[2])
    assert st.snapshots() == []


def test_a_snapshot_of_another_dimension_is_refused(tmp_path):
    spec = TopologySpec(name="t", algorithm="cooc", params={"dim": 3, "seed": 1})
    from streamer.snapshot import Capture

    SnapshotStore(tmp_path, spec).write(Capture(
        offsets={}, records=iter([("i:a", _rec([1, 2, 3], 1.0))])))
    st = make_served(snapshot_root=tmp_path)
    with pytest.raises(StateError, match="dim 3, but the served type has dim 8"):
        st.read(["i:a"], snapshot=1)


def test_concurrent_snapshot_reads_agree(tmp_path):
    sids = [_write_snapshot(tmp_path, IDS, records(seed=s)) for s in range(6)]
    st = make_served(snapshot_root=tmp_path)
    st._snapshots.capacity = 2  # force evictions while threads read
    want = {sid: records(seed=s) for s, sid in enumerate(sids)}

    def one(j: int) -> bool:
        sid = sids[j % len(sids)]
        items = st.read(IDS, snapshot=sid)["items"]
        return all(np.array_equal(i["vector"], r.vector)
                   for i, r in zip(items, want[sid], strict=True))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(120)))
    assert len(st._snapshots.cached()) <= 2


def test_reads_see_records_and_watermark_together_while_a_writer_applies():
    st = ServedType(name="t", version=1, dim=4, index=KindedIndex(4, factory=ExactIndex),
                    ttl_s=5.0)
    rng = np.random.default_rng(1)
    ids = [f"i:{j}" for j in range(50)]
    st.apply(ids, [_rec(rng.standard_normal(4), 0.0) for _ in ids])
    stop = threading.Event()

    def writer() -> None:
        t = 0.0
        while not stop.is_set() and t < 5000:
            t += 1.0
            batch = [ids[int(j)] for j in rng.integers(0, 50, 5)]
            st.apply(batch, [_rec(rng.standard_normal(4) + 0.1, t) for _ in batch])

    w = threading.Thread(target=writer)
    w.start()
    bad = []
    try:
        for _ in range(300):
            ans = st.read(ids)
            wm = ans["watermark"]
            for item in ans["items"]:
                if item["updated_at"] > wm:
                    bad.append(("ahead of the watermark", item["id"]))
                if (item["status"] == "expired") != (wm - item["updated_at"] > 5.0):
                    bad.append(("status", item["id"]))
            res = st.neighbours_by_id(ids[0], 5)
            if len(res) != 5:
                bad.append(("neighbours", len(res)))
    finally:
        stop.set()
        w.join(30)
    assert bad == []
    assert st.watermark is not None and st.watermark > 0
