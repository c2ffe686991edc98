"""Contract suite every :class:`~streamer.store.base.FeatureTable` backend passes (CONVENTIONS C3).

A backend is described by a :class:`TableBackend`; :func:`yield_checks` yields the checks
that apply to it (persistence, readers and crash checks only for persistent backends).
Each check is ``check(backend, tmp_dir) -> None`` and raises ``AssertionError`` on failure.
The oracle for the crash check is :class:`~streamer.store.memory.MemoryFeatureTable`
replaying the same batches.

A backend runs the suite with one vector storage codec (:attr:`TableBackend.codec`;
:meth:`TableBackend.with_codec` makes the variants). Every check that reads a vector back
compares it with :func:`stored`, the codec's reconstruction computed by the batch API of
:mod:`streamer.store.quant` (``dequantize(quantize(v))``), never with the float32 input.

Example (pytest)::

    CASES = [(b, c) for b in BACKENDS for c in yield_checks(b)]

    @pytest.mark.parametrize(("backend", "check"), CASES)
    def test_table_contract(backend, check, tmp_path):
        check(backend, tmp_path)
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from streamer.errors import BadRequest, ConfigError, DimensionMismatch, StateError
from streamer.store import quant
from streamer.store.base import MANIFEST_KEY, FeatureRecord, FeatureTable, claim_manifest
from streamer.store.memory import MemoryFeatureTable
from streamer.store.quant import CODECS, Codec

TableOpener = Callable[[Path, int, Codec], FeatureTable]
"""``open(table_dir, dim, codec)``: a writer on the table stored in ``table_dir`` (same dir =
reopen), storing vectors with ``codec``."""

ReaderOpener = Callable[[Path, int, Path], FeatureTable]
"""``open(table_dir, dim, scratch_dir)``: a reader of that table (scratch for its own files)."""

Check = Callable[["TableBackend", Path], None]


@dataclass(frozen=True)
class TableBackend:
    """How the contract suite opens one feature table implementation.

    Attributes
    ----------
    name
        Short id used in test names.
    open
        Opens a writer with a given codec; calling it again on the same directory
        reopens the table.
    persistent
        True when data survives :meth:`FeatureTable.close` and reopening.
    readers
        Reader kinds (e.g. ``read_only``, ``secondary``) and how to open them; a reader
        is opened without a codec and must use the one the table stores.
    writer_ref
        ``"module:callable"`` importable in a fresh interpreter, called as
        ``callable(table_dir, dim, codec=codec)`` to open a writer (for the lock and
        kill checks).
    codec
        The vector storage codec the checks open writers with.
    """

    name: str
    open: TableOpener
    persistent: bool = False
    readers: Mapping[str, ReaderOpener] = field(default_factory=dict)
    writer_ref: str | None = None
    codec: Codec = "float32"

    def writer(self, table_dir: Path, dim: int) -> FeatureTable:
        """Open a writer with this backend's codec (see :attr:`open`)."""
        return self.open(table_dir, dim, self.codec)

    def with_codec(self, codec: Codec) -> TableBackend:
        """Return this backend running the suite with ``codec`` (named ``<name>-<codec>``).

        Raises
        ------
        BadRequest
            If ``codec`` is not a codec.
        """
        quant.check_codec(codec)
        return replace(self, name=f"{self.name}-{codec}", codec=codec)


def _raises(exc_type: type[BaseException], call: Callable[[], object], what: str) -> BaseException:
    """Run ``call`` and return the ``exc_type`` it raised; fail if it raised nothing."""
    try:
        call()
    except exc_type as exc:
        return exc
    msg = f"{what} did not raise {exc_type.__name__}"
    raise AssertionError(msg)


def _rec(vec: object, ts: float = 1.0, count: int = 1, version: int = 1) -> FeatureRecord:
    return FeatureRecord(np.asarray(vec, np.float32), ts, count, version)


def stored(codec: Codec, rec: FeatureRecord) -> FeatureRecord:
    """Return what a table with ``codec`` gives back for ``rec``: the oracle of the suite.

    The vector is ``quant.dequantize(*quant.quantize(v[None], codec), codec)[0]`` (float32
    ``(dim,)``; ``v`` itself for ``float32``); the metadata are unchanged.
    """
    codes, scales = quant.quantize(rec.vector[None, :], codec)
    vec = quant.dequantize(codes, scales, codec)[0]
    return FeatureRecord(vec, rec.updated_at, rec.update_count, rec.model_version)


def _rec_tuple(rec: FeatureRecord) -> tuple[bytes, float, int, int]:
    return rec.vector.tobytes(), rec.updated_at, rec.update_count, rec.model_version


def dump(table: FeatureTable) -> tuple[object, ...]:
    """Return everything observable in a table (features, state, offsets, count), comparable."""
    return (
        [(k, _rec_tuple(r)) for k, r in table.iter_features()],
        list(table.iter_state()),
        table.offsets(),
        table.count(),
    )


# --------------------------------------------------------------------------- all backends


def check_empty_table(backend: TableBackend, tmp: Path) -> None:
    """Check that a new table is empty and knows its dim."""
    with backend.writer(tmp / "t", 3) as t:
        assert t.dim == 3
        assert t.codec == backend.codec
        assert t.count() == 0
        assert t.get("i:a") is None
        assert t.get_many(["i:a", "u:b"]) == [None, None]
        assert t.get_many([]) == []
        assert t.offsets() == {}
        assert list(t.iter_features()) == []
        assert list(t.iter_state()) == []
        assert t.get_meta("manifest") is None
        assert not t.read_only


def check_commit_then_read(backend: TableBackend, tmp: Path) -> None:
    """Check that everything one commit writes reads back bitwise, in the order asked.

    Vectors read back are the codec's reconstruction (:func:`stored`).
    """
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((3, 4)).astype(np.float32)
    vecs[2, 0] = np.float32(1e-45)  # a subnormal survives float32 (flushed by the others)
    recs = {
        "i:a": _rec(vecs[0], 10.5, 3, 2),
        "u:b": _rec(vecs[1], -1.0, 0, 0),
        "i:é→✓": _rec(vecs[2], 1.7e9, 2**62, 2**31 - 1),
    }
    want = {k: stored(backend.codec, r) for k, r in recs.items()}
    state = {b"w:1": b"x" * 1000, b"": b"empty key", b"z": b""}
    with backend.writer(tmp / "t", 4) as t:
        t.commit(recs, state, {("engagements", 0): 5, ("engagements", 1): 7})
        got = t.get_many(["u:b", "i:missing", "i:a", "i:a", "i:é→✓"])
        assert got[1] is None
        assert got[0] == want["u:b"] and got[2] == want["i:a"] and got[3] == want["i:a"]
        assert got[4] == want["i:é→✓"] and got[0] != want["i:a"]
        assert got[2].updated_at == 10.5 and got[2].update_count == 3 and got[2].model_version == 2
        assert got[4].vector.tobytes() == want["i:é→✓"].vector.tobytes()
        if backend.codec == "float32":
            assert got[4].vector.tobytes() == vecs[2].tobytes()
        assert got[0].vector.dtype == np.float32 and got[0].vector.shape == (4,)
        assert not got[0].vector.flags.writeable
        assert t.get("i:a") == want["i:a"]
        assert t.count() == 3
        assert t.offsets() == {("engagements", 0): 5, ("engagements", 1): 7}
        assert dict(t.iter_state()) == state
        assert {k: r for k, r in t.iter_features()} == want


def check_commit_copies_input(backend: TableBackend, tmp: Path) -> None:
    """Check that mutating a committed array changes nothing stored (nor the caller's flags)."""
    vec = np.array([1.0, 2.0], np.float32)
    rec = FeatureRecord(vec, 1.0, 1, 1)
    want = stored(backend.codec, rec).vector.tolist()
    assert vec.flags.writeable
    with backend.writer(tmp / "t", 2) as t:
        t.commit({"i:a": rec}, {}, {})
        vec[0] = 99.0
        got = t.get("i:a")
        assert got is not None
        assert got.vector.tolist() == want
        vector = got.vector

        def write_into_stored() -> None:
            vector[0] = 5.0

        _raises(ValueError, write_into_stored, "writing into a vector read from the table")
        assert t.get("i:a").vector.tolist() == want


def check_bad_commit_writes_nothing(backend: TableBackend, tmp: Path) -> None:
    """Check that a commit with any bad item raises the right error and writes nothing."""
    with backend.writer(tmp / "t", 2) as t:
        t.commit({"i:keep": _rec([1, 1])}, {b"s": b"0"}, {("e", 0): 1})
        before = dump(t)
        good_f = {"i:new": _rec([2, 2]), "i:keep": None}
        good_s = {b"s": b"1", b"t": b"2"}
        good_o = {("e", 0): 2, ("e", 1): 3}
        bad_cases: list[tuple[type[Exception], tuple[object, object, object]]] = [
            (DimensionMismatch, ({**good_f, "i:z": _rec([1, 2, 3])}, good_s, good_o)),
            (BadRequest, ({**good_f, 7: _rec([1, 2])}, good_s, good_o)),
            (BadRequest, ({**good_f, "": _rec([1, 2])}, good_s, good_o)),
            (BadRequest, ({**good_f, "i:\ud800": _rec([1, 2])}, good_s, good_o)),
            (BadRequest, ({**good_f, "i:x": np.ones(2, np.float32)}, good_s, good_o)),
            (BadRequest, (good_f, {**good_s, "str-key": b"v"}, good_o)),
            (BadRequest, (good_f, {**good_s, b"k": "str-value"}, good_o)),
            (BadRequest, (good_f, good_s, {**good_o, ("e", -1): 4})),
            (BadRequest, (good_f, good_s, {**good_o, ("e", 2): -5})),
            (BadRequest, (good_f, good_s, {**good_o, ("", 2): 5})),
            (BadRequest, (good_f, good_s, {**good_o, "e": 5})),
            (BadRequest, (list(good_f.items()), good_s, good_o)),
        ]
        if backend.codec == "float16":  # overflows half precision: refused, not clipped
            bad_cases.append((BadRequest, ({**good_f, "i:big": _rec([7e4, 1])}, good_s, good_o)))
        for exc_type, args in bad_cases:
            exc = _raises(exc_type, lambda a=args: t.commit(*a), f"commit{args!r:.200}")
            assert str(exc), f"{exc_type.__name__} without a message"
            assert dump(t) == before, f"a failed commit wrote something: {args!r:.200}"
            if "i:big" in args[0]:  # type: ignore[operator]
                assert "i:big" in str(exc) and "float16" in str(exc), str(exc)
        t.commit(good_f, good_s, good_o)  # the same items without the bad one all land
        assert t.get_many(["i:keep", "i:new"])[0] is None
        assert t.get("i:new") == stored(backend.codec, _rec([2, 2]))
        assert t.offsets() == {("e", 0): 2, ("e", 1): 3}
        assert dict(t.iter_state()) == good_s


def check_deletes(backend: TableBackend, tmp: Path) -> None:
    """``None`` deletes a feature or a state record; deleting an absent key is a no-op."""
    c = backend.codec
    with backend.writer(tmp / "t", 2) as t:
        t.commit({"i:a": _rec([1, 0]), "i:b": _rec([0, 1])}, {b"x": b"1", b"y": b"2"}, {})
        t.commit({"i:a": None, "i:never": None}, {b"x": None, b"never": None}, {})
        assert t.get_many(["i:a", "i:b", "i:never"]) == [None, stored(c, _rec([0, 1])), None]
        assert t.count() == 1
        assert [k for k, _ in t.iter_features()] == ["i:b"]
        assert list(t.iter_state()) == [(b"y", b"2")]
        t.commit({"i:a": _rec([3, 3], count=9)}, {b"x": b"again"}, {})
        assert t.get("i:a") == stored(c, _rec([3, 3], count=9))
        assert dict(t.iter_state()) == {b"x": b"again", b"y": b"2"}
        assert t.count() == 2


def check_offsets_overwrite_per_partition(backend: TableBackend, tmp: Path) -> None:
    """Check that a commit overwrites the offsets of the partitions it names, keeps others."""
    with backend.writer(tmp / "t", 2) as t:
        t.commit({}, {}, {("a", 0): 10, ("a", 1): 20, ("b", 0): 30})
        t.commit({}, {}, {("a", 1): 21})
        t.commit({}, {}, {("b", 0): 3, ("a.b-c_d", 2**31 - 1): 2**63 - 1})  # rewind allowed
        assert t.offsets() == {
            ("a", 0): 10,
            ("a", 1): 21,
            ("b", 0): 3,
            ("a.b-c_d", 2**31 - 1): 2**63 - 1,
        }
        t.put_meta("o", b"a meta key that looks like an offset namespace")
        assert len(t.offsets()) == 4


def check_iteration_in_key_order(backend: TableBackend, tmp: Path) -> None:
    """Check that features iterate by UTF-8 key bytes and state by key bytes."""
    rng = np.random.default_rng(7)
    alphabet = ["a", "B", "z", "0", "é", "ß", "日", "😀", ":", "~"]
    ids = {"i:" + "".join(rng.choice(alphabet, size=int(rng.integers(1, 6)))) for _ in range(200)}
    ids |= {"u:" + i[2:] for i in list(ids)[:50]}
    keys = {
        bytes(rng.integers(0, 256, size=int(rng.integers(0, 5)), dtype=np.uint8))
        for _ in range(150)
    }
    with backend.writer(tmp / "t", 2) as t:
        items = sorted(ids)
        for chunk in (items[::3], items[1::3], items[2::3]):
            t.commit({i: _rec([len(i), 1]) for i in chunk}, {}, {})
        t.commit({}, {k: k + b"!" for k in keys}, {})
        got = [k for k, _ in t.iter_features()]
        assert got == sorted(ids, key=lambda s: s.encode())
        assert got == sorted(ids)  # UTF-8 byte order is code point order
        assert [k for k, _ in t.iter_state()] == sorted(keys)
        assert all(v == k + b"!" for k, v in t.iter_state())
        assert t.count() == len(ids)


def check_meta(backend: TableBackend, tmp: Path) -> None:
    """Check that metadata is a separate, overwritable, validated str -> bytes map."""
    with backend.writer(tmp / "t", 2) as t:
        t.put_meta("manifest", b'{"name": "item2vec", "version": 3}')
        t.put_meta("dim", b"not the system dim")
        t.put_meta("manifest", b'{"name": "item2vec", "version": 4}')
        assert t.get_meta("manifest") == b'{"name": "item2vec", "version": 4}'
        assert t.get_meta("dim") == b"not the system dim"
        assert t.get_meta("format") is None
        assert t.get_meta("nope") is None
        assert t.offsets() == {} and t.count() == 0 and list(t.iter_state()) == []
        for bad_key, bad_value in (("", b"x"), (b"k", b"x"), ("k", "str")):
            _raises(
                BadRequest,
                lambda k=bad_key, v=bad_value: t.put_meta(k, v),
                f"put_meta({bad_key!r}, {bad_value!r})",
            )
        assert t.dim == 2


def check_manifest_claim(backend: TableBackend, tmp: Path) -> None:
    """Check that a table binds to its first manifest and refuses another one, saying why."""
    manifest = {"name": "item2vec", "version": 3, "dim": 2, "params": {"window": 5}}
    with backend.writer(tmp / "t", 2) as t:
        claim_manifest(t, manifest)
        claim_manifest(t, dict(reversed(manifest.items())))  # key order does not matter
        assert json.loads(t.get_meta(MANIFEST_KEY) or b"null") == manifest
        other = {**manifest, "params": {"window": 6}}
        exc = _raises(StateError, lambda: claim_manifest(t, other), "claim of another manifest")
        assert "['params']" in str(exc) and "new state path" in str(exc), str(exc)
        _raises(ConfigError, lambda: claim_manifest(t, {"x": object()}), "unserialisable")
        assert json.loads(t.get_meta(MANIFEST_KEY) or b"null") == manifest


def check_get_many_validates_ids(backend: TableBackend, tmp: Path) -> None:
    """Check that a bare str, a non-str or an empty id is a BadRequest, not a miss."""
    with backend.writer(tmp / "t", 2) as t:
        t.commit({"i:a": _rec([1, 2])}, {}, {})
        for bad in ("i:a", ["i:a", 3], ["i:a", ""], [b"i:a"]):
            _raises(BadRequest, lambda b=bad: t.get_many(b), f"get_many({bad!r})")
        assert t.get_many(("i:a",)) == [stored(backend.codec, _rec([1, 2]))]


def check_closed_table_raises(backend: TableBackend, tmp: Path) -> None:
    """Check that after close (idempotent) every call raises StateError."""
    t = backend.writer(tmp / "t", 2)
    t.commit({"i:a": _rec([1, 2])}, {}, {})
    t.close()
    t.close()
    calls: list[Callable[[], object]] = [
        lambda: t.get("i:a"),
        lambda: t.get_many(["i:a"]),
        lambda: t.commit({}, {}, {}),
        lambda: t.offsets(),
        lambda: list(t.iter_features()),
        lambda: list(t.iter_state()),
        lambda: t.get_meta("m"),
        lambda: t.put_meta("m", b"v"),
        lambda: t.count(),
        lambda: t.refresh(),
    ]
    for i, call in enumerate(calls):
        _raises(StateError, call, f"call #{i} on a closed table")


def check_dim_is_validated(backend: TableBackend, tmp: Path) -> None:
    """Check that a non-positive or non-int dim is a ConfigError."""
    for i, bad in enumerate((0, -1, 2.0, True)):
        _raises(ConfigError, lambda d=bad, i=i: backend.writer(tmp / f"t{i}", d), f"dim={bad!r}")


def check_codec_is_validated(backend: TableBackend, tmp: Path) -> None:
    """Check that an unknown codec is a ConfigError naming it and the known ones."""
    for i, bad in enumerate(("bfloat16", "INT8", "", 3)):
        exc = _raises(
            ConfigError,
            lambda c=bad, i=i: backend.open(tmp / f"t{i}", 2, c),  # type: ignore[arg-type]
            f"codec={bad!r}",
        )
        assert repr(bad) in str(exc) and all(c in str(exc) for c in CODECS), str(exc)


def check_vectors_round_trip_through_the_codec(backend: TableBackend, tmp: Path) -> None:
    """Check that every read path returns the codec's reconstruction, bit for bit.

    Vectors of many magnitudes (and a zero, a one-hot and a constant vector) are
    committed in one batch; ``get_many``, ``iter_features`` and ``view`` must all return
    ``quant.dequantize(quant.quantize(v))`` (the batch API, not the per-vector encoder
    the tables use), within the codec's documented error of ``v``.
    """
    rng = np.random.default_rng(11)
    dim = 24
    vecs = rng.standard_normal((40, dim)).astype(np.float32)
    vecs *= np.logspace(-3, 3, 40, dtype=np.float32)[:, None]
    vecs[0] = 0.0
    vecs[1] = np.eye(dim, dtype=np.float32)[3]
    vecs[2] = -0.25
    ids = [f"i:{j:03d}" for j in range(len(vecs))]
    codes, scales = quant.quantize(vecs, backend.codec)
    want = quant.dequantize(codes, scales, backend.codec)
    with backend.writer(tmp / "t", dim) as t:
        assert t.codec == backend.codec
        feats = {i: _rec(v, float(j), j, 1) for j, (i, v) in enumerate(zip(ids, vecs, strict=True))}
        t.commit(feats, {}, {})
        got = t.get_many(ids)
        assert all(g is not None for g in got)
        mat = np.stack([g.vector for g in got if g is not None])
        assert mat.dtype == np.float32 and mat.shape == vecs.shape
        assert mat.tobytes() == want.tobytes(), "get_many differs from dequantize(quantize(v))"
        assert [g.update_count for g in got if g is not None] == list(range(len(ids)))
        assert np.stack([r.vector for _, r in t.iter_features()]).tobytes() == want.tobytes()
        _offsets, pinned = t.view()
        assert np.stack([r.vector for _, r in pinned]).tobytes() == want.tobytes()
        err = np.abs(mat - vecs)
        maxabs = np.abs(vecs).max(axis=1, keepdims=True)
        if backend.codec == "float32":
            assert mat.tobytes() == vecs.tobytes()
        elif backend.codec == "float16":  # round to nearest: half an ulp of binary16
            assert (err <= np.maximum(np.abs(vecs) * 2.0**-11, 2.0**-25)).all()
            assert not np.array_equal(mat, vecs), "float16 table stored float32 values"
        else:  # int8: half a step, scale <= max|v|/127
            assert (err <= maxabs / 254).all()
            assert not np.array_equal(mat, vecs), "int8 table stored float32 values"
        assert not mat[0].any()  # the zero vector stays zero
        # storing what was read changes nothing (every codec is idempotent)
        t.commit({i: FeatureRecord(g.vector, 0.0, 0, 1) for i, g in zip(ids, got, strict=True)
                  if g is not None}, {}, {})
        again = np.stack([g.vector for g in t.get_many(ids) if g is not None])
        assert again.tobytes() == want.tobytes(), "re-storing read vectors changed them"


# ------------------------------------------------------------------ persistent backends


def check_reopen_persists(backend: TableBackend, tmp: Path) -> None:
    """Check that everything committed (and meta) is there after close and reopen."""
    with backend.writer(tmp / "t", 3) as t:
        t.commit({"i:a": _rec([1, 2, 3]), "i:b": _rec([4, 5, 6])}, {b"s": b"1"}, {("e", 0): 1})
        t.commit({"i:b": None, "u:c": _rec([0, 0, 1], 5.0, 2, 1)}, {b"s": b"2"}, {("e", 0): 2})
        t.put_meta("manifest", b"{}")
        before = dump(t)
    with backend.writer(tmp / "t", 3) as t:
        assert dump(t) == before
        assert t.codec == backend.codec
        assert t.get_meta("manifest") == b"{}"
        t.commit({"i:d": _rec([1, 1, 1])}, {}, {("e", 0): 3})
    with backend.writer(tmp / "t", 3) as t:
        assert t.offsets() == {("e", 0): 3}
        assert t.count() == 3


def check_reopen_with_other_dim_raises(backend: TableBackend, tmp: Path) -> None:
    """Check that opening a table with another dim is a StateError naming both dims."""
    with backend.writer(tmp / "t", 3) as t:
        t.commit({"i:a": _rec([1, 2, 3])}, {}, {})
    exc = _raises(StateError, lambda: backend.writer(tmp / "t", 4), "opening dim=3 with dim=4")
    assert "dim=3" in str(exc) and "dim=4" in str(exc), str(exc)
    for kind, open_reader in backend.readers.items():
        scratch = tmp / f"scratch-{kind}"
        exc = _raises(
            StateError, lambda o=open_reader, s=scratch: o(tmp / "t", 4, s), f"{kind} dim=4"
        )
        assert "dim=3" in str(exc) and "dim=4" in str(exc), str(exc)
    with backend.writer(tmp / "t", 3) as t:  # the failed opens released the lock
        assert t.get("i:a") == stored(backend.codec, _rec([1, 2, 3]))


def check_reopen_with_other_codec_raises(backend: TableBackend, tmp: Path) -> None:
    """Check that a table's codec is fixed, and readers use the stored one.

    A writer asking another codec gets a one-line StateError naming both codecs and the
    remedy (bump the type's version).
    """
    want = stored(backend.codec, _rec([1, 2, 3]))
    with backend.writer(tmp / "t", 3) as t:
        t.commit({"i:a": _rec([1, 2, 3])}, {}, {})
    for other in CODECS:
        if other == backend.codec:
            continue
        exc = _raises(
            StateError, lambda o=other: backend.open(tmp / "t", 3, o), f"reopen as {other}"
        )
        text = str(exc)
        assert backend.codec in text and other in text and "version" in text, text
        assert "\n" not in text, text
    for kind, open_reader in backend.readers.items():
        with open_reader(tmp / "t", 3, tmp / f"scratch-{kind}") as r:
            assert r.codec == backend.codec, kind
            assert r.get("i:a") == want, kind
    with backend.writer(tmp / "t", 3) as t:  # the failed opens released the lock
        assert t.codec == backend.codec
        assert t.get("i:a") == want


def check_second_writer_raises(backend: TableBackend, tmp: Path) -> None:
    """Check that a second writer (in-process or not) gets a StateError naming the path."""
    path = tmp / "t"
    with backend.writer(path, 2) as t:
        t.commit({"i:a": _rec([1, 2])}, {}, {})
        exc = _raises(StateError, lambda: backend.writer(path, 2), "a second in-process writer")
        assert str(path) in str(exc) and "another worker" in str(exc), str(exc)
        if backend.writer_ref is not None:
            code = (
                "import sys\n"
                "from pathlib import Path\n"
                "from streamer.checks.tables import _load\n"
                "from streamer.errors import StateError\n"
                f"try:\n    _load({backend.writer_ref!r})(Path(sys.argv[1]), 2, "
                f"codec={backend.codec!r})\n"
                "except StateError as exc:\n    print(exc)\n    sys.exit(3)\n"
            )
            proc = subprocess.run(  # noqa: S603
                [sys.executable, "-c", code, str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
            assert str(path) in proc.stdout and "another worker" in proc.stdout, proc.stdout
        assert t.get("i:a") == stored(backend.codec, _rec([1, 2]))  # the holder is unharmed
        t.commit({"i:b": _rec([3, 4])}, {}, {})
    with backend.writer(path, 2) as t:  # released on close
        assert t.count() == 2


def check_readers_see_writes_after_refresh(backend: TableBackend, tmp: Path) -> None:
    """Check that each reader kind sees commits after ``refresh()`` and cannot write."""
    path = tmp / "t"
    c = backend.codec
    with backend.writer(path, 2) as w:
        w.commit({"i:a": _rec([1, 2])}, {b"s": b"1"}, {("e", 0): 1})
        w.put_meta("info", b"v1")
        for kind, open_reader in backend.readers.items():
            with open_reader(path, 2, tmp / f"scratch-{kind}") as r:
                assert r.read_only
                assert r.codec == c, kind
                exc = _raises(StateError, lambda r=r: claim_manifest(r, {"v": 1}), f"{kind} claim")
                assert "no manifest" in str(exc), str(exc)
                assert r.get("i:a") == stored(c, _rec([1, 2])), kind
                assert r.get_meta("info") == b"v1", kind
                w.commit({"i:b": _rec([3, 4]), "i:a": None}, {b"s": b"2"}, {("e", 0): 2})
                w.put_meta("info", b"v2")
                r.refresh()
                assert r.get_many(["i:a", "i:b"]) == [None, stored(c, _rec([3, 4]))], kind
                assert r.offsets() == {("e", 0): 2}, kind
                assert dict(r.iter_state()) == {b"s": b"2"}, kind
                assert r.get_meta("info") == b"v2", kind
                assert dump(r) == dump(w), kind
                _raises(StateError, lambda r=r: r.commit({}, {}, {}), f"{kind} reader commit")
                _raises(StateError, lambda r=r: r.put_meta("m", b"x"), f"{kind} reader put_meta")
                w.commit({"i:a": _rec([1, 2])}, {b"s": b"1"}, {("e", 0): 1})  # reset
                w.put_meta("info", b"v1")
        w.commit({"i:c": _rec([5, 6])}, {}, {})  # the writer still works after readers closed
        assert w.count() == 3


def check_reader_of_missing_table_raises(backend: TableBackend, tmp: Path) -> None:
    """Check that a reader of a missing table is a StateError (and creates nothing)."""
    for kind, open_reader in backend.readers.items():
        scratch = tmp / f"scratch-{kind}"
        exc = _raises(
            StateError, lambda o=open_reader, s=scratch: o(tmp / "absent", 2, s), f"{kind} reader"
        )
        assert str(tmp / "absent") in str(exc), str(exc)
        assert not (tmp / "absent").exists()


# ---------------------------------------------------------------------- kill -9 check

_CRASH_TOPIC = "crash"
_CRASH_NEW = 400  # new ids per batch
_CRASH_SHARED = 40  # ids rewritten by every batch
_CRASH_MAX_BATCHES = 20_000


def crash_batch(
    b: int, dim: int
) -> tuple[dict[str, FeatureRecord | None], dict[bytes, bytes | None], dict[tuple[str, int], int]]:
    """Return batch ``b`` of the kill check: deterministic, with puts, overwrites and deletes."""
    base = np.arange(dim, dtype=np.float32)
    features: dict[str, FeatureRecord | None] = {  # |values| < 65504: float16 stores them
        f"n:{b:06d}:{j:04d}": FeatureRecord(base + np.float32(b + j / 1000), float(b), 1, 1)
        for j in range(_CRASH_NEW)
    }
    for j in range(_CRASH_SHARED):
        features[f"s:{j:03d}"] = FeatureRecord(base * np.float32(b % 1000), float(b), b + 1, 1)
    if b >= 2:
        for j in range(0, _CRASH_NEW, 10):
            features[f"n:{b - 2:06d}:{j:04d}"] = None
    state: dict[bytes, bytes | None] = {
        b"shared": b.to_bytes(8, "big"),
        b"n:%06d" % b: bytes([b % 256]) * 1000,
    }
    if b >= 3:
        state[b"n:%06d" % (b - 3)] = None
    offsets = {(_CRASH_TOPIC, 0): b, (_CRASH_TOPIC, 1): 2 * b}
    return features, state, offsets


def _load(ref: str) -> TableOpener:
    module, _, attr = ref.partition(":")
    opener: TableOpener = getattr(importlib.import_module(module), attr)
    return opener


def crash_writer_main(argv: list[str] | None = None) -> None:
    """Subprocess body of the kill check: commit crash batches until killed.

    ``argv``: ``writer_ref table_dir dim codec``. Resumes after the stored offset (like
    a worker), prints each batch number once its commit returned, and stops by itself
    after a bounded number of batches or when its parent is gone.
    """
    ref, table_dir, dim_s, codec = argv if argv is not None else sys.argv[1:]
    dim = int(dim_s)
    parent = os.getppid()
    with _load(ref)(Path(table_dir), dim, codec=quant.check_codec(codec)) as table:
        b = table.offsets().get((_CRASH_TOPIC, 0), -1) + 1
        for _ in range(_CRASH_MAX_BATCHES):
            table.commit(*crash_batch(b, dim))
            sys.stdout.write(f"{b}\n")
            sys.stdout.flush()
            b += 1
            if os.getppid() != parent:
                return


def check_kill_9_keeps_batches_whole(backend: TableBackend, tmp: Path) -> None:
    """Check that SIGKILL of a committing writer leaves whole batches only.

    After every kill the table must equal the in-memory twin that replayed batches
    ``0..B`` exactly, where ``B`` is the stored offset, and ``B`` must be at least the
    last batch whose ``commit`` returned (no committed batch lost).
    """
    if backend.writer_ref is None:
        msg = f"backend {backend.name} has no writer_ref for the kill check"
        raise AssertionError(msg)
    rng = np.random.default_rng(2024)
    dim = 16
    path = tmp / "t"
    oracle = MemoryFeatureTable(dim, backend.codec)
    replayed = -1
    code = "from streamer.checks.tables import crash_writer_main; crash_writer_main()"
    for _round in range(3):
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", code, backend.writer_ref, str(path), str(dim), backend.codec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            last_returned = _kill_after_some_batches(proc, rng)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
        with backend.writer(path, dim) as t:
            offs = t.offsets()
            top = offs[(_CRASH_TOPIC, 0)]
            assert offs == {(_CRASH_TOPIC, 0): top, (_CRASH_TOPIC, 1): 2 * top}, offs
            assert top >= last_returned, f"batch {last_returned} returned but stored is {top}"
            assert top <= last_returned + 1, f"stored {top} but last printed {last_returned}"
            for b in range(replayed + 1, top + 1):
                oracle.commit(*crash_batch(b, dim))
            replayed = top
            assert dump(t) == dump(oracle), f"table differs from replay of batches 0..{top}"
            assert t.get(f"n:{top + 1:06d}:0001") is None  # nothing from a later batch


def _kill_after_some_batches(proc: subprocess.Popen[str], rng: np.random.Generator) -> int:
    """Wait for a few committed batches, SIGKILL at a random moment; return the last printed."""
    assert proc.stdout is not None
    wanted = int(rng.integers(2, 12))
    lines: list[str] = []
    while len(lines) < wanted:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            msg = f"crash writer exited early: {err[-2000:]}"
            raise AssertionError(msg)
        lines.append(line)
    time.sleep(float(rng.uniform(0.0, 0.03)))  # a random moment, often mid-commit
    proc.send_signal(signal.SIGKILL)
    out, _err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    return max(int(x) for x in "".join(lines).split() + out.split())


# ------------------------------------------------------------------------------ registry

_ALL: tuple[Check, ...] = (
    check_empty_table,
    check_commit_then_read,
    check_commit_copies_input,
    check_bad_commit_writes_nothing,
    check_deletes,
    check_offsets_overwrite_per_partition,
    check_iteration_in_key_order,
    check_meta,
    check_manifest_claim,
    check_get_many_validates_ids,
    check_closed_table_raises,
    check_dim_is_validated,
    check_codec_is_validated,
    check_vectors_round_trip_through_the_codec,
)
_PERSISTENT: tuple[Check, ...] = (
    check_reopen_persists,
    check_reopen_with_other_dim_raises,
    check_reopen_with_other_codec_raises,
    check_second_writer_raises,
)
_READERS: tuple[Check, ...] = (
    check_readers_see_writes_after_refresh,
    check_reader_of_missing_table_raises,
)


def yield_checks(backend: TableBackend) -> Iterator[Check]:
    """Yield every check that applies to ``backend``."""
    yield from _ALL
    if backend.persistent:
        yield from _PERSISTENT
        if backend.readers:
            yield from _READERS
        if backend.writer_ref is not None:
            yield check_kill_9_keeps_batches_whole
