"""Dead-letter sinks for :class:`~streamer.events.decode.Rejected` messages (DESIGN §2).

The worker never stops on bad input: every rejection goes to a sink with its reason,
source position and raw bytes. Sinks here:

* :class:`JsonlDeadLetters`: a file, one JSON object per line (demo mode);
* :class:`MemoryDeadLetters`: a list (tests).

The Kafka sink (topic ``engagements.deadletter``, reason in headers) lives in the
runtime; :class:`streamer.runtime.kafka_sinks.KafkaDeadLetters` is that sink.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from streamer.errors import ConfigError
from streamer.events.decode import Rejected
from streamer.events.schema import dumps


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where rejected messages go.

    ``send`` may buffer; ``flush`` makes everything sent so far durable (the worker
    flushes dead letters before it commits offsets, so none is lost on a crash).
    """

    def send(self, rejected: Rejected) -> None:
        """Record one rejected message."""
        ...

    def flush(self) -> None:
        """Make every record sent so far durable."""
        ...

    @property
    def counts(self) -> dict[str, int]:
        """Return records sent so far per reason (a copy)."""
        ...


class MemoryDeadLetters:
    """In-memory sink: keeps every :class:`Rejected` in :attr:`items` (tests, demo).

    Examples
    --------
    >>> sink = MemoryDeadLetters()
    >>> sink.send(Rejected("not_json", "truncated", "t", 0, 5, b"{"))
    >>> sink.counts, len(sink)
    ({'not_json': 1}, 1)
    """

    def __init__(self) -> None:
        self.items: list[Rejected] = []
        self._counts: dict[str, int] = {}
        self.flushes = 0

    def send(self, rejected: Rejected) -> None:
        """Append ``rejected`` to :attr:`items`."""
        self.items.append(rejected)
        self._counts[rejected.reason] = self._counts.get(rejected.reason, 0) + 1

    def flush(self) -> None:
        """Count the call (nothing to make durable)."""
        self.flushes += 1

    @property
    def counts(self) -> dict[str, int]:
        """Return records sent so far per reason (a copy)."""
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Rejected]:
        return iter(self.items)


class JsonlDeadLetters:
    """Append rejected messages to a JSON-lines file (one :meth:`Rejected.to_dict` per line).

    The file (and its parent folder) is created on the first :meth:`send`; existing
    content is kept (append mode), so restarts add to it. Lines are buffered and
    written on :meth:`flush` (and when the buffer fills); ``fsync=True`` also forces
    them to disk on :meth:`flush`.

    Parameters
    ----------
    path
        File to append to, e.g. ``var/deadletters.jsonl``.
    fsync
        Call :func:`os.fsync` on every :meth:`flush` (default True).

    Raises
    ------
    ConfigError
        From :meth:`send`/:meth:`flush`, if the file cannot be opened or written.

    Notes
    -----
    Not thread-safe; one writer per file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "dl.jsonl"
    >>> with JsonlDeadLetters(p) as sink:
    ...     sink.send(Rejected("bad_ts", "ts 'x' is not ISO-8601", "engagements", 1, 9, b"{}"))
    >>> [r.reason for r in JsonlDeadLetters.read(p)]
    ['bad_ts']
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._file: io.BufferedWriter | None = None
        self._counts: dict[str, int] = {}

    def send(self, rejected: Rejected) -> None:
        """Buffer one line for ``rejected``."""
        f = self._file or self._open()
        try:
            f.write(dumps(rejected.to_dict()) + b"\n")
        except OSError as exc:
            msg = f"cannot write dead letters to {self.path}: {exc}"
            raise ConfigError(msg) from exc
        self._counts[rejected.reason] = self._counts.get(rejected.reason, 0) + 1

    def flush(self) -> None:
        """Write buffered lines to the file (and fsync it if ``fsync``)."""
        if self._file is None:
            return
        try:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            msg = f"cannot flush dead letters to {self.path}: {exc}"
            raise ConfigError(msg) from exc

    def close(self) -> None:
        """Flush and close the file (a later :meth:`send` reopens it)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    @property
    def counts(self) -> dict[str, int]:
        """Return records sent through this instance per reason (a copy)."""
        return dict(self._counts)

    def __enter__(self) -> JsonlDeadLetters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> io.BufferedWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            msg = f"cannot open dead-letter file {self.path}: {exc}; check the path/permissions"
            raise ConfigError(msg) from exc
        return self._file

    @staticmethod
    def read(path: str | os.PathLike[str]) -> Iterator[Rejected]:
        """Yield the records of a dead-letter file, in order.

        Raises
        ------
        BadRequest
            If a line is not a dead-letter record.
        """
        import json

        from streamer.errors import BadRequest

        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    msg = f"{path}:{n} is not JSON ({exc}); expected a dead-letter record"
                    raise BadRequest(msg) from exc
                yield Rejected.from_dict(doc)
