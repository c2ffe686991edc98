"""Versioned binary encodings of feature records, offsets and table keys.

Feature record value (format version 2, all little-endian,
``32 + vector_nbytes(dim, codec)`` bytes)::

    offset  size  field
    0       1     format version (u8, = 2)
    1       1     codec id (u8: 1 = float32, 2 = float16, 3 = int8; quant.CODEC_IDS)
    2       2     reserved flags (u16, = 0)
    4       4     dim (u32)
    8       8     updated_at (f64, event seconds since the epoch)
    16      8     update_count (i64)
    24      4     model_version (i32)
    28      P     vector payload, P = quant.vector_nbytes(dim, codec) bytes:
                  float32 4*dim, float16 2*dim, int8 4+dim (scale | codes)
    28+P    4     CRC-32 (zlib/IEEE) of every byte before it

Record sizes at dim 128: float32 544, float16 288, int8 164 bytes. A value is
self-describing: a reader needs only the dim (to check it), never the codec, and always
gets a float32 vector back (the codec's reconstruction, :mod:`streamer.store.quant`).

Format version 1 (written before the codecs existed) is the same layout with version 1
and dtype code 1 (float32) only; it is still read, so old tables keep opening.

The CRC is checked with the residue property of CRC-32: the CRC of a message followed
by its own little-endian CRC is the constant ``0x2144DF1C``, so verification is one
``zlib.crc32`` call over the value, with no slicing.

Offset value (version 1): ``u8 version | i64 offset``, little-endian, 9 bytes.

Keys in the ``meta`` column family are namespaced by a two-byte prefix: ``m:`` user
metadata (UTF-8 key), ``o:`` offsets (``u32`` big-endian partition then the UTF-8 topic,
so one topic's partitions sort together and parsing is unambiguous), ``s:`` the table's
own system records (format version, dim, codec).
"""

from __future__ import annotations

import functools
import struct
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from streamer.errors import BadRequest, StateError
from streamer.store import quant
from streamer.store.base import (
    FeatureRecord,
    check_offset_item,
    check_record_dim,
    check_state_item,
    entity_key,
    trusted_record,
)
from streamer.store.quant import Codec
from streamer.types import EntityId, Vector

FORMAT_VERSION = 2
"""Version of the feature record value layout written by :func:`encode_record`."""

READ_FORMAT_VERSIONS = (1, 2)
"""Record layout versions :func:`decode_record` reads (1: float32 only, before codecs)."""

OFFSET_FORMAT_VERSION = 1
"""Version of the offset value layout written by :func:`encode_offset`."""

DTYPE_FLOAT32 = quant.CODEC_IDS["float32"]
"""Codec id (record byte 1) of little-endian float32 vectors; the only one of version 1."""

META_PREFIX = b"m:"
OFFSET_PREFIX = b"o:"
SYSTEM_PREFIX = b"s:"

_HEADER = struct.Struct("<BBHIdqi")  # version, codec id, flags, dim, updated_at, count, model
_HEADER_SIZE = _HEADER.size  # 28
_CRC_SIZE = 4
_CRC_RESIDUE = 0x2144DF1C
_OFFSET_VALUE = struct.Struct("<Bq")
_PARTITION = struct.Struct(">I")
_F32_LE = np.dtype("<f4")
_BIG_ENDIAN_HOST = sys.byteorder == "big"
_CODEC_BY_ID: dict[int, Codec] = {cid: name for name, cid in quant.CODEC_IDS.items()}
_KNOWN_IDS = ", ".join(f"{cid} ({name})" for cid, name in sorted(_CODEC_BY_ID.items()))


def record_size(dim: int, codec: Codec = "float32") -> int:
    """Return the encoded size in bytes of a record of dimension ``dim`` under ``codec``.

    Raises
    ------
    BadRequest
        If the codec is unknown or ``dim`` is not a positive int.

    Examples
    --------
    >>> [record_size(128, c) for c in ("float32", "float16", "int8")]
    [544, 288, 164]
    """
    return _HEADER_SIZE + quant.vector_nbytes(dim, codec) + _CRC_SIZE


def _frame(record: FeatureRecord, dim: int, codec_id: int, payload: bytes) -> bytes:
    """Header + payload + CRC of one record (the payload is already encoded)."""
    body = _HEADER.pack(
        FORMAT_VERSION,
        codec_id,
        0,
        dim,
        record.updated_at,
        record.update_count,
        record.model_version,
    ) + payload
    return body + zlib.crc32(body).to_bytes(4, "little")


def _f32_payload(vec: Vector) -> bytes:
    return vec.astype(_F32_LE).tobytes() if _BIG_ENDIAN_HOST else vec.tobytes()


def encode_record(record: FeatureRecord, codec: Codec = "float32") -> bytes:
    """Encode a :class:`FeatureRecord` as a version-2 value.

    Parameters
    ----------
    record
        A validated record; its vector is float32 ``(dim,)``.
    codec
        Vector storage codec (:data:`streamer.store.quant.CODECS`); lossy for
        ``float16`` and ``int8`` (:func:`decode_record` returns the reconstruction).

    Returns
    -------
    bytes
        :func:`record_size` ``(dim, codec)`` bytes (layout in the module docstring).

    Raises
    ------
    BadRequest
        If the codec is unknown, or (``float16``) a component overflows half precision.

    Examples
    --------
    >>> rec = FeatureRecord(np.ones(4, np.float32), 1.5, 2, 7)
    >>> len(encode_record(rec)), len(encode_record(rec, "int8"))
    (48, 40)
    >>> decode_record(encode_record(rec), 4) == rec
    True
    >>> rec = FeatureRecord(np.array([0.5, -1.0, 0.25, 0.0], np.float32), 1.5, 2, 7)
    >>> decode_record(encode_record(rec, "int8"), 4).vector.tolist()
    [0.503936767578125, -0.9999995231628418, 0.2519683837890625, 0.0]
    """
    codec = quant.check_codec(codec)
    vec = record.vector
    payload = _f32_payload(vec) if codec == "float32" else quant.encode_vector(vec, codec)
    return _frame(record, vec.shape[0], quant.CODEC_IDS[codec], payload)


def encode_records(
    records: Sequence[FeatureRecord],
    codec: Codec = "float32",
    *,
    names: Sequence[object] | None = None,
) -> list[bytes]:
    """Encode a batch of records of one dim; byte-identical to :func:`encode_record` each.

    The vectors are quantised in one vectorised :func:`streamer.store.quant.encode_many`
    call (the commit path), not one by one.

    Parameters
    ----------
    records
        Records whose vectors all have the same length.
    codec
        Vector storage codec.
    names
        One name per record (entity ids), used only to say which record failed.

    Returns
    -------
    list of bytes
        One value per record, in order.

    Raises
    ------
    BadRequest
        If the codec is unknown, the records have different dims, or (``float16``) a
        component overflows half precision (the message names the record).
    """
    codec = quant.check_codec(codec)
    if codec == "float32" or not records:
        return [_frame(r, r.vector.shape[0], DTYPE_FLOAT32, _f32_payload(r.vector))
                for r in records]
    dims = {r.vector.shape[0] for r in records}
    if len(dims) != 1:
        msg = f"encode_records needs records of one dim, got dims {sorted(dims)}"
        raise BadRequest(msg)
    try:
        payloads = quant.encode_many(np.stack([r.vector for r in records]), codec)
    except BadRequest:
        _raise_for_culprit(records, codec, names)
        raise
    (dim,) = dims
    codec_id = quant.CODEC_IDS[codec]
    return [_frame(r, dim, codec_id, p) for r, p in zip(records, payloads, strict=True)]


def _raise_for_culprit(
    records: Sequence[FeatureRecord], codec: Codec, names: Sequence[object] | None
) -> None:
    """Re-encode one by one to raise a BadRequest that names the record that failed."""
    for j, rec in enumerate(records):
        try:
            quant.encode_vector(rec.vector, codec)
        except BadRequest as exc:
            name = names[j] if names is not None else j
            msg = f"features[{name!r}] cannot be stored as {codec}: {exc}"
            raise BadRequest(msg) from exc


def decode_record(value: bytes, dim: int, *, key: object = None) -> FeatureRecord:
    """Decode and validate a value written by :func:`encode_record` (format 1 or 2).

    The value says which codec it was written with (byte 1), so the caller needs only
    the table's dim.

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
        Its vector is a read-only float32 ``(dim,)`` array: a view over ``value`` for
        ``float32`` payloads, else the codec's reconstruction (bit for bit
        ``quant.dequantize(*quant.quantize(v, codec), codec)`` of the encoded ``v``).

    Raises
    ------
    StateError
        If the value is truncated, has an unknown format version or codec id, another
        dim, a payload that is invalid for its codec, or its checksum does not match
        (corrupt state: restore from a snapshot or replay).
    """
    n = len(value)
    if n < _HEADER_SIZE + _CRC_SIZE:
        _corrupt(key, f"{n} bytes, shorter than the {_HEADER_SIZE + _CRC_SIZE}-byte frame")
    version, code, _flags, got_dim, updated_at, update_count, model_version = _HEADER.unpack_from(
        value
    )
    if version == FORMAT_VERSION:
        codec = _CODEC_BY_ID.get(code)
        if codec is None:
            _corrupt(key, f"codec id {code}, this code reads ids {_KNOWN_IDS}")
    elif version == 1:
        if code != DTYPE_FLOAT32:
            _corrupt(key, f"dtype code {code} in a format-1 value, expected {DTYPE_FLOAT32} "
                     "(float32)")
        codec = "float32"
    else:
        _corrupt(key, f"format version {version}, this code reads versions "
                 f"{', '.join(map(str, READ_FORMAT_VERSIONS))}")
    if got_dim != dim:
        msg = (
            f"stored feature {key!r} has dim={got_dim} but the table expects dim={dim}; "
            "the table belongs to a type with another embedding size"
        )
        raise StateError(msg)
    payload = 4 * dim if codec == "float32" else quant.vector_nbytes(dim, codec)
    if n != _HEADER_SIZE + payload + _CRC_SIZE:
        _corrupt(key, f"{n} bytes, expected {_HEADER_SIZE + payload + _CRC_SIZE} for "
                 f"dim={dim} {codec}")
    if zlib.crc32(value) != _CRC_RESIDUE:
        _corrupt(key, "checksum mismatch")
    if update_count < 0 or model_version < 0:
        _corrupt(key, f"negative update_count={update_count} or model_version={model_version}")
    if codec == "float32":
        vec = np.frombuffer(value, _F32_LE, dim, _HEADER_SIZE)  # read-only: bytes are immutable
    else:
        try:
            vec = quant.decode_payload(value, _HEADER_SIZE, dim, codec)
        except StateError as exc:
            _corrupt(key, str(exc))
        vec.setflags(write=False)
    return trusted_record(vec, updated_at, update_count, model_version)


@functools.lru_cache(maxsize=32)
def _frame_dtype(dim: int, codec: Codec) -> np.dtype:
    """Return the structured little-endian dtype of one whole value (header, payload, CRC)."""
    names = ["version", "code", "flags", "dim", "updated_at", "count", "model"]
    formats: list[object] = ["u1", "u1", "<u2", "<u4", "<f8", "<i8", "<i4"]
    offsets = [0, 1, 2, 4, 8, 16, 24]
    if codec == "int8":
        names += ["scale", "codes"]
        formats += ["<f4", ("i1", (dim,))]
        offsets += [_HEADER_SIZE, _HEADER_SIZE + 4]
    else:
        names.append("payload")
        formats.append(("<f4" if codec == "float32" else "<f2", (dim,)))
        offsets.append(_HEADER_SIZE)
    size = _HEADER_SIZE + quant.vector_nbytes(dim, codec) + _CRC_SIZE
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})


def decode_records(values: Sequence[bytes | None], dim: int, *,
                   keys: Sequence[object] | None = None) -> list[FeatureRecord | None]:
    """Decode many values at once (a batch get); ``None`` stays ``None``.

    Bit for bit ``[decode_record(v, dim, key=k) ...]``, in one numpy pass when every
    value shares one frame (same format version, codec and size: every value of a table
    written by this code). Anything else, or any check failing, falls back to
    :func:`decode_record` per value, which raises the precise error. The vectors of one
    call are read-only views into one shared ``(n, dim)`` float32 array.

    Raises
    ------
    StateError
        As :func:`decode_record`, for the first bad value.
    """
    present = [j for j, v in enumerate(values) if v is not None]
    out: list[FeatureRecord | None] = [None] * len(values)
    if not present:
        return out
    first = values[present[0]]
    assert first is not None
    version, code = first[0], first[1]
    codec = (_CODEC_BY_ID.get(code) if version == FORMAT_VERSION
             else "float32" if version == 1 and code == DTYPE_FLOAT32 else None)
    vals = [values[j] for j in present]
    dtype = None if codec is None else _frame_dtype(dim, codec)
    if dtype is None or any(len(v) != dtype.itemsize for v in vals):  # type: ignore[arg-type]
        return _decode_each(values, dim, keys)
    arr = np.frombuffer(b"".join(vals), dtype)  # type: ignore[arg-type]
    ok = (all(zlib.crc32(v) == _CRC_RESIDUE for v in vals)  # type: ignore[arg-type]
          and bool((arr["version"] == version).all() and (arr["code"] == code).all()
                   and (arr["dim"] == dim).all() and (arr["count"] >= 0).all()
                   and (arr["model"] >= 0).all()))
    vecs = None
    if ok and codec == "int8":
        scale, codes = arr["scale"], arr["codes"]
        if (np.isfinite(scale).all() and (scale >= 0).all()
                and codes.min() >= -quant.INT8_MAX and not codes[scale == 0].any()):
            vecs = codes.astype(np.float32)
            vecs *= scale[:, None]
    elif ok:
        vecs = arr["payload"]
        vecs = vecs.astype(np.float32) if codec == "float16" else np.ascontiguousarray(vecs)
    if vecs is None:
        return _decode_each(values, dim, keys)
    vecs.setflags(write=False)
    ts, counts, models = arr["updated_at"].tolist(), arr["count"].tolist(), arr["model"].tolist()
    for n, j in enumerate(present):
        out[j] = trusted_record(vecs[n], ts[n], counts[n], models[n])
    return out


def _decode_each(values: Sequence[bytes | None], dim: int,
                 keys: Sequence[object] | None) -> list[FeatureRecord | None]:
    ks = keys if keys is not None else [None] * len(values)
    return [None if v is None else decode_record(v, dim, key=k)
            for v, k in zip(values, ks, strict=True)]


def _corrupt(key: object, detail: str) -> NoReturn:
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
    codec: Codec = "float32",
) -> StagedCommit:
    """Validate and encode the arguments of :meth:`FeatureTable.commit`.

    Every argument is checked before anything is returned, so a backend that writes
    only a :class:`StagedCommit` never writes part of a bad commit. The vectors are
    encoded with ``codec`` (the table's), in one vectorised batch for the lossy codecs.

    Raises
    ------
    BadRequest
        If an argument is not a mapping, or an id, state item or offset is invalid, or
        (``float16``) a vector overflows the codec.
    DimensionMismatch
        If a record's dimension differs from ``dim``.
    """
    for name, arg in (("features", features), ("state", state), ("offsets", offsets)):
        if not isinstance(arg, Mapping):
            msg = f"commit({name}=...) must be a mapping, got {type(arg).__name__}"
            raise BadRequest(msg)
    staged_features: list[tuple[bytes, bytes | None]] = []
    append = staged_features.append
    if codec == "float32":
        for entity, record in features.items():
            key = entity_key(entity)
            if record is None:
                append((key, None))
            else:
                append((key, encode_record(check_record_dim(entity, record, dim))))
    else:
        slots: list[int] = []
        names: list[EntityId] = []
        records: list[FeatureRecord] = []
        for entity, record in features.items():
            key = entity_key(entity)
            if record is not None:
                slots.append(len(staged_features))
                names.append(entity)
                records.append(check_record_dim(entity, record, dim))
            append((key, None))
        for slot, value in zip(slots, encode_records(records, codec, names=names), strict=True):
            staged_features[slot] = (staged_features[slot][0], value)
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


def current_frame_time(value: bytes, dim: int, codec: Codec) -> float | None:
    """Return ``updated_at`` (event s) of a value in today's format, else ``None``.

    Today's format is what :func:`encode_record` writes for ``dim`` and ``codec``:
    format version 2, that codec id, no flags, the length of that dim and a valid
    checksum. Such bytes can be published as they are (:func:`decode_record` followed by
    :func:`encode_record` gives the same bytes). ``None`` (a format-1 value, another
    codec, a corrupt value) means: decode and re-encode it instead.
    """
    if len(value) != _HEADER_SIZE + quant.vector_nbytes(dim, codec) + _CRC_SIZE:
        return None
    version, code, flags, got_dim, updated_at, _count, _model = _HEADER.unpack_from(value)
    if (version != FORMAT_VERSION or code != quant.CODEC_IDS[codec] or flags or got_dim != dim
            or zlib.crc32(value) != _CRC_RESIDUE):
        return None
    return float(updated_at)


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
