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
from streamer.events.schema import DEFAULT_MIN_TS_S, parse_iso_ts
from streamer.kafka_io import TopicSpec, ensure_topics, produce_events
from streamer.settings import Settings
from streamer.types import SystemClock

_LEAD_MAX = 10_000  # leading lines without a readable ts held back for the first one


def _line_ts_ms(obj: object, max_ts_s: float) -> int | None:
    """Return the event time (ms) of a decoded line, or None if the decoder would refuse it.

    ``ts`` in seconds or as an ISO-8601 string, within the decoder's default bounds
    (:data:`~streamer.events.schema.DEFAULT_MIN_TS_S` to ``max_ts_s``): a line whose
    ``ts`` is in milliseconds or far in the future is dead-lettered by the worker, and
    as a record timestamp it would end a ``--until`` range early.
    """
    if not isinstance(obj, dict):
        return None
    ts = obj.get("ts")
    try:
        if isinstance(ts, str):
            ts = parse_iso_ts(ts)
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) \
                and DEFAULT_MIN_TS_S <= ts <= max_ts_s:
            return int(ts * 1000)
    except (ValueError, OverflowError):
        pass
    return None


def _file_messages(path: Path, max_ts_s: float
                   ) -> Iterator[tuple[bytes | None, bytes, int | None]]:
    """Yield ``(key, value, ts_ms)`` per line of a JSONL file; lines go out as they are.

    The record timestamp is the event time (ms): the line's ``ts`` in seconds, or its
    ISO-8601 ``ts`` string (as the decoder reads it), if the decoder would accept it
    (see :func:`_line_ts_ms`; ``max_ts_s`` is wall seconds now plus the tolerated
    future). A line without one (not JSON, no ``ts``, a bad one) gets the previous
    line's timestamp, and leading such lines the first readable one's, so that they
    stay where they are in event time and a time-bounded backfill (``--until``) does
    not stop on them; only a file with no readable ``ts`` in its first 10,000 lines
    leaves them to the broker's wall clock. A line that is not a JSON object with a
    string ``user_id`` is still produced (the worker dead-letters it with its reason),
    keyed ``None``.
    """
    last_ms: int | None = None
    lead: list[tuple[bytes | None, bytes]] = []
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            key: bytes | None = None
            ts_ms: int | None = None
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                ts_ms = _line_ts_ms(obj, max_ts_s)
                user = obj.get("user_id")
                if isinstance(user, str):
                    try:
                        key = user.encode()
                    except UnicodeEncodeError:  # a lone surrogate: dead-lettered anyway
                        key = None
            if ts_ms is None:
                if last_ms is None and len(lead) < _LEAD_MAX:
                    lead.append((key, line))
                    continue
                ts_ms = last_ms
            for k, v in lead:
                yield k, v, ts_ms
            lead = []
            last_ms = ts_ms
            yield key, line, ts_ms
    for k, v in lead:  # no readable ts at all
        yield k, v, None


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
        now_s = SystemClock().now_s()  # the decoder's far-future bound, read once
        messages = _file_messages(file, now_s + settings.max_future_s)
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
