"""Partition-scoped state: the changelog mirror and restore_partitions (scale-out, issue 6).

A fake in-memory changelog stands in for the Kafka topic here (the Kafka one is tested
on a real broker in tests/integration/test_scale_out.py); the engines, learners and
RocksDB tables are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.engine import Engine, PartitionState, RawMessage, open_engine
from streamer.errors import StateError
from streamer.events.deadletter import MemoryDeadLetters
from streamer.topology import TopologySpec
from streamer.types import ManualClock
from tests.unit.test_engine import NOW, SPEC, _stream

SGNS = TopologySpec(name="t-sgns", algorithm="sgns",
                    params={"dim": 8, "capacity": 512, "noise_table_size": 512, "seed": 1})


class MemoryChangelog:
    """The compacted changelog topic as a dict: latest value per key, per partition."""

    def __init__(self) -> None:
        self.parts: dict[int, PartitionState] = {}
        self.fail = False
        self.writes = 0

    def write(self, records: dict[int, dict[bytes, bytes | None]],
              offsets: dict[tuple[str, int], int]) -> None:
        if self.fail:
            raise RuntimeError("changelog down")
        self.writes += 1
        for p, recs in records.items():
            st = self.parts.setdefault(p, PartitionState(p))
            for k, v in recs.items():
                if v is None:
                    st.records.pop(k, None)
                else:
                    st.records[k] = v
        for (t, p), o in offsets.items():
            self.parts.setdefault(p, PartitionState(p)).offsets[t] = o

    def read(self, partitions: list[int]) -> dict[int, PartitionState]:
        return {p: PartitionState(p, dict(self.parts[p].offsets), dict(self.parts[p].records))
                if p in self.parts else PartitionState(p) for p in partitions}


def _engine(path: Path, changelog: MemoryChangelog | None, spec: TopologySpec = SPEC) -> Engine:
    return open_engine(spec, state_dir=path, dead_letters=MemoryDeadLetters(),
                       clock=ManualClock(NOW), with_index=False, changelog=changelog)


def _features(eng: Engine) -> dict:
    return {k: (r.vector.tobytes(), r.updated_at, r.update_count)
            for k, r in eng.table.iter_features()}


def _state(eng: Engine) -> dict:
    # the counters are per worker (accepted/rejected of the batches it processed)
    return {k: v for k, v in eng.table.iter_state() if not k.startswith(b"C/")}


def _feed(eng: Engine, msgs: list[RawMessage], size: int = 53) -> None:
    for s in range(0, len(msgs), size):
        eng.process(msgs[s:s + size])


@pytest.fixture
def stream() -> list[RawMessage]:
    return _stream(n=1200, seed=5)


@pytest.fixture
def reference(tmp_path, stream) -> Engine:
    eng = _engine(tmp_path / "ref", None)
    _feed(eng, stream, 200)
    return eng


def test_the_changelog_mirrors_each_partitions_local_state_exactly(tmp_path, stream):
    cl = MemoryChangelog()
    eng = _engine(tmp_path / "a", cl)
    _feed(eng, stream)
    local = eng.partition_states(range(4))
    for p in range(4):
        assert cl.parts[p].offsets == local[p].offsets
        assert cl.parts[p].records == local[p].records
        assert local[p].records  # every partition holds learner and dedup state
    assert any(k.startswith(b"D/") for k in local[0].records)


def test_a_partition_moves_to_another_worker_and_back_ending_in_the_single_worker_state(
        tmp_path, stream, reference):
    """A owns all 4 partitions, B takes 2 and 3, B dies, A takes them back."""
    cl = MemoryChangelog()
    a = _engine(tmp_path / "a", cl)
    first, rest = stream[:500], stream[500:]
    _feed(a, first)
    b = _engine(tmp_path / "b", cl)
    res = b.restore_partitions(cl.read([2, 3]))
    assert res.restored == [2, 3] and res.kept == []
    # B's state of 2 and 3 is A's, bit for bit
    assert b.partition_states([2, 3]) == a.partition_states([2, 3])
    mine = [m for m in rest if m.partition in (0, 1)]
    theirs = [m for m in rest if m.partition in (2, 3)]
    _feed(a, mine)
    _feed(b, theirs[: len(theirs) // 2])
    # B is SIGKILLed here; A gets 2 and 3 back from the changelog (B's progress) ...
    res = a.restore_partitions(cl.read([0, 1, 2, 3]))
    assert res.restored == [2, 3] and res.kept == [0, 1]
    assert res.rewritten == len(_features(a))
    # ... and re-reads what B had not applied: the engine skips what it already has
    out = a.process(theirs)
    assert out.skipped == len(theirs) // 2
    assert _features(a) == _features(reference)
    assert a.offsets() == reference.offsets()
    assert _state(a) == _state(reference)


def test_restore_keeps_a_partition_that_is_not_behind(tmp_path, stream):
    cl = MemoryChangelog()
    a = _engine(tmp_path / "a", cl)
    _feed(a, stream[:300])
    before = _features(a)
    res = a.restore_partitions(cl.read([0, 1, 2, 3]))
    assert res.restored == [] and res.kept == [0, 1, 2, 3] and res.rewritten == 0
    # an older changelog state (behind the table) is never applied either
    stale = {p: PartitionState(p, {t: o - 5 for t, o in st.offsets.items()}, {})
             for p, st in cl.read([0, 1]).items()}
    assert a.restore_partitions(stale).restored == []
    assert _features(a) == before


def test_a_restart_after_a_changelog_write_without_local_commit_restores_from_it(
        tmp_path, stream, reference):
    """The changelog is written first: a crash before the local commit leaves it ahead."""
    cl = MemoryChangelog()
    a = _engine(tmp_path / "a", cl)
    _feed(a, stream[:400])
    # simulate the crash window: the changelog got the next batch, the table did not
    shadow = _engine(tmp_path / "shadow", MemoryChangelog())
    shadow.restore_partitions(cl.read([0, 1, 2, 3]))
    shadow.changelog = cl
    shadow.process(stream[400:450])
    table_offsets = a.offsets()
    assert cl.read([0])[0].ahead_of({t: o for (t, p), o in table_offsets.items() if p == 0})
    res = a.restore_partitions(cl.read([0, 1, 2, 3]))
    assert res.restored  # the partitions the lost batch touched
    _feed(a, stream[400:])
    assert _features(a) == _features(reference)
    assert _state(a) == _state(reference)


def test_a_failed_changelog_write_commits_nothing(tmp_path, stream):
    cl = MemoryChangelog()
    a = _engine(tmp_path / "a", cl)
    _feed(a, stream[:100])
    offsets, feats = a.offsets(), _features(a)
    cl.fail = True
    with pytest.raises(RuntimeError, match="changelog down"):
        a.process(stream[100:150])
    assert a.table.offsets() == offsets
    assert _features(a) == feats


def test_a_shared_model_has_no_partition_state(tmp_path):
    cl = MemoryChangelog()
    eng = _engine(tmp_path / "s", cl, SGNS)
    assert eng.changelog is None  # sgns: one model for every partition
    eng.process(_stream(n=100, seed=1))
    assert cl.writes == 0
    key = next(k for k, _ in eng.table.iter_state() if k.startswith(b"L/"))
    with pytest.raises(StateError, match="shared model"):
        eng.state_partition(key)


def test_restore_refuses_a_record_of_another_partition(tmp_path, stream):
    cl = MemoryChangelog()
    a = _engine(tmp_path / "a", cl)
    _feed(a, stream[:200])
    b = _engine(tmp_path / "b", None)
    wrong = cl.read([1])[1]
    bad = {2: PartitionState(2, {t: o for t, o in wrong.offsets.items()}, wrong.records)}
    with pytest.raises(StateError, match="another partition"):
        b.restore_partitions(bad)
    assert b.table.offsets() == {}
