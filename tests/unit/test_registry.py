"""The registry's pure core: declared types, references, live versions, promote/retire."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamer.errors import BadRequest, ConfigError, RetiredType, UnknownType
from streamer.registry import (
    RegistryState,
    check_record,
    declared_types,
    entry,
    expand_refs,
    first_versions,
    latest_scores,
    parse_ref,
    promote_records,
    record_key,
    resolve,
    retire_record,
    version_record,
)
from streamer.topology import TopologySpec
from tests.plugins.install import EXAMPLE_SRC, install_distribution

V1 = TopologySpec(name="demo", algorithm="cooc", params={"dim": 8}, version=1)
V2 = TopologySpec(name="demo", algorithm="cooc", params={"dim": 8}, version=2,
                  storage_codec="int8", ttl_s=60.0)
V3 = TopologySpec(name="demo", algorithm="cooc", params={"dim": 16}, version=3)
OTHER = TopologySpec(name="other", algorithm="cooc", params={"dim": 4, "half_life_s": 30.0})
SPECS = (V1, V2, V3, OTHER)


def _state(*recs: dict) -> RegistryState:
    return RegistryState.from_records(recs)


@pytest.mark.parametrize(("ref", "want"), [
    ("demo", ("demo", None)), ("demo.v2", ("demo", 2)), ("wiki-cooc.v12", ("wiki-cooc", 12)),
])
def test_parse_ref(ref, want):
    assert parse_ref(ref) == want


@pytest.mark.parametrize("ref", ["", "Demo", "demo.v0", "demo.v", "demo.2", "demo.v1x", "-a",
                                 "a" * 64, 3, None, "demo/v1"])
def test_parse_ref_rejects_bad_references(ref):
    with pytest.raises(BadRequest, match="expected NAME or NAME.vN"):
        parse_ref(ref)


def test_without_decisions_the_lowest_version_is_live_and_newer_ones_are_candidates():
    s = RegistryState()
    assert s.live_version("demo", [1, 2, 3]) == 1
    assert [s.status("demo", v, [1, 2, 3]) for v in (1, 2, 3)] == ["live", "candidate",
                                                                     "candidate"]
    assert resolve(SPECS, s, "demo") is V1
    assert resolve(SPECS, s, "demo.v3") is V3


def test_promote_switches_the_live_version_and_retire_takes_one_out():
    s = RegistryState()
    for r in promote_records(s, V2, now=100.0):
        s.apply(r)
    assert resolve(SPECS, s, "demo") is V2
    assert s.status("demo", 1, [1, 2, 3]) == "candidate"
    assert s.created_at("demo", 2) == 100.0
    s.apply(retire_record(s, SPECS, V1, now=200.0))
    assert s.status("demo", 1, [1, 2, 3]) == "retired"
    with pytest.raises(RetiredType, match=r"demo.v1 is retired"):
        resolve(SPECS, s, "demo.v1")
    assert resolve(SPECS, s, "demo.v1", allow_retired=True) is V1
    # promoting a retired version brings it back, keeping its created_at
    s.apply(version_record(V1, "active", now=50.0))  # first run recorded earlier
    s.apply(retire_record(s, SPECS, V1, now=300.0))
    recs = promote_records(s, V1, now=400.0)
    assert [r["kind"] for r in recs] == ["version", "alias"]
    assert recs[0]["created_at"] == 50.0 and recs[1]["previous"] == 2
    for r in recs:
        s.apply(r)
    assert resolve(SPECS, s, "demo") is V1


def test_the_live_version_cannot_be_retired_nor_a_retired_one_twice():
    s = RegistryState()
    with pytest.raises(BadRequest, match=r"demo.v1 is the live version; promote another first, "
                                         r"e.g. `streamer types promote demo.v3`"):
        retire_record(s, SPECS, V1, now=1.0)
    with pytest.raises(BadRequest, match="the only servable version"):
        retire_record(s, SPECS, OTHER, now=1.0)
    s.apply(retire_record(s, SPECS, V2, now=1.0))
    with pytest.raises(BadRequest, match="already retired"):
        retire_record(s, SPECS, V2, now=2.0)


def test_a_promotion_to_a_version_no_longer_declared_falls_back_to_the_default():
    s = _state({"kind": "alias", "name": "demo", "live_version": 9, "at": 1.0})
    assert s.live_version("demo", [1, 2, 3]) == 1
    every = _state(*(version_record(v, "retired", now=1.0) for v in (V1, V2, V3)))
    with pytest.raises(RetiredType, match="every version of 'demo'"):
        resolve(SPECS, every, "demo")


def test_resolve_errors_name_what_is_declared():
    with pytest.raises(UnknownType, match="unknown embedding type 'nope'; declared types: "
                                          "demo, other"):
        resolve(SPECS, RegistryState(), "nope")
    with pytest.raises(UnknownType, match=r"unknown version 7 of type 'demo'; declared "
                                          r"versions: \[1, 2, 3\]"):
        resolve(SPECS, RegistryState(), "demo.v7")
    with pytest.raises(BadRequest, match="could not be read to tell the live one"):
        resolve(SPECS, None, "demo")
    assert resolve(SPECS, None, "other") is OTHER  # one version: no registry needed


def test_expand_refs_and_first_versions():
    assert expand_refs(SPECS, ["demo"]) == [V1, V2, V3]
    assert expand_refs(SPECS, ["demo.v2", "other", "demo.v2"]) == [V2, OTHER]
    with pytest.raises(UnknownType):
        expand_refs(SPECS, ["nope"])
    assert first_versions((V2, OTHER, V1, V3)) == (OTHER, V1)


@pytest.mark.parametrize(("rec", "match"), [
    ([], "expected a JSON object"),
    ({"kind": "alias", "name": "demo.v1", "live_version": 1}, "bad name"),
    ({"kind": "what", "name": "demo", "version": 1}, "kind 'what'"),
    ({"kind": "alias", "name": "demo", "live_version": 0}, "live_version 0"),
    ({"kind": "alias", "name": "demo", "live_version": True}, "live_version True"),
    ({"kind": "version", "name": "demo", "version": 1, "status": "gone"}, "status 'gone'"),
])
def test_bad_records_are_refused_and_skipped_when_folded(rec, match):
    with pytest.raises(BadRequest, match=match):
        check_record(rec)
    s = _state(rec, {"kind": "alias", "name": "demo", "live_version": 2})
    assert s.skipped == 1 and s.live_version("demo", [1, 2]) == 2


def test_record_keys_make_compaction_keep_one_alias_and_one_record_per_version():
    assert record_key({"kind": "alias", "name": "demo", "live_version": 2}) == "demo"
    assert record_key(version_record(V2, "retired", now=1.0)) == "demo.v2"


def test_entry_has_the_registry_fields():
    s = RegistryState()
    for r in promote_records(s, V2, now=5.0):
        s.apply(r)
    e = entry(V2, SPECS, s, freshness={"lag": 3}, scores={"stability.jaccard_at_10": 0.5})
    assert e["ref"] == "demo.v2" and e["status"] == "live" and e["dim"] == 8
    assert e["storage_codec"] == "int8" and e["ttl_s"] == 60.0 and e["created_at"] == 5.0
    assert e["versions"] == [{"version": 1, "status": "candidate"},
                             {"version": 2, "status": "live"},
                             {"version": 3, "status": "candidate"}]
    assert e["source_topics"] == ["engagements"] and e["consumer_group"] == "streamer-demo-v2"
    assert e["freshness"] == {"lag": 3}
    assert e["latest_scores"] == {"stability.jaccard_at_10": 0.5}
    assert entry(OTHER, SPECS, None)["half_life_s"] == {"half_life_s": 30.0}
    assert entry(OTHER, SPECS, None)["status"] == "unknown"


def test_latest_scores_keeps_the_last_finite_value_per_task_and_metric():
    recs = [{"kind": "result", "task": "stability", "metrics": {"jaccard": 0.2}},
            {"kind": "snapshot", "task": "x", "metrics": {"m": 1.0}},
            {"kind": "result", "task": "metadata", "dataset": "asia",
             "metrics": {"accuracy": 0.4, "n": float("nan"), "ok": True}},
            {"kind": "result", "task": "stability", "metrics": {"jaccard": 0.3}}]
    assert latest_scores(recs) == {"stability.jaccard": 0.3, "metadata:asia.accuracy": 0.4}


def test_declared_types_refuses_duplicates_and_non_specs():
    assert declared_types(lambda: []) == declared_types(lambda: [])
    builtin = declared_types(lambda: [])
    with pytest.raises(ConfigError, match="declared twice"):
        declared_types(lambda: [builtin[0]])
    with pytest.raises(ConfigError, match="gave a str; expected a TopologySpec"):
        declared_types(lambda: ["nope"])
    assert declared_types(lambda: [(V1, V2)])[-2:] == (V1, V2)


def test_a_plug_in_declares_types_through_the_entry_point(tmp_path):
    """A real installed distribution (dist-info + entry_points.txt) in a fresh interpreter."""
    site = tmp_path / "site"
    install_distribution(EXAMPLE_SRC, site)
    code = ("import json; from streamer.registry import declared_types; "
            "print(json.dumps([[s.name, s.version, s.storage_codec] for s in declared_types()]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: S603
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=False,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert ["demo-cooc", 1, "float32"] in got and ["demo-cooc", 2, "int8"] in got
    assert ["example-type", 1, "float32"] in got


def test_an_unreachable_registry_falls_back_to_the_decisions_last_seen(tmp_path, caplog):
    from streamer.registry import resolve_ref, save_cache

    cache = tmp_path / "registry-cache.json"
    dead = "127.0.0.1:1"
    # no cache: the default rule (lowest version), said in a warning
    assert resolve_ref(dead, "registry", "demo", specs=SPECS, cache=cache) is V1
    assert "no registry decision known" in caplog.text
    s = RegistryState()
    for r in promote_records(s, V2, now=1.0):
        s.apply(r)
    s.apply(retire_record(s, SPECS, V1, now=2.0))
    save_cache(s, cache)
    caplog.clear()
    assert resolve_ref(dead, "registry", "demo", specs=SPECS, cache=cache) is V2
    assert "the registry decisions last seen" in caplog.text
    # NAME.vN never needs the registry
    assert resolve_ref(dead, "registry", "demo.v3", specs=SPECS, cache=cache) is V3


def test_serve_refuses_a_taken_port_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "streamer", "serve", "--port", str(port)],  # noqa: S603
                             capture_output=True, text=True, check=False, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "STREAMER_STATE_DIR": str(tmp_path),
                                  "STREAMER_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert res.returncode == 2, res.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
