"""Vector storage codecs (float32 / float16 / int8): error bounds, sizes, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamer.errors import BadRequest, StateError
from streamer.store import quant
from streamer.store.quant import (
    CODECS,
    decode_vector,
    dequantize,
    encode_vector,
    quantize,
    vector_nbytes,
)

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def finite_f32(max_abs: float = F32_MAX) -> st.SearchStrategy[float]:
    return st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False,
                     allow_subnormal=True, width=32)


@st.composite
def vectors(draw: st.DrawFn, max_abs: float = F32_MAX) -> np.ndarray:
    dim = draw(st.integers(1, 64))
    return draw(arrays(np.float32, dim, elements=finite_f32(max_abs)))


# --- int8 ---------------------------------------------------------------------------


def _check_int8_bound(v: np.ndarray, v_hat: np.ndarray, scale: float) -> None:
    """|v - v_hat| <= scale/2 exactly: code*scale has no rounding error (17-bit scale)."""
    err = np.abs(v.astype(np.float64) - v_hat.astype(np.float64))
    assert (err <= scale / 2).all(), (v, v_hat, scale)


@settings(max_examples=400, deadline=None)
@given(v=vectors())
def test_int8_round_trip_is_within_half_a_step(v: np.ndarray) -> None:
    payload = encode_vector(v, "int8")
    assert len(payload) == len(v) + 4
    scale = float(np.frombuffer(payload, "<f4", 1)[0])
    v_hat = decode_vector(payload, len(v), "int8")
    assert v_hat.dtype == np.float32 and v_hat.shape == v.shape
    assert np.isfinite(v_hat).all()
    maxabs = float(np.abs(v).max())
    # decoded magnitudes never exceed the input's largest one
    assert float(np.abs(v_hat).max()) <= maxabs
    if maxabs < 127 * F32_TINY:
        assert scale == 0.0 and not v_hat.any()  # flushed (documented)
        return
    assert scale == pytest.approx(maxabs / 127, rel=2**-16)
    assert 127 * scale <= maxabs
    mant, _ = np.frexp(scale)
    assert mant * 2**quant.SCALE_BITS == int(mant * 2**quant.SCALE_BITS)  # 17-bit scale
    _check_int8_bound(v, v_hat, scale)
    codes = np.frombuffer(payload, np.int8, len(v), 4)
    assert codes.min() >= -127 and np.abs(codes).max() == 127


def test_int8_exact_small_example() -> None:
    v = np.array([2.0, -1.0, -0.0, 0.5 / 127, 1.5 / 127], np.float32)
    codes, scales = quantize(v[None], "int8")
    assert codes.dtype == np.int8
    # scale 2/127: -63.5 steps is a tie (to even: -64); 0.25 -> 0 and 0.75 -> 1 step
    assert codes.tolist() == [[127, -64, 0, 0, 1]]
    assert 127 * float(scales[0]) <= 2.0
    assert float(scales[0]) == pytest.approx(2.0 / 127, rel=2**-16)


@settings(max_examples=300, deadline=None)
@given(v=vectors())
def test_int8_is_idempotent_and_decodes_exactly(v: np.ndarray) -> None:
    """Re-encoding a decoded vector gives the same bytes; code*scale is exact in float32."""
    payload = encode_vector(v, "int8")
    v_hat = decode_vector(payload, len(v), "int8")
    assert encode_vector(v_hat, "int8") == payload
    codes, scales = quantize(v_hat[None], "int8")
    assert dequantize(codes, scales, "int8")[0].tobytes() == v_hat.tobytes()
    exact = np.frombuffer(payload, np.int8, len(v), 4).astype(np.float64) * float(
        np.frombuffer(payload, "<f4", 1)[0])
    assert (v_hat.astype(np.float64) == exact).all()


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_is_idempotent_on_a_batch(codec: str) -> None:
    rng = np.random.default_rng(11)
    m = (rng.standard_normal((500, 64)) * np.logspace(-30, 30, 500)[:, None]).astype(np.float32)
    if codec == "float16":
        m = np.clip(m, -6e4, 6e4)
    once = dequantize(*quantize(m, codec), codec)
    twice = dequantize(*quantize(once, codec), codec)
    assert twice.tobytes() == once.tobytes()
    assert quant.encode_many(once, codec) == quant.encode_many(twice, codec)


def test_int8_zero_vector_has_scale_zero() -> None:
    z = np.zeros(16, np.float32)
    payload = encode_vector(z, "int8")
    assert payload == bytes(20)
    out = decode_vector(payload, 16, "int8")
    assert out.dtype == np.float32 and not out.any()
    assert not np.signbit(decode_vector(encode_vector(-z, "int8"), 16, "int8")).any()


def test_int8_extremes_do_not_overflow() -> None:
    v = np.array([F32_MAX, -F32_MAX, 1.0, F32_MAX / 3], np.float32)
    out = decode_vector(encode_vector(v, "int8"), 4, "int8")
    assert np.isfinite(out).all()
    assert out[0] <= F32_MAX and out[1] >= -F32_MAX
    assert out[0] / F32_MAX == pytest.approx(1.0, abs=1e-6)
    assert out[2] == 0.0  # far below half a step
    # the smallest vector that is still quantised, and one just below it (flushed)
    keep = np.array([127 * F32_TINY, -F32_TINY], np.float32)
    kept = decode_vector(encode_vector(keep, "int8"), 2, "int8")
    assert kept[0] > 0 and kept[0] <= keep[0]
    gone = np.array([np.nextafter(np.float32(127 * F32_TINY), np.float32(0))], np.float32)
    assert not decode_vector(encode_vector(gone, "int8"), 1, "int8").any()


# --- float16 ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(v=vectors(max_abs=65504.0))
def test_float16_round_trip_is_within_half_an_ulp(v: np.ndarray) -> None:
    payload = encode_vector(v, "float16")
    assert len(payload) == 2 * len(v)
    out = decode_vector(payload, len(v), "float16")
    assert out.dtype == np.float32
    h = np.abs(out).astype(np.float16)
    with np.errstate(over="ignore"):  # spacing(65504) is inf in float16; the ulp there is 32
        half_ulp = np.where(h == 65504, 32.0, np.spacing(h).astype(np.float64)) / 2
    err = np.abs(out.astype(np.float64) - v.astype(np.float64))
    assert (err <= half_ulp).all()
    normal = np.abs(v) >= 2.0**-14
    assert (err[normal] <= 2.0**-11 * np.abs(v[normal])).all()


def test_float16_largest_value_round_trips_and_overflow_is_refused() -> None:
    ok = np.array([65504.0, -65504.0, 65519.0], np.float32)  # 65519 rounds to 65504
    assert decode_vector(encode_vector(ok, "float16"), 3, "float16").tolist() == [
        65504.0, -65504.0, 65504.0]
    for bad in (65520.0, -1e6, F32_MAX):
        with pytest.raises(BadRequest) as exc:
            encode_vector(np.array([0.0, bad], np.float32), "float16")
        text = _one_line(exc)
        assert "component 1" in text and "overflows float16" in text


# --- all codecs ---------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "size"), [("float32", 512), ("float16", 256), ("int8", 132)])
def test_exact_sizes(codec: str, size: int) -> None:
    v = np.random.default_rng(1).standard_normal(128).astype(np.float32)
    assert len(encode_vector(v, codec)) == vector_nbytes(128, codec) == size
    assert vector_nbytes(1, codec) == {"float32": 4, "float16": 2, "int8": 5}[codec]


def test_float32_round_trip_is_exact_including_extremes() -> None:
    v = np.array([F32_MAX, -F32_MAX, F32_TINY, 1e-45, -0.0, 1.0 / 3], np.float32)
    out = decode_vector(encode_vector(v, "float32"), len(v), "float32")
    assert out.tobytes() == v.tobytes()


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_are_deterministic_and_little_endian(codec: str) -> None:
    v = np.random.default_rng(7).standard_normal(64).astype(np.float32)
    a = encode_vector(v, codec)
    assert a == encode_vector(v.copy(), codec)
    assert a == encode_vector(v.astype(">f4"), codec)  # host/input byte order does not leak
    assert a == encode_vector(v.astype(np.float64), codec)  # same after float32 conversion


@pytest.mark.parametrize("codec", CODECS)
def test_batch_and_per_record_agree_bit_for_bit(codec: str) -> None:
    rng = np.random.default_rng(3)
    m = (rng.standard_normal((50, 24)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    m[7] = 0.0
    codes, scales = quantize(m, codec)
    assert codes.shape == m.shape and scales.shape == (50,) and scales.dtype == np.float32
    if codec != "int8":
        assert (scales == 1.0).all()
    batch = dequantize(codes, scales, codec)
    many = quant.encode_many(m, codec)
    assert len(many) == len(m)
    for i in range(len(m)):
        payload = encode_vector(m[i], codec)
        assert many[i] == payload
        one = decode_vector(payload, 24, codec)
        assert one.tobytes() == batch[i].tobytes()


def test_int8_batch_cosine_is_close_on_random_vectors() -> None:
    m = np.random.default_rng(5).standard_normal((200, 128)).astype(np.float32)
    out = dequantize(*quantize(m, "int8"), "int8")
    cos = (m * out).sum(1) / np.linalg.norm(m, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() > 0.999


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("value", "expect"),
    [
        (np.array([1.0, np.nan], np.float32), "NaN or infinite value at component 1"),
        (np.array([np.inf, 1.0], np.float32), "NaN or infinite value at component 0"),
        (np.array([1e39, 1.0]), "after conversion to float32"),
        (np.zeros((2, 2), np.float32), "shape (dim,)"),
        (np.zeros(0, np.float32), "dim >= 1"),
        (np.array(["a", "b"]), "real numbers"),
        (np.array([1 + 1j]), "real numbers"),
    ],
)
def test_bad_vectors_are_refused_in_one_line(codec: str, value: np.ndarray, expect: str) -> None:
    with pytest.raises(BadRequest) as exc:
        encode_vector(value, codec)
    assert expect in _one_line(exc)


def test_bad_codec_and_dim_are_refused() -> None:
    with pytest.raises(BadRequest) as exc:
        encode_vector(np.ones(3, np.float32), "int4")  # type: ignore[arg-type]
    assert "unknown vector codec 'int4'" in _one_line(exc) and "float16" in str(exc.value)
    for dim in (0, -1, 2.0, True):
        with pytest.raises(BadRequest, match="dim must be a positive int"):
            decode_vector(b"", dim, "float32")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "payload", "expect"),
    [
        ("float32", b"\x00" * 11, "11 bytes, expected 12"),
        ("float16", b"\x00" * 8, "8 bytes, expected 6"),
        ("int8", b"\x00" * 6, "6 bytes, expected 7"),
        ("int8", np.float32(-1).tobytes() + b"\x01\x01\x01", "scale -1.0"),
        ("int8", np.float32(np.nan).tobytes() + b"\x01\x01\x01", "scale nan"),
        ("int8", np.float32(0.5).tobytes() + b"\x80\x01\x01", "code -128"),
        ("int8", np.float32(0).tobytes() + b"\x00\x01\x00", "non-zero codes with scale 0"),
    ],
)
def test_corrupt_payloads_are_state_errors(codec: str, payload: bytes, expect: str) -> None:
    with pytest.raises(StateError) as exc:
        decode_vector(payload, 3, codec)
    assert expect in _one_line(exc)


def test_dequantize_refuses_mismatched_inputs() -> None:
    codes, scales = quantize(np.ones((2, 3), np.float32), "int8")
    with pytest.raises(BadRequest, match="int8 codes must be a 2-D int8 array"):
        dequantize(codes.astype(np.int16), scales, "int8")
    with pytest.raises(BadRequest, match=r"scales must be float32 of shape \(2,\)"):
        dequantize(codes, scales[:1], "int8")
    with pytest.raises(BadRequest, match="finite and >= 0"):
        dequantize(codes, -scales, "int8")


def test_codec_ids_are_stable_and_invertible() -> None:
    assert quant.CODEC_IDS == {"float32": 1, "float16": 2, "int8": 3}
    assert [quant.codec_from_id(i) for i in (1, 2, 3)] == list(CODECS)
    with pytest.raises(StateError, match="unknown vector codec id 9"):
        quant.codec_from_id(9)
