"""Run `streamer worker` / `streamer serve` as real subprocesses (integration tests, benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_HANDED_OUT: set[int] = set()


def fill_engagements(bootstrap: str, prefix: str, dataset: str, *, limit: int | None = None,
                     partitions: int = 4) -> list[tuple[bytes, bytes, int]]:
    """Create ``<prefix>engagements`` (+ its dead-letter topic) and produce a data set into it.

    Parameters
    ----------
    bootstrap, prefix
        Broker and topic prefix of the test.
    dataset
        A :func:`streamer.datasets.load_wire` data set name (read from the data dir).
    limit
        Produce only the first ``limit`` events (default: all).
    partitions
        Partitions of both topics (kept forever: ``retention.ms=-1``).

    Returns
    -------
    list of (key, value, timestamp_ms)
        The messages produced, in order.

    Raises
    ------
    AssertionError
        If the broker acknowledged another number of records.
    """
    import itertools

    from streamer.datasets import load_wire
    from streamer.kafka_io import TopicSpec, ensure_topics, produce_events

    keep = {"retention.ms": "-1"}
    ensure_topics(bootstrap, {
        f"{prefix}engagements": TopicSpec(partitions=partitions, configs=keep),
        f"{prefix}engagements.deadletter": TopicSpec(partitions=partitions, configs=keep),
    })
    wire = list(itertools.islice(load_wire(dataset), limit))
    total = produce_events(bootstrap, f"{prefix}engagements", wire, rate=None)
    assert total == len(wire), (total, len(wire))
    return wire


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago.

    Never the same port twice in one process, so processes started side by side (two
    workers, a worker and a serve) do not race for one port the OS handed out twice.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    msg = "no fresh free port on 127.0.0.1 after 100 tries"
    raise OSError(msg)


class WorkerProcess:
    """A `python -m streamer worker --type T` subprocess with its /metrics page.

    Each instance takes its own web port (a fresh one on every start) and its own
    consumer group, so several workers of different types can run side by side on one
    input topic.

    Parameters
    ----------
    type_name
        Embedding type to run.
    bootstrap, state_dir, prefix, group
        ``STREAMER_KAFKA_BOOTSTRAP``, ``STREAMER_STATE_DIR``, ``STREAMER_TOPIC_PREFIX``,
        ``STREAMER_CONSUMER_GROUP`` of the worker.
    log_path
        File that receives the worker's stdout and stderr (appended).
    extra_env
        More environment variables.
    noop
        Pass ``--noop``.
    init_from
        Pass ``--init-from TYPE``.
    command
        Run this argv instead of ``python -m streamer worker --type T ...`` (e.g. the
        CLI with a test-only type declared); the environment is the same.
    """

    def __init__(self, type_name: str, *, bootstrap: str, state_dir: Path, prefix: str,
                 group: str, log_path: Path, extra_env: dict[str, str] | None = None,
                 noop: bool = False, init_from: str | None = None,
                 command: list[str] | None = None):
        self.type_name = type_name
        self.noop = noop
        self.init_from = init_from
        self.command = command
        self.port = free_port()
        self.env = {
            **os.environ,
            "STREAMER_KAFKA_BOOTSTRAP": bootstrap,
            "STREAMER_STATE_DIR": str(state_dir),
            "STREAMER_TOPIC_PREFIX": prefix,
            "STREAMER_CONSUMER_GROUP": group,
            "STREAMER_WORKER__WEB_PORT": str(self.port),
            "STREAMER_WORKER__SESSION_TIMEOUT_S": "10",
            "STREAMER_WORKER__HEARTBEAT_INTERVAL_S": "1",
            **(extra_env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start (or restart) the worker subprocess in its own session."""
        self.port = free_port()
        self.env["STREAMER_WORKER__WEB_PORT"] = str(self.port)
        log = self.log_path.open("ab")
        argv = self.command or [
            sys.executable, "-m", "streamer", "worker", "--type", self.type_name,
            *(["--noop"] if self.noop else []),
            *(["--init-from", self.init_from] if self.init_from else [])]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        """Return True while the subprocess runs."""
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict | None:
        """Return the worker's /metrics JSON, or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def applied(self) -> int:
        """Sum over partitions of (stored offset + 1), i.e. messages consumed."""
        m = self.metrics()
        if not m:
            return 0
        return sum(o + 1 for o in m["offsets"].values())

    def wait_applied(self, total: int, timeout_s: float = 300) -> dict:
        """Wait until ``total`` messages are applied; return the metrics.

        Raises
        ------
        AssertionError
            If the worker dies or the timeout (wall s) passes.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                msg = f"worker died; log:\n{self.tail_log()}"
                raise AssertionError(msg)
            m = self.metrics()
            if m and sum(o + 1 for o in m["offsets"].values()) >= total:
                return m
            time.sleep(0.3)
        msg = (f"worker did not catch up to {total} in {timeout_s}s "
               f"(at {self.applied()}); log:\n{self.tail_log()}")
        raise AssertionError(msg)

    def wait_bench_idle(self, min_snapshots: int, timeout_s: float = 180,
                        metrics: dict | None = None) -> dict:
        """Wait until ``min_snapshots`` scheduled snapshots exist and no task runs.

        The last snapshot's tasks run in a background thread after the events are
        applied. Returns the last metrics seen (``metrics`` if the worker never
        answered); gives up quietly after ``timeout_s`` wall seconds, so the caller's
        assertions say what is missing.
        """
        last = metrics or {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.metrics() or last
            b = last.get("bench", {})
            if b.get("snapshots", 0) >= min_snapshots and not b.get("busy", True):
                break
            time.sleep(0.5)
        return last

    def kill(self) -> None:
        """SIGKILL the worker's process group and wait for it."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM the worker (SIGKILL after ``timeout_s``); return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return self.proc.returncode

    def tail_log(self, n: int = 60) -> str:
        """Return the last ``n`` lines of the log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class ServeProcess:
    """`python -m streamer serve` on a free port, as a context manager."""

    def __init__(self, *types: str, bootstrap: str, prefix: str, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.types = types
        self.env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": bootstrap,
                    "STREAMER_TOPIC_PREFIX": prefix}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        args = [sys.executable, "-m", "streamer", "serve", "--port", str(self.port)]
        for t in self.types:
            args += ["--type", t]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args, env=self.env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        return self

    def wait_caught_up(self, type_name: str, expected: int, timeout_s: float) -> dict:
        """Wait until serve reports ``type_name`` caught up with ``expected`` ids."""
        deadline = time.monotonic() + timeout_s
        last: dict = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback http URL we built
                        f"{self.url}/v1/types/{type_name}", timeout=2) as r:
                    last = json.loads(r.read())
                if last.get("caught_up") and last.get("entities", 0) >= expected:
                    return last
            except OSError:
                pass
            time.sleep(0.3)
        msg = f"serve not caught up: {last}; log:\n{self.log_path.read_text()}"
        raise AssertionError(msg)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
