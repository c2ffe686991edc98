"""HTTP API: shapes, TTL, snapshot reads and every kind of bad input.

In-process (FastAPI's TestClient) for the validation table; over real HTTP (uvicorn on
a loopback port, real httpx and :class:`streamer.client.Client`) for the client's error
mapping and the CLI. No Kafka needed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
import typer
from fastapi.testclient import TestClient
from served_server import DIM, IDS, T0, TTL, Server, expired_ids, make_served, records
from served_server import write_snapshot as _write_snapshot

from streamer.client import Client, Unauthorized
from streamer.errors import BadRequest, DimensionMismatch, UnknownEntity, UnknownType
from streamer.serve.api import MAX_BODY_BYTES, create_api
from streamer.serve.served import MAX_IDS, MAX_K
from streamer.serve.snapshots import UnknownSnapshot
from streamer.testing.procs import free_port

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def server():
    with Server(make_served()) as s:
        yield s


@pytest.fixture(scope="module")
def snapshot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    sid = _write_snapshot(root, IDS, records(seed=1), events_applied=77)
    assert sid == "000001"
    return root


@pytest.fixture(scope="module")
def app(snapshot_root):
    """Type ``t`` with a TTL and one snapshot; no token."""
    return create_api({"t": make_served(ttl_s=TTL, snapshot_root=snapshot_root)})


@pytest.fixture(scope="module")
def api(app):
    with TestClient(app) as c:
        yield c


# ------------------------------------------------------------------- happy paths (HTTP)

def test_neighbours_by_id_match_exact_cosine(server):
    with Client(server.url) as c:
        res = c.neighbours("t", "u:3", k=5, kind="item")
    v = server.served.get_many(["u:3"])[0].vector
    items = [e for e in IDS if e.startswith("i:")]
    m = np.stack([r.vector for r in server.served.get_many(items)])
    cos = m @ v / (np.linalg.norm(m, axis=1) * np.linalg.norm(v))
    want = [items[j] for j in np.argsort(-cos)[:5]]
    assert [i for i, _ in res] == want
    assert np.allclose([s for _, s in res], np.sort(cos)[::-1][:5], atol=1e-5)


def test_neighbours_by_vector_and_batch_get(server):
    with Client(server.url) as c:
        vec = server.served.get_many(["i:7"])[0].vector
        res = c.neighbours_by_vector("t", vec.tolist(), k=3)
        assert res[0][0] == "i:7" and abs(res[0][1] - 1.0) < 1e-5
        got = c.get("t", ["i:7", "u:1", "i:999"])
        assert [g["found"] for g in got] == [True, True, False]
        assert [g["status"] for g in got] == ["fresh", "fresh", "missing"]
        assert np.array_equal(np.asarray(got[0]["vector"], np.float32), vec)
        assert got[1]["update_count"] == 2 and got[1]["updated_at"] == T0 + 1
        assert got[2]["vector"] is None and got[2]["expired"] is False
        types = c.types()
        assert types[0]["name"] == "t" and types[0]["entities"] == len(IDS)
        assert types[0]["ttl_s"] is None


def test_batch_answer_vectors_are_exact_float32_for_get_and_post(api):
    want = {e: r.vector for e, r in zip(IDS, records(), strict=True)}
    fresh = [e for e in IDS if e not in expired_ids()]
    post = api.post("/v1/types/t/embeddings", json={"ids": IDS, "include_expired": True})
    get = api.get("/v1/types/t/embeddings", params={"ids": fresh})
    assert post.status_code == 200 and get.status_code == 200
    assert post.headers["content-type"] == "application/json"
    for item in post.json()["items"] + get.json()["items"]:
        assert np.array_equal(np.asarray(item["vector"], np.float32), want[item["id"]])


def test_batch_answer_shape(api):
    r = api.post("/v1/types/t/embeddings", json={"ids": ["i:28", "u:0", "i:nope"]})
    body = r.json()
    assert set(body) == {"type", "version", "ttl_s", "watermark", "snapshot", "items"}
    assert (body["type"], body["version"], body["ttl_s"]) == ("t", 1, TTL)
    assert body["watermark"] == T0 + len(IDS) - 1 and body["snapshot"] is None
    keys = {"id", "status", "found", "expired", "vector", "updated_at", "update_count",
            "model_version"}
    assert all(set(item) == keys for item in body["items"])
    fresh, old, missing = body["items"]
    assert (fresh["status"], fresh["found"], fresh["expired"]) == ("fresh", True, False)
    assert len(fresh["vector"]) == DIM
    assert (old["status"], old["found"], old["expired"], old["vector"]) == (
        "expired", True, True, None)
    assert old["updated_at"] == T0 and old["update_count"] == 1
    assert (missing["status"], missing["found"], missing["vector"]) == ("missing", False, None)


def test_expired_vectors_only_on_request_and_never_fresh(api):
    old = sorted(expired_ids())[:5]
    for include, query in ((False, {}), (True, {"include_expired": "true"})):
        post = api.post("/v1/types/t/embeddings",
                        json={"ids": old, "include_expired": include}).json()["items"]
        get = api.get("/v1/types/t/embeddings", params={"ids": old, **query}).json()["items"]
        for items in (post, get):
            assert all(i["status"] == "expired" and i["expired"] for i in items)
            assert all((i["vector"] is not None) == include for i in items)


def test_neighbours_flag_expired_and_fresh_only_fills_k(api):
    r = api.get("/v1/types/t/neighbours/i:28", params={"k": 29}).json()
    old = expired_ids()
    assert r["ttl_s"] == TTL and r["fresh_only"] is False
    assert all(n["expired"] == (n["id"] in old) for n in r["neighbours"])
    assert any(n["expired"] for n in r["neighbours"][:5])
    fresh = api.get("/v1/types/t/neighbours/i:28", params={"k": 5, "fresh_only": "true"})
    got = fresh.json()["neighbours"]
    want = [n["id"] for n in r["neighbours"] if not n["expired"]][:5]
    assert [n["id"] for n in got] == want and len(got) == 5
    vec = records()[IDS.index("i:28")].vector.tolist()
    byvec = api.post("/v1/types/t/neighbours", json={"vector": vec, "k": 5,
                                                     "fresh_only": True}).json()
    assert [n["id"] for n in byvec["neighbours"]] == ["i:28", *want[:4]]


def test_reads_as_of_a_snapshot_name_it_and_use_its_watermark(api):
    snap_recs = dict(zip(IDS, records(seed=1), strict=True))
    r = api.get("/v1/types/t/embeddings",
                params={"ids": ["i:28", "u:0"], "snapshot": "1", "include_expired": "true"})
    body = r.json()
    assert r.status_code == 200, body
    assert body["snapshot"] == {"id": "000001", "event_time": T0 + len(IDS) - 1,
                                "created_at": 5.0}
    assert body["watermark"] == T0 + len(IDS) - 1
    fresh, old = body["items"]
    assert np.array_equal(np.asarray(fresh["vector"], np.float32), snap_recs["i:28"].vector)
    assert not np.array_equal(np.asarray(fresh["vector"], np.float32),
                              records()[IDS.index("i:28")].vector)  # not the live one
    assert old["status"] == "expired" and old["vector"] is not None
    post = api.post("/v1/types/t/embeddings", json={"ids": ["i:28"], "snapshot": 1}).json()
    assert post["items"][0]["vector"] == fresh["vector"]


def test_snapshot_listing(api):
    r = api.get("/v1/types/t/snapshots").json()
    assert r["type"] == "t" and r["version"] == 1
    assert r["snapshots"] == [{"id": "000001", "event_time": T0 + len(IDS) - 1,
                               "events_applied": 77, "created_at": 5.0,
                               "entities": len(IDS), "trigger": "manual"}]


def test_batch_route_bypasses_fastapi_serialisation(app, monkeypatch):
    """The batch get answers with orjson bytes: FastAPI's response serialisation
    (response-model validation, jsonable_encoder) never runs for it."""
    import fastapi.routing

    calls: list[object] = []
    real = fastapi.routing.serialize_response

    async def spy(*args, **kwargs):
        calls.append(kwargs.get("response_content"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "serialize_response", spy)
    with TestClient(app) as c:
        assert c.post("/v1/types/t/embeddings", json={"ids": IDS}).status_code == 200
        assert c.get("/v1/types/t/embeddings", params={"ids": IDS[:3]}).status_code == 200
        assert calls == []
        assert c.get("/v1/types/t/snapshots").status_code == 200  # a dict route does use it
        assert len(calls) == 1


# ------------------------------------------------------------------- every kind of bad input

E = "/v1/types/t/embeddings"
N = "/v1/types/t/neighbours"
GOOD = [1.0] * DIM


def _nan_body(literal: str) -> str:
    return '{"vector": [' + ", ".join([literal] + ["1.0"] * (DIM - 1)) + '], "k": 3}'


BAD_INPUT = [
    # unknown type
    ("get", "/v1/types/nope/embeddings?ids=u:1", None, 404, "unknown embedding type 'nope'"),
    ("post", "/v1/types/nope/embeddings", {"ids": ["u:1"]}, 404, "unknown embedding type"),
    ("get", "/v1/types/nope/snapshots", None, 404, "unknown embedding type"),
    ("get", "/v1/types/nope/neighbours/u:1", None, 404, "unknown embedding type"),
    ("post", "/v1/types/nope/neighbours", {"vector": GOOD}, 404, "unknown embedding type"),
    # bad ids
    ("post", E, {"ids": [""]}, 400, "bad id ''"),
    ("post", E, {"ids": ["xyz1"]}, 400, "'u:' (user) or 'i:' (item) prefix"),
    ("post", E, {"ids": ["u:" + "a" * 400]}, 400, "3..300 characters"),
    ("post", E, {"ids": ["u:1", 5]}, 400, "bad id 5 (int): expected a string"),
    ("post", E, {"ids": [None]}, 400, "bad id None (NoneType)"),
    ("post", E, {"ids": [["u:1"]]}, 400, "(list): expected a string"),
    ("get", E + "?ids=", None, 400, "bad id ''"),
    ("get", E + "?ids=u:1&ids=zz", None, 400, "bad id 'zz'"),
    ("get", N + "/x1", None, 400, "bad id 'x1'"),
    ("get", N + "/u:999", None, 404, "'u:999' has no vector"),
    # k out of range / not an int
    ("get", N + "/u:1?k=0", None, 400, "k=0 is out of range; expected 1..1000"),
    ("get", N + "/u:1?k=-1", None, 400, "k=-1 is out of range"),
    ("get", N + f"/u:1?k={MAX_K + 1}", None, 400,
     f"k={MAX_K + 1} is out of range; expected 1..{MAX_K}"),
    ("get", N + "/u:1?k=abc", None, 422, "invalid query.k"),
    ("get", N + "/u:1?k=2.5", None, 422, "invalid query.k"),
    ("post", N, {"vector": GOOD, "k": 0}, 400, "k=0 is out of range"),
    ("post", N, {"vector": GOOD, "k": 1001}, 400, "k=1001 is out of range"),
    ("post", N, {"vector": GOOD, "k": "abc"}, 422, "invalid body.k"),
    ("post", N, {"vector": GOOD, "k": 2.5}, 422, "invalid body.k"),
    # batch size
    ("post", E, {"ids": ["u:1"] * (MAX_IDS + 1)}, 400,
     f"too many ids: {MAX_IDS + 1}; expected at most {MAX_IDS}"),
    ("get", E + "?" + "&".join(["ids=u:1"] * (MAX_IDS + 1)), None, 400,
     f"expected at most {MAX_IDS}"),
    ("post", E, {"ids": []}, 400, f"no ids given; expected 1..{MAX_IDS} ids"),
    ("get", E, None, 422, "invalid query.ids: Field required"),
    # vectors
    ("post", N, {"vector": [1.0] * 3, "k": 3}, 422, f"vector has 3 dimensions; type 't' "
     f"expects {DIM}"),
    ("post", N, {"vector": [], "k": 3}, 422, f"vector has 0 dimensions; type 't' expects {DIM}"),
    ("post", N, _nan_body("NaN"), 422, "NaN/inf"),
    ("post", N, _nan_body("Infinity"), 422, "NaN/inf"),
    ("post", N, _nan_body("1e39"), 422, "beyond float32"),
    ("post", N, {"vector": [0.0] * DIM, "k": 3}, 422, "all zeros"),
    ("post", N, {"vector": ["a"] * DIM}, 422, "invalid body.vector.0"),
    ("post", N, {"vector": 1.0}, 422, "invalid body.vector"),
    ("post", N, {"vector": [True, False] * (DIM // 2)}, 422,
     "invalid body.vector.0: Input should be a valid number"),
    ("post", N, {"vector": [1.0, False] * (DIM // 2)}, 422, "invalid body.vector.1"),
    # kind
    ("get", N + "/u:1?kind=page", None, 422, "invalid query.kind"),
    ("post", N, {"vector": GOOD, "kind": "page"}, 422, "invalid body.kind"),
    # snapshot ids
    ("get", E + "?ids=u:1&snapshot=abc", None, 400, "snapshot='abc' is not a snapshot id"),
    ("get", E + "?ids=u:1&snapshot=0", None, 400, "snapshot='0' is not a snapshot id"),
    ("get", E + "?ids=u:1&snapshot=-1", None, 400, "expected a positive integer"),
    ("get", E + "?ids=u:1&snapshot=", None, 400, "snapshot='' is not a snapshot id"),
    ("post", E, {"ids": ["u:1"], "snapshot": True}, 400, "snapshot='True'"),
    ("post", E, {"ids": ["u:1"], "snapshot": 1.5}, 400, "snapshot='1.5'"),
    ("post", E, {"ids": ["u:1"], "snapshot": 0}, 400, "expected a positive integer"),
    ("get", E + "?ids=u:1&snapshot=99", None, 404,
     "type t.v1 has no snapshot 000099; available: 000001"),
    ("post", E, {"ids": ["u:1"], "snapshot": 2}, 404, "no snapshot 000002; available: 000001"),
    # malformed bodies
    ("post", E, '{"ids": [', 422, "malformed JSON body"),
    ("post", E, "not json", 422, "malformed JSON body"),
    ("post", N, '{"vector": [1,2,}', 422, "malformed JSON body"),
    ("post", E, "", 422, "missing JSON body"),
    ("post", E, {}, 422, "invalid body.ids: Field required"),
    ("post", N, {"k": 3}, 422, "invalid body.vector: Field required"),
    ("post", E, {"ids": "u:1"}, 422, "invalid body.ids"),
    ("post", E, [1, 2], 422, "invalid body"),
    ("post", E, {"ids": ["u:1"], "idz": 1}, 422, "invalid body.idz: Extra inputs"),
    ("post", E, {"ids": ["u:1"], "include_expired": "yes"}, 422, "invalid body.include_expired"),
    ("get", E + "?ids=u:1&include_expired=maybe", None, 422, "invalid query.include_expired"),
    ("get", N + "/u:1?fresh_only=maybe", None, 422, "invalid query.fresh_only"),
    ("post", N, {"vector": GOOD, "fresh_only": "x"}, 422, "invalid body.fresh_only"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_INPUT,
                         ids=[f"{m} {p[:40]} {str(b)[:30]}" for m, p, b, _, _ in BAD_INPUT])
def test_bad_input_gets_a_4xx_with_a_one_line_reason(api, method, path, body, status,
                                                     fragment):
    if isinstance(body, str):
        r = api.request(method.upper(), path, content=body,
                        headers={"content-type": "application/json"})
    else:
        r = api.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err, err
    assert "\n" not in err and len(err) < 400
    assert isinstance(r.json()["code"], str)


HTTP_ERRORS = [
    ("GET", E + "/u:0", None, 404, "NotFound",
     "no route GET /v1/types/t/embeddings/u:0; nearest: GET,POST /v1/types/{name}/embeddings"),
    ("GET", "/v1/nope", None, 404, "NotFound", "no route GET /v1/nope; nearest: "),
    ("GET", "/nope", None, 404, "NotFound", "no route GET /nope; see /docs"),
    ("GET", N, None, 405, "MethodNotAllowed",
     "method GET is not allowed on /v1/types/t/neighbours; allowed: POST"),
    ("DELETE", "/v1/types/t", None, 405, "MethodNotAllowed",
     "method DELETE is not allowed on /v1/types/t; allowed: GET"),
    ("PUT", E, {"ids": ["u:1"]}, 405, "MethodNotAllowed",
     "method PUT is not allowed on /v1/types/t/embeddings; allowed: GET, POST"),
    ("POST", E, "[" * 100_000, 400, "BadRequest",
     "could not parse the body of POST /v1/types/t/embeddings (JSON nested too deeply)"),
    ("POST", N, "[" * 100_000, 400, "BadRequest", "expected a JSON object"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "fragment"), HTTP_ERRORS,
                         ids=[f"{m} {p} {st}" for m, p, _, st, _, _ in HTTP_ERRORS])
def test_http_level_errors_have_our_error_shape(api, method, path, body, status, code,
                                                fragment):
    if isinstance(body, str):
        r = api.request(method, path, content=body,
                        headers={"content-type": "application/json"})
    else:
        r = api.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "code"}, r.text  # never FastAPI's {"detail": ...}
    assert r.json()["code"] == code
    err = r.json()["error"]
    assert fragment in err, err
    assert "\n" not in err and len(err) < 400
    if status == 405:
        assert r.headers["allow"] == fragment.rsplit("allowed: ", 1)[1]


def test_a_body_over_the_limit_is_413_and_a_full_batch_fits(api):
    size = MAX_BODY_BYTES + 1
    r = api.post(E, content=b"x" * size, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json() == {"error": f"request body of {size} bytes is too large; expected at "
                                 f"most {MAX_BODY_BYTES} bytes", "code": "PayloadTooLarge"}
    # the biggest legitimate batch (MAX_IDS ids of 300 characters) is far below the limit
    ids = [f"u:{j:0298d}" for j in range(MAX_IDS)]
    r = api.post(E, json={"ids": ids})
    assert r.status_code == 200, r.text
    assert [i["status"] for i in r.json()["items"]] == ["missing"] * MAX_IDS


def _raw_http(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, dict]:
    """Send a request by hand (head, then ``chunks``); return the status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for c in chunks:
            sock.sendall(c)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                next(ln.split(b":")[1] for ln in data.split(b"\r\n")
                     if ln.lower().startswith(b"content-length:"))):
            got = sock.recv(65536)
            assert got, data
            data += got
    head_out, body = data.split(b"\r\n\r\n", 1)
    return int(head_out.split()[1]), json.loads(body)


def test_a_large_content_length_is_refused_before_the_body_is_read(server):
    # 300 MB announced and none sent: a server that read the body would wait for it
    head = (b"POST /v1/types/t/embeddings HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n")
    status, body = _raw_http(server.port, head, [])
    assert status == 413
    assert body == {"error": f"request body of 300000000 bytes is too large; expected at "
                             f"most {MAX_BODY_BYTES} bytes", "code": "PayloadTooLarge"}


def test_a_chunked_body_over_the_limit_is_refused_while_read(server):
    head = (b"POST /v1/types/t/embeddings HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    n = MAX_BODY_BYTES // len(piece) + 1  # one piece over the limit, no final 0-chunk
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, body = _raw_http(server.port, head, [chunk] * n)
    assert status == 413, body
    assert body["code"] == "PayloadTooLarge"
    m = re.fullmatch(r"request body of at least (\d+) bytes \(sent without Content-Length\) "
                     rf"is too large; expected at most {MAX_BODY_BYTES} bytes", body["error"])
    assert m, body["error"]
    assert MAX_BODY_BYTES < int(m[1]) <= n * len(piece)  # counted as the pieces arrived
    # a small chunked body is served as usual
    ok = httpx.post(server.url + E, content=iter([b'{"ids": ', b'["u:1"]}']),
                    headers={"content-type": "application/json"})
    assert "content-length" not in ok.request.headers
    assert ok.status_code == 200 and ok.json()["items"][0]["found"], ok.text


def test_comma_lists_are_one_id_because_ids_may_contain_commas(api):
    # a user or item id is any 1..256-character string (commas included): repeat ids=
    r = api.get(E + "?ids=u:0,i:1")
    assert r.status_code == 200
    assert [(i["id"], i["status"]) for i in r.json()["items"]] == [("u:0,i:1", "missing")]
    r = api.get(E + "?ids=u:28&ids=i:28")
    assert [i["id"] for i in r.json()["items"]] == ["u:28", "i:28"]


def test_snapshot_read_on_a_server_without_snapshots_is_404():
    with TestClient(create_api({"t": make_served()})) as c:
        r = c.get(E, params={"ids": "u:1", "snapshot": "3"})
        assert r.status_code == 404
        assert "has no snapshots on this server; no snapshot 000003" in r.json()["error"]
        assert c.get("/v1/types/t/snapshots").json()["snapshots"] == []
        assert c.get(E, params={"ids": "u:1", "snapshot": "x"}).status_code == 400


def test_snapshot_read_with_an_empty_snapshot_dir_says_no_snapshots(tmp_path):
    with TestClient(create_api({"t": make_served(snapshot_root=tmp_path)})) as c:
        r = c.get(E, params={"ids": "u:1", "snapshot": "3"})
        assert r.status_code == 404
        assert r.json()["error"] == "type t.v1 has no snapshots; no snapshot 000003 to read"


@pytest.mark.parametrize(("headers", "fragment"), [
    ({}, "missing bearer token"),
    ({"authorization": "Bearer nope"}, "wrong bearer token"),
    ({"authorization": TOKEN}, "wrong bearer token"),
    ({"authorization": f"Basic {TOKEN}"}, "wrong bearer token"),
])
@pytest.mark.parametrize("path", ["/v1/types", E + "?ids=u:1", N + "/u:1", "/v1/types/t",
                                  "/v1/types/t/snapshots", "/v1/alerts"])
def test_token_is_required_on_every_route_but_health(headers, fragment, path):
    with TestClient(create_api({"t": make_served()}, token=TOKEN)) as c:
        r = c.get(path, headers=headers)
        assert r.status_code == 401, r.text
        assert fragment in r.json()["error"] and r.json()["code"] == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/health").status_code == 200
        ok = c.get(path, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(("header", "status"), [
    (f"Bearer {TOKEN}", 200),
    (f"bearer {TOKEN}", 200),  # the scheme is case-insensitive (RFC 7235 §2.1)
    (f"BEARER {TOKEN}", 200),
    (f"Bearer   {TOKEN} ", 200),
    (f"bearer {TOKEN.upper()}", 401),  # the token is not
    (f"Bearer{TOKEN}", 401),
    (f"Basic {TOKEN}", 401),
    (f"bearer {TOKEN}x", 401),
])
def test_bearer_scheme_is_case_insensitive_but_the_token_is_exact(header, status):
    with TestClient(create_api({"t": make_served()}, token=TOKEN)) as c:
        r = c.get(E, params={"ids": "u:1"}, headers={"authorization": header})
        assert r.status_code == status, r.text
        if status == 401:
            assert r.json()["code"] == "Unauthorized"
        else:
            assert r.json()["items"][0]["found"]


def test_body_limit_and_route_errors_keep_their_shape_behind_a_token():
    with TestClient(create_api({"t": make_served()}, token=TOKEN)) as c:
        auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        big = iter([b"x" * 65536] * (MAX_BODY_BYTES // 65536 + 1))  # chunked
        r = c.post(E, content=big, headers=auth)
        assert r.status_code == 413 and r.json()["code"] == "PayloadTooLarge", r.text
        r = c.delete("/v1/types/t", headers=auth)
        assert r.status_code == 405 and r.json()["code"] == "MethodNotAllowed", r.text
        r = c.delete("/v1/types/t")
        assert r.status_code == 401 and r.json()["code"] == "Unauthorized", r.text


def test_default_bind_address_is_loopback(monkeypatch):
    from streamer.cli import app as cli_app
    from streamer.settings import Settings

    for var in [v for v in os.environ if v.startswith("STREAMER_")]:
        monkeypatch.delenv(var)
    assert Settings.model_fields["api_host"].default == "127.0.0.1"
    assert Settings().api_host == "127.0.0.1"
    cmd = typer.main.get_command(cli_app)
    demo_host = next(p for p in cmd.commands["demo"].params if p.name == "host")
    serve_host = next(p for p in cmd.commands["serve"].params if p.name == "host")
    assert demo_host.default == "127.0.0.1"
    assert serve_host.default is None  # serve falls back to settings.api_host


# ------------------------------------------------------------------- client error mapping

def test_client_maps_errors_over_real_http(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMER_API_TOKEN", raising=False)  # Client's default token
    _write_snapshot(tmp_path, IDS, records())
    with Server(make_served(snapshot_root=tmp_path), token=TOKEN) as s:
        with Client(s.url, token=TOKEN) as c:
            with pytest.raises(UnknownType, match="unknown embedding type 'nope'"):
                c.neighbours("nope", "u:1")
            with pytest.raises(UnknownType, match="unknown embedding type"):
                c.get("nope", ["u:1"])
            with pytest.raises(UnknownEntity, match="has no vector"):
                c.neighbours("t", "u:999")
            with pytest.raises(UnknownSnapshot, match="available: 000001"):
                c.get("t", ["u:1"], snapshot=7)
            with pytest.raises(BadRequest, match="k=0 is out of range"):
                c.neighbours("t", "u:1", k=0)
            with pytest.raises(BadRequest, match="bad id 'bad'"):
                c.get("t", ["bad"])
            with pytest.raises(BadRequest, match="too many ids"):
                c.get("t", ["u:1"] * (MAX_IDS + 1))
            with pytest.raises(BadRequest, match="snapshot='x'"):
                c.get("t", ["u:1"], snapshot="x")
            with pytest.raises(DimensionMismatch, match=f"expects {DIM}"):
                c.neighbours_by_vector("t", [1.0, 2.0])
            with pytest.raises(BadRequest, match="query.kind"):
                c.neighbours("t", "u:1", kind="page")
            assert c.snapshots("t")[0]["id"] == "000001"
        for token in (None, "wrong"):
            with Client(s.url, token=token) as c, pytest.raises(Unauthorized) as info:
                c.types()
            assert info.value.status == 401 and "bearer token" in str(info.value)
        assert httpx.get(s.url + "/health").status_code == 200


def test_ids_with_url_characters_round_trip(server):
    with Client(server.url) as c:
        res = c.neighbours("t", "i:a/b?c#d %", k=3)
        assert len(res) == 3 and "i:a/b?c#d %" not in [i for i, _ in res]
        assert c.get("t", ["i:a/b?c#d %"])[0]["found"]
    r = _cli("neighbors", "t", "i:a/b?c#d %", "-k", "2", "--json", "--api", server.url)
    assert r.returncode == 0 and r.stdout.count('"id": ') == 3, r.stderr


# ------------------------------------------------------------------- CLI

def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_cli_neighbors_and_get_against_the_server(server):
    r = _cli("neighbors", "t", "u:3", "-k", "4", "--kind", "item", "--json", "--api", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"id": "i:') == 4
    r = _cli("get", "t", "i:1", "u:2", "i:nope", "--api", server.url)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    assert [ln["status"] for ln in lines] == ["fresh", "fresh", "missing"]


@pytest.mark.parametrize(("args", "fragment"), [
    (("neighbors", "t", "nope", "--api", "URL"), "bad id"),
    (("neighbors", "t", "u:1", "-k", "0", "--api", "URL"), "k=0"),
    (("neighbors", "t", "u:1", "--kind", "page", "--api", "URL"), "kind"),
    (("neighbors", "zzz", "u:1", "--api", "URL"), "unknown embedding type"),
    (("neighbors", "t", "u:999", "--api", "URL"), "has no vector"),
    (("worker", "--type", "no-such-type"), "unknown embedding type"),
    (("produce",), "exactly one of"),
])
def test_cli_bad_arguments_exit_2_with_one_line(server, args, fragment):
    r = _cli(*[server.url if a == "URL" else a for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert any(fragment in ln for ln in lines), r.stderr
    assert "Traceback" not in r.stderr


def test_cli_unreachable_api_exits_1():
    r = _cli("neighbors", "t", "u:1", "--api", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "cannot reach the API" in r.stderr


def test_cli_against_a_server_that_is_not_streamer_gives_one_line():
    import http.server

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"<html>hello</html>"
            self.send_response(200 if "ok" in self.path else 404)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        for api in (url, url + "/ok"):
            r = _cli("neighbors", "t", "u:1", "--api", api)
            assert r.returncode in (1, 2), r.stderr
            assert "Traceback" not in r.stderr and "streamer serve" in r.stderr
    finally:
        srv.shutdown()

