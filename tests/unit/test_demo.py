"""`streamer demo` on the vendored LastFM Asia graph, as a user runs it (no broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from streamer.testing.procs import free_port

EDGES = 27_806


def test_demo_once_prints_neighbours_and_exits(tmp_path):
    r = subprocess.run([sys.executable, "-m", "streamer", "demo", "--once", "--state-dir",
                        str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert f"applied {2 * EDGES:,} events, dead-lettered 0" in r.stdout
    for user in ("u:0", "u:1", "u:2"):
        assert f"{user}: items to recommend" in r.stdout
    assert r.stdout.count("│ i:") >= 15  # 5 item neighbours per user
    assert (tmp_path / "demo-cooc.v1").is_dir()


def test_demo_serves_the_api_until_interrupted(tmp_path):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "streamer", "demo", "--port", str(port),
                          "--state-dir", str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/types/demo-cooc/neighbours/u:0",
                              params={"k": 7, "kind": "item"}, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert r.status_code == 200
        got = r.json()["neighbours"]
        assert len(got) == 7 and all(n["id"].startswith("i:") for n in got)
    finally:
        p.send_signal(2)  # Ctrl-C
        p.wait(30)
    assert p.returncode in (0, 130, -2)
