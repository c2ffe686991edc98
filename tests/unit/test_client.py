"""Python client and `streamer get` against a real in-thread server (TTL, snapshots)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from served_server import IDS, T0, TTL, Server, expired_ids, make_served, records
from served_server import write_snapshot as _write_snapshot

from streamer.client import Client, Neighbour, Unauthorized
from streamer.errors import BadRequest
from streamer.serve.snapshots import UnknownSnapshot

TOKEN = "tok-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    _write_snapshot(root, IDS, records(seed=1), events_applied=10)
    _write_snapshot(root, IDS[:21], records(seed=2)[:21], events_applied=20)
    with Server(make_served(ttl_s=TTL, snapshot_root=root), token=TOKEN) as s:
        yield s


@pytest.fixture
def client(server):
    with Client(server.url, token=TOKEN) as c:
        yield c


def test_get_returns_items_with_status(client):
    old = sorted(expired_ids())[0]
    items = client.get("t", ["i:28", old, "i:nope"])
    assert [i["status"] for i in items] == ["fresh", "expired", "missing"]
    assert [i["found"] for i in items] == [True, True, False]
    assert [i["expired"] for i in items] == [False, True, False]
    assert items[1]["vector"] is None
    live = dict(zip(IDS, records(), strict=True))
    assert np.array_equal(np.asarray(items[0]["vector"], np.float32), live["i:28"].vector)
    again = client.get("t", [old], include_expired=True)[0]
    assert again["status"] == "expired"
    assert np.array_equal(np.asarray(again["vector"], np.float32), live[old].vector)


def test_get_as_of_a_snapshot(client):
    snaps = client.snapshots("t")
    assert [(s["id"], s["events_applied"], s["event_time"]) for s in snaps] == [
        ("000001", 10, T0 + len(IDS) - 1), ("000002", 20, T0 + 20)]
    ans = client.read("t", ["u:15", "i:28"], snapshot=2)
    assert ans["snapshot"]["id"] == "000002" and ans["watermark"] == T0 + 20
    first, missing = ans["items"]
    assert first["status"] == "fresh" and missing["status"] == "missing"
    assert np.array_equal(np.asarray(first["vector"], np.float32), records(seed=2)[15].vector)
    same = client.get("t", ["u:15"], snapshot="000002")[0]
    assert same == first
    with pytest.raises(UnknownSnapshot, match="no snapshot 000009; available: 000001, 000002"):
        client.get("t", ["u:1"], snapshot=9)


def test_neighbours_flagged_and_fresh_only(client):
    flagged = client.neighbours_flagged("t", "i:28", k=len(IDS))
    assert all(isinstance(n, Neighbour) for n in flagged)
    assert all(n.expired == (n.id in expired_ids()) for n in flagged)
    fresh = client.neighbours("t", "i:28", k=5, fresh_only=True)
    assert [i for i, _ in fresh] == [n.id for n in flagged if not n.expired][:5]
    assert len(fresh) == 5 and len(flagged) == len(IDS) - 1
    vec = records()[IDS.index("i:28")].vector.tolist()
    byvec = client.neighbours_by_vector_flagged("t", vec, k=3, fresh_only=True)
    assert byvec[0].id == "i:28" and not any(n.expired for n in byvec)


def test_client_without_token_is_unauthorized(server, monkeypatch):
    monkeypatch.delenv("STREAMER_API_TOKEN", raising=False)
    with Client(server.url) as c, pytest.raises(Unauthorized, match="missing bearer token"):
        c.get("t", ["u:1"])
    assert Unauthorized.http_status == 401  # the CLI turns it into exit 2


def test_client_token_defaults_to_the_environment(server, monkeypatch):
    monkeypatch.setenv("STREAMER_API_TOKEN", TOKEN)
    with Client(server.url) as c:
        assert c.get("t", ["i:28"])[0]["status"] == "fresh"
    with Client(server.url, token="") as c, pytest.raises(Unauthorized, match="missing"):
        c.get("t", ["i:28"])  # "" sends no token, whatever the environment says
    with Client(server.url, token="wrong") as c, pytest.raises(Unauthorized, match="wrong"):
        c.get("t", ["i:28"])  # an explicit token wins over the environment


def test_get_with_one_str_instead_of_a_list_is_a_bad_request(client):
    with pytest.raises(BadRequest, match=r"ids must be a list of ids, got a str \('u:0'\); "
                                         r"pass \['u:0'\]"):
        client.get("t", "u:0")
    with pytest.raises(BadRequest, match="got a str"):
        client.read("t", "i:28")
    assert [i["id"] for i in client.get("t", ("u:0", "i:28"))] == ["u:0", "i:28"]


# ------------------------------------------------------------------- CLI

def _get(server, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_API_TOKEN"}
    if token:
        env["STREAMER_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "streamer", "get", *args, "--api", server.url],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_get_prints_json_lines_with_status(server):
    old = sorted(expired_ids())[0]
    r = _get(server, "t", "i:28", old, "i:nope")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [ln["status"] for ln in lines] == ["fresh", "expired", "missing"]
    assert lines[1]["vector"] is None
    r = _get(server, "t", old, "--include-expired")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["vector"]) == 8


def test_cli_get_snapshot_and_json(server):
    r = _get(server, "t", "u:15", "i:28", "--snapshot", "2")
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln)["status"] for ln in r.stdout.splitlines()] == ["fresh", "missing"]
    assert "as of snapshot 000002" in r.stderr
    r = _get(server, "t", "u:15", "--snapshot", "000001", "--json")
    assert r.returncode == 0, r.stderr
    ans = json.loads(r.stdout)
    assert ans["snapshot"]["id"] == "000001" and ans["ttl_s"] == TTL
    assert ans["items"][0]["id"] == "u:15"


@pytest.mark.parametrize(("args", "token", "fragment"), [
    (("t", "bad"), TOKEN, "bad id 'bad'"),
    (("t", "u:"), TOKEN, "3..300 characters"),
    (("t", "u:1", "--snapshot", "x"), TOKEN, "snapshot='x' is not a snapshot id"),
    (("t", "u:1", "--snapshot", "0"), TOKEN, "expected a positive integer"),
    (("t", "u:1", "--snapshot", "9"), TOKEN, "no snapshot 000009; available: 000001"),
    (("nope", "u:1"), TOKEN, "unknown embedding type 'nope'"),
    (("t", "u:1"), None, "missing bearer token"),
    (("t", "u:1"), "wrong", "wrong bearer token"),
    (("t",), TOKEN, "Missing argument"),
    (("t", "u:1", "--bogus"), TOKEN, "No such option"),
])
def test_cli_get_bad_arguments_exit_2_with_one_line(server, args, token, fragment):
    r = _get(server, *args, token=token)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_cli_unauthorized_tells_to_set_the_token_env_var(server):
    for token, why in ((None, "missing"), ("wrong", "wrong")):
        r = _get(server, "t", "u:1", token=token)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        assert f"{why} bearer token" in lines[0]
        assert lines[0].endswith("set STREAMER_API_TOKEN to the server's token"), lines[0]
    r = _get(server, "nope", "u:1")  # other errors get no token hint
    assert r.returncode == 2 and "STREAMER_API_TOKEN to" not in r.stderr


def test_cli_get_too_many_ids_exits_2():
    r = subprocess.run([sys.executable, "-m", "streamer", "get", "t",
                        *[f"u:{i}" for i in range(1001)], "--api", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "too many ids: 1001; expected at most 1000" in r.stderr


def test_cli_neighbors_flags_expired_and_fresh_only_drops_them(server):
    env = {**os.environ, "STREAMER_API_TOKEN": TOKEN}
    base = [sys.executable, "-m", "streamer", "neighbors", "t", "u:0", "-k", "40", "--json",
            "--api", server.url]
    every = subprocess.run(base, env=env, capture_output=True, text=True, check=False,  # noqa: S603
                           timeout=60)
    assert every.returncode == 0, every.stderr
    nbs = json.loads(every.stdout)["neighbours"]
    old = expired_ids()
    assert any(n["expired"] for n in nbs)
    assert all(n["expired"] == (n["id"] in old) for n in nbs)
    fresh = subprocess.run([*base, "--fresh-only"], env=env, capture_output=True, text=True,  # noqa: S603
                           check=False, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    got = json.loads(fresh.stdout)["neighbours"]
    assert got and not any(n["expired"] for n in got)
    # the fresh ones among the 40 nearest stay; deeper fresh ones fill the expired slots
    assert {n["id"] for n in nbs if not n["expired"]} <= {n["id"] for n in got}
    assert len(got) == min(40, len(set(IDS) - old - {"u:0"}))
