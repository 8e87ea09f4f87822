"""NumPy arrays <-> the worker protocol's tensor-set payload.

The layout is specified in ``docs/worker-protocol.md``. In short::

    u32 n_tensors, u32 params_len, params JSON, pad8,
    per tensor: u8 datatype, u8 ndim, u16 name_len, u32 reserved (0),
                i64 shape[ndim], u64 data_len, name, pad8, data, pad8

Decoding does not copy fixed-size data: each array is a view
(``np.frombuffer``) into the payload buffer, so the buffer lives as long as
the arrays do. ``BOOL`` becomes ``np.bool_``, ``FP16`` ``np.float16`` and
``BF16`` a ``np.uint16`` array holding the raw bfloat16 bits (NumPy has no
bfloat16; ``arr.astype(np.uint32) << 16`` viewed as ``np.float32`` gives the
values). ``BYTES`` becomes an object array of ``bytes``.

Shared memory (protocol 3): a tensor record whose location field is 1
carries, instead of its data, the u64 offset of its data in the worker's
shared memory region (:class:`ShmArea`); decoding views the region there and
encoding copies large outputs into the worker's part of it.

Encoding accepts any array whose dtype maps to a protocol datatype: bool,
(u)int8..64, float16/32/64, ``str``/``bytes``/object arrays (sent as
``BYTES``, ``str`` as UTF-8) and ``ml_dtypes.bfloat16`` (sent as ``BF16``).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InvalidOutput, ProtocolError

__all__ = [
    "DATATYPES",
    "MAX_DIMS",
    "ShmArea",
    "datatype_code",
    "datatype_to_dtype",
    "decode_tensor_set",
    "dtype_to_datatype",
    "encode_tensor_set",
    "encode_tensor_set_parts",
    "encode_params",
]

#: Protocol datatype name -> the byte that names it in a payload.
DATATYPES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 2,
    "UINT16": 3,
    "UINT32": 4,
    "UINT64": 5,
    "INT8": 6,
    "INT16": 7,
    "INT32": 8,
    "INT64": 9,
    "FP16": 10,
    "FP32": 11,
    "FP64": 12,
    "BYTES": 13,
    "BF16": 14,
}
_NAMES: dict[int, str] = {code: name for name, code in DATATYPES.items()}

#: Most dimensions a tensor may have.
MAX_DIMS = 8
_MAX_NAME = 65535
_MAX_PAYLOAD = 0xFFFFFFFF

# Little-endian NumPy dtypes of the fixed-size datatypes, indexed by code.
_FIXED: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.bool_),
    2: np.dtype("<u1"),
    3: np.dtype("<u2"),
    4: np.dtype("<u4"),
    5: np.dtype("<u8"),
    6: np.dtype("<i1"),
    7: np.dtype("<i2"),
    8: np.dtype("<i4"),
    9: np.dtype("<i8"),
    10: np.dtype("<f2"),
    11: np.dtype("<f4"),
    12: np.dtype("<f8"),
    14: np.dtype("<u2"),
}
_BYTES = 13
_BF16 = 14

_SET_HEAD = struct.Struct("<II")
_TENSOR_HEAD = struct.Struct("<BBHI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SHAPES = [struct.Struct(f"<{n}q") for n in range(MAX_DIMS + 1)]
_ZEROS = bytes(8)

#: What a payload may be decoded from.
Buffer = bytes | bytearray | memoryview
#: A piece of an encoded payload (NumPy uint8 arrays avoid copying data).
Part = bytes | bytearray | memoryview | np.ndarray


def _pad8(n: int) -> int:
    return (n + 7) & ~7


_LOC_INLINE = 0
_LOC_SHM = 1


class ShmArea:
    """One side's part of a worker's shared memory region: bytes ``lo`` to
    ``hi`` of ``view`` (a writable ``memoryview`` of the mapping).

    Decoding reads tensors that the other side placed there (offsets are
    bounds-checked against ``lo``..``hi``); encoding places tensors of at least
    ``threshold`` bytes there while they fit, from ``lo`` on (``reset`` before
    each frame), 64-byte aligned; an array that already lies in the region
    (a view of an input, returned as an output) is not copied: its offset is
    used as it is. ``leases`` holds a weak reference to each array decoded
    from the area, so its owner can tell whether any of them (or a view of
    one) is still alive."""

    def __init__(self, view: memoryview, lo: int, hi: int, threshold: int) -> None:
        self.view = view
        self.lo = lo
        self.hi = hi
        self.threshold = max(1, threshold)
        self.at = lo
        self.leases: list[weakref.ref[np.ndarray]] = []
        self._base = int(np.frombuffer(view, np.uint8).ctypes.data) if len(view) else 0

    def reset(self) -> None:
        self.at = self.lo

    def place(self, data: bytes | np.ndarray, nbytes: int) -> int | None:
        """Copies ``data`` (``nbytes`` bytes) into the area; its offset, or
        ``None`` when it is too small to be worth it or does not fit."""
        if nbytes < self.threshold:
            return None
        if isinstance(data, np.ndarray):
            at = int(data.ctypes.data) - self._base
            if 0 <= at and at % 8 == 0 and at + nbytes <= len(self.view):
                return at  # in the region already: no copy
        at = (self.at + 63) & ~63
        if at + nbytes > self.hi:
            return None
        self.view[at : at + nbytes] = data
        self.at = at + nbytes
        return at


def datatype_code(datatype: str) -> int:
    """The payload byte for a datatype name; ``ValueError`` if unknown."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise ValueError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_to_dtype(datatype: str) -> np.dtype[Any]:
    """NumPy dtype that holds a protocol datatype.

    ``BYTES`` -> ``object`` (elements are ``bytes``), ``BF16`` -> ``uint16``
    (raw bits).
    """
    code = datatype_code(datatype)
    if code == _BYTES:
        return np.dtype(object)
    return _FIXED[code].newbyteorder("=")


_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


def dtype_to_datatype(dtype: np.dtype[Any] | type | str) -> str:
    """Protocol datatype name for a NumPy dtype; ``TypeError`` if there is none."""
    dt = np.dtype(dtype)
    kind, size = dt.kind, dt.itemsize
    if kind == "b":
        return "BOOL"
    name = _BY_KIND_SIZE.get((kind, size))
    if name is not None:
        return name
    if kind in "USO":
        return "BYTES"
    if dt.name == "bfloat16" and size == 2:
        return "BF16"
    raise TypeError(
        f"NumPy dtype {dt} has no protocol datatype; use bool, (u)int8..64, "
        "float16/32/64, str, bytes or bfloat16"
    )


# ---------------------------------------------------------------- decoding


def decode_tensor_set(
    payload: Buffer, shm: ShmArea | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decodes a tensor-set payload into ``({name: array}, parameters)``.

    Fixed-size arrays are views into ``payload`` (writable when ``payload`` is
    a ``bytearray``), or into ``shm`` for records placed there (without
    ``shm`` such a record is an error). Raises :class:`ProtocolError` on any
    inconsistency.
    """
    mv = memoryview(payload)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    size = len(mv)
    if size < 8:
        raise ProtocolError(f"tensor set: payload of {size} bytes is shorter than its 8-byte head")
    count, params_len = _SET_HEAD.unpack_from(mv, 0)
    end = 8 + params_len
    if end > size:
        raise ProtocolError(
            f"tensor set: params_len {params_len} runs past the payload ({size} bytes)"
        )
    params: dict[str, Any] = {}
    if params_len:
        try:
            params = json.loads(mv[8:end].tobytes())
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"tensor set: parameters are not valid JSON: {e}") from None
        if not isinstance(params, dict):
            raise ProtocolError("tensor set: parameters must be a JSON object")
    off = _skip_pad(mv, end, size, "parameters")

    tensors: dict[str, np.ndarray] = {}
    for index in range(count):
        name, array, off = _decode_tensor(mv, off, size, index, shm)
        if name in tensors:
            raise ProtocolError(f"tensor set: tensor name {name!r} appears twice")
        tensors[name] = array
    if off != size:
        raise ProtocolError(f"tensor set: {size - off} bytes after the last tensor")
    return tensors, params


def _skip_pad(mv: memoryview, off: int, size: int, what: str) -> int:
    padded = _pad8(off)
    if padded > size:
        raise ProtocolError(f"tensor set: payload ends inside the padding after {what}")
    if padded != off and any(mv[off:padded]):
        raise ProtocolError(f"tensor set: non-zero padding after {what}")
    return padded


def _decode_tensor(
    mv: memoryview, off: int, size: int, index: int, shm: ShmArea | None
) -> tuple[str, np.ndarray, int]:
    where = f"tensor {index}"
    if off + 8 > size:
        raise ProtocolError(f"tensor set: payload ends inside the head of {where}")
    code, ndim, name_len, reserved = _TENSOR_HEAD.unpack_from(mv, off)
    if code not in _NAMES:
        raise ProtocolError(f"tensor set: {where} has unknown datatype code {code}")
    if ndim > MAX_DIMS:
        raise ProtocolError(f"tensor set: {where} has {ndim} dimensions (at most {MAX_DIMS})")
    if name_len == 0:
        raise ProtocolError(f"tensor set: {where} has an empty name")
    if reserved != _LOC_INLINE and (reserved != _LOC_SHM or shm is None):
        raise ProtocolError(f"tensor set: {where} has location {reserved}, not one this channel has")
    off += 8
    head_end = off + 8 * ndim + 8
    if head_end > size:
        raise ProtocolError(f"tensor set: payload ends inside the shape of {where}")
    shape = _SHAPES[ndim].unpack_from(mv, off)
    (data_len,) = _U64.unpack_from(mv, off + 8 * ndim)
    off = head_end
    if off + name_len > size:
        raise ProtocolError(f"tensor set: payload ends inside the name of {where}")
    try:
        name = mv[off : off + name_len].tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"tensor set: the name of {where} is not UTF-8") from None
    where = f"tensor {name!r}"
    if any(d < 0 for d in shape):
        raise ProtocolError(f"tensor set: {where} has a negative dimension in {list(shape)}")
    off = _skip_pad(mv, off + name_len, size, f"the name of {where}")
    if reserved == _LOC_SHM:
        assert shm is not None
        return name, _decode_shm(mv, off, size, shm, code, shape, data_len, where), off + 8
    data_end = off + data_len
    if data_end > size:
        raise ProtocolError(
            f"tensor set: {where} declares {data_len} data bytes, more than the payload holds"
        )
    array = _array_at(mv, off, code, shape, data_len, where)
    return name, array, _skip_pad(mv, data_end, size, f"the data of {where}")


def _array_at(
    buf: memoryview, at: int, code: int, shape: tuple[int, ...], data_len: int, where: str,
    leases: list[weakref.ref] | None = None,
) -> np.ndarray:
    """The tensor whose data_len bytes start at buf[at] (bounds already
    checked), viewed in place except for BYTES; with leases, a weak
    reference to the view is added (shared memory: the slot stays busy while
    any view of it lives)."""
    numel = math.prod(shape)
    if code == _BYTES:
        return _decode_bytes(buf, at, at + data_len, numel, where).reshape(shape)
    dtype = _FIXED[code]
    if numel * dtype.itemsize != data_len:
        raise ProtocolError(
            f"tensor set: {where} of shape {list(shape)} and datatype {_NAMES[code]} "
            f"needs {numel * dtype.itemsize} bytes, got {data_len}"
        )
    if numel == 0:
        return np.empty(shape, dtype)
    raw = np.frombuffer(buf, dtype, numel, at)
    if leases is not None:
        leases.append(weakref.ref(raw))  # every view of it keeps it alive
    array = raw.reshape(shape)
    if code == 1 and bool((array.view(np.uint8) > 1).any()):
        raise ProtocolError(f"tensor set: BOOL {where} holds a byte other than 0 or 1")
    return array


def _decode_shm(
    mv: memoryview, off: int, size: int, shm: ShmArea, code: int, shape: tuple[int, ...],
    data_len: int, where: str,
) -> np.ndarray:
    if off + 8 > size:
        raise ProtocolError(f"tensor set: payload ends inside the shared memory offset of {where}")
    (at,) = _U64.unpack_from(mv, off)
    if at % 8 or at < shm.lo or at + data_len > shm.hi:
        raise ProtocolError(
            f"tensor set: {where} lies at {at}+{data_len}, outside shared memory {shm.lo}..{shm.hi}"
        )
    return _array_at(shm.view, at, code, shape, data_len, where, shm.leases)


def _decode_bytes(mv: memoryview, off: int, end: int, numel: int, where: str) -> np.ndarray:
    out = np.empty(numel, dtype=object)
    unpack = _U32.unpack_from
    for i in range(numel):
        if off + 4 > end:
            raise ProtocolError(f"tensor set: BYTES {where} has fewer elements than its shape")
        (n,) = unpack(mv, off)
        off += 4
        if off + n > end:
            raise ProtocolError(f"tensor set: BYTES {where} element {i} runs past its data")
        out[i] = mv[off : off + n].tobytes()
        off += n
    if off != end:
        raise ProtocolError(f"tensor set: BYTES {where} has bytes left after its {numel} elements")
    return out


# ---------------------------------------------------------------- encoding


def encode_params(params: Mapping[str, Any] | bytes | None) -> bytes:
    """Parameters as the payload's JSON bytes (empty for none)."""
    if params is None:
        return b""
    if isinstance(params, bytes):
        return params
    if not params:
        return b""
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()


def encode_tensor_set_parts(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    params: Mapping[str, Any] | bytes | None = None,
    shm: ShmArea | None = None,
) -> tuple[list[Part], int]:
    """Encodes a tensor set as a list of buffers (for ``socket.sendmsg``) and
    their total length. Array data is not copied when it is already
    C-contiguous and little-endian. With ``shm``, data of at least its
    threshold is copied into it while it fits and the record carries its
    offset (protocol 3).

    Raises :class:`InvalidOutput` naming the tensor when an array cannot be sent.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    params_b = encode_params(params)
    parts: list[Part] = []
    count = 0
    head_len = 8 + len(params_b)
    pad = _pad8(head_len) - head_len
    parts.append(_SET_HEAD.pack(0, len(params_b)) + params_b + _ZEROS[:pad])  # count patched below
    total = head_len + pad
    for name, array in items:
        head, data = _encode_tensor(name, array)
        data_len = len(data) if isinstance(data, bytes) else data.nbytes
        at = shm.place(data, data_len) if shm is not None else None
        if at is not None:
            head = head[:4] + _U32.pack(_LOC_SHM) + head[8:] + _U64.pack(at)
            parts.append(head)
            total += len(head)
            count += 1
            continue
        data_pad = _pad8(data_len) - data_len
        parts.append(head)
        if data_len:
            parts.append(data)
        if data_pad:
            parts.append(_ZEROS[:data_pad])
        total += len(head) + data_len + data_pad
        count += 1
    if total > _MAX_PAYLOAD:
        raise InvalidOutput(f"outputs total {total} bytes, more than a frame can carry (4 GiB)")
    first = parts[0]
    assert isinstance(first, bytes)
    parts[0] = _SET_HEAD.pack(count, len(params_b)) + first[8:]
    return parts, total


def encode_tensor_set(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    params: Mapping[str, Any] | bytes | None = None,
) -> bytes:
    """Encodes a tensor set into one ``bytes`` payload."""
    parts, _ = encode_tensor_set_parts(tensors, params)
    return b"".join(parts)  # type: ignore[arg-type]  # ndarrays are buffers


def _encode_tensor(name: str, array: np.ndarray) -> tuple[bytes, bytes | np.ndarray]:
    if not isinstance(name, str) or not name:
        raise InvalidOutput(f"output names must be non-empty strings, got {name!r}")
    if not isinstance(array, np.ndarray):
        raise InvalidOutput(
            f"output {name!r} is a {type(array).__name__}, not a NumPy array; "
            "return numpy arrays (np.asarray(value))"
        )
    name_b = name.encode("utf-8")
    if len(name_b) > _MAX_NAME:
        raise InvalidOutput(f"output name {name[:40]!r}... is longer than {_MAX_NAME} bytes")
    if array.ndim > MAX_DIMS:
        raise InvalidOutput(f"output {name!r} has {array.ndim} dimensions (at most {MAX_DIMS})")
    try:
        datatype = dtype_to_datatype(array.dtype)
    except TypeError as e:
        raise InvalidOutput(f"output {name!r}: {e}") from None
    data: bytes | np.ndarray
    if datatype == "BYTES":
        data = _encode_bytes(name, array)
    else:
        if array.dtype.byteorder == ">" or (
            array.dtype.byteorder == "=" and sys.byteorder == "big"
        ):
            array = array.astype(array.dtype.newbyteorder("<"))
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    data_len = len(data) if isinstance(data, bytes) else data.nbytes
    head = (
        _TENSOR_HEAD.pack(DATATYPES[datatype], array.ndim, len(name_b), 0)
        + _SHAPES[array.ndim].pack(*array.shape)
        + _U64.pack(data_len)
        + name_b
    )
    return head + _ZEROS[: _pad8(len(head)) - len(head)], data


def _encode_bytes(name: str, array: np.ndarray) -> bytes:
    pack = _U32.pack
    chunks: list[bytes] = []
    for value in array.reshape(-1).tolist() if array.dtype.kind != "O" else array.flat:
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        elif not isinstance(value, bytes):
            raise InvalidOutput(
                f"output {name!r} is an object array with an element of type "
                f"{type(value).__name__}; "
                "object arrays are sent as BYTES and may hold only str or bytes "
                "(convert numbers with .astype(np.float64) or similar)"
            )
        if len(value) > 0xFFFFFFFF:
            raise InvalidOutput(f"output {name!r} has an element longer than 4 GiB")
        chunks.append(pack(len(value)))
        chunks.append(value)
    return b"".join(chunks)
