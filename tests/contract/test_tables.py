"""Every feature table backend x every vector codec x every contract check (CONVENTIONS C3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.checks.tables import TableBackend, yield_checks
from streamer.store.memory import MemoryFeatureTable
from streamer.store.quant import CODECS
from streamer.store.rocks import RocksFeatureTable

MEMORY = TableBackend("memory", open=lambda d, dim, codec: MemoryFeatureTable(dim, codec))
ROCKS = TableBackend(
    "rocks",
    open=lambda d, dim, codec: RocksFeatureTable(d, dim, codec=codec),
    persistent=True,
    readers={
        "read_only": lambda d, dim, scratch: RocksFeatureTable(d, dim, read_only=True),
        "secondary": lambda d, dim, scratch: RocksFeatureTable(d, dim, secondary_path=scratch),
    },
    writer_ref="streamer.store.rocks:RocksFeatureTable",
)
BACKENDS = tuple(b.with_codec(c) for b in (MEMORY, ROCKS) for c in CODECS)


@pytest.mark.parametrize(
    ("backend", "check"),
    [pytest.param(b, c, id=f"{b.name}:{c.__name__}") for b in BACKENDS for c in yield_checks(b)],
)
def test_table_contract(backend: TableBackend, check, tmp_path: Path) -> None:
    check(backend, tmp_path)


def test_suite_covers_persistence_only_where_it_applies() -> None:
    memory_checks = {c.__name__ for c in yield_checks(MEMORY)}
    rocks_checks = {c.__name__ for c in yield_checks(ROCKS)}
    assert memory_checks < rocks_checks
    assert {
        "check_kill_9_keeps_batches_whole",
        "check_readers_see_writes_after_refresh",
        "check_second_writer_raises",
        "check_reopen_persists",
        "check_reopen_with_other_codec_raises",
    } <= rocks_checks - memory_checks
    assert "check_vectors_round_trip_through_the_codec" in memory_checks


def test_every_backend_runs_with_every_codec() -> None:
    assert sorted((b.name, b.codec) for b in BACKENDS) == sorted(
        (f"{base}-{c}", c) for base in ("memory", "rocks") for c in CODECS
    )
