"""Data-set loaders: counts, id spaces, event ids, times, bad rows, labels, data folder."""

from __future__ import annotations

import calendar
import gc
import hashlib
import json
import math
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from streamer import datasets
from streamer.datasets import (
    DATA_DIR_ENV,
    EPOCH_BASE_S,
    data_dirs,
    dataset_names,
    dataset_path,
    load_events,
    load_labels,
    load_wire,
)
from streamer.errors import ConfigError
from streamer.events.decode import Decoder, Rejected
from streamer.events.schema import EngagementEvent
from streamer.types import ManualClock

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"

EXPECTED = {
    "wikipedia": 157_474,
    "collegemsg": 59_835,
    "enron": 125_235,
    "lastfm-tags": 186_479 - 5,
    "lastfm-plays": 92_834,
    "lastfm-asia": 2 * 27_806,
    "deezer": 2 * 92_752,
}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture
def no_gc():
    """Pause the cyclic GC: these tests allocate ~10^6 objects with no cycles, and GC
    passes over the cached data sets would otherwise double their time."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@cache
def events(name: str) -> tuple[EngagementEvent, ...]:
    return tuple(load_events(name))


def test_names():
    assert dataset_names() == tuple(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_actions_and_unique_event_ids(name, no_gc):
    evs = events(name)
    assert len(evs) == EXPECTED[name]
    ids = [e.event_id for e in evs]
    assert len(set(ids)) == len(ids)
    prefix = f"{name}:"
    assert all(i.startswith(prefix) for i in ids)
    action = {"wikipedia": "edit", "collegemsg": "message", "enron": "email", "lastfm-tags": "tag",
              "lastfm-plays": "listen", "lastfm-asia": "follow", "deezer": "follow"}[name]
    assert {e.action for e in evs} == {action}
    assert all(isinstance(e.ts, float) and math.isfinite(e.ts) for e in evs)


def _lines(path: Path, skip_header: bool) -> list[list[str]]:
    rows = [ln.replace(",", " ").split() for ln in path.read_text("latin-1").splitlines()]
    return rows[1:] if skip_header else rows


@pytest.mark.parametrize(("name", "file", "base"), [
    ("wikipedia", "temporal-streams/ml_wikipedia.txt", EPOCH_BASE_S),
    ("collegemsg", "temporal-streams/CollegeMsg.txt", 0.0),
    ("enron", "temporal-streams/ml_enron.txt", EPOCH_BASE_S),
])
def test_temporal_streams_follow_the_file(name, file, base):
    rows = _lines(SHARED / file, skip_header=False)
    evs = events(name)
    expected = [(a, b, base + int(t)) for a, b, t in rows]
    assert [(e.user_id, e.item_id, e.ts) for e in evs] == expected
    assert [e.event_id for e in evs[:2]] == [f"{name}:1", f"{name}:2"]
    assert all(a.ts <= b.ts for a, b in zip(evs, evs[1:], strict=False))  # time-sorted files


def test_wikipedia_id_spaces_and_epoch_base():
    evs = events("wikipedia")
    users = {int(e.user_id) for e in evs}
    items = {int(e.item_id) for e in evs}
    assert min(users) >= 1 and max(users) <= 8227
    assert min(items) == 8228 and max(items) == 9227 and len(items) == 1000
    assert evs[0].ts == calendar.timegm((2014, 1, 1, 0, 0, 0))
    assert evs[-1].ts == EPOCH_BASE_S + 2_678_373


def test_enron_keeps_exact_repeats():
    pairs = Counter((e.user_id, e.item_id, e.ts) for e in events("enron"))
    repeats = sum(c - 1 for c in pairs.values())
    assert repeats > 80_000  # README: 87k of 125k rows repeat an earlier row exactly


@pytest.mark.parametrize(("name", "file"), [
    ("lastfm-asia", "lastfm-asia/lastfm_asia_edges.csv"),
    ("deezer", "deezer-europe/deezer_europe_edges.csv"),
])
def test_follow_graphs_emit_both_directions(name, file):
    rows = _lines(SHARED / file, skip_header=True)
    evs = events(name)
    assert len(evs) == 2 * len(rows)
    for row, (a, b) in enumerate(rows[:500]):
        fwd, back = evs[2 * row], evs[2 * row + 1]
        line = row + 2  # physical line (header is line 1)
        assert (fwd.user_id, fwd.item_id, fwd.event_id) == (a, b, f"{name}:{line}:a")
        assert (back.user_id, back.item_id, back.event_id) == (b, a, f"{name}:{line}:b")
        assert fwd.ts == back.ts == EPOCH_BASE_S + row
    directed = {(e.user_id, e.item_id) for e in evs}
    assert all((b, a) in directed for a, b in directed)


def test_lastfm_plays_weight_is_log1p_of_play_count():
    rows = _lines(SHARED / "lastfm-hetrec2011/user_artists.dat", skip_header=True)
    evs = events("lastfm-plays")
    for i in (0, 1, 777, len(rows) - 1):
        u, a, plays = rows[i]
        assert (evs[i].user_id, evs[i].item_id) == (u, a)
        assert evs[i].weight == pytest.approx(math.log1p(int(plays)))
        assert evs[i].ts == EPOCH_BASE_S + i
        assert evs[i].event_id == f"lastfm-plays:{i + 2}"
    assert evs[0].weight == pytest.approx(math.log(13_884))  # "2 51 13883"


def test_lastfm_tags_time_order_noon_utc_and_bad_rows_rejected(no_gc):
    rows = _lines(SHARED / "lastfm-hetrec2011/user_taggedartists.dat", skip_header=True)
    bad_lines = {f"lastfm-tags:{i + 2}" for i, r in enumerate(rows) if int(r[5]) < 2005}
    assert len(bad_lines) == 5
    every = list(load_events("lastfm-tags", include_invalid=True))
    assert len(every) == len(rows)
    good = [e for e in every if e.event_id not in bad_lines]
    assert len(good) == EXPECTED["lastfm-tags"]
    assert all(a.ts <= b.ts for a, b in zip(every, every[1:], strict=False))
    first = next(e for e in good if e.event_id == "lastfm-tags:2")  # "2 52 13 1 4 2009"
    assert (first.user_id, first.item_id, first.ts) == ("2", "52", calendar.timegm(
        (2009, 4, 1, 12, 0, 0)))
    # the wire stream holds every row; the default decoder rejects exactly the bad ones
    dec = Decoder(clock=ManualClock(1.8e9))
    accepted, rejected = [], []
    for offset, (key, value, ts_ms) in enumerate(load_wire("lastfm-tags")):
        out = dec.decode(value, topic="engagements", partition=0, offset=offset)
        (rejected if isinstance(out, Rejected) else accepted).append((key, out, ts_ms))
    assert [out.reason for _, out, _ in rejected] == ["bad_ts"] * 5
    assert {json.loads(out.raw)["event_id"] for _, out, _ in rejected} == bad_lines
    bad_ts_ms = {e.event_id: max(0, round(e.ts * 1000)) for e in every if e.event_id in bad_lines}
    assert {json.loads(out.raw)["event_id"]: ts for _, out, ts in rejected} == bad_ts_ms
    assert sorted(bad_ts_ms.values())[:4] == [0] * 4    # 1956/1957 times clamp to 0 ms
    assert [out for _, out, _ in accepted] == good     # load_events == decoded load_wire
    assert all(k == e.user_id.encode() and ts == round(e.ts * 1000) for k, e, ts in accepted)


def test_load_wire_matches_load_events():
    evs = events("lastfm-asia")
    wire = list(load_wire("lastfm-asia"))
    dec = Decoder(clock=ManualClock(1.8e9))
    assert [dec.decode(v, topic="t", partition=0, offset=0) for _, v, _ in wire] == list(evs)
    assert [k for k, _, _ in wire] == [e.user_id.encode() for e in evs]
    assert [t for _, _, t in wire] == [round(e.ts * 1000) for e in evs]


def test_labels():
    asia = load_labels("lastfm-asia")
    assert len(asia) == 7_624 and set(asia.values()) == set(range(18))
    assert asia["0"] == 8 and asia["1"] == 17   # first rows of lastfm_asia_target.csv
    deezer = load_labels("deezer")
    assert len(deezer) == 28_281 and set(deezer.values()) == {0, 1}
    with pytest.raises(ConfigError, match="no user labels"):
        load_labels("wikipedia")


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown data set 'wiki'.*wikipedia"):
        list(load_events("wiki"))


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert data_dirs() == [ROOT.parent / "shared" / "data", ROOT / "data"]
    assert dataset_path("wikipedia") == SHARED / "temporal-streams" / "ml_wikipedia.txt"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert data_dirs() == [tmp_path]
    with pytest.raises(ConfigError) as info:
        list(load_events("wikipedia"))
    msg = str(info.value)
    assert str(tmp_path / "temporal-streams" / "ml_wikipedia.txt") in msg
    assert DATA_DIR_ENV in msg
    assert data_dirs(SHARED) == [SHARED]  # an explicit argument wins over the env var


def test_vendored_lastfm_asia_is_identical_and_used_as_fallback(monkeypatch, tmp_path):
    vendored = ROOT / "data" / "lastfm-asia"
    for f in ("lastfm_asia_edges.csv", "lastfm_asia_target.csv"):
        assert hashlib.sha256((vendored / f).read_bytes()).digest() == hashlib.sha256(
            (SHARED / "lastfm-asia" / f).read_bytes()).digest()
    assert any(p.name.startswith("LICENSE") for p in vendored.iterdir())
    assert (vendored / "PROVENANCE.md").is_file() and (vendored / "README.txt").is_file()
    # without shared/ beside the repo, lastfm-asia falls back to the vendored copy
    fake_repo = tmp_path / "repo"
    (fake_repo / "data").mkdir(parents=True)
    (fake_repo / "data" / "lastfm-asia").symlink_to(vendored)
    monkeypatch.setattr(datasets, "_REPO_ROOT", fake_repo)
    assert dataset_path("lastfm-asia") == fake_repo / "data" / "lastfm-asia" / \
        "lastfm_asia_edges.csv"
    assert len(list(load_events("lastfm-asia"))) == EXPECTED["lastfm-asia"]
    assert len(load_labels("lastfm-asia")) == 7_624
    with pytest.raises(ConfigError, match="STREAMER_DATA_DIR"):
        dataset_path("wikipedia")


def test_malformed_row_names_file_and_line(tmp_path):
    d = tmp_path / "temporal-streams"
    d.mkdir()
    (d / "ml_wikipedia.txt").write_text("1 8228 0\n2 8229 x\n")
    with pytest.raises(ConfigError, match=r"ml_wikipedia.txt:2: malformed row"):
        list(load_events("wikipedia", tmp_path))
