"""Shared pytest fixtures.

Sections: add new fixtures in their own clearly titled section; keep each small.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------
# Kafka broker (integration tests; DESIGN §8)
#
# Integration tests always talk to a real Apache Kafka broker:
#   1. STREAMER_KAFKA_BOOTSTRAP (set by `scripts/quickstart test` / `.ci/run`, which start
#      one with `scripts/kafka-local start --fresh`), else
#   2. a testcontainers Kafka container when a Docker engine answers, else
#   3. the test FAILS with a message saying how to get a broker. It never skips.
# Mark such tests with ``@pytest.mark.integration``.
# ---------------------------------------------------------------------------------------

KAFKA_ENV = "STREAMER_KAFKA_BOOTSTRAP"
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"
# Confluent Platform 7.9 ships Apache Kafka 3.9 (the version kafka-local pins); the
# testcontainers KafkaContainer drives Confluent's image layout, not apache/kafka's.
TESTCONTAINERS_KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"


def _broker_answers(bootstrap: str) -> str | None:
    """Return None if a metadata request to `bootstrap` lists a live broker, else why not."""
    from kafka import KafkaAdminClient

    opts = {"bootstrap_timeout_ms": 10_000}  # kafka-python >= 3 only
    opts = {k: v for k, v in opts.items() if k in KafkaAdminClient.DEFAULT_CONFIG}
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="streamer-tests",
            request_timeout_ms=10_000,
            **opts,
        )
        try:
            brokers = admin.describe_cluster().get("brokers")
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - reported verbatim to the user
        return f"{type(exc).__name__}: {exc}"
    finally:
        logging.getLogger("kafka").setLevel(logging.NOTSET)
    return None if brokers else "metadata answered with no live broker"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no SDK, no socket, no daemon: all mean "no Docker"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address ("host:port") of a real Kafka broker for this test session."""
    bootstrap = os.environ.get(KAFKA_ENV, "").strip()
    if bootstrap:
        why = _broker_answers(bootstrap)
        if why is not None:
            pytest.fail(
                f"{KAFKA_ENV}={bootstrap} is set but no Kafka broker answers there ({why}); "
                "start one with `scripts/kafka-local start` or run `scripts/quickstart test`",
                pytrace=False,
            )
        yield bootstrap
        return
    if not _docker_answers():
        pytest.fail(
            f"integration tests need a real Kafka broker: {KAFKA_ENV} is unset and no Docker "
            "engine answers for testcontainers. Run `scripts/quickstart test` (starts one), or "
            f"`export {KAFKA_ENV}=$(scripts/kafka-local start)` before pytest",
            pytrace=False,
        )
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.10
        from testcontainers.kafka import KafkaContainer
    with KafkaContainer(TESTCONTAINERS_KAFKA_IMAGE).with_kraft() as container:
        yield container.get_bootstrap_server()


@pytest.fixture
def unique_topic() -> Callable[..., str]:
    """Factory of fresh topic names: ``unique_topic()`` -> ``"t-<hex>"``, ``unique_topic("x")``."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    return make


@dataclass(frozen=True)
class KafkaLocal:
    """Control of the `scripts/kafka-local` broker behind ``kafka_bootstrap`` (restart tests).

    ``stop()`` keeps the broker's data (topics, offsets, committed groups); ``start()``
    brings the same broker back and waits until it answers a metadata request.
    The port and data folder come from the environment that started it
    (STREAMER_KAFKA_PORT, STREAMER_KAFKA_DATA, STREAMER_CACHE_DIR).
    """

    bootstrap: str

    def _run(self, command: str) -> str:
        done = subprocess.run(
            [str(KAFKA_LOCAL), command, "--port", self.bootstrap.rsplit(":", 1)[1]],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/kafka-local {command} failed ({done.returncode}): {done.stderr}")
        return done.stdout.strip()

    def stop(self) -> None:
        """Stop the broker (TERM, then KILL after 30 s); its data folder is kept."""
        self._run("stop")

    def start(self) -> None:
        """Start the broker again on the same port and data; returns once it answers."""
        address = self._run("start")
        assert address == self.bootstrap, (address, self.bootstrap)


@pytest.fixture
def kafka_local(kafka_bootstrap: str) -> KafkaLocal:
    """The `scripts/kafka-local` broker, for tests that stop and restart it mid-stream.

    Fails (never skips) when the session's broker is not one that kafka-local runs,
    e.g. a testcontainers broker or an external STREAMER_KAFKA_BOOTSTRAP.
    """
    host, _, port = kafka_bootstrap.rpartition(":")
    status = subprocess.run(
        [str(KAFKA_LOCAL), "status", "--port", port], capture_output=True, text=True, check=False
    )
    if host != "127.0.0.1" or status.returncode != 0:
        pytest.fail(
            f"this test restarts the broker, so it needs one run by scripts/kafka-local; "
            f"{kafka_bootstrap} is not ({status.stdout.strip() or status.stderr.strip()}). "
            "Run it through `scripts/quickstart test`",
            pytrace=False,
        )
    return KafkaLocal(kafka_bootstrap)


# ---------------------------------------------------------------------------------------
# (other shared fixtures go below, each in its own section)
# ---------------------------------------------------------------------------------------
