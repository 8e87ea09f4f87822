"""The worker protocol's tensor-set payload (docs/worker-protocol.md)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from berth.errors import InvalidOutput, ProtocolError
from berth.tensors import (
    DATATYPES,
    ShmArea,
    datatype_to_dtype,
    decode_tensor_set,
    dtype_to_datatype,
    encode_tensor_set,
    encode_tensor_set_parts,
)

FIXED = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.arange(6, dtype=np.uint8).reshape(2, 3),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([[1], [2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([2**64 - 1, 0, 7], dtype=np.uint64),
    "INT8": np.array([-128, 127, 0], dtype=np.int8),
    "INT16": np.array([-32768, 5], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "INT64": np.arange(-5, 5, dtype=np.int64).reshape(5, 2),
    "FP16": np.array([1.5, -0.0, np.inf], dtype=np.float16),
    "FP32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 2, 2),
    "FP64": np.array([np.pi, np.e, -1e300]),
}


def _pad(n: int) -> int:
    return (n + 7) & ~7


def manual_payload(tensors: list[tuple[int, str, list[int], bytes]], params: bytes = b"") -> bytes:
    """A payload written straight from the spec, independently of the encoder."""
    out = bytearray(struct.pack("<II", len(tensors), len(params)) + params)
    out += bytes(_pad(len(out)) - len(out))
    for code, name, shape, data in tensors:
        name_b = name.encode()
        out += struct.pack("<BBHI", code, len(shape), len(name_b), 0)
        out += struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<Q", len(data)) + name_b
        out += bytes(_pad(len(out)) - len(out))
        out += data
        out += bytes(_pad(len(out)) - len(out))
    return bytes(out)


@pytest.mark.parametrize("datatype", sorted(FIXED))
def test_fixed_round_trip(datatype: str) -> None:
    array = FIXED[datatype]
    assert dtype_to_datatype(array.dtype) == datatype
    payload = encode_tensor_set({"t": array})
    tensors, params = decode_tensor_set(bytearray(payload))
    assert params == {}
    out = tensors["t"]
    assert out.dtype == datatype_to_dtype(datatype)
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_matches_spec_layout_and_aligns_data() -> None:
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    label = np.array([b"ab", b""], dtype=object)
    params = {"temperature": 0.5}
    payload = encode_tensor_set({"x": x, "label": label}, params)
    expected = manual_payload(
        [
            (DATATYPES["FP32"], "x", [1, 2], x.tobytes()),
            (DATATYPES["BYTES"], "label", [2], struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)),
        ],
        json.dumps(params, separators=(",", ":")).encode(),
    )
    assert payload == expected
    assert len(payload) % 8 == 0
    tensors, decoded = decode_tensor_set(payload)
    assert decoded == params
    # data is 8-byte aligned within the payload
    base = np.frombuffer(payload, np.uint8).ctypes.data
    assert (tensors["x"].ctypes.data - base) % 8 == 0


def test_decode_is_zero_copy_and_writable_on_bytearray() -> None:
    buf = bytearray(encode_tensor_set({"x": np.arange(4, dtype=np.int64)}))
    tensors, _ = decode_tensor_set(buf)
    x = tensors["x"]
    assert x.flags.writeable
    assert np.shares_memory(x, np.frombuffer(buf, np.uint8))
    buf[-8] = 9  # the last element's low byte
    assert x[-1] == 9


def test_bytes_round_trip() -> None:
    data = np.array([[b"a", b"\x00\xff"], [b"", b"long" * 100]], dtype=object)
    tensors, _ = decode_tensor_set(encode_tensor_set({"b": data}))
    out = tensors["b"]
    assert out.dtype == object and out.shape == (2, 2)
    assert out.tolist() == data.tolist()


@pytest.mark.parametrize(
    "array",
    [
        np.array(["héllo", "w"]),  # numpy str
        np.array([b"h\xc3\xa9llo", b"w"]),  # numpy bytes
        np.array(["héllo", b"w"], dtype=object),  # mixed object
    ],
)
def test_strings_encode_as_utf8_bytes(array: np.ndarray) -> None:
    assert dtype_to_datatype(array.dtype) == "BYTES"
    tensors, _ = decode_tensor_set(encode_tensor_set({"s": array}))
    assert tensors["s"].tolist() == ["héllo".encode(), b"w"]


def test_bf16_travels_as_raw_bits() -> None:
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)  # 1.0, -2.0
    payload = manual_payload([(DATATYPES["BF16"], "h", [2], bits.tobytes())])
    tensors, _ = decode_tensor_set(payload)
    assert tensors["h"].dtype == np.uint16
    np.testing.assert_array_equal(tensors["h"], bits)
    widened = (tensors["h"].astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(widened, [1.0, -2.0])


def test_scalars_empty_tensors_and_non_contiguous_arrays() -> None:
    scalar = np.float64(3.5)
    empty = np.zeros((0, 4), dtype=np.float32)
    strided = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    big_endian = np.array([1, 2, 3], dtype=">i4")
    tensors, _ = decode_tensor_set(
        encode_tensor_set({"s": np.asarray(scalar), "e": empty, "t": strided, "b": big_endian})
    )
    assert tensors["s"].shape == () and tensors["s"] == 3.5
    assert tensors["e"].shape == (0, 4)
    np.testing.assert_array_equal(tensors["t"], strided)
    np.testing.assert_array_equal(tensors["b"], [1, 2, 3])


def test_parts_total_matches_join() -> None:
    parts, total = encode_tensor_set_parts({"x": np.ones((3, 3)), "y": np.array(["z"])}, {"a": 1})
    assert total == sum(memoryview(p).nbytes for p in parts)


def test_empty_set() -> None:
    assert decode_tensor_set(encode_tensor_set({})) == ({}, {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "not a NumPy array"),
        (np.array([1 + 2j]), "complex"),
        (np.array(["a", None], dtype=object), "NoneType"),
        (np.zeros((1,) * 9), "dimensions"),
    ],
)
def test_unsupported_outputs_name_the_output(value: object, message: str) -> None:
    with pytest.raises(InvalidOutput, match=f"'scores'.*{message}|{message}.*'scores'"):
        encode_tensor_set({"scores": value})  # type: ignore[dict-item]


def _valid() -> bytes:
    return manual_payload([(DATATYPES["INT32"], "x", [2], struct.pack("<2i", 1, 2))], b'{"a":1}')


def _patch(payload: bytes, offset: int, data: bytes) -> bytes:
    return payload[:offset] + data + payload[offset + len(data) :]


# Offsets in _valid(): head 0..8, params 8..15, pad to 16; tensor head at 16:
# dtype 16, ndim 17, name_len 18..20, reserved 20..24, shape 24..32,
# data_len 32..40, name 40, pad to 48, data 48..56.
MALFORMED = {
    "short head": b"\x01\x00",
    "params past end": _patch(_valid(), 4, struct.pack("<I", 1000)),
    "params not JSON": _patch(_valid(), 8, b"{xx"),
    "params not an object": manual_payload([], b"[1]"),
    "non-zero pad": _patch(_valid(), 15, b"\x01"),
    "unknown datatype": _patch(_valid(), 16, b"\x63"),
    "too many dims": _patch(_valid(), 17, b"\x09"),
    "empty name": _patch(_valid(), 18, b"\x00\x00"),
    "reserved set": _patch(_valid(), 20, b"\x01"),
    "negative dim": _patch(_valid(), 24, struct.pack("<q", -2)),
    "data_len mismatch": _patch(_valid(), 32, struct.pack("<Q", 4)),
    "data past end": _patch(_valid(), 32, struct.pack("<Q", 1 << 40)),
    "truncated": _valid()[:-4],
    "trailing bytes": _valid() + bytes(8),
    "count too high": _patch(_valid(), 0, struct.pack("<I", 2)),
    "bad utf8 name": _patch(_valid(), 40, b"\xff"),
    "bool not 0/1": manual_payload([(DATATYPES["BOOL"], "b", [2], b"\x00\x02")]),
    "bytes prefix overruns": manual_payload(
        [(DATATYPES["BYTES"], "s", [1], struct.pack("<I", 9) + b"ab")]
    ),
    "bytes fewer elements": manual_payload(
        [(DATATYPES["BYTES"], "s", [2], struct.pack("<I", 1) + b"a")]
    ),
    "bytes leftover": manual_payload(
        [(DATATYPES["BYTES"], "s", [1], struct.pack("<I", 1) + b"ab")]
    ),
    "duplicate name": manual_payload(
        [(DATATYPES["UINT8"], "d", [1], b"\x01"), (DATATYPES["UINT8"], "d", [1], b"\x02")]
    ),
}


def test_valid_fixture_decodes() -> None:
    tensors, params = decode_tensor_set(_valid())
    assert params == {"a": 1}
    np.testing.assert_array_equal(tensors["x"], [1, 2])


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_payloads_are_rejected(case: str) -> None:
    with pytest.raises(ProtocolError):
        decode_tensor_set(MALFORMED[case])


def test_datatype_helpers() -> None:
    assert set(DATATYPES) == {
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES", "BF16",
    }  # fmt: skip
    assert datatype_to_dtype("BYTES") == np.dtype(object)
    assert datatype_to_dtype("BF16") == np.dtype(np.uint16)
    assert datatype_to_dtype("FP32") == np.dtype(np.float32)
    with pytest.raises(ValueError, match="unknown datatype"):
        datatype_to_dtype("FLOAT")
    with pytest.raises(TypeError, match="no protocol datatype"):
        dtype_to_datatype(np.dtype("datetime64[s]"))


# ------------------------------------------------------- shared memory (protocol 3)


def _area(size: int = 1 << 16, lo: int = 0, hi: int | None = None, threshold: int = 1024) -> ShmArea:
    return ShmArea(memoryview(bytearray(size)), lo, size if hi is None else hi, threshold)


def test_large_outputs_go_to_the_area_and_decode_as_views_of_it() -> None:
    area = _area(threshold=1024)
    big = np.arange(1000, dtype=np.float32).reshape(10, 100)  # 4000 bytes
    small = np.array([1, 2, 3], dtype=np.int64)
    words = np.array([b"x" * 2000, b""], dtype=object)  # BYTES: 2008 bytes
    parts, total = encode_tensor_set_parts({"big": big, "small": small, "words": words}, shm=area)
    payload = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    assert len(payload) == total < 400  # only heads and the small tensor
    assert area.at > 4000 + 2008
    reader = ShmArea(area.view, 0, len(area.view), 1024)
    tensors, _ = decode_tensor_set(payload, reader)
    np.testing.assert_array_equal(tensors["big"], big)
    np.testing.assert_array_equal(tensors["small"], small)
    assert list(tensors["words"]) == [b"x" * 2000, b""]
    # a view of the region, not a copy; and a lease the worker can check
    area.view[0:4] = struct.pack("<f", 42.0)
    assert tensors["big"][0, 0] == 42.0
    assert len(reader.leases) == 1 and reader.leases[0]() is not None
    del tensors
    assert reader.leases[0]() is None


def test_outputs_that_do_not_fit_stay_in_the_frame() -> None:
    area = _area(size=8192, lo=4096, threshold=1024)
    big = np.ones(2048, dtype=np.float32)  # 8 KiB: more than the area
    parts, total = encode_tensor_set_parts({"big": big}, shm=area)
    assert total > 8192 and area.at == 4096
    tensors, _ = decode_tensor_set(b"".join(bytes(memoryview(p).cast("B")) for p in parts))
    np.testing.assert_array_equal(tensors["big"], big)


def _shm_record(offset: int, data_len: int = 16, code: int = 11, rows: int = 4) -> bytes:
    head = struct.pack("<BBHI", code, 1, 1, 1) + struct.pack("<q", rows) + struct.pack("<Q", data_len)
    return struct.pack("<II", 1, 0) + head + b"a" + bytes(7) + struct.pack("<Q", offset)


@pytest.mark.parametrize("offset", [0, 1020, 4092, 4096, 2**64 - 8, 1028])
def test_shared_memory_offsets_outside_the_area_are_rejected(offset: int) -> None:
    area = _area(size=4096, lo=1024, hi=4096)
    with pytest.raises(ProtocolError, match="outside shared memory|location"):
        decode_tensor_set(_shm_record(offset), area if offset != 1028 else None)


def test_shared_memory_record_checks_its_size() -> None:
    area = _area(size=4096, lo=1024, hi=4096)
    decode_tensor_set(_shm_record(1024), area)
    with pytest.raises(ProtocolError, match="needs 16 bytes"):
        decode_tensor_set(_shm_record(1024, data_len=12), area)


def test_an_output_that_views_the_region_is_not_copied() -> None:
    view = memoryview(bytearray(1 << 16))
    inputs = ShmArea(view, 0, 1 << 15, 1024)
    outputs = ShmArea(view, 1 << 15, 1 << 16, 1024)
    x = np.arange(1024, dtype=np.float32)
    view[128 : 128 + x.nbytes] = x.tobytes()
    payload = b"".join(
        bytes(memoryview(p).cast("B"))
        for p in encode_tensor_set_parts({"x": x.reshape(1, -1)}, shm=inputs)[0]
    )
    decoded, _ = decode_tensor_set(payload, inputs)
    parts, _ = encode_tensor_set_parts({"same": decoded["x"], "twice": decoded["x"] * 2}, shm=outputs)
    result = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    offsets = [struct.unpack_from("<Q", result, i + 8 + 8 + 8 + 8 + 8)[0] for i in (8, 8 + 48)]
    assert offsets[0] < 1 << 15  # where the input lies, no copy
    assert offsets[1] >= 1 << 15 and outputs.at == offsets[1] + 4096
    back, _ = decode_tensor_set(result, ShmArea(view, 0, 1 << 16, 1024))
    np.testing.assert_array_equal(back["same"][0], x)
    np.testing.assert_array_equal(back["twice"][0], x * 2)
