"""``streamer produce``: load a data set or a JSONL file into a topic (kafka-python).

The record key is the event's ``user_id`` (DESIGN §2) and the record timestamp its
event time in ms. Topics are created first with explicit partition counts and
``retention.ms=-1`` (an existing topic with another partition count is an error).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamer.datasets import load_wire
from streamer.errors import ConfigError
from streamer.events.schema import parse_iso_ts
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events
from streamer.settings import Settings


def _file_messages(path: Path) -> Iterator[tuple[bytes | None, bytes, int | None]]:
    """Yield ``(key, value, ts_ms)`` per line of a JSONL file; lines go out as they are.

    The record timestamp is the event time (ms): the line's ``ts`` in seconds, or its
    ISO-8601 ``ts`` string (as the decoder reads it). A line without a readable ``ts``
    (not JSON, no ``ts``, a bad one) gets the previous line's timestamp, so that it stays
    where it is in event time and a time-bounded backfill (``--until``) does not stop on
    it; the first lines without one get none (the broker's wall clock). A line that is
    not a JSON object with a string ``user_id`` is still produced (the worker
    dead-letters it with its reason), keyed ``None``.
    """
    last_ms: int | None = None
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            key: bytes | None = None
            ts_ms: int | None = None
            try:
                obj = json.loads(line)
                if isinstance(obj, dict):
                    if isinstance(obj.get("user_id"), str):
                        key = obj["user_id"].encode()
                    ts = obj.get("ts")
                    if isinstance(ts, str):
                        ts = parse_iso_ts(ts)
                    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts == ts \
                            and 0 <= ts < 1e13:
                        ts_ms = int(ts * 1000)
            except (ValueError, UnicodeDecodeError, OverflowError):
                pass
            if ts_ms is None:
                ts_ms = last_ms
            last_ms = ts_ms
            yield key, line, ts_ms


def produce_command(
    settings: Settings,
    *,
    dataset: str | None,
    file: Path | None,
    data_dir: Path | None,
    topic: str,
    rate: float | None,
    partitions: int,
    console: Console,
) -> int:
    """Create ``topic`` if needed and produce the data set or file into it.

    Returns
    -------
    int
        Messages produced.

    Raises
    ------
    ConfigError
        Unknown data set, missing file, or a topic with another partition count.
    """
    if file is not None:
        if not file.is_file():
            msg = f"--file {file}: no such file; expected a JSONL file of events"
            raise ConfigError(msg)
        messages = _file_messages(file)
        label = str(file)
    else:
        assert dataset is not None
        messages = load_wire(dataset, data_dir or settings.data_dir)  # type: ignore[assignment]
        label = dataset
    ensure_topics(settings.kafka_bootstrap, {
        topic: TopicSpec(partitions=partitions, configs={"retention.ms": "-1"}),
        settings.topic("engagements.deadletter"): TopicSpec(partitions=partitions,
                                            configs={"retention.ms": "-1"}),
    })
    with Progress(TextColumn(f"producing {label} -> {topic}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("produce", total=None, rate="")

        def on_progress(n: int) -> None:
            progress.update(task, completed=n)

        return produce_events(settings.kafka_bootstrap, topic, messages, rate=rate,
                              progress=on_progress)
