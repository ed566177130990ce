"""Sample records (the tar member payload): msgpack encode/decode, layout, per-sample hashes.

A record is a msgpack map with fields in a fixed order (docs/FORMAT.md): ``k`` key,
``x`` input bytes, ``xs`` shape, ``xd`` dtype, ``yk`` target kind, ``y`` target (int or
bytes), ``ys``, ``yd`` and an optional ``src``. Every record of a dataset has the same
layout up to ``src`` (:func:`record_layout`), so its input and target bytes sit at fixed
offsets inside the payload, and readers slice them out without decoding.

Per-sample hashes (format 2): ``x_hash`` is XXH3-64 (seed 0) of the input bytes XOR
``label_mix(label)``, so a class label is covered too (``label`` is -1 for masks and
regression, whose mix is 0); ``y_hash`` is XXH3-64 of the target bytes (0 when the target
has no bytes). The mix is one multiplication, so readers check a whole batch's labels
with one vectorized operation (:func:`label_mix`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import xxhash

from ..errors import FormatError
from .names import KEY_DIGITS, check_key
from .schema import TARGET_DTYPES, TARGET_KINDS, Schema

SAMPLE_HASH = "xxh3_64"
_xxh3 = xxhash.xxh3_64_intdigest


#: Odd 64-bit constant (the golden ratio) that spreads labels over all 64 bits.
LABEL_MIX = 0x9E3779B97F4A7C15


def label_mix(label: Any) -> Any:
    """``(label + 1) * LABEL_MIX mod 2**64``: an int for an int, a uint64 array for an int64 array."""
    if isinstance(label, np.ndarray):
        with np.errstate(over="ignore"):
            return (label.astype(np.int64) + 1).astype(np.uint64) * np.uint64(LABEL_MIX)
    return ((int(label) + 1) * LABEL_MIX) & 0xFFFFFFFFFFFFFFFF


def input_hash(data: Any, label: int) -> int:
    """``x_hash`` of input bytes ``data`` (any buffer) of a sample with ``label`` (-1: none)."""
    return _xxh3(data) ^ label_mix(label)


def target_hash(data: Any) -> int:
    """``y_hash`` of target bytes ``data``; 0 for an empty target."""
    return _xxh3(data) if len(data) else 0


@dataclass(frozen=True)
class Record:
    """One decoded sample: uint8 input in the model's layout and its target."""

    key: str
    x: np.ndarray
    target_kind: str
    y: int | np.ndarray
    source: str | None = None


@dataclass(frozen=True)
class EncodedRecord:
    """A record's bytes plus where its input and target bytes lie inside them."""

    payload: bytes
    x_off: int
    x_len: int
    y_off: int
    y_len: int
    label: int

    @property
    def x_hash(self) -> int:
        return input_hash(memoryview(self.payload)[self.x_off : self.x_off + self.x_len], self.label)

    @property
    def y_hash(self) -> int:
        return target_hash(memoryview(self.payload)[self.y_off : self.y_off + self.y_len])


def encode_record(key: str, x: np.ndarray, target_kind: str, y: Any, source: str | None = None) -> EncodedRecord:
    """Encode one sample as a msgpack map (field order fixed; see docs/FORMAT.md)."""
    check_key(key)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise FormatError(f"sample {key}: input dtype is {getattr(x, 'dtype', type(x).__name__)}, expected uint8")
    if target_kind not in TARGET_KINDS:
        raise FormatError(f"sample {key}: unknown target kind {target_kind!r}")
    packer = msgpack.Packer(use_bin_type=True)
    fields = 8 + (source is not None)
    parts = [packer.pack_map_header(fields), packer.pack("k"), packer.pack(key), packer.pack("x")]
    x_bytes = np.ascontiguousarray(x).tobytes()
    parts.append(packer.pack(x_bytes))
    x_off = sum(map(len, parts)) - len(x_bytes)
    parts += [packer.pack("xs"), packer.pack(list(x.shape)), packer.pack("xd"), packer.pack("uint8")]
    parts += [packer.pack("yk"), packer.pack(target_kind), packer.pack("y")]
    label = -1
    if target_kind == "class":
        if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)):
            raise FormatError(f"sample {key}: class label {y!r} is not an integer")
        label = int(y)
        parts.append(packer.pack(label))
        y_off = y_len = 0
        y_shape: list[int] = []
    else:
        arr = np.asarray(y)
        want = TARGET_DTYPES[target_kind]
        if arr.dtype != np.dtype(want):
            raise FormatError(f"sample {key}: {target_kind} target dtype {arr.dtype}, expected {want}")
        y_bytes = np.ascontiguousarray(arr).astype("<" + arr.dtype.str[1:], copy=False).tobytes()
        parts.append(packer.pack(y_bytes))
        y_off, y_len = sum(map(len, parts)) - len(y_bytes), len(y_bytes)
        y_shape = list(arr.shape)
    parts += [packer.pack("ys"), packer.pack(y_shape), packer.pack("yd"), packer.pack(TARGET_DTYPES[target_kind])]
    if source is not None:
        parts += [packer.pack("src"), packer.pack(source)]
    return EncodedRecord(b"".join(parts), x_off, len(x_bytes), y_off, y_len, label)


_FIELDS = ("k", "x", "xs", "xd", "yk", "y", "ys", "yd")


def decode_record(payload: bytes, where: str = "record") -> Record:
    """Decode a msgpack record; ``where`` names it in errors (shard and key)."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=len(payload), max_str_len=1 << 20)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise FormatError(f"{where}: not a valid msgpack record ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: record is a {type(obj).__name__}, expected a map")
    missing = [f for f in _FIELDS if f not in obj]
    if missing:
        raise FormatError(f"{where}: record lacks field {missing[0]!r}")
    key, xb, xs, xd = obj["k"], obj["x"], obj["xs"], obj["xd"]
    kind, yv, ys, yd = obj["yk"], obj["y"], obj["ys"], obj["yd"]
    src = obj.get("src")
    if not isinstance(key, str):
        raise FormatError(f"{where}: record key is a {type(key).__name__}, expected a string")
    if xd != "uint8" or not isinstance(xb, bytes):
        raise FormatError(f"{where}: input must be uint8 bytes, got dtype {xd!r}")
    if kind not in TARGET_KINDS or yd != TARGET_DTYPES[kind]:
        raise FormatError(f"{where}: target kind {kind!r} with dtype {yd!r} is not allowed")
    if src is not None and not isinstance(src, str):
        raise FormatError(f"{where}: source name is a {type(src).__name__}, expected a string")
    x = _array(xb, "uint8", xs, f"{where} input")
    if kind == "class":
        if type(yv) is not int:
            raise FormatError(f"{where}: class target must be an int, got {type(yv).__name__}")
        y: int | np.ndarray = yv
    else:
        if not isinstance(yv, bytes):
            raise FormatError(f"{where}: {kind} target must be bytes")
        y = _array(yv, yd, ys, f"{where} target")
    return Record(key=key, x=x, target_kind=kind, y=y, source=src)


_LE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ("uint8", "int64", "float32")}


def _array(buf: bytes, dtype: str, shape: Any, what: str) -> np.ndarray:
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise FormatError(f"{what}: bad shape {shape!r}")
    dt = _LE_DTYPES[dtype]
    want = math.prod(shape) * dt.itemsize  # math.prod: np.prod on a short list costs microseconds
    if len(buf) != want:
        raise FormatError(f"{what}: {len(buf)} bytes, shape {shape} {dtype} needs {want}")
    return np.frombuffer(buf, dtype=dt).reshape(shape).astype(dtype, copy=False)


@dataclass(frozen=True)
class RecordLayout:
    """Where a dataset's input and target bytes sit inside every record's payload.

    ``x_start``/``y_start`` are offsets from the payload's first byte (``y_start`` 0 when
    the target has no bytes); ``base_size`` is the payload size without ``src``.
    """

    x_start: int
    x_len: int
    y_start: int
    y_len: int
    base_size: int


def record_layout(schema: Schema) -> RecordLayout:
    """The layout every record of a dataset with ``schema`` has (keys of KEY_DIGITS digits)."""
    t = schema.target
    x = np.zeros(schema.input_shape, np.uint8)
    y: Any = 0 if t.kind == "class" else np.zeros(t.served_shape, TARGET_DTYPES[t.kind])
    enc = encode_record("0" * KEY_DIGITS, x, t.kind, y)
    return RecordLayout(enc.x_off, enc.x_len, enc.y_off, enc.y_len, len(enc.payload))
