"""``streamer backfill``: replay ``engagements`` into a type version (see :mod:`streamer.cli`).

    streamer backfill --type wiki-cooc.v3 --from 2014-01-01 --until latest
    streamer backfill --type wiki-cooc --from earliest          # then follows the stream

Times are event times (the records' Kafka timestamps): ISO-8601 (no UTC offset = UTC)
or epoch seconds. See :mod:`streamer.backfill` for the range, order and delivery rules.

Exit codes: 0 done (the bounded range applied, or follow mode stopped by SIGINT/SIGTERM);
1 runtime failure; 2 bad argument (one line on stderr: unknown or retired type, bad
time, reversed range, the version's table in use); 130 a bounded backfill stopped by
SIGINT/SIGTERM before its end (run the same command again to resume).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from streamer.backfill import DEFAULT_BATCH, MAX_BATCH

INTERRUPTED = 130
"""Exit code of a bounded backfill stopped by a signal before it reached ``--until``."""

STATUS_EVERY_S = 10.0
"""Wall seconds between catch-up status lines when stderr is not a terminal."""

err = Console(stderr=True)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM (a second SIGINT aborts at once); restore after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        err.print(f"{signal.Signals(signum).name}: stopping after the current batch commits",
                  highlight=False)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Bar:
    """A rich progress bar on stderr for the catch-up: events/s, ETA, lag."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]backfill[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} ev/s"), TextColumn("lag {task.fields[lag]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False)
        self._task: Any = None

    def update(self, p: Any) -> None:
        if p.phase != "catch-up":
            self.stop()
            return
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("backfill", total=p.total, rate="0", lag=p.lag)
        self._bar.update(self._task, completed=p.applied, rate=f"{p.events_per_s:,.0f}",
                         lag=f"{p.lag:,}")

    def stop(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


class _Lines:
    """Catch-up progress as one status line every ``every_s`` wall seconds (no terminal).

    For logs and CI, where a progress bar is not drawn. ``clock`` returns wall seconds
    (injectable for tests).
    """

    def __init__(self, console: Console, every_s: float = STATUS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.every_s, self.clock = console, every_s, clock
        self._next = clock() + every_s

    def update(self, p: Any) -> None:
        if p.phase != "catch-up" or self.clock() < self._next:
            return
        self._next = self.clock() + self.every_s
        share = f" ({p.applied / p.total:.0%})" if p.total else ""
        self.console.print(f"catch-up: {p.applied:,} of {p.total:,} records applied{share}, "
                           f"{p.events_per_s:,.0f} events/s, lag {p.lag:,}",
                           highlight=False, soft_wrap=True)


def backfill_cmd(
    type_ref: Annotated[str, typer.Option(
        "--type", metavar="NAME[.vN]", envvar="STREAMER_TYPE",
        help="Type version to fill: NAME.vN, or NAME for its highest declared version")],
    start: Annotated[str, typer.Option(
        "--from", metavar="earliest|TIME", envvar="STREAMER_BACKFILL_FROM",
        help="Start: 'earliest', or an event time (ISO-8601, no offset = UTC; or epoch "
             "seconds): each partition's first record at or after it")] = "earliest",
    until: Annotated[str | None, typer.Option(
        "--until", metavar="latest|TIME", envvar="STREAMER_BACKFILL_UNTIL",
        help="Stop (exclusive): 'latest' (the end offsets at start) or an event time. "
             "Without it: catch up, then follow the live stream until SIGINT/SIGTERM")] = None,
    batch: Annotated[int, typer.Option(
        envvar="STREAMER_BACKFILL_BATCH",
        help="Records per engine batch (one atomic commit each)")] = DEFAULT_BATCH,
    quiet: Annotated[bool, typer.Option(
        "--quiet", help="No progress bar and no periodic status; summary lines only (without "
        "a terminal, the catch-up prints a status line every 10 s instead of a bar)")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a final JSON summary on stdout")] = False,
) -> None:
    """Replay engagements from Kafka into a type version, as fast as possible.

    Reads <prefix>engagements from --from, after what the version's table already holds.

    Applies them in a deterministic order to the version's own feature table.

    A running worker of that version is refused (one writer per table).

    Bad messages go to the dead-letter topic; vectors to embeddings.<type>.v<n>.

    Then stops at --until, or follows the live stream until SIGINT/SIGTERM.

    `streamer types promote NAME.vN` then switches readers to the new version.
    """
    from streamer.backfill import Progress, resolve_target, run_backfill
    from streamer.backfill_plan import check_range, parse_bound
    from streamer.cli import _settings

    lo = parse_bound(start, option="--from")
    hi = None if until is None else parse_bound(until, option="--until")
    check_range(lo, hi)
    if not 1 <= batch <= MAX_BATCH:
        from streamer.errors import BadRequest

        msg = (f"--batch {batch}; expected an integer from 1 to {MAX_BATCH:,} (records per "
               "engine batch, held in memory at once)")
        raise BadRequest(msg)
    settings = _settings()
    spec, note = resolve_target(type_ref)
    err.print(note, highlight=False, soft_wrap=True)
    bar = _Bar(err) if err.is_terminal and not quiet else None
    lines = _Lines(err) if not err.is_terminal and not quiet else None

    def on_progress(p: Progress) -> None:
        if bar is not None:
            bar.update(p)
        if lines is not None:
            lines.update(p)

    def on_status(text: str) -> None:
        if quiet and text.startswith("following:"):
            return
        if bar is not None and text.startswith(("catch-up done", "catch-up stopped")):
            bar.stop()
        err.print(text, highlight=False, soft_wrap=True)

    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            summary = run_backfill(settings, spec, start=lo, until=hi, batch=batch,
                                   on_progress=on_progress, on_status=on_status, stop=stop)
    finally:
        if bar is not None:
            bar.stop()
    secs = summary.catch_up_s
    reasons = ", ".join(f"{r} {n}" for r, n in summary.rejected_by_reason.items())
    err.print(f"{spec.name}.v{spec.version}: {summary.applied} records applied "
              f"({summary.accepted} accepted, {summary.rejected} rejected"
              f"{f': {reasons}' if reasons else ''}); catch-up "
              f"{summary.catch_up_applied} in {secs:.1f} s ({summary.events_per_s:,.0f} "
              f"events/s){'; stopped by signal' if summary.interrupted else ''}",
              highlight=False, soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json(), sort_keys=True) + "\n")
        sys.stdout.flush()
    if hi is not None and not summary.complete:
        raise typer.Exit(INTERRUPTED)
