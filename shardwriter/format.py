"""The on-disk contract of an ai8x-shards dataset (format version 1).

This module is the only place that knows the bytes: sample records (msgpack), the
ustar headers around them, the per-shard index, the manifest schema and the shard
file names. Everything here is pure (bytes in, bytes or values out) except
:func:`iter_tar_members`, which reads a file object sequentially, and
:func:`build_index`, which scans one shard. ``docs/FORMAT.md`` describes the same
contract in prose; keep the two in step and bump :data:`FORMAT_VERSION` on any
incompatible change.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import msgpack
import numpy as np

FORMAT_NAME = "ai8x-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "test", "val")
TARGET_KINDS = ("class", "mask", "regression")
TARGET_DTYPES = {"class": "int64", "mask": "uint8", "regression": "float32"}

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)
MEMBER_SUFFIX = ".msgpack"
#: Every member header carries these fixed values, so identical input gives identical bytes.
TAR_MTIME = 0
TAR_MODE = 0o644
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHARD_RE = re.compile(r"^(train|test|val)-(\d{6})\.tar$")

INDEX_MAGIC = b"A8XIDX\x00\x01"
#: One index row per sample; offsets are absolute byte positions in the shard file.
INDEX_DTYPE = np.dtype(
    [
        ("offset", "<u8"),  # first byte of the member's payload (the msgpack record)
        ("size", "<u8"),  # payload length
        ("x_off", "<u8"),  # first byte of the raw uint8 input
        ("x_len", "<u8"),
        ("y_off", "<u8"),  # first byte of the raw target (mask / regression); 0 for class
        ("y_len", "<u8"),
        ("label", "<i8"),  # class label, or -1 for mask / regression targets
    ]
)


class FormatError(ValueError):
    """A shard, index, record or manifest does not follow the format.

    The message names the file (and byte offset or sample key where known) and what is
    wrong; ``ai8x-shards verify DIR`` checks a whole dataset the same way.
    """


# --------------------------------------------------------------------------- names


def shard_name(split: str, number: int) -> str:
    """File name of shard ``number`` of ``split``: ``train-000000.tar``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{split}-{number:06d}.tar"


def index_name(shard: str) -> str:
    """File name of a shard's index: ``train-000000.tar`` -> ``train-000000.idx``."""
    return shard[: -len(".tar")] + ".idx"


def check_shard_file_name(name: str) -> str:
    """Refuse shard names that are not plain ``SPLIT-NNNNNN.tar`` (no paths, no ``..``)."""
    if not _SHARD_RE.match(name):
        raise FormatError(f"manifest lists shard {name!r}: not a plain SPLIT-NNNNNN.tar name")
    return name


def sample_key(number: int) -> str:
    """Key of the ``number``-th sample of a split (its position in the split)."""
    return f"{number:09d}"


# --------------------------------------------------------------------------- records


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


def encode_record(
    key: str,
    x: np.ndarray,
    target_kind: str,
    y: Any,
    source: str | None = None,
) -> EncodedRecord:
    """Encode one sample as a msgpack map (field order fixed; see docs/FORMAT.md)."""
    if not _KEY_RE.match(key):
        raise FormatError(f"sample key {key!r}: keys are 1-64 ASCII letters, digits, _ or -")
    if x.dtype != np.uint8:
        raise FormatError(f"sample {key}: input dtype is {x.dtype}, expected uint8")
    if target_kind not in TARGET_KINDS:
        raise FormatError(f"sample {key}: unknown target kind {target_kind!r}")
    packer = msgpack.Packer(use_bin_type=True)
    fields = 8 + (source is not None)
    parts = [packer.pack_map_header(fields), packer.pack("k"), packer.pack(key)]
    parts.append(packer.pack("x"))
    x_bytes = np.ascontiguousarray(x).tobytes()
    parts.append(packer.pack(x_bytes))
    x_end = sum(map(len, parts))
    x_off = x_end - len(x_bytes)
    parts += [packer.pack("xs"), packer.pack(list(x.shape)), packer.pack("xd"), packer.pack("uint8")]
    parts += [packer.pack("yk"), packer.pack(target_kind), packer.pack("y")]
    label = -1
    if target_kind == "class":
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
        y_end = sum(map(len, parts))
        y_off, y_len = y_end - len(y_bytes), len(y_bytes)
        y_shape = list(arr.shape)
    parts += [packer.pack("ys"), packer.pack(y_shape), packer.pack("yd"), packer.pack(TARGET_DTYPES[target_kind])]
    if source is not None:
        parts += [packer.pack("src"), packer.pack(source)]
    return EncodedRecord(b"".join(parts), x_off, len(x_bytes), y_off, y_len, label)


def decode_record(payload: bytes, where: str = "record") -> Record:
    """Decode a msgpack record; ``where`` names it in errors (shard and key)."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise FormatError(f"{where}: not a valid msgpack record ({exc})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: record is {type(obj).__name__}, expected a map")
    try:
        key, xb, xs, xd = obj["k"], obj["x"], obj["xs"], obj["xd"]
        kind, yv, ys, yd = obj["yk"], obj["y"], obj["ys"], obj["yd"]
    except KeyError as exc:
        raise FormatError(f"{where}: record lacks field {exc.args[0]!r}") from None
    if xd != "uint8" or not isinstance(xb, bytes):
        raise FormatError(f"{where}: input must be uint8 bytes, got dtype {xd!r}")
    if kind not in TARGET_KINDS or yd != TARGET_DTYPES[kind]:
        raise FormatError(f"{where}: target kind {kind!r} with dtype {yd!r} is not allowed")
    x = _array(xb, "uint8", xs, f"{where} input")
    if kind == "class":
        if not isinstance(yv, int):
            raise FormatError(f"{where}: class target must be an int, got {type(yv).__name__}")
        y: int | np.ndarray = yv
    else:
        if not isinstance(yv, bytes):
            raise FormatError(f"{where}: {kind} target must be bytes")
        y = _array(yv, yd, ys, f"{where} target")
    return Record(key=key, x=x, target_kind=kind, y=y, source=obj.get("src"))


_LE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ("uint8", "int64", "float32")}


def _array(buf: bytes, dtype: str, shape: Any, what: str) -> np.ndarray:
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FormatError(f"{what}: bad shape {shape!r}")
    dt = _LE_DTYPES[dtype]
    want = math.prod(shape) * dt.itemsize  # math.prod: np.prod on a short list costs microseconds
    if len(buf) != want:
        raise FormatError(f"{what}: {len(buf)} bytes, shape {shape} {dtype} needs {want}")
    return np.frombuffer(buf, dtype=dt).reshape(shape).astype(dtype, copy=False)


# --------------------------------------------------------------------------- tar


def tar_header(name: str, size: int) -> bytes:
    """A 512-byte ustar header for a regular file with fixed mode, owner and mtime."""
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise FormatError(f"member name {name!r} is longer than 100 bytes")
    if size >= 8**11:
        raise FormatError(f"member {name!r}: {size} bytes exceeds the ustar limit")
    h = bytearray(BLOCK)
    h[0 : len(raw)] = raw
    h[100:108] = b"%07o\0" % TAR_MODE
    h[108:116] = b"0000000\0"  # uid
    h[116:124] = b"0000000\0"  # gid
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % TAR_MTIME
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_padding(size: int) -> bytes:
    """Zero bytes that pad a member payload of ``size`` bytes to a block boundary."""
    return b"\0" * (-size % BLOCK)


def member_bytes(name: str, payload: bytes) -> bytes:
    """Header + payload + padding of one member."""
    return tar_header(name, len(payload)) + payload + tar_padding(len(payload))


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise FormatError(f"{what}: bad octal field {field!r}") from None


def parse_tar_header(block: bytes, where: str) -> tuple[str, int, bytes]:
    """Check a header's checksum and return (name, size, typeflag). ``where`` names it."""
    stored = _octal(block[148:156], f"{where}: checksum")
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the checksum field counts as 8 spaces
    if stored != unsigned and stored != unsigned - 256 * sum(1 for b in block if b > 127):  # old tars: signed
        raise FormatError(f"{where}: tar header checksum mismatch (corrupt or not a tar file)")
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    if prefix:
        name = prefix + b"/" + name
    size = _octal(block[124:136], f"{where}: size")
    return name.decode("utf-8", "replace"), size, block[156:157]


@dataclass(frozen=True)
class Member:
    """A regular tar member read by :func:`iter_tar_members`."""

    name: str
    header_offset: int
    offset: int  # first payload byte
    payload: bytes


def iter_tar_members(f: IO[bytes], shard: str, start: int = 0) -> Iterator[Member]:
    """Yield the regular members of a tar stream, without the stdlib ``tarfile`` module.

    ``f`` is read sequentially from its current position, which is byte ``start`` of
    the shard (used in messages only). Checks every header checksum. Raises
    :class:`FormatError` naming ``shard`` and the byte offset on a bad header, a payload
    cut short, or a stream that ends without the end-of-archive blocks.
    """
    pos = start
    long_name: str | None = None
    while True:
        block = _read_exact(f, BLOCK)
        if len(block) == 0:
            raise FormatError(f"{shard}: ends at byte {pos} without the end-of-archive marker (truncated)")
        if len(block) < BLOCK:
            raise FormatError(f"{shard}: truncated tar header at byte {pos}")
        if block == b"\0" * BLOCK:
            return
        name, size, typeflag = parse_tar_header(block, f"{shard} at byte {pos}")
        data = _read_exact(f, size + (-size % BLOCK))
        if len(data) < size + (-size % BLOCK):
            raise FormatError(
                f"{shard}: member {name!r} at byte {pos} needs {size} bytes, shard ends at byte {pos + BLOCK + len(data)} (truncated)"
            )
        payload = data[:size]
        if typeflag in (b"0", b"\0", b"7"):
            yield Member(long_name or name, pos, pos + BLOCK, payload)
            long_name = None
        elif typeflag == b"L":  # GNU long name for the next member
            long_name = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif typeflag == b"x":  # PAX extended header: honour "path"
            long_name = _pax_path(payload) or long_name
        pos += BLOCK + len(data)


def _pax_path(payload: bytes) -> str | None:
    for line in payload.split(b"\n"):
        _, _, kv = line.partition(b" ")
        k, _, v = kv.partition(b"=")
        if k == b"path":
            return v.decode("utf-8", "replace")
    return None


def _read_exact(f: IO[bytes], n: int) -> bytes:
    first = f.read(n)
    if len(first) == n or not first:
        return first
    chunks = [first]
    n -= len(first)
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def member_key(name: str, where: str) -> str:
    """The sample key of member ``name`` (``KEY.msgpack``); refuses anything else."""
    if not name.endswith(MEMBER_SUFFIX):
        raise FormatError(f"{where}: member {name!r} is not a KEY{MEMBER_SUFFIX} sample")
    key = name[: -len(MEMBER_SUFFIX)]
    if not _KEY_RE.match(key):
        raise FormatError(f"{where}: member {name!r} has a bad sample key")
    return key


# --------------------------------------------------------------------------- index


def encode_index(rows: np.ndarray) -> bytes:
    """Serialise index rows (``INDEX_DTYPE``): magic, little-endian count, rows."""
    rows = np.asarray(rows, dtype=INDEX_DTYPE)
    return INDEX_MAGIC + np.uint64(len(rows)).astype("<u8").tobytes() + rows.tobytes()


def decode_index(buf: bytes, where: str) -> np.ndarray:
    """Parse an index file's bytes; ``where`` names the file in errors."""
    if len(buf) < 16 or buf[:8] != INDEX_MAGIC:
        raise FormatError(f"{where}: not an ai8x-shards index (bad magic)")
    count = int(np.frombuffer(buf, "<u8", 1, 8)[0])
    if len(buf) != 16 + count * INDEX_DTYPE.itemsize:
        raise FormatError(f"{where}: index says {count} rows but holds {len(buf) - 16} bytes of rows")
    return np.frombuffer(buf, INDEX_DTYPE, count, 16)


def index_row(offset: int, rec: EncodedRecord) -> tuple[int, ...]:
    """The index row of a record whose payload starts at byte ``offset`` of its shard."""
    y_off = offset + rec.y_off if rec.y_len else 0
    return (offset, len(rec.payload), offset + rec.x_off, rec.x_len, y_off, rec.y_len, rec.label)


def build_index(f: IO[bytes], shard: str) -> np.ndarray:
    """Rebuild a shard's index by scanning it (used when an index is lost, and by verify)."""
    rows = []
    for m in iter_tar_members(f, shard):
        key = member_key(m.name, shard)
        rec = decode_record(m.payload, f"{shard} sample {key}")
        enc = encode_record(rec.key, rec.x, rec.target_kind, rec.y, rec.source)
        if enc.payload != m.payload:
            raise FormatError(f"{shard} sample {key}: record is not in canonical form")
        rows.append(index_row(m.offset, enc))
    return np.array(rows, dtype=INDEX_DTYPE)


# --------------------------------------------------------------------------- manifest


def class_weights(histogram: list[int]) -> list[float]:
    """Inverse-frequency weights ``total / (K * count)``, 0.0 for an absent class."""
    total, k = sum(histogram), len(histogram)
    return [round(total / (k * c), 6) if c else 0.0 for c in histogram]


def dump_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical manifest bytes (sorted keys, fixed indentation, trailing newline)."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(buf: bytes, where: str) -> dict[str, Any]:
    """Parse and check a manifest; ``where`` names it in errors."""
    try:
        m = json.loads(buf)
    except ValueError as exc:
        raise FormatError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not an {FORMAT_NAME} manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"{where}: format version {version!r}; this ai8x-shards reads up to {FORMAT_VERSION} (upgrade the package)"
        )
    for field in ("input_shape", "target", "classes", "splits"):
        if field not in m:
            raise FormatError(f"{where}: missing field {field!r}")
    if m["target"].get("kind") not in TARGET_KINDS:
        raise FormatError(f"{where}: unknown target kind {m['target'].get('kind')!r}")
    for split, info in m["splits"].items():
        if split not in SPLITS:
            raise FormatError(f"{where}: unknown split {split!r}")
        total = 0
        for shard in info["shards"]:
            check_shard_file_name(shard["file"])
            if shard["index"]["file"] != index_name(shard["file"]):
                raise FormatError(f"{where}: index of {shard['file']} must be {index_name(shard['file'])}")
            total += shard["count"]
        if total != info["count"]:
            raise FormatError(f"{where}: split {split} says {info['count']} samples, its shards hold {total}")
    return m
