"""The ustar framing of a shard: writing member headers, and reading them back strictly.

Writers produce plain ustar headers (mode 0644, uid/gid 0, mtime 0, type ``0``, no PAX or
GNU extensions) and end the archive with two zero blocks. Readers check every header's
checksum and never allocate more than the shard can hold: a member that declares more
bytes than remain before the shard's end is an error naming the shard and byte, not an
allocation. No stdlib ``tarfile``: it is slow and forgiving (it stops silently on a
garbage header or at a header boundary).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import IO

import numpy as np

from ..errors import FormatError

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)
#: Every member header carries these fixed values, so identical input gives identical bytes.
TAR_MTIME = 0
TAR_MODE = 0o644
_ZERO_BLOCK = b"\0" * BLOCK


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


def padded(size: int) -> int:
    """``size`` rounded up to whole blocks."""
    return size + (-size % BLOCK)


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


@lru_cache(maxsize=4096)
def _header_around_name(size: int) -> tuple[bytes, int, bytes]:
    """The canonical header of a member of ``size`` bytes, split around its name and checksum:
    bytes 100..148, their sum plus the tail's, and bytes 156..512."""
    h = tar_header("", size)
    mid, tail = h[100:148], h[156:]
    return mid, sum(mid) + sum(tail), tail


def canonical_header(name: bytes, size: int) -> bytes:
    """Exactly the header :func:`tar_header` writes for member ``name`` (ASCII bytes) of ``size`` bytes; fast."""
    mid, base, tail = _header_around_name(size)
    return name + bytes(100 - len(name)) + mid + b"%06o\0 " % (base + sum(name) + 8 * 32) + tail


_KEY_DIGITS = 9  # names.KEY_DIGITS (names imports nothing from here; kept equal by test_format)
_NAME_AT, _SIZE_AT, _SUM_AT = slice(0, _KEY_DIGITS), slice(124, 135), slice(148, 154)


@lru_cache(maxsize=1)
def _canonical_template() -> tuple[np.ndarray, int]:
    """The canonical header with the key digits, size digits and checksum zeroed (as 64 words), and the
    sum of its other bytes (the checksum field counted as 8 spaces)."""
    t = np.frombuffer(tar_header("0" * _KEY_DIGITS + ".msgpack", 0), np.uint8).copy()
    for part in (_NAME_AT, _SIZE_AT, _SUM_AT):
        t[part] = 0
    spaces = t.copy()
    spaces[148:156] = 32
    return t.view(np.uint64), int(spaces.sum())


_P10 = 10 ** np.arange(_KEY_DIGITS - 1, -1, -1, dtype=np.int64)
_P8_11 = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_P8_6 = 8 ** np.arange(5, -1, -1, dtype=np.int64)


def _number(field: np.ndarray, powers: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ASCII digits as a number, and whether all its bytes are digits below ``top``."""
    good = ((field >= 48) & (field < 48 + top)).all(axis=1)
    return (field.astype(np.int64) - 48) @ powers, good


def canonical_mismatch(buf: np.ndarray, headers: np.ndarray, keys: np.ndarray, sizes: np.ndarray) -> int:
    """The first of the headers at byte offsets ``headers`` of ``buf`` that is not exactly the canonical
    header of member ``KEY.msgpack`` of its size (see :func:`tar_header`), or -1 when all are.

    Vectorized over a whole run of members: one gather of the headers; the key, the size and
    the checksum read from their digit fields and compared with the expected values (the
    checksum with the sum the header's bytes must have), and every other byte, with those
    fields zeroed, compared with the template word by word.
    """
    if not len(headers):
        return -1
    t64, base = _canonical_template()
    rows = np.lib.stride_tricks.as_strided(buf, (len(buf) - BLOCK + 1, BLOCK), (buf.strides[0], buf.strides[0]), writeable=False)
    h = rows[headers]  # (k, 512), a copy: one gather, no index array per byte
    name, size, check = h[:, _NAME_AT], h[:, _SIZE_AT], h[:, _SUM_AT]
    key_got, ok_name = _number(name, _P10, 10)
    size_got, ok_size = _number(size, _P8_11, 8)
    sum_got, ok_sum = _number(check, _P8_6, 8)
    want_sum = base + name.sum(axis=1, dtype=np.int64) + size.sum(axis=1, dtype=np.int64)
    ok = ok_name & ok_size & ok_sum & (key_got == keys) & (size_got == sizes) & (sum_got == want_sum)
    h[:, _NAME_AT] = 0
    h[:, _SIZE_AT] = 0
    h[:, _SUM_AT] = 0
    ok &= (h.view(np.uint64) == t64).all(axis=1)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else -1


def check_member_header(block: bytes, shard: str, pos: int, name: str, size: int) -> None:
    """The header at byte ``pos`` of ``shard`` must be a valid one for member ``name`` of ``size`` bytes."""
    if len(block) < BLOCK:
        raise FormatError(f"{shard}: truncated tar header at byte {pos} (the shard is shorter than its index says)")
    got_name, got_size, flag = parse_tar_header(block, f"{shard} at byte {pos}")
    if got_name != name or got_size != size or flag not in (b"0", b"\0"):
        raise FormatError(
            f"{shard}: the member at byte {pos} is {got_name!r} ({got_size} bytes), its index says {name!r} "
            f"({size} bytes): the index does not belong to this shard (run ai8x-shards verify)"
        )


@dataclass(frozen=True)
class Member:
    """A regular tar member read by :func:`iter_tar_members`."""

    name: str
    header_offset: int
    offset: int  # first payload byte
    payload: bytes


def iter_tar_members(f: IO[bytes], shard: str, end: int, start: int = 0) -> Iterator[Member]:
    """Yield the members of a shard of ``end`` bytes, read sequentially from byte ``start``.

    Checks every header checksum. Raises :class:`FormatError` naming ``shard`` and the
    byte offset on a bad header, a member that is not a regular file, a member declaring
    more bytes than the shard holds before its end-of-archive marker, a payload cut
    short, or a stream that ends without the end-of-archive blocks.
    """
    pos = start
    while True:
        block = read_exact(f, BLOCK)
        if len(block) == 0:
            raise FormatError(f"{shard}: ends at byte {pos} without the end-of-archive marker (truncated)")
        if len(block) < BLOCK:
            raise FormatError(f"{shard}: truncated tar header at byte {pos}")
        if block == _ZERO_BLOCK:
            second = read_exact(f, BLOCK)
            if second != _ZERO_BLOCK:
                raise FormatError(f"{shard}: a zero block at byte {pos} is not followed by a second one (damaged end-of-archive marker)")
            return
        name, size, typeflag = parse_tar_header(block, f"{shard} at byte {pos}")
        if typeflag not in (b"0", b"\0"):
            raise FormatError(f"{shard}: member {name!r} at byte {pos} has tar type {typeflag!r}; shards hold only regular members")
        room = end - pos - BLOCK
        if padded(size) > room:
            raise FormatError(
                f"{shard}: member {name!r} at byte {pos} declares {size} bytes, but the shard has only {max(room, 0)} "
                "after its header (damaged header or truncated shard)"
            )
        data = read_exact(f, padded(size))
        if len(data) < padded(size):
            raise FormatError(
                f"{shard}: member {name!r} at byte {pos} needs {size} bytes, shard ends at byte {pos + BLOCK + len(data)} (truncated)"
            )
        yield Member(name, pos, pos + BLOCK, data[:size] if len(data) != size else data)
        pos += BLOCK + len(data)


def read_exact(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only where the file ends."""
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
