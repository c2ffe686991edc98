"""Vector storage codecs: ``float32``, ``float16`` and ``int8`` (scalar quantisation).

Pure numpy; no I/O. Every codec reconstructs a vector as ``v_hat = codes * scale``
(float32 arithmetic), with ``scale = 1`` for the two float codecs, so the batch API
(:func:`quantize` / :func:`dequantize`) has one shape whatever the codec.

Per-vector payload layouts (little-endian, no header: the record that holds a payload
carries the codec and the dim)::

    codec    bytes      layout
    float32  4 * dim    IEEE binary32 components
    float16  2 * dim    IEEE binary16 components
    int8     4 + dim    scale (binary32) | dim signed 8-bit codes in [-127, 127]

``int8`` is *symmetric* scalar quantisation with one scale per vector, as in the
symmetric (zero-point 0) case of Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, eq. (1)
``r = S (q - Z)`` with ``Z = 0``; FAISS's ``ScalarQuantizer`` (``QT_8bit``) is the
trained, per-dimension-range variant of the same idea. Here no training is needed, so
every vector can be encoded on its own in the streaming write path:

* ``scale = max_i |v_i| / 127`` rounded **towards zero to 17 significant bits**
  (:data:`SCALE_BITS`; a binary32 with its 6 low mantissa bits clear). Towards zero, so
  ``127 * scale <= max_i |v_i|``: a decoded component never exceeds the largest input
  magnitude, and decoding never overflows. 17 bits, so every product ``code * scale``
  (``|code| <= 127``: 7 bits) has at most 24 significant bits and is **exact** in
  binary32: decoding has no rounding error, and re-encoding a decoded vector gives back
  the same scale and codes, byte for byte (the codec is idempotent, so a vector read
  from an int8 table and stored again - a replica, a transfer, a re-publish - never
  drifts). The scale loses at most ``2**-16`` of its value to this rounding;
* ``code_i = rint(v_i / scale)`` (round half to even), which gives
  ``|v_i - code_i * scale| <= scale / 2`` exactly (``max_i |v_i| / scale`` is below
  ``127 / (1 - 2**-16) < 127.5``, so no code is clipped);
* the zero vector, and any vector with ``max_i |v_i| < 127 * 2**-126`` (so small that
  its scale would be a subnormal binary32), is stored as scale 0 and all-zero codes:
  it is flushed to the zero vector (cosine search cannot use it anyway).

``float16`` is IEEE half precision, round to nearest even: relative error at most
``2**-11`` for ``|v_i| >= 2**-14``, absolute error at most ``2**-25`` below (subnormals;
values under ``2**-25`` become 0). A component that would overflow half precision
(``|v_i| >= 65520``, which rounds to infinity) is **refused** rather than clipped:
clipping some components would silently turn the vector.

Non-finite input (NaN, inf) is refused by every codec.
"""

from __future__ import annotations

import math
import struct
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, StateError
from streamer.types import Matrix, Vector

__all__ = [
    "CODECS",
    "CODEC_IDS",
    "Codec",
    "SCALE_BITS",
    "check_codec",
    "codec_from_id",
    "decode_payload",
    "decode_vector",
    "dequantize",
    "encode_many",
    "encode_vector",
    "quantize",
    "vector_nbytes",
]

Codec = Literal["float32", "float16", "int8"]
"""Name of a vector storage codec."""

CODECS: tuple[Codec, ...] = get_args(Codec)
"""Every codec name, in the order of their ids."""

CODEC_IDS: dict[Codec, int] = {"float32": 1, "float16": 2, "int8": 3}
"""One-byte code of each codec; ``float32 = 1`` is the dtype code that
:mod:`streamer.store.codec` already writes in record byte 1."""

INT8_MAX = 127
"""Largest code magnitude; ``-128`` is never written (symmetric range)."""

SCALE_BITS = 17
"""Significant bits kept in an int8 scale: ``7 + 17 = 24`` makes ``code * scale`` exact."""

_F32 = np.dtype("<f4")
_F16 = np.dtype("<f2")
_I8 = np.dtype("i1")
_PAYLOAD_DTYPE: dict[Codec, np.dtype] = {"float32": _F32, "float16": _F16, "int8": _I8}
_SCALE_BYTES = 4
_SCALE = struct.Struct("<f")
# Below this max|v| the scale max|v|/127 would be a subnormal binary32 (lossy): flush.
_FLUSH_BELOW = INT8_MAX * float(np.finfo(np.float32).tiny)
_F16_MAX = float(np.finfo(np.float16).max)  # 65504


def check_codec(codec: object) -> Codec:
    """Return ``codec`` if it names a codec.

    Raises
    ------
    BadRequest
        If it is not one of :data:`CODECS`.
    """
    if codec not in CODECS:
        msg = f"unknown vector codec {codec!r}; expected one of {', '.join(CODECS)}"
        raise BadRequest(msg)
    return codec  # type: ignore[return-value]


def codec_from_id(code: int) -> Codec:
    """Return the codec whose one-byte id (:data:`CODEC_IDS`) is ``code``.

    Raises
    ------
    StateError
        If no codec has that id (a stored record from newer code, or corruption).
    """
    for name, cid in CODEC_IDS.items():
        if cid == code:
            return name
    msg = f"unknown vector codec id {code!r}; this code reads ids {sorted(CODEC_IDS.values())}"
    raise StateError(msg)


def vector_nbytes(dim: int, codec: Codec) -> int:
    """Return the payload size in bytes of one ``dim``-vector under ``codec``.

    Examples
    --------
    >>> [vector_nbytes(128, c) for c in CODECS]
    [512, 256, 132]
    """
    codec = check_codec(codec)
    _check_dim(dim)
    if codec == "int8":
        return _SCALE_BYTES + dim
    return _PAYLOAD_DTYPE[codec].itemsize * dim


def quantize(
    vectors: npt.ArrayLike, codec: Codec
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]:
    """Encode a batch of vectors as codes and per-vector scales.

    Parameters
    ----------
    vectors
        Shape ``(n, dim)``, real (float or integer; converted to float32 first), finite.
    codec
        One of :data:`CODECS`.

    Returns
    -------
    codes, scales
        ``codes`` shape ``(n, dim)``: little-endian float32, float16, or int8 in
        ``[-127, 127]``; ``scales`` shape ``(n,)`` float32, ``>= 0`` (all 1.0 for the
        float codecs). ``dequantize(codes, scales, codec)`` reconstructs the vectors.

    Raises
    ------
    BadRequest
        If the codec is unknown, the array is not 2-D real with ``dim >= 1``, a value is
        NaN or infinite (also after conversion to float32), or (float16) a value
        overflows half precision.

    Examples
    --------
    >>> codes, scales = quantize(np.array([[0.5, -1.0, 0.25]], np.float32), "int8")
    >>> codes.tolist(), scales.tolist()
    ([[64, -127, 32]], [0.007874011993408203])
    """
    codec = check_codec(codec)
    v = _as_matrix(vectors)
    if codec == "float32":
        return v.astype(_F32, copy=True), np.ones(v.shape[0], np.float32)
    if codec == "float16":
        return _to_f16(v), np.ones(v.shape[0], np.float32)
    return _to_int8(v)


def dequantize(
    codes: npt.ArrayLike, scales: npt.ArrayLike, codec: Codec
) -> Matrix:
    """Reconstruct vectors from :func:`quantize` output: ``codes * scales[:, None]``.

    Parameters
    ----------
    codes
        Shape ``(n, dim)`` with the codec's dtype (float32, float16 or int8).
    scales
        Shape ``(n,)``, float32, finite and ``>= 0``.
    codec
        The codec the codes were made with.

    Returns
    -------
    Matrix
        Shape ``(n, dim)`` float32 (a new array).

    Raises
    ------
    BadRequest
        If the codec is unknown, or the shapes, dtypes or scales do not fit it.
    """
    codec = check_codec(codec)
    c = np.asarray(codes)
    s = np.asarray(scales)
    if c.ndim != 2 or c.dtype != _PAYLOAD_DTYPE[codec]:
        msg = (
            f"{codec} codes must be a 2-D {_PAYLOAD_DTYPE[codec].name} array, "
            f"got shape {c.shape} dtype {c.dtype}"
        )
        raise BadRequest(msg)
    if s.shape != (c.shape[0],) or s.dtype != np.float32:
        msg = (
            f"scales must be float32 of shape ({c.shape[0]},), "
            f"got shape {s.shape} dtype {s.dtype}"
        )
        raise BadRequest(msg)
    if not (np.isfinite(s).all() and (s >= 0).all()):
        msg = "scales must be finite and >= 0"
        raise BadRequest(msg)
    out = c.astype(np.float32)
    if codec == "int8":
        out *= s[:, None]
    return out


def encode_vector(vector: npt.ArrayLike, codec: Codec) -> bytes:
    """Encode one vector as its codec payload (layouts in the module docstring).

    Parameters
    ----------
    vector
        Shape ``(dim,)``, real, finite (converted to float32 first).
    codec
        One of :data:`CODECS`.

    Returns
    -------
    bytes
        :func:`vector_nbytes` ``(dim, codec)`` bytes; the same input always gives the
        same bytes, on any host byte order.

    Raises
    ------
    BadRequest
        As :func:`quantize` (one-line message).

    Examples
    --------
    >>> b = encode_vector(np.array([0.5, -1.0, 0.25], np.float32), "int8")
    >>> len(b), [round(float(x), 3) for x in decode_vector(b, 3, "int8")]
    (7, [0.504, -1.0, 0.252])
    """
    v = np.asarray(vector)
    if v.ndim != 1:
        msg = f"a vector must have shape (dim,), got shape {v.shape}"
        raise BadRequest(msg)
    codes, scales = quantize(v[None, :], codec)
    if codec == "int8":
        return scales.astype(_F32).tobytes() + codes.tobytes()
    return codes.tobytes()


def encode_many(vectors: npt.ArrayLike, codec: Codec) -> list[bytes]:
    """Encode each row of a batch; byte-identical to :func:`encode_vector` per row.

    One :func:`quantize` call for the whole batch (the write path of a commit: much
    cheaper per record than calling :func:`encode_vector` in a loop for int8).

    Parameters
    ----------
    vectors
        Shape ``(n, dim)``, real, finite.
    codec
        One of :data:`CODECS`.

    Returns
    -------
    list of bytes
        ``n`` payloads of :func:`vector_nbytes` ``(dim, codec)`` bytes each.

    Raises
    ------
    BadRequest
        As :func:`quantize`.
    """
    codes, scales = quantize(vectors, codec)
    if codec != "int8":
        return [row.tobytes() for row in codes]
    return [s.tobytes() + row.tobytes() for s, row in zip(scales, codes, strict=True)]


def decode_vector(payload: bytes, dim: int, codec: Codec) -> Vector:
    """Decode a payload written by :func:`encode_vector`.

    Parameters
    ----------
    payload
        The stored bytes (``bytes``, ``bytearray`` or ``memoryview``).
    dim
        Vector dimension (``>= 1``); the payload size must match it.
    codec
        The codec it was encoded with.

    Returns
    -------
    Vector
        Shape ``(dim,)`` float32, a new writable array; equal bit for bit to the row
        :func:`dequantize` gives for the same vector.

    Raises
    ------
    BadRequest
        If the codec is unknown or ``dim`` is not a positive int.
    StateError
        If the payload has the wrong size, or (int8) a negative or non-finite scale, a
        ``-128`` code, or non-zero codes with a zero scale (corrupt stored bytes).
    """
    codec = check_codec(codec)
    _check_dim(dim)
    want = vector_nbytes(dim, codec)
    if len(payload) != want:
        msg = f"corrupt {codec} vector payload: {len(payload)} bytes, expected {want} for dim={dim}"
        raise StateError(msg)
    return decode_payload(payload, 0, dim, codec)


def decode_payload(buffer: bytes, offset: int, dim: int, codec: Codec) -> Vector:
    """Decode the payload that starts at ``offset`` in ``buffer``, without argument checks.

    The fast path of :func:`decode_vector` for a caller that already checked ``codec``,
    ``dim`` and that ``buffer`` holds :func:`vector_nbytes` ``(dim, codec)`` bytes from
    ``offset`` (the feature record decoder, :func:`streamer.store.codec.decode_record`).
    The payload's own content is still checked (int8 scale and codes).

    Parameters
    ----------
    buffer
        ``bytes``, ``bytearray`` or ``memoryview`` holding the payload.
    offset
        Byte offset of the payload in ``buffer``.
    dim
        Vector dimension, ``>= 1``.
    codec
        A valid codec name.

    Returns
    -------
    Vector
        Shape ``(dim,)`` float32, a new writable array; bitwise what
        :func:`decode_vector` returns.

    Raises
    ------
    StateError
        (int8) A negative or non-finite scale, a ``-128`` code, or non-zero codes with a
        zero scale (corrupt stored bytes).
    """
    if codec != "int8":
        return np.frombuffer(buffer, _PAYLOAD_DTYPE[codec], dim, offset).astype(np.float32)
    (scale,) = _SCALE.unpack_from(buffer, offset)  # a Python float holding the binary32
    codes = np.frombuffer(buffer, _I8, dim, offset + _SCALE_BYTES)
    if not (math.isfinite(scale) and scale >= 0):
        msg = f"corrupt int8 vector payload: scale {scale!r}, expected finite and >= 0"
        raise StateError(msg)
    if codes.min() < -INT8_MAX or (scale == 0 and codes.any()):
        msg = "corrupt int8 vector payload: code -128, or non-zero codes with scale 0"
        raise StateError(msg)
    out = codes.astype(np.float32)
    out *= np.float32(scale)
    return out


def _check_dim(dim: object) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        msg = f"dim must be a positive int, got {dim!r}"
        raise BadRequest(msg)


def _as_matrix(vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    v = np.asarray(vectors)
    if v.dtype.kind not in "fiu":
        msg = f"vectors must be real numbers, got dtype {v.dtype}"
        raise BadRequest(msg)
    if v.ndim != 2 or v.shape[1] < 1:
        msg = f"vectors must have shape (n, dim) with dim >= 1, got shape {v.shape}"
        raise BadRequest(msg)
    with np.errstate(over="ignore", invalid="ignore"):
        v = v.astype(np.float32, copy=False)
    if not np.isfinite(v).all():
        bad = np.argwhere(~np.isfinite(v))[0]
        msg = (
            f"vector {int(bad[0])} has a NaN or infinite value at component {int(bad[1])} "
            "(after conversion to float32); only finite values can be stored"
        )
        raise BadRequest(msg)
    return v


def _to_f16(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float16]:
    with np.errstate(over="ignore"):
        h = v.astype(_F16)
    if not np.isfinite(h).all():
        row, col = np.argwhere(~np.isfinite(h))[0]
        msg = (
            f"vector {int(row)} component {int(col)} = {float(v[row, col])!r} overflows "
            f"float16 (|value| must be < 65520, max representable {_F16_MAX:g}); "
            "use the float32 or int8 codec"
        )
        raise BadRequest(msg)
    return h


def _to_int8(
    v: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    v64 = v.astype(np.float64)
    maxabs = np.abs(v64).max(axis=1)  # exact: |float32| is a float32
    flushed = maxabs < _FLUSH_BELOW
    # max|v|/127 truncated to SCALE_BITS significant bits (towards zero): frexp gives
    # mantissa in [0.5, 1) and exponent, both exact; the result is a normal binary32
    # (>= 2**-126 for every vector that is not flushed), so the cast is exact too
    mant, expo = np.frexp(np.where(flushed, 1.0, maxabs / INT8_MAX))
    s64 = np.ldexp(np.floor(mant * 2.0**SCALE_BITS), expo - SCALE_BITS)
    # maxabs/127 rounded up in float64 can only land on a 17-bit value when it is exact
    # (max|v| has 24 bits); step down anyway if 127*scale ever exceeded max|v|
    up = s64 * INT8_MAX > maxabs
    s64[up] -= np.ldexp(1.0, expo[up] - SCALE_BITS)
    s64[flushed] = 0.0
    scales = s64.astype(np.float32)
    safe = np.where(flushed, 1.0, s64)
    q = np.rint(v64 / safe[:, None])
    q[flushed] = 0.0
    np.clip(q, -INT8_MAX, INT8_MAX, out=q)  # max|v|/scale < 127.5 already; belt and braces
    return q.astype(_I8), scales
