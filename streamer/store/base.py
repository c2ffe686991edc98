"""The feature table interface: vectors + metadata + learner state + applied offsets.

A feature table holds, for one embedding type/version (DESIGN §5):

* one :class:`FeatureRecord` per namespaced entity id (``u:<id>`` / ``i:<id>``), its
  vector stored through the table's codec (:attr:`FeatureTable.codec`: ``float32``
  exact, ``float16`` or ``int8`` lossy; :mod:`streamer.store.quant`);
* the learner's opaque state records (``bytes -> bytes``, DESIGN §6);
* the last applied Kafka offset per ``(topic, partition)``;
* a small string-keyed metadata area (the type's manifest: name, version, params, dim).

Everything a worker flushes goes through :meth:`FeatureTable.commit`, which writes the
features, the state records and the offsets **in one atomic batch** (CONVENTIONS C9):
after a crash either the whole flush is visible or none of it is, so seeking to
``stored offset + 1`` on restart gives exactly-once state.

Two implementations share this API byte for byte (CONVENTIONS C3):
:class:`streamer.store.memory.MemoryFeatureTable` (dict twin, tests and demo) and
:class:`streamer.store.rocks.RocksFeatureTable` (RocksDB via rocksdict).
``streamer.checks.tables`` is the contract suite both pass.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

from streamer.errors import (
    BadRequest,
    ConfigError,
    DimensionMismatch,
    InvalidVector,
    StateError,
)
from streamer.store.quant import CODECS, Codec
from streamer.types import EntityId, Vector

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_F32 = np.dtype(np.float32)


@dataclass(frozen=True, slots=True, eq=False)
class FeatureRecord:
    """One entity's stored vector and its metadata (immutable).

    Attributes
    ----------
    vector
        Shape ``(dim,)``, float32, finite, **read-only**: a private copy of what was
        passed (later in-place updates of the caller's array do not reach the record,
        and the caller's array is left as it was). Any 1-D real array is accepted and
        cast to float32.
    updated_at
        Event time, seconds since the epoch, of the last event that changed the
        vector (not wall time). Finite.
    update_count
        Number of events that touched the entity, ``0 <= update_count < 2**63``.
    model_version
        Version of the model/type that produced the vector, ``0 <= v < 2**31``.

    Raises
    ------
    InvalidVector
        If ``vector`` is not 1-D, is empty, is not real-valued, or holds NaN/inf.
    BadRequest
        If a metadata field has the wrong type or is out of range.

    Examples
    --------
    >>> r = FeatureRecord(np.array([1, 2], np.float32), updated_at=10.0,
    ...                   update_count=3, model_version=1)
    >>> r.vector.flags.writeable
    False
    >>> r.vector.dtype.name, r.update_count
    ('float32', 3)
    """

    vector: Vector
    updated_at: float
    update_count: int
    model_version: int

    def __post_init__(self) -> None:
        vec = self.vector
        if type(vec) is np.ndarray and (vec.dtype is _F32 or vec.dtype == _F32):
            # a copy: learners update their matrices in place, and a frozen record must
            # not change under its holder (CONVENTIONS C11); also keeps the caller's flags
            vec = vec.copy()
        else:
            arr = np.asarray(vec)
            if arr.dtype.kind not in "fiub":
                msg = (
                    f"FeatureRecord.vector must be a real 1-D array, got dtype {arr.dtype}; "
                    "expected float32 values"
                )
                raise InvalidVector(msg)
            vec = arr.astype(_F32)  # a copy: the caller keeps its own array
        if vec.ndim != 1 or vec.shape[0] == 0:
            msg = f"FeatureRecord.vector must have shape (dim,) with dim >= 1, got {vec.shape}"
            raise InvalidVector(msg)
        if not _all_finite(vec):
            bad = int(np.flatnonzero(~np.isfinite(vec))[0])
            msg = (
                f"FeatureRecord.vector holds a non-finite value at index {bad} "
                f"({float(vec[bad])}); expected finite float32 values"
            )
            raise InvalidVector(msg)
        vec.setflags(write=False)
        _set_vector(self, vec)
        ts, count, version = self.updated_at, self.update_count, self.model_version
        if not (
            type(ts) is float
            and type(count) is int
            and type(version) is int
            and math.isfinite(ts)
            and 0 <= count <= _INT64_MAX
            and 0 <= version <= _INT32_MAX
        ):  # slow path: full checks with messages, then normalise the types
            _check_meta_fields(ts, count, version)
            _set_updated_at(self, float(ts))
            _set_update_count(self, int(count))
            _set_model_version(self, int(version))

    @property
    def dim(self) -> int:
        """Vector dimension, ``len(self.vector)``."""
        return int(self.vector.shape[0])

    def __eq__(self, other: object) -> bool:
        """Equal when the metadata are equal and the vectors are bitwise equal."""
        if not isinstance(other, FeatureRecord):
            return NotImplemented
        return (
            self.updated_at == other.updated_at
            and self.update_count == other.update_count
            and self.model_version == other.model_version
            and self.vector.shape == other.vector.shape
            and self.vector.tobytes() == other.vector.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array: not hashable


def _check_meta_fields(updated_at: object, update_count: object, model_version: object) -> None:
    """Validate the scalar fields of a :class:`FeatureRecord` (raises BadRequest)."""
    if isinstance(updated_at, bool) or not isinstance(updated_at, float | int | np.floating):
        msg = f"FeatureRecord.updated_at must be a float (event seconds), got {updated_at!r}"
        raise BadRequest(msg)
    if not math.isfinite(updated_at):
        msg = f"FeatureRecord.updated_at must be finite event seconds, got {updated_at!r}"
        raise BadRequest(msg)
    if (
        isinstance(update_count, bool)
        or not isinstance(update_count, int | np.integer)
        or not 0 <= update_count <= _INT64_MAX
    ):
        msg = f"FeatureRecord.update_count must be an int in [0, 2**63), got {update_count!r}"
        raise BadRequest(msg)
    if (
        isinstance(model_version, bool)
        or not isinstance(model_version, int | np.integer)
        or not 0 <= model_version <= _INT32_MAX
    ):
        msg = f"FeatureRecord.model_version must be an int in [0, 2**31), got {model_version!r}"
        raise BadRequest(msg)


def trusted_record(
    vector: Vector, updated_at: float, update_count: int, model_version: int
) -> FeatureRecord:
    """Build a :class:`FeatureRecord` without validation (for decoders of checked bytes).

    ``vector`` must already be a read-only float32 ``(dim,)`` array of finite values.
    """
    rec = _new_record(FeatureRecord)
    _set_vector(rec, vector)
    _set_updated_at(rec, updated_at)
    _set_update_count(rec, update_count)
    _set_model_version(rec, model_version)
    return rec


def records_from_arrays(
    vectors: npt.NDArray[np.floating], updated_at: Sequence[float],
    update_counts: Sequence[int], model_version: int,
) -> list[FeatureRecord]:
    """Build one :class:`FeatureRecord` per row of ``vectors``, validated in bulk.

    The same records, and the same errors, as ``FeatureRecord(vectors[j], ...)`` for
    every row, at a fraction of the cost: one copy of the matrix (made read-only; each
    record's vector is a row of it, so nothing else can change it) and one vectorised
    check. Rows or fields that fail the check are rebuilt one by one to raise the
    exact error.

    Parameters
    ----------
    vectors
        Shape ``(n, dim)``, real-valued, ``dim >= 1``; copied as float32.
    updated_at
        ``n`` event times, seconds since the epoch (finite).
    update_counts
        ``n`` counts in ``[0, 2**63)``.
    model_version
        In ``[0, 2**31)``.

    Raises
    ------
    InvalidVector, BadRequest
        As :class:`FeatureRecord`.
    """
    n = len(updated_at)
    if len(update_counts) != n or len(vectors) != n:
        msg = (f"records_from_arrays: {len(vectors)} vectors, {n} updated_at and "
               f"{len(update_counts)} update_counts; expected one of each per record")
        raise BadRequest(msg)
    arr = np.asarray(vectors)
    ts = [float(t) if type(t) is not float else t for t in updated_at]
    counts = [int(c) if type(c) is not int else c for c in update_counts]
    ok = (arr.ndim == 2 and arr.shape[1] >= 1 and arr.dtype.kind in "fiu"
          and type(model_version) is int and 0 <= model_version <= _INT32_MAX
          and all(type(c) is int and 0 <= c <= _INT64_MAX for c in update_counts)
          and all(type(t) in (float, np.float64) for t in updated_at))
    if ok:
        mat = arr.astype(_F32, copy=True)
        ok = bool(np.isfinite(mat).all()) and bool(np.isfinite(np.asarray(ts)).all())
    if not ok:  # the exact error of the first bad record (or the records, if none fails)
        return [FeatureRecord(arr[j], ts[j], counts[j], model_version) for j in range(n)]
    mat.setflags(write=False)
    return [trusted_record(v, t, c, model_version) for v, t, c in zip(mat, ts, counts, strict=True)]


# Slot setters bypass the frozen __setattr__ (what dataclasses do internally, but faster).
_new_record = object.__new__
_set_vector = FeatureRecord.vector.__set__  # type: ignore[attr-defined]
_set_updated_at = FeatureRecord.updated_at.__set__  # type: ignore[attr-defined]
_set_update_count = FeatureRecord.update_count.__set__  # type: ignore[attr-defined]
_set_model_version = FeatureRecord.model_version.__set__  # type: ignore[attr-defined]


def _all_finite(vec: Vector) -> bool:
    """Return True when every value of a float32 ``(dim,)`` vector is finite.

    Not ``math.isfinite(vec.sum())`` (a float32 sum of large finite values overflows)
    nor ``vec . 0`` (``inf * 0`` emits a RuntimeWarning, an error under ``-W error``).
    """
    return bool(np.isfinite(vec).all())


def check_dim(dim: object) -> int:
    """Return ``dim`` as an int after checking it is a positive integer.

    Raises
    ------
    ConfigError
        If ``dim`` is not an int in ``[1, 2**32)``.
    """
    if (
        isinstance(dim, bool)
        or not isinstance(dim, int | np.integer)
        or not 1 <= dim <= _UINT32_MAX
    ):
        msg = f"feature table dim must be a positive int, got {dim!r}"
        raise ConfigError(msg)
    return int(dim)


def check_table_codec(codec: object) -> Codec:
    """Return ``codec`` after checking it names a vector storage codec.

    Raises
    ------
    ConfigError
        If it is not one of :data:`streamer.store.quant.CODECS`.
    """
    if codec not in CODECS:
        msg = (f"feature table codec must be one of {', '.join(CODECS)}, got {codec!r}; "
               "set the type's storage_codec")
        raise ConfigError(msg)
    return codec  # type: ignore[return-value]


def entity_key(entity: object) -> bytes:
    """Encode an entity id as its storage key (UTF-8 bytes).

    Raises
    ------
    BadRequest
        If ``entity`` is not a non-empty ``str`` encodable as UTF-8.
    """
    if type(entity) is not str or not entity:
        msg = f"entity id must be a non-empty str, got {entity!r}"
        raise BadRequest(msg)
    try:
        return entity.encode()
    except UnicodeEncodeError as exc:
        msg = f"entity id {entity!r} is not valid UTF-8 (lone surrogate?)"
        raise BadRequest(msg) from exc


def check_state_item(key: object, value: object) -> None:
    """Check one learner-state record: ``bytes`` key, ``bytes`` or ``None`` value.

    Raises
    ------
    BadRequest
        On any other type.
    """
    if type(key) is not bytes:
        msg = f"state record key must be bytes, got {type(key).__name__} {key!r:.60}"
        raise BadRequest(msg)
    if value is not None and type(value) is not bytes:
        msg = (
            f"state record {key!r:.60} value must be bytes or None (delete), "
            f"got {type(value).__name__}"
        )
        raise BadRequest(msg)


def check_offset_item(tp: object, offset: object) -> tuple[str, int, int]:
    """Validate one ``(topic, partition) -> offset`` entry and return its parts.

    Raises
    ------
    BadRequest
        If the topic is not a non-empty str, the partition not an int in
        ``[0, 2**31)``, or the offset not an int in ``[0, 2**63)``.
    """
    if not isinstance(tp, tuple) or len(tp) != 2:
        msg = f"offsets keys must be (topic, partition) tuples, got {tp!r}"
        raise BadRequest(msg)
    topic, partition = tp
    if type(topic) is not str or not topic:
        msg = f"offset topic must be a non-empty str, got {topic!r}"
        raise BadRequest(msg)
    _check_utf8("offset topic", topic)
    if (
        isinstance(partition, bool)
        or not isinstance(partition, int | np.integer)
        or not 0 <= partition <= _INT32_MAX
    ):
        msg = f"offset partition must be an int in [0, 2**31), got {partition!r} for {topic!r}"
        raise BadRequest(msg)
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | np.integer)
        or not 0 <= offset <= _INT64_MAX
    ):
        msg = f"offset for ({topic!r}, {partition}) must be an int in [0, 2**63), got {offset!r}"
        raise BadRequest(msg)
    return topic, int(partition), int(offset)


def check_record_dim(entity: str, record: object, dim: int) -> FeatureRecord:
    """Check that ``record`` is a :class:`FeatureRecord` of dimension ``dim``.

    Raises
    ------
    BadRequest
        If ``record`` is not a FeatureRecord (or None, handled by the caller).
    DimensionMismatch
        If its vector's length differs from ``dim``.
    """
    if not isinstance(record, FeatureRecord):
        msg = (
            f"features[{entity!r}] must be a FeatureRecord or None (delete), "
            f"got {type(record).__name__}"
        )
        raise BadRequest(msg)
    if record.vector.shape[0] != dim:
        msg = (
            f"feature table has dim={dim}, got a vector of shape {record.vector.shape} "
            f"for {entity!r}; was it produced by a type with another embedding size?"
        )
        raise DimensionMismatch(msg)
    return record


class FeatureTable(abc.ABC):
    """Feature vectors, learner state and applied offsets of one embedding type/version.

    Semantics shared by every implementation (checked by ``streamer.checks.tables``):

    * :meth:`commit` is all-or-nothing, including on bad input: arguments are validated
      before anything is written.
    * Reads never return partial commits; vectors handed out are read-only copies
      (mutating an array after committing it does not change the table), float32, and
      equal to the :attr:`codec`'s reconstruction of the committed vector (the vector
      itself for ``float32``).
    * Iteration is in key order: entity ids by their UTF-8 bytes (= code point order),
      state keys bytewise.
    * One writer per table; readers may be many.

    Notes
    -----
    Thread safety: reads may run concurrently with each other and with ``commit``;
    ``commit``/``put_meta`` calls must be serialised by the caller (single writer).
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension of every record in the table."""

    @property
    @abc.abstractmethod
    def read_only(self) -> bool:
        """True when this handle cannot write (read-only or secondary reader)."""

    @property
    @abc.abstractmethod
    def codec(self) -> Codec:
        """Vector storage codec of the table: ``float32``, ``float16`` or ``int8``.

        Fixed for the life of a table. :meth:`commit` stores every vector through it, so
        a read returns the codec's float32 reconstruction of what was committed
        (:mod:`streamer.store.quant`), bitwise equal to
        ``quant.dequantize(*quant.quantize(v[None], codec), codec)[0]``.
        """

    @abc.abstractmethod
    def commit(
        self,
        features: Mapping[EntityId, FeatureRecord | None],
        state: Mapping[bytes, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """Write features, learner state and offsets in one atomic batch.

        Parameters
        ----------
        features
            Entity id -> record to store, or ``None`` to delete the entity.
        state
            Opaque learner state key -> value, or ``None`` to delete the record.
        offsets
            ``(topic, partition)`` -> last applied offset; overwrites the stored one
            for that partition (no monotonicity check: the caller owns the position).

        Raises
        ------
        DimensionMismatch
            If a record's vector length differs from :attr:`dim`.
        BadRequest
            If an id, state item or offset has the wrong type or range.
        StateError
            If the table is read-only or closed, or the backend write fails.

        Nothing is written when an error is raised.
        """

    @abc.abstractmethod
    def get_many(self, ids: Sequence[EntityId]) -> list[FeatureRecord | None]:
        """Return the record of each id (``None`` when absent), in the order asked.

        Raises
        ------
        BadRequest
            If an id is not a non-empty str.
        StateError
            If a stored value is corrupt, or the table is closed.
        """

    def get(self, entity: EntityId) -> FeatureRecord | None:
        """Return the record of one id, or ``None`` (see :meth:`get_many`)."""
        return self.get_many([entity])[0]

    @abc.abstractmethod
    def offsets(self) -> dict[tuple[str, int], int]:
        """Return the last applied offset of every ``(topic, partition)`` committed."""

    @abc.abstractmethod
    def iter_features(self) -> Iterator[tuple[EntityId, FeatureRecord]]:
        """Yield ``(id, record)`` for every entity, in key order."""

    def view(self) -> tuple[dict[tuple[str, int], int], Iterator[tuple[EntityId, FeatureRecord]]]:
        """Return the offsets and an iterator over the features as of one point in time.

        The iterator may be consumed later (e.g. in another thread) while the writer goes
        on committing: it still yields the records of the moment ``view`` was called,
        which match the returned offsets (snapshots, DESIGN §7). This default materialises
        the records; RocksDB pins an iterator instead.
        """
        return self.offsets(), iter(list(self.iter_features()))

    def get_state(self, key: bytes) -> bytes | None:
        """Return one state record's value or ``None`` (default: a scan of the state)."""
        for k, v in self.iter_state():
            if k == key:
                return v
        return None

    @abc.abstractmethod
    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield every learner state record ``(key, value)``, in bytewise key order."""

    @abc.abstractmethod
    def get_meta(self, key: str) -> bytes | None:
        """Return the metadata value stored under ``key`` or ``None``."""

    @abc.abstractmethod
    def put_meta(self, key: str, value: bytes) -> None:
        """Store a metadata value (e.g. the type's JSON manifest), durably.

        Raises
        ------
        BadRequest
            If ``key`` is not a non-empty str or ``value`` is not bytes.
        StateError
            If the table is read-only or closed.
        """

    @abc.abstractmethod
    def count(self) -> int:
        """Return the number of entities with a record (exact; O(n) on RocksDB)."""

    def refresh(self) -> None:
        """Make a reader see the writer's latest commits (no-op on a writer).

        Raises
        ------
        StateError
            If the table is closed or the backend cannot catch up.
        """
        return None  # writers and always-current backends have nothing to do

    @abc.abstractmethod
    def close(self) -> None:
        """Release the table (and its lock); idempotent. Later calls raise StateError."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def meta_key(key: object) -> str:
    """Validate a metadata key (non-empty str) and return it.

    Raises
    ------
    BadRequest
        If ``key`` is not a non-empty str.
    """
    if type(key) is not str or not key:
        msg = f"meta key must be a non-empty str, got {key!r}"
        raise BadRequest(msg)
    _check_utf8("meta key", key)
    return key


def _check_utf8(what: str, text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        msg = f"{what} {text!r} is not valid UTF-8 (lone surrogate?)"
        raise BadRequest(msg) from exc


def meta_value(key: str, value: object) -> bytes:
    """Validate a metadata value (bytes) and return it.

    Raises
    ------
    BadRequest
        If ``value`` is not bytes.
    """
    if type(value) is not bytes:
        msg = f"meta value for {key!r} must be bytes, got {type(value).__name__}"
        raise BadRequest(msg)
    return value


MANIFEST_KEY = "manifest"
"""Metadata key under which :func:`claim_manifest` keeps the type's manifest."""


def claim_manifest(table: FeatureTable, manifest: Mapping[str, object]) -> None:
    """Bind a table to one embedding type's manifest, or refuse a table of another one.

    The first writer stores ``manifest`` (canonical JSON: sorted keys) under
    :data:`MANIFEST_KEY`; later opens must present an equal manifest.

    Parameters
    ----------
    table
        An open table (a writer stores the manifest; a reader only compares).
    manifest
        JSON-serialisable description of the type: e.g. name, version, algorithm
        params, dim.

    Raises
    ------
    StateError
        If the table holds another manifest (the message lists the differing fields
        and the remedy), or a reader finds none.
    ConfigError
        If ``manifest`` is not JSON-serialisable.

    Examples
    --------
    >>> from streamer.store.memory import MemoryFeatureTable
    >>> t = MemoryFeatureTable(dim=8)
    >>> claim_manifest(t, {"name": "item2vec", "version": 3, "dim": 8})
    >>> claim_manifest(t, {"dim": 8, "version": 3, "name": "item2vec"})  # same: fine
    >>> claim_manifest(t, {"name": "item2vec", "version": 4, "dim": 8})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamer.errors.StateError: ... differs in ['version'] ...
    """
    try:
        want = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"manifest must be JSON-serialisable, got {manifest!r:.200}: {exc}"
        raise ConfigError(msg) from exc
    stored = table.get_meta(MANIFEST_KEY)
    if stored is None:
        if table.read_only:
            msg = f"{table!r} has no manifest yet: has its worker started?"
            raise StateError(msg)
        table.put_meta(MANIFEST_KEY, want.encode())
        return
    if stored == want.encode():
        return
    try:
        have = json.loads(stored)
    except ValueError as exc:
        msg = f"{table!r} holds a corrupt manifest {stored!r:.200}"
        raise StateError(msg) from exc
    want_obj = json.loads(want)
    if not isinstance(have, dict):
        have = {"<manifest>": have}
    diff = sorted(k for k in have.keys() | want_obj.keys() if have.get(k) != want_obj.get(k))
    msg = (
        f"{table!r} belongs to another type/params: stored manifest differs in {diff} "
        f"(stored {have!r:.300}, asked {want_obj!r:.300}). Use a new state path (bump the "
        "type version, then replay/backfill into it) or open it with its own settings"
    )
    raise StateError(msg)
