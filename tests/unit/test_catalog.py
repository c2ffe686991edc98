"""The served catalog: NAME -> live version through the registry, promotion, retirement.

In-process API (FastAPI TestClient) over real ServedTypes with exact indexes; the
registry state is swapped by a RegistryPoller fed from a list (no Kafka here; the
Kafka path is tests/integration/test_registry.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamer.errors import RegistryUnavailable, RetiredType
from streamer.index.exact import ExactIndex
from streamer.index.kinded import KindedIndex
from streamer.registry import RegistryState, promote_records, retire_record
from streamer.serve.api import create_api
from streamer.serve.catalog import Catalog, RegistryPoller
from streamer.serve.served import ServedType
from streamer.store.base import FeatureRecord
from streamer.topology import TopologySpec

DIM = 4
V1 = TopologySpec(name="demo", algorithm="cooc", params={"dim": DIM}, version=1)
V2 = TopologySpec(name="demo", algorithm="cooc", params={"dim": DIM}, version=2,
                  storage_codec="int8")
SPECS = (V1, V2)


def _served(spec: TopologySpec, seed: int) -> ServedType:
    st = ServedType(name=spec.name, version=spec.version, dim=DIM,
                    index=KindedIndex(DIM, factory=ExactIndex))
    rng = np.random.default_rng(seed)
    ids = [f"i:{k}" for k in range(20)] + ["u:1"]
    st.apply(ids, [FeatureRecord(vector=rng.standard_normal(DIM).astype(np.float32),
                                 updated_at=100.0 + k, update_count=1, model_version=1)
                   for k in range(len(ids))])
    st.caught_up = True
    return st


@pytest.fixture
def world():
    state = {"s": RegistryState()}

    def read() -> RegistryState:
        if state["s"] is None:
            msg = "broker down"
            raise RegistryUnavailable(msg)
        return state["s"]

    cat = Catalog(SPECS, {"demo.v1": _served(V1, 1), "demo.v2": _served(V2, 2)})
    poller = RegistryPoller(cat, read, lambda spec: {"lag": spec.version * 10})
    poller.poll_once()
    with TestClient(create_api(cat)) as c:
        yield c, state, poller, cat


def _version(c: TestClient, ref: str) -> int:
    r = c.get(f"/v1/types/{ref}")
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_name_answers_with_the_live_version_until_a_promotion_switches_it(world):
    c, state, poller, cat = world
    assert _version(c, "demo") == 1 and _version(c, "demo.v2") == 2
    before = c.get("/v1/types/demo/neighbours/u:1?k=3").json()["neighbours"]
    assert before == c.get("/v1/types/demo.v1/neighbours/u:1?k=3").json()["neighbours"]
    s = RegistryState()
    for r in promote_records(s, V2, now=1.0):
        s.apply(r)
    state["s"] = s
    assert _version(c, "demo") == 1  # not before the poller has read it
    poller.poll_once()
    assert _version(c, "demo") == 2
    after = c.get("/v1/types/demo/neighbours/u:1?k=3").json()["neighbours"]
    assert after == c.get("/v1/types/demo.v2/neighbours/u:1?k=3").json()["neighbours"]
    assert after != before
    assert dict(cat) == {"demo": cat.resolve("demo.v2")}  # the mapping holds live versions


def test_types_lists_every_version_with_status_lag_and_registry_fields(world):
    c, state, poller, _ = world
    s = RegistryState()
    for r in promote_records(s, V2, now=5.0):
        s.apply(r)
    s.apply(retire_record(s, SPECS, V1, now=6.0))
    state["s"] = s
    poller.poll_once()
    body = c.get("/v1/types").json()
    got = [(e["ref"], e["status"]) for e in body["types"]]
    assert got == [("demo.v2", "live"), ("demo.v1", "retired")]  # live first
    v2 = body["types"][0]
    assert v2["storage_codec"] == "int8" and v2["created_at"] == 5.0
    assert v2["freshness"]["lag"] == 20 and v2["freshness"]["last_event_ts"] == 120.0
    assert v2["entities"] == 21 and v2["caught_up"] is True
    r = c.get("/v1/types/demo.v1/embeddings", params={"ids": ["u:1"]})
    assert r.status_code == 410 and "demo.v1 is retired" in r.json()["error"]


def test_a_retired_version_describes_itself_but_its_data_is_gone(world):
    c, state, poller, cat = world
    s = RegistryState()
    for r in promote_records(s, V2, now=5.0):
        s.apply(r)
    s.apply(retire_record(s, SPECS, V1, now=6.0))
    state["s"] = s
    poller.poll_once()
    meta = c.get("/v1/types/demo.v1")
    assert meta.status_code == 200, meta.text
    assert (meta.json()["ref"], meta.json()["status"]) == ("demo.v1", "retired")
    assert meta.json()["entities"] == 21
    assert c.get("/v1/types/demo").json()["ref"] == "demo.v2"  # NAME is still the live one
    for path in ("/v1/types/demo.v1/embeddings?ids=u:1", "/v1/types/demo.v1/neighbours/u:1",
                 "/v1/types/demo.v1/snapshots"):
        r = c.get(path)
        assert r.status_code == 410 and "demo.v1 is retired" in r.json()["error"], path
    r = c.post("/v1/types/demo.v1/neighbours", json={"vector": [1.0] * DIM})
    assert r.status_code == 410 and r.json()["code"] == "RetiredType"
    assert cat.resolve("demo.v1", allow_retired=True) is cat.versions()["demo.v1"]
    with pytest.raises(RetiredType, match="demo.v1 is retired"):
        cat.resolve("demo.v1")


def test_an_unreachable_registry_keeps_the_last_decisions_and_says_so(world):
    c, state, poller, cat = world
    s = RegistryState()
    for r in promote_records(s, V2, now=1.0):
        s.apply(r)
    state["s"] = s
    poller.poll_once()
    state["s"] = None
    poller.poll_once()
    assert _version(c, "demo") == 2
    assert "broker down" in c.get("/v1/types").json()["registry_error"]


def test_a_lag_probe_that_fails_never_stops_the_poller():
    cat = Catalog((V1,), {"demo.v1": _served(V1, 1)})

    def boom(spec: TopologySpec) -> dict:
        msg = "nope"
        raise RuntimeError(msg)

    p = RegistryPoller(cat, RegistryState, boom)
    p.poll_once()
    assert cat.lags["demo.v1"] == {"lag": None, "error": "RuntimeError: nope"}
    assert p.reads == 1 and p.ready.is_set()


def test_unknown_and_unserved_references(world):
    c, *_ = world
    r = c.get("/v1/types/nope")
    assert r.status_code == 404 and "declared types: demo" in r.json()["error"]
    r = c.get("/v1/types/demo.v3")
    assert r.status_code == 404 and "unknown version 3" in r.json()["error"]
    r = c.get("/v1/types/Demo")
    assert r.status_code == 400 and "expected NAME or NAME.vN" in r.json()["error"]
    only_v1 = Catalog(SPECS, {"demo.v1": _served(V1, 1)}, RegistryState())
    with TestClient(create_api(only_v1)) as c1:
        r = c1.get("/v1/types/demo.v2")
        assert r.status_code == 404 and "not served here" in r.json()["error"]
