"""``streamer bench --check`` and friends on hand-written result logs (no worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli_bench import open_alerts_of

ALERT = {"kind": "alert", "type": "demo-cooc", "version": 1, "series": "prequential.mrr",
         "detector": "page_hinkley", "value": 0.1, "at": 70, "event_time": 5.0,
         "message": "prequential.mrr fell: page_hinkley detected a change"}


def _status(active: list[dict]) -> dict:
    return {"kind": "status", "type": "demo-cooc", "version": 1, "snapshot": "000001",
            "event_time": 6.0, "active_alerts": active}


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"STREAMER_STATE_DIR": str(tmp), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "streamer", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)


def _write(tmp: Path, recs: list[dict]) -> None:
    d = tmp / "snapshots" / "demo-cooc.v1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_open_alerts_follow_the_latest_status():
    assert open_alerts_of([ALERT]) == [ALERT]  # no status yet: every alert is open
    assert open_alerts_of([ALERT, _status([ALERT])]) == [ALERT]
    assert open_alerts_of([ALERT, _status([ALERT]), _status([])]) == []  # resolved
    later = {**ALERT, "at": 90}
    assert open_alerts_of([ALERT, _status([]), later]) == [later]  # raised after it


@pytest.mark.parametrize(("recs", "code", "text"), [
    ([ALERT, _status([ALERT])], 3, "ALERT demo-cooc v1 prequential.mrr [page_hinkley]"),
    ([ALERT, _status([])], 0, "no open drift alerts (demo-cooc)"),
    ([], 2, "no benchmark results to check"),
])
def test_check_exit_codes(tmp_path, recs, code, text):
    if recs:
        _write(tmp_path, recs)
    res = _cli(tmp_path, "bench", "--check", "--type", "demo-cooc")
    assert res.returncode == code, res.stderr
    assert text in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "env_extra", "text"), [
    (["bench", "--check", "linkpred"], {}, "--check takes no subcommand"),
    (["bench", "report", "demo-cooc", "--out", "/proc/nope"], {"results": True},
     "cannot write the report"),
    (["bench", "run", "demo-cooc", "--task", "metadata:wikipedia"], {}, "metadata"),
    (["worker", "--type", "demo-cooc"], {"STREAMER_BENCH__TASKS": "stability"},
     "list and mapping settings take JSON"),
    (["backfill", "--type", "wiki-cooc", "--until", "latest"],
     {"STREAMER_STATE_DIR": "/etc/passwd"}, "'/etc/passwd' exists and is not a directory"),
    (["worker", "--type", "demo-cooc"], {"STREAMER_STATE_DIR": "/etc/passwd"},
     "bad setting STREAMER_STATE_DIR: '/etc/passwd' exists"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, env_extra, text):
    if env_extra.pop("results", False):
        _write(tmp_path, [{"kind": "result", "type": "demo-cooc", "version": 1,
                           "snapshot": "000001", "event_time": 1.0, "task": "prequential",
                           "dataset": "", "metrics": {"mrr": 0.3}, "baselines": {}}])
    env = {"STREAMER_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", **env_extra}
    res = subprocess.run([sys.executable, "-m", "streamer", *args], env=env,  # noqa: S603
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert text in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
