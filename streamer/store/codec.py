"""Versioned binary encodings of feature records, offsets and table keys.

Feature record value (format version 1, all little-endian, ``32 + 4 * dim`` bytes)::

    offset  size  field
    0       1     format version (u8, = 1)
    1       1     dtype code (u8, 1 = float32)
    2       2     reserved flags (u16, = 0)
    4       4     dim (u32)
    8       8     updated_at (f64, event seconds since the epoch)
    16      8     update_count (i64)
    24      4     model_version (i32)
    28      4*dim vector (float32)
    28+4dim 4     CRC-32 (zlib/IEEE) of every byte before it

The CRC is checked with the residue property of CRC-32: the CRC of a message followed
by its own little-endian CRC is the constant ``0x2144DF1C``, so verification is one
``zlib.crc32`` call over the value, with no slicing.

Offset value (version 1): ``u8 version | i64 offset``, little-endian, 9 bytes.

Keys in the ``meta`` column family are namespaced by a two-byte prefix: ``m:`` user
metadata (UTF-8 key), ``o:`` offsets (``u32`` big-endian partition then the UTF-8 topic,
so one topic's partitions sort together and parsing is unambiguous), ``s:`` the table's
own system records (format version, dim).
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamer.errors import BadRequest, StateError
from streamer.store.base import (
    FeatureRecord,
    check_offset_item,
    check_record_dim,
    check_state_item,
    entity_key,
    trusted_record,
)
from streamer.types import EntityId

FORMAT_VERSION = 1
"""Version of the feature record value layout written by :func:`encode_record`."""

OFFSET_FORMAT_VERSION = 1
"""Version of the offset value layout written by :func:`encode_offset`."""

DTYPE_FLOAT32 = 1
"""Dtype code of little-endian float32 vectors."""

META_PREFIX = b"m:"
OFFSET_PREFIX = b"o:"
SYSTEM_PREFIX = b"s:"

_HEADER = struct.Struct("<BBHIdqi")  # version, dtype, flags, dim, updated_at, count, model
_HEADER_SIZE = _HEADER.size  # 28
_CRC_SIZE = 4
_CRC_RESIDUE = 0x2144DF1C
_OFFSET_VALUE = struct.Struct("<Bq")
_PARTITION = struct.Struct(">I")
_F32_LE = np.dtype("<f4")
_BIG_ENDIAN_HOST = sys.byteorder == "big"


def record_size(dim: int) -> int:
    """Return the encoded size in bytes of a record of dimension ``dim``."""
    return _HEADER_SIZE + 4 * dim + _CRC_SIZE


def encode_record(record: FeatureRecord) -> bytes:
    """Encode a :class:`FeatureRecord` as a version-1 value.

    Parameters
    ----------
    record
        A validated record; its vector is float32 ``(dim,)``.

    Returns
    -------
    bytes
        ``32 + 4 * dim`` bytes (layout in the module docstring).

    Examples
    --------
    >>> rec = FeatureRecord(np.ones(4, np.float32), 1.5, 2, 7)
    >>> len(encode_record(rec))
    48
    >>> decode_record(encode_record(rec), 4) == rec
    True
    """
    vec = record.vector
    body = _HEADER.pack(
        FORMAT_VERSION,
        DTYPE_FLOAT32,
        0,
        vec.shape[0],
        record.updated_at,
        record.update_count,
        record.model_version,
    ) + (vec.astype(_F32_LE).tobytes() if _BIG_ENDIAN_HOST else vec.tobytes())
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_record(value: bytes, dim: int, *, key: object = None) -> FeatureRecord:
    """Decode and validate a value written by :func:`encode_record`.

    Parameters
    ----------
    value
        The stored bytes.
    dim
        The table's dimension; the value must carry the same.
    key
        The entity the value was read for; only used in error messages.

    Returns
    -------
    FeatureRecord
        Its vector is a read-only float32 ``(dim,)`` view over ``value``.

    Raises
    ------
    StateError
        If the value is truncated, has another format version, dtype or dim, or its
        checksum does not match (corrupt state: restore from a snapshot or replay).
    """
    n = len(value)
    if n < _HEADER_SIZE + _CRC_SIZE:
        _corrupt(key, f"{n} bytes, shorter than the {_HEADER_SIZE + _CRC_SIZE}-byte frame")
    version, dtype, _flags, got_dim, updated_at, update_count, model_version = _HEADER.unpack_from(
        value
    )
    if version != FORMAT_VERSION:
        _corrupt(key, f"format version {version}, this code reads version {FORMAT_VERSION}")
    if dtype != DTYPE_FLOAT32:
        _corrupt(key, f"dtype code {dtype}, expected {DTYPE_FLOAT32} (float32)")
    if got_dim != dim:
        msg = (
            f"stored feature {key!r} has dim={got_dim} but the table expects dim={dim}; "
            "the table belongs to a type with another embedding size"
        )
        raise StateError(msg)
    if n != _HEADER_SIZE + 4 * dim + _CRC_SIZE:
        _corrupt(key, f"{n} bytes, expected {record_size(dim)} for dim={dim}")
    if zlib.crc32(value) != _CRC_RESIDUE:
        _corrupt(key, "checksum mismatch")
    vec = np.frombuffer(value, _F32_LE, dim, _HEADER_SIZE)  # read-only: bytes are immutable
    if update_count < 0 or model_version < 0:
        _corrupt(key, f"negative update_count={update_count} or model_version={model_version}")
    return trusted_record(vec, updated_at, update_count, model_version)


def _corrupt(key: object, detail: str) -> None:
    msg = (
        f"corrupt feature value for {key!r}: {detail}; "
        "restore the table from a snapshot or rebuild it by replay"
    )
    raise StateError(msg)


def encode_offset(offset: int) -> bytes:
    """Encode a Kafka offset (``0 <= offset < 2**63``) as a 9-byte version-1 value.

    Examples
    --------
    >>> decode_offset(encode_offset(42))
    42
    """
    return _OFFSET_VALUE.pack(OFFSET_FORMAT_VERSION, offset)


def decode_offset(value: bytes, *, key: object = None) -> int:
    """Decode a value written by :func:`encode_offset`.

    Raises
    ------
    StateError
        If the value has the wrong size or version, or a negative offset.
    """
    if len(value) != _OFFSET_VALUE.size:
        msg = f"corrupt offset value for {key!r}: {len(value)} bytes, expected {_OFFSET_VALUE.size}"
        raise StateError(msg)
    version, offset = _OFFSET_VALUE.unpack(value)
    if version != OFFSET_FORMAT_VERSION or offset < 0:
        msg = (
            f"corrupt offset value for {key!r}: version {version} (expected "
            f"{OFFSET_FORMAT_VERSION}), offset {offset}"
        )
        raise StateError(msg)
    return int(offset)


def offset_key(topic: str, partition: int) -> bytes:
    """Return the ``meta`` key of a ``(topic, partition)`` offset.

    Examples
    --------
    >>> parse_offset_key(offset_key("engagements", 3))
    ('engagements', 3)
    """
    return OFFSET_PREFIX + _PARTITION.pack(partition) + topic.encode()


def parse_offset_key(key: bytes) -> tuple[str, int]:
    """Invert :func:`offset_key`.

    Raises
    ------
    StateError
        If ``key`` is not an offset key.
    """
    if not key.startswith(OFFSET_PREFIX) or len(key) <= len(OFFSET_PREFIX) + _PARTITION.size:
        msg = f"corrupt offset key {key!r}: expected b'o:' + u32 partition + topic"
        raise StateError(msg)
    (partition,) = _PARTITION.unpack_from(key, len(OFFSET_PREFIX))
    try:
        topic = key[len(OFFSET_PREFIX) + _PARTITION.size :].decode()
    except UnicodeDecodeError as exc:
        msg = f"corrupt offset key {key!r}: topic is not UTF-8"
        raise StateError(msg) from exc
    return topic, int(partition)


def meta_storage_key(key: str) -> bytes:
    """Return the ``meta`` column family key of a user metadata key."""
    return META_PREFIX + key.encode()


def system_key(name: str) -> bytes:
    """Return the ``meta`` column family key of a table system record (e.g. ``dim``)."""
    return SYSTEM_PREFIX + name.encode()


@dataclass(frozen=True, slots=True)
class StagedCommit:
    """A validated, encoded commit, ready to be written in one batch.

    Attributes
    ----------
    features
        ``(entity key, encoded record or None)`` pairs (None deletes).
    state
        ``(state key, value or None)`` pairs (None deletes).
    offsets
        ``(meta key, encoded offset)`` pairs.
    """

    features: list[tuple[bytes, bytes | None]]
    state: list[tuple[bytes, bytes | None]]
    offsets: list[tuple[bytes, bytes]]


def stage_commit(
    features: Mapping[EntityId, FeatureRecord | None],
    state: Mapping[bytes, bytes | None],
    offsets: Mapping[tuple[str, int], int],
    dim: int,
) -> StagedCommit:
    """Validate and encode the arguments of :meth:`FeatureTable.commit`.

    Every argument is checked before anything is returned, so a backend that writes
    only a :class:`StagedCommit` never writes part of a bad commit.

    Raises
    ------
    BadRequest
        If an argument is not a mapping, or an id, state item or offset is invalid.
    DimensionMismatch
        If a record's dimension differs from ``dim``.
    """
    for name, arg in (("features", features), ("state", state), ("offsets", offsets)):
        if not isinstance(arg, Mapping):
            msg = f"commit({name}=...) must be a mapping, got {type(arg).__name__}"
            raise BadRequest(msg)
    staged_features: list[tuple[bytes, bytes | None]] = []
    append = staged_features.append
    for entity, record in features.items():
        key = entity_key(entity)
        if record is None:
            append((key, None))
        else:
            append((key, encode_record(check_record_dim(entity, record, dim))))
    for skey, svalue in state.items():
        check_state_item(skey, svalue)
    staged_offsets = []
    for tp, off in offsets.items():
        topic, partition, offset = check_offset_item(tp, off)
        staged_offsets.append((offset_key(topic, partition), encode_offset(offset)))
    return StagedCommit(staged_features, list(state.items()), staged_offsets)


def entity_keys(ids: Sequence[EntityId]) -> list[bytes]:
    """Encode the ids of a batch read (see :func:`streamer.store.base.entity_key`).

    Raises
    ------
    BadRequest
        If ``ids`` is a bare str (a common slip for one id) or an id is invalid.
    """
    if isinstance(ids, str | bytes):
        msg = f"get_many takes a sequence of ids, got {type(ids).__name__} {ids!r:.60}; use get()"
        raise BadRequest(msg)
    return [entity_key(i) for i in ids]


def decode_entity(key: bytes) -> EntityId:
    """Decode a stored entity key (UTF-8).

    Raises
    ------
    StateError
        If the key is not UTF-8.
    """
    try:
        return key.decode()
    except UnicodeDecodeError as exc:
        msg = f"corrupt entity key {key!r}: not UTF-8"
        raise StateError(msg) from exc
