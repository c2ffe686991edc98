"""The broker of a benchmark: STREAMER_KAFKA_BOOTSTRAP, or a fresh `scripts/kafka-local`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"


def start_broker(default_port: str) -> tuple[str, bool]:
    """Return ``(bootstrap, started)``: the configured broker, or a fresh local one.

    The local broker listens on ``STREAMER_BENCH_KAFKA_PORT`` (else ``default_port``) with
    fresh data; ``started`` says whether :func:`stop_broker` must stop it.

    Raises
    ------
    subprocess.CalledProcessError
        If ``scripts/kafka-local start`` fails (e.g. the port is taken).
    """
    boot = os.environ.get("STREAMER_KAFKA_BOOTSTRAP")
    if boot:
        return boot, False
    port = os.environ.get("STREAMER_BENCH_KAFKA_PORT", default_port)
    out = subprocess.run([str(KAFKA_LOCAL), "start", "--fresh", "--port", port],  # noqa: S603
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1], True


def stop_broker(bootstrap: str) -> None:
    """Stop the local broker listening at ``bootstrap`` (errors ignored)."""
    subprocess.run([str(KAFKA_LOCAL), "stop", "--port", bootstrap.rsplit(":", 1)[1]],  # noqa: S603
                   check=False, capture_output=True)
