"""Feature record / offset codec and FeatureRecord validation."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamer.errors import BadRequest, InvalidVector, StateError
from streamer.store import codec, quant
from streamer.store.base import FeatureRecord
from streamer.store.quant import CODECS


@st.composite
def records(draw: st.DrawFn) -> FeatureRecord:
    dim = draw(st.integers(1, 300))
    vec = draw(
        arrays(
            np.float32,
            dim,
            elements=st.floats(
                allow_nan=False, allow_infinity=False, allow_subnormal=True, width=32
            ),
        )
    )
    return FeatureRecord(
        vec,
        draw(st.floats(allow_nan=False, allow_infinity=False)),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=300, deadline=None)
@given(rec=records())
def test_record_round_trip_is_bitwise(rec: FeatureRecord) -> None:
    value = codec.encode_record(rec)
    assert value == codec.encode_record(rec, "float32")
    assert len(value) == codec.record_size(rec.dim) == 32 + 4 * rec.dim
    back = codec.decode_record(value, rec.dim)
    assert back.vector.tobytes() == rec.vector.tobytes()  # keeps -0.0 and subnormals
    assert back.vector.dtype == np.float32 and back.vector.shape == (rec.dim,)
    assert not back.vector.flags.writeable
    assert (back.updated_at, back.update_count, back.model_version) == (
        rec.updated_at,
        rec.update_count,
        rec.model_version,
    )
    assert back == rec


def test_subnormals_and_negative_zero_survive() -> None:
    vec = np.array([1e-45, -1e-45, 1.1754942e-38, -0.0, 3.4028235e38], np.float32)
    assert np.count_nonzero(np.abs(vec[:3]) < np.finfo(np.float32).tiny) == 3
    back = codec.decode_record(codec.encode_record(FeatureRecord(vec, 0.0, 0, 0)), 5)
    assert back.vector.tobytes() == vec.tobytes()
    assert np.signbit(back.vector[3])


def test_layout_is_the_documented_one() -> None:
    rec = FeatureRecord(np.array([1.5, -2.0], np.float32), 1234.5, 7, 3)
    value = codec.encode_record(rec)
    assert codec.FORMAT_VERSION == 2
    assert value[:28] == struct.pack("<BBHIdqi", 2, 1, 0, 2, 1234.5, 7, 3)
    assert value[28:36] == np.array([1.5, -2.0], "<f4").tobytes()
    assert value[36:] == zlib.crc32(value[:36]).to_bytes(4, "little")


@pytest.mark.parametrize("name", CODECS)
def test_lossy_layouts_are_header_codec_payload_crc(name: str) -> None:
    vec = np.array([0.5, -1.0, 0.25], np.float32)
    value = codec.encode_record(FeatureRecord(vec, 9.0, 1, 2), name)
    payload = quant.encode_vector(vec, name)
    assert value[:28] == struct.pack("<BBHIdqi", 2, quant.CODEC_IDS[name], 0, 3, 9.0, 1, 2)
    assert value[28:-4] == payload
    assert value[-4:] == zlib.crc32(value[:-4]).to_bytes(4, "little")
    assert len(value) == codec.record_size(3, name) == 28 + quant.vector_nbytes(3, name) + 4


def test_record_sizes_per_codec() -> None:
    assert codec.record_size(128, "int8") == 28 + 132 + 4 == 164
    assert codec.record_size(128, "float16") == 28 + 256 + 4 == 288
    assert codec.record_size(128, "float32") == codec.record_size(128) == 28 + 512 + 4 == 544
    v = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    for name in CODECS:
        assert len(codec.encode_record(FeatureRecord(v, 0.0, 0, 0), name)) == codec.record_size(
            128, name
        )
    with pytest.raises(BadRequest, match="unknown vector codec"):
        codec.record_size(4, "bf16")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(rec=records(), name=st.sampled_from(CODECS))
def test_every_codec_round_trips_to_the_quant_reconstruction(rec: FeatureRecord, name: str) -> None:
    if name == "float16" and np.abs(rec.vector).max() >= 65520:
        with pytest.raises(BadRequest, match="overflows float16"):
            codec.encode_record(rec, name)
        return
    value = codec.encode_record(rec, name)
    back = codec.decode_record(value, rec.dim)  # no codec given: the value says it
    want = quant.dequantize(*quant.quantize(rec.vector[None, :], name), name)[0]
    assert back.vector.tobytes() == want.tobytes()
    assert back.vector.dtype == np.float32 and back.vector.shape == (rec.dim,)
    assert not back.vector.flags.writeable
    assert (back.updated_at, back.update_count, back.model_version) == (
        rec.updated_at,
        rec.update_count,
        rec.model_version,
    )
    assert codec.encode_records([rec, rec], name) == [value, value]


def test_format_1_values_are_still_read() -> None:
    """A value written by the format-1 encoder (before codecs) decodes as float32."""
    vec = np.array([1.5, -2.0, 3.25], np.float32)
    body = struct.pack("<BBHIdqi", 1, 1, 0, 3, 77.5, 4, 2) + vec.astype("<f4").tobytes()
    v1 = body + zlib.crc32(body).to_bytes(4, "little")
    rec = codec.decode_record(v1, 3, key=b"i:old")
    assert rec == FeatureRecord(vec, 77.5, 4, 2)
    assert not rec.vector.flags.writeable
    # a format-1 value only ever held float32: another dtype code is corruption
    body = struct.pack("<BBHIdqi", 1, 3, 0, 3, 77.5, 4, 2) + bytes(7)
    with pytest.raises(StateError, match="dtype code 3 in a format-1 value"):
        codec.decode_record(body + zlib.crc32(body).to_bytes(4, "little"), 3, key=b"i:old")


@pytest.mark.parametrize("code", [0, 4, 9, 255])
def test_unknown_codec_id_is_a_state_error(code: int) -> None:
    body = struct.pack("<BBHIdqi", 2, code, 0, 2, 0.0, 0, 0) + bytes(8)
    value = body + zlib.crc32(body).to_bytes(4, "little")  # a valid checksum: newer code?
    with pytest.raises(StateError, match=f"codec id {code}, this code reads ids 1 .float32."):
        codec.decode_record(value, 2, key=b"i:x")


def test_corrupt_int8_payload_with_a_valid_checksum_is_a_state_error() -> None:
    vec = np.array([0.5, -1.0], np.float32)
    good = codec.encode_record(FeatureRecord(vec, 0.0, 0, 0), "int8")
    for payload in (
        np.float32(-1.0).tobytes() + bytes([64, 129]),  # negative scale
        np.float32(0.01).tobytes() + bytes([64, 128]),  # code -128
        np.float32(np.nan).tobytes() + bytes([1, 2]),  # NaN scale
    ):
        body = good[:28] + payload
        value = body + zlib.crc32(body).to_bytes(4, "little")
        with pytest.raises(StateError, match="i:q.*corrupt int8 vector payload"):
            codec.decode_record(value, 2, key=b"i:q")


def test_float16_overflow_in_a_batch_names_the_record() -> None:
    ok = FeatureRecord(np.ones(2, np.float32), 0.0, 0, 0)
    big = FeatureRecord(np.array([1.0, 1e5], np.float32), 0.0, 0, 0)
    with pytest.raises(BadRequest, match=r"features\['i:big'\] cannot be stored as float16"):
        codec.encode_records([ok, big], "float16", names=["i:ok", "i:big"])
    with pytest.raises(BadRequest, match="one dim"):
        codec.encode_records([ok, FeatureRecord(np.ones(3, np.float32), 0.0, 0, 0)], "int8")
    assert codec.encode_records([], "int8") == []


@settings(max_examples=200, deadline=None)
@given(rec=records(), data=st.data())
def test_any_single_byte_corruption_is_detected(rec: FeatureRecord, data: st.DataObject) -> None:
    value = bytearray(codec.encode_record(rec))
    pos = data.draw(st.integers(0, len(value) - 1))
    value[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(StateError):
        codec.decode_record(bytes(value), rec.dim, key=b"i:x")


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda v: v[:10], "shorter"),
        (lambda v: v[:-1], "expected"),
        (lambda v: v + b"\0", "expected"),
        (lambda v: b"\x03" + v[1:], "format version 3, this code reads versions 1, 2"),
        (lambda v: b"\x00" + v[1:], "format version 0"),
        (lambda v: v[:1] + b"\x07" + v[2:], "codec id 7"),
        (lambda v: v[:1] + b"\x03" + v[2:], "48 bytes, expected 40 for dim=4 int8"),
        (lambda v: b"\x01\x02" + v[2:], "dtype code 2 in a format-1 value"),
        (lambda v: v[:30] + bytes([v[30] ^ 1]) + v[31:], "checksum"),
        (lambda v: b"", "shorter"),
    ],
)
def test_corrupt_values_raise_state_error(mangle, match: str) -> None:
    value = codec.encode_record(FeatureRecord(np.ones(4, np.float32), 1.0, 1, 1))
    with pytest.raises(StateError, match=match) as info:
        codec.decode_record(mangle(value), 4, key=b"i:bad")
    assert "i:bad" in str(info.value)


def test_wrong_dim_is_a_state_error_naming_both_dims() -> None:
    value = codec.encode_record(FeatureRecord(np.ones(4, np.float32), 1.0, 1, 1))
    with pytest.raises(StateError, match="dim=4.*dim=8"):
        codec.decode_record(value, 8)


def test_offset_codec_round_trip_and_validation() -> None:
    for off in (0, 1, 2**31, 2**63 - 1):
        assert codec.decode_offset(codec.encode_offset(off)) == off
    assert len(codec.encode_offset(5)) == 9
    with pytest.raises(StateError):
        codec.decode_offset(b"\x01" + b"\0" * 7)
    with pytest.raises(StateError):
        codec.decode_offset(b"\x09" + b"\0" * 8)
    with pytest.raises(StateError):
        codec.decode_offset(struct.pack("<Bq", 1, -3))


@given(
    topic=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    p=st.integers(0, 2**31 - 1),
)
def test_offset_key_round_trip(topic: str, p: int) -> None:
    key = codec.offset_key(topic, p)
    assert key.startswith(codec.OFFSET_PREFIX)
    assert codec.parse_offset_key(key) == (topic, p)


def test_offset_keys_group_partitions_and_do_not_collide_with_meta() -> None:
    keys = sorted(codec.offset_key(t, p) for t in ("b", "a") for p in (10, 2, 1))
    assert [codec.parse_offset_key(k) for k in keys] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 10),
        ("b", 10),
    ]
    assert codec.meta_storage_key("o:x") != codec.offset_key("x", 0)
    assert not codec.meta_storage_key("o:x").startswith(codec.OFFSET_PREFIX)
    with pytest.raises(StateError):
        codec.parse_offset_key(b"m:abc")


def test_feature_record_is_immutable_and_read_only_without_touching_input() -> None:
    vec = np.array([1.0, 2.0], np.float32)
    rec = FeatureRecord(vec, 1, 2, 3)
    assert vec.flags.writeable  # the caller's array keeps its flags
    assert not rec.vector.flags.writeable
    vec[0] = 42.0  # an in-place update of the learner's row does not reach the record
    assert rec.vector.tolist() == [1.0, 2.0]
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    col = FeatureRecord(matrix[:, 1], 0.0, 0, 0)  # a strided view is copied too
    matrix[:] = 0
    assert col.vector.tolist() == [1.0, 4.0] and col.vector.flags.c_contiguous
    assert type(rec.updated_at) is float and rec.updated_at == 1.0
    with pytest.raises(AttributeError):
        rec.update_count = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(rec)


def test_feature_record_casts_real_arrays_to_float32() -> None:
    rec = FeatureRecord(np.array([1.0, 2.5]), 0.0, 0, 0)
    assert rec.vector.dtype == np.float32 and rec.vector.tolist() == [1.0, 2.5]
    rec = FeatureRecord([1, 2, 3], 0.0, np.int64(4), np.int32(1))  # type: ignore[arg-type]
    assert rec.vector.dtype == np.float32 and rec.update_count == 4
    assert type(rec.update_count) is int
    big = FeatureRecord(np.array([1.0, 2.0], ">f4"), 0.0, 0, 0)
    assert big.vector.dtype == np.float32 and codec.decode_record(
        codec.encode_record(big), 2
    ).vector.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "vec",
    [
        np.array([1.0, np.nan], np.float32),
        np.array([np.inf, 1.0], np.float32),
        np.array([-np.inf], np.float64),
        np.zeros((2, 2), np.float32),
        np.zeros(0, np.float32),
        np.array(["a", "b"]),
        np.array([1 + 2j]),
        3.0,
    ],
)
def test_feature_record_rejects_bad_vectors(vec) -> None:
    with pytest.raises(InvalidVector):
        FeatureRecord(vec, 0.0, 0, 0)


@settings(max_examples=100, deadline=None)
@given(
    dim=st.integers(1, 300),
    data=st.data(),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_any_non_finite_value_is_rejected_without_warnings(
    dim: int, data: st.DataObject, bad: float
) -> None:
    vec = np.full(dim, 1e30, np.float32)
    pos = data.draw(st.integers(0, dim - 1))
    vec[pos] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an InvalidVector, never a RuntimeWarning
        with pytest.raises(InvalidVector, match=f"index {pos} "):
            FeatureRecord(vec, 0.0, 0, 0)


def test_nan_message_says_where() -> None:
    with pytest.raises(InvalidVector, match="index 2"):
        FeatureRecord(np.array([0, 1, np.nan, 3], np.float32), 0.0, 0, 0)


def test_large_finite_values_are_not_mistaken_for_overflow() -> None:
    vec = np.full(1000, np.finfo(np.float32).max, np.float32)
    assert FeatureRecord(vec, 0.0, 0, 0).vector[0] == np.finfo(np.float32).max


@pytest.mark.parametrize(
    ("ts", "count", "version"),
    [
        (float("nan"), 0, 0),
        (float("inf"), 0, 0),
        ("1.0", 0, 0),
        (True, 0, 0),
        (0.0, -1, 0),
        (0.0, 2**63, 0),
        (0.0, 1.5, 0),
        (0.0, 0, -1),
        (0.0, 0, 2**31),
        (0.0, True, 0),
    ],
)
def test_feature_record_rejects_bad_metadata(ts, count, version) -> None:
    with pytest.raises(BadRequest):
        FeatureRecord(np.ones(2, np.float32), ts, count, version)


def test_stage_commit_validates_everything_first() -> None:
    good = FeatureRecord(np.ones(2, np.float32), 0.0, 0, 0)
    staged = codec.stage_commit({"i:a": good, "i:b": None}, {b"k": None}, {("t", 1): 3}, 2)
    assert staged.features == [(b"i:a", codec.encode_record(good)), (b"i:b", None)]
    other = FeatureRecord(np.array([0.3, -2.0], np.float32), 1.0, 2, 3)
    lossy = codec.stage_commit(
        {"i:c": good, "i:b": None, "i:a": other}, {}, {}, 2, "int8"
    )  # the batch keeps the mapping's order, deletes in place
    assert lossy.features == [
        (b"i:c", codec.encode_record(good, "int8")),
        (b"i:b", None),
        (b"i:a", codec.encode_record(other, "int8")),
    ]
    with pytest.raises(BadRequest, match="i:z.*float16"):
        codec.stage_commit({"i:a": good, "i:z": FeatureRecord([7e4, 0], 0.0, 0, 0)}, {}, {}, 2,
                           "float16")
    with pytest.raises(BadRequest, match="unknown vector codec"):
        codec.stage_commit({"i:a": good}, {}, {}, 2, "bf16")  # type: ignore[arg-type]
    assert staged.state == [(b"k", None)]
    assert staged.offsets == [(codec.offset_key("t", 1), codec.encode_offset(3))]
    with pytest.raises(BadRequest, match="get_many takes a sequence"):
        codec.entity_keys("i:a")


# --- batch decoding (rocks get_many) -----------------------------------------------------


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_decode_records_is_bitwise_decode_record(codec_name):
    from streamer.store import codec as C

    rng = np.random.default_rng(3)
    recs = [FeatureRecord(vector=rng.standard_normal(16).astype(np.float32),
                          updated_at=float(i), update_count=i, model_version=2)
            for i in range(50)]
    recs[7] = FeatureRecord(vector=np.zeros(16, np.float32) + 1e-3, updated_at=1.0,
                            update_count=0, model_version=0)
    vals: list[bytes | None] = list(C.encode_records(recs, codec_name))
    vals[3] = None
    vals[20] = None
    got = C.decode_records(vals, 16)
    want = [None if v is None else C.decode_record(v, 16) for v in vals]
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want, strict=True):
        if w is not None:
            assert g.vector.tobytes() == w.vector.tobytes()
            assert (g.updated_at, g.update_count, g.model_version) == (
                w.updated_at, w.update_count, w.model_version)
            assert g.vector.dtype == np.float32 and not g.vector.flags.writeable
    assert C.decode_records([None, None], 16) == [None, None]


def test_decode_records_falls_back_and_raises_for_the_bad_value():
    from streamer.store import codec as C

    rec = FeatureRecord(vector=np.ones(8, np.float32), updated_at=1.0, update_count=1,
                        model_version=1)
    good = C.encode_record(rec, "int8")
    mixed = [good, C.encode_record(rec, "float32"), good]  # two frames: per-value path
    assert [r.vector.tobytes() for r in C.decode_records(mixed, 8)] == [
        C.decode_record(v, 8).vector.tobytes() for v in mixed]
    bad = bytearray(good)
    bad[40] ^= 0xFF  # a flipped payload bit: the checksum fails
    with pytest.raises(StateError, match=r"corrupt feature value for b'k2': checksum"):
        C.decode_records([good, good, bytes(bad)], 8, keys=[b"k0", b"k1", b"k2"])
    with pytest.raises(StateError, match="dim=8 but the table expects dim=4"):
        C.decode_records([good], 4)


@pytest.mark.parametrize("name", CODECS)
def test_current_frame_time_tells_which_values_go_out_as_stored(name) -> None:
    rng = np.random.default_rng(3)
    rec = FeatureRecord(rng.normal(size=6).astype(np.float32), 1234.5, 7, 3)
    value = codec.encode_record(rec, name)
    assert codec.current_frame_time(value, 6, name) == 1234.5
    # today's bytes are a fixed point of decode -> encode: publishing them as stored is
    # what the engine would publish
    assert codec.encode_record(codec.decode_record(value, 6), name) == value
    other = next(c for c in CODECS if c != name)
    assert codec.current_frame_time(value, 6, other) is None  # another codec
    assert codec.current_frame_time(value, 5, name) is None  # another dim
    flipped = value[:-5] + bytes([value[-5] ^ 1]) + value[-4:]
    assert codec.current_frame_time(flipped, 6, name) is None  # checksum fails
    flagged = value[:2] + b"\x01\x00" + value[4:]
    assert codec.current_frame_time(flagged, 6, name) is None
    v1 = struct.pack("<BBHIdqi", 1, 1, 0, 6, 1.0, 1, 1) + rec.vector.astype("<f4").tobytes()
    v1 += zlib.crc32(v1).to_bytes(4, "little")
    assert codec.current_frame_time(v1, 6, "float32") is None  # format 1: re-encode
