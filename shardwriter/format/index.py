"""The per-shard index: one fixed-size row per sample, so any sample is one positioned read.

File layout (little-endian): 8-byte magic, uint64 row count, rows. Format 1 rows are 56
bytes (offsets and label); format 2 rows add ``x_hash`` and ``y_hash`` (72 bytes; see
:mod:`.records`). :func:`decode_index` returns rows in the format-2 dtype either way
(hashes 0 for format 1). :func:`check_rows` holds every rule a row must follow against
its shard's manifest entry and the dataset's record layout; both readers and ``verify``
use it, so a damaged or foreign index is refused before a byte of a shard is read.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from ..errors import FormatError
from .names import member_key, sample_key
from .records import EncodedRecord, RecordLayout, decode_record, encode_record
from .schema import Schema
from .tar import BLOCK, TAR_END, iter_tar_members

INDEX_MAGIC = {1: b"A8XIDX\x00\x01", 2: b"A8XIDX\x00\x02"}
INDEX_HEADER = 16
_V1_FIELDS = [
    ("offset", "<u8"),  # first byte of the member's payload (the msgpack record)
    ("size", "<u8"),  # payload length
    ("x_off", "<u8"),  # first byte of the raw uint8 input
    ("x_len", "<u8"),
    ("y_off", "<u8"),  # first byte of the raw target (mask / regression); 0 for class
    ("y_len", "<u8"),
    ("label", "<i8"),  # class label, or -1 for mask / regression targets
]
INDEX_DTYPES = {
    1: np.dtype(_V1_FIELDS),
    2: np.dtype(_V1_FIELDS + [("x_hash", "<u8"), ("y_hash", "<u8")]),
}
#: The rows this package writes and every reader works with.
INDEX_DTYPE = INDEX_DTYPES[2]


def index_size(count: int, version: int) -> int:
    """Bytes of the index of a shard of ``count`` samples, in format ``version``."""
    return INDEX_HEADER + count * INDEX_DTYPES[version].itemsize


def encode_index(rows: np.ndarray, version: int = 2) -> bytes:
    """Serialise index rows: magic, little-endian count, rows (``version`` 1 drops the hashes)."""
    rows = np.asarray(rows, dtype=INDEX_DTYPE)
    dt = INDEX_DTYPES[version]
    out = np.empty(len(rows), dt)
    for name in dt.names:
        out[name] = rows[name]
    return INDEX_MAGIC[version] + np.uint64(len(rows)).astype("<u8").tobytes() + out.tobytes()


def index_version(buf: bytes, where: str) -> int:
    """The format version an index file's magic says it has."""
    found = next((v for v, magic in INDEX_MAGIC.items() if buf[:8] == magic), None)
    if len(buf) < INDEX_HEADER or found is None:
        raise FormatError(f"{where}: not an ai8x-shards index (bad magic)")
    return found


def decode_index(buf: bytes, where: str, version: int | None = None) -> np.ndarray:
    """Parse an index file's bytes into format-2 rows; ``where`` names the file in errors.

    With ``version`` given, the file must be of that format (the manifest's).
    """
    found = index_version(buf, where)
    if version is not None and found != version:
        raise FormatError(f"{where}: a format-{found} index in a format-{version} dataset (mixed datasets; run ai8x-shards reindex)")
    count = int(np.frombuffer(buf, "<u8", 1, 8)[0])
    dt = INDEX_DTYPES[found]
    if len(buf) != INDEX_HEADER + count * dt.itemsize:
        raise FormatError(f"{where}: index says {count} rows but holds {len(buf) - INDEX_HEADER} bytes of rows")
    rows = np.frombuffer(buf, dt, count, INDEX_HEADER)
    if found == 2:
        return rows
    out = np.zeros(count, INDEX_DTYPE)
    for name in dt.names:
        out[name] = rows[name]
    return out


def index_row(offset: int, rec: EncodedRecord) -> tuple[int, ...]:
    """The index row of a record whose payload starts at byte ``offset`` of its shard."""
    y_off = offset + rec.y_off if rec.y_len else 0
    return (offset, len(rec.payload), offset + rec.x_off, rec.x_len, y_off, rec.y_len, rec.label, rec.x_hash, rec.y_hash)


def check_rows(rows: np.ndarray, *, where: str, count: int, shard_bytes: int, layout: RecordLayout,
               schema: Schema, hashed: bool) -> None:
    """Every rule an index's rows follow, checked at once (vectorized); FormatError names the first broken.

    ``count`` and ``shard_bytes`` come from the manifest (or the shard itself); ``layout``
    is the dataset's record layout; ``hashed`` says the rows carry per-sample hashes.
    """
    if len(rows) != count:
        raise FormatError(f"{where}: {len(rows)} rows but its shard holds {count} samples (run ai8x-shards reindex)")
    if not count:
        return
    off = rows["offset"].astype(np.int64)
    size = rows["size"].astype(np.int64)
    first = BLOCK
    header = off - BLOCK
    padded_end = off + size + (-size % BLOCK)
    last = np.zeros(count, bool)
    last[-1] = padded_end[-1] + len(TAR_END) != shard_bytes
    problems = [
        ("the first record does not start after the first header", np.concatenate([[off[0] != first], np.zeros(count - 1, bool)])),
        ("records overlap or leave gaps", np.concatenate([[False], header[1:] != padded_end[:-1]])),
        ("the last record does not end where the shard's end-of-archive marker starts", last),
        ("a record is shorter than this dataset's records", size < layout.base_size),
        ("input bytes are not where the record layout puts them", rows["x_off"].astype(np.int64) - off != layout.x_start),
        ("input length differs from the input shape", rows["x_len"].astype(np.int64) != layout.x_len),
        ("target length differs from the target shape", rows["y_len"].astype(np.int64) != layout.y_len),
    ]
    if layout.y_len:
        problems.append(("target bytes are not where the record layout puts them", rows["y_off"].astype(np.int64) - off != layout.y_start))
    label = rows["label"]
    if schema.target.kind == "class":
        problems.append((f"a label is outside 0..{schema.num_classes - 1}", (label < 0) | (label >= schema.num_classes)))
    else:
        problems.append(("a label is set for a target that is not a class", label != -1))
    if hashed and not layout.y_len:
        problems.append(("a target hash is set for a target without bytes", rows["y_hash"] != 0))
    for what, bad in problems:
        hit = np.flatnonzero(bad)
        if len(hit):
            raise FormatError(f"{where}: row {int(hit[0])}: {what} (the index is damaged or belongs to another dataset; run ai8x-shards verify)")


def build_index(f: IO[bytes], shard: str, shard_bytes: int, first_sample: int | None = None) -> np.ndarray:
    """Rebuild a shard's index by scanning it: every record decoded, canonical, keys checked.

    ``first_sample`` (the split position of the shard's first sample, when known) makes
    every key checked against its position. Used by ``reindex``, by ``verify`` and by
    readers given a shard without an index file.
    """
    rows = []
    for k, m in enumerate(iter_tar_members(f, shard, shard_bytes)):
        key = member_key(m.name, f"{shard} at byte {m.header_offset}")
        where = f"{shard} sample {key} (byte {m.header_offset})"
        if first_sample is not None and key != sample_key(first_sample + k):
            raise FormatError(f"{where}: key {key!r} at position {k} of the shard; expected {sample_key(first_sample + k)!r}")
        rec = decode_record(m.payload, where)
        if rec.key != key:
            raise FormatError(f"{where}: record key {rec.key!r} differs from the member name")
        enc = encode_record(rec.key, rec.x, rec.target_kind, rec.y, rec.source)
        if enc.payload != m.payload:
            raise FormatError(f"{where}: record is not in canonical form")
        rows.append(index_row(m.offset, enc))
    return np.array(rows, dtype=INDEX_DTYPE)

