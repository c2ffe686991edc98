"""HTTP API and CLI over real HTTP (uvicorn on a loopback port), no Kafka needed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn

from streamer.client import Client
from streamer.errors import BadRequest, UnknownEntity, UnknownType
from streamer.index.exact import ExactIndex
from streamer.index.kinded import KindedIndex
from streamer.serve.api import create_api
from streamer.serve.served import ServedType
from streamer.store.base import FeatureRecord
from streamer.testing.procs import free_port

DIM = 8


def _served() -> ServedType:
    st = ServedType(name="t", version=1, dim=DIM, index=KindedIndex(DIM, factory=ExactIndex))
    rng = np.random.default_rng(0)
    ids = [f"u:{i}" for i in range(20)] + [f"i:{i}" for i in range(29)] + ["i:a/b?c#d %"]
    recs = [FeatureRecord(vector=rng.standard_normal(DIM).astype(np.float32), updated_at=1e9 + i,
                          update_count=i + 1, model_version=1) for i in range(len(ids))]
    st.apply(ids, recs)
    st.caught_up = True
    return st


class _Server:
    def __init__(self, token: str | None = None):
        self.served = _served()
        self.port = free_port()
        cfg = uvicorn.Config(create_api({"t": self.served}, token=token), host="127.0.0.1",
                             port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server():
    with _Server() as s:
        yield s


def test_neighbours_by_id_match_exact_cosine(server):
    with Client(server.url) as c:
        res = c.neighbours("t", "u:3", k=5, kind="item")
    v = server.served.get_many(["u:3"])[0].vector
    items = [f"i:{i}" for i in range(29)] + ["i:a/b?c#d %"]
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
        assert np.allclose(got[0]["vector"], vec)
        assert got[1]["update_count"] == 2
        types = c.types()
        assert types[0]["name"] == "t" and types[0]["entities"] == 50


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("get", "/v1/types/nope/neighbours/u:1", None, 404, "unknown embedding type"),
    ("get", "/v1/types/t/neighbours/u:999", None, 404, "has no vector"),
    ("get", "/v1/types/t/neighbours/x1", None, 400, "bad id"),
    ("get", "/v1/types/t/neighbours/u:1?k=0", None, 400, "k=0"),
    ("get", "/v1/types/t/neighbours/u:1?k=5000", None, 400, "k=5000"),
    ("get", "/v1/types/t/neighbours/u:1?k=abc", None, 422, "k"),
    ("get", "/v1/types/t/neighbours/u:1?kind=page", None, 422, "kind"),
    ("post", "/v1/types/t/neighbours", {"vector": [1.0] * 3, "k": 3}, 422, "expects"),
    ("post", "/v1/types/t/neighbours", {"vector": [0.0] * DIM, "k": 3}, 422, "zeros"),
    ("post", "/v1/types/t/embeddings", {"ids": []}, 422, "ids"),
    ("post", "/v1/types/t/embeddings", {"ids": ["u:1"] * 1001}, 422, "ids"),
    ("post", "/v1/types/t/embeddings", {"ids": ["bad"]}, 400, "bad id"),
])
def test_bad_input_gets_a_4xx_with_a_one_line_reason(server, method, path, body, status,
                                                     fragment):
    r = httpx.request(method.upper(), server.url + path, json=body, timeout=10)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err and "\n" not in err


def test_ids_with_url_characters_round_trip(server):
    with Client(server.url) as c:
        res = c.neighbours("t", "i:a/b?c#d %", k=3)
        assert len(res) == 3 and "i:a/b?c#d %" not in [i for i, _ in res]
        assert c.get("t", ["i:a/b?c#d %"])[0]["found"]
    r = _cli("neighbors", "t", "i:a/b?c#d %", "-k", "2", "--json", "--api", server.url)
    assert r.returncode == 0 and r.stdout.count('"id": ') == 3, r.stderr


def test_client_maps_errors(server):
    with Client(server.url) as c:
        with pytest.raises(UnknownType):
            c.neighbours("nope", "u:1")
        with pytest.raises(UnknownEntity):
            c.neighbours("t", "u:999")
        with pytest.raises(BadRequest):
            c.neighbours("t", "u:1", k=0)


def test_bearer_token_is_required_when_set():
    with _Server(token="s3cret") as s:
        assert httpx.get(s.url + "/v1/types").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        with Client(s.url, token="s3cret") as c:
            assert c.types()[0]["name"] == "t"
        with Client(s.url, token="wrong") as c, pytest.raises(Exception, match="401|token"):
            c.types()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_cli_neighbors_and_get_against_the_server(server):
    r = _cli("neighbors", "t", "u:3", "-k", "4", "--kind", "item", "--json", "--api", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"id": "i:') == 4
    r = _cli("get", "t", "i:1", "u:2", "--api", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"found": true') == 2


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
