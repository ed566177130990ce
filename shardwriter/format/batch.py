"""Encoding many samples of one schema at once, byte-identical to the one-sample functions.

Every record of a dataset has the same fields in the same order; only the key, the input
bytes, the target and the source name differ (:mod:`.records`). :class:`MemberEncoder`
builds those fixed parts once and then frames each sample as a tar member (header,
record, padding) and its index row, giving exactly the bytes of
:func:`~.records.encode_record` + :func:`~.tar.member_bytes` + :func:`~.index.index_row`
at a fraction of the cost (the writer packs small samples at well over 50k per second).
:func:`with_key` changes the key of an encoded member (used when skipped inputs shift
the keys of the shards after them). Pure: bytes in, bytes out.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import xxhash

from ..errors import FormatError
from .names import KEY_DIGITS, MEMBER_SUFFIX
from .records import label_mix
from .schema import Schema
from .tar import BLOCK, tar_header

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_xxh3 = xxhash.xxh3_64_intdigest
_PAD = [b"\0" * n for n in range(BLOCK)]
_SUFFIX = MEMBER_SUFFIX.encode()
_SUFFIX_SUM = sum(_SUFFIX)
#: key field of every record: fixmap header, "k", then a fixstr of KEY_DIGITS characters
_KEY_FIELD = _pack("k") + bytes([0xA0 | KEY_DIGITS])
_KEY_AT = 1 + len(_KEY_FIELD)  # first key byte inside a payload


def _bin_header(n: int) -> bytes:
    return _pack(b"\0" * n)[:-n] if n else _pack(b"")


def _str_field(s: str) -> bytes:
    return _pack(s)


class _Headers:
    """ustar headers for members named ``KEY.msgpack``: one template per payload size."""

    def __init__(self) -> None:
        self._by_size: dict[int, tuple[bytes, bytes, int]] = {}

    def template(self, size: int) -> tuple[bytes, bytes, int]:
        t = self._by_size.get(size)
        if t is None:
            h = tar_header("", size)
            base = sum(h) - sum(h[148:156]) + 8 * 32 + _SUFFIX_SUM
            t = self._by_size[size] = (h[KEY_DIGITS + len(_SUFFIX) : 148], h[156:], base)
        return t


class MemberEncoder:
    """Frames samples of ``schema`` as tar members and index rows (see the module docstring)."""

    def __init__(self, schema: Schema) -> None:
        t = schema.target
        self.kind = t.kind
        self.x_len = schema.input_nbytes
        self.y_len = t.nbytes
        self._x_head = _pack("x") + _bin_header(self.x_len)
        self._mid = (_pack("xs") + _pack(list(schema.input_shape)) + _pack("xd") + _pack("uint8")
                     + _pack("yk") + _pack(t.kind) + _pack("y"))
        self._y_head = b"" if t.kind == "class" else _bin_header(self.y_len)
        self._tail = _pack("ys") + _pack(list(t.served_shape)) + _pack("yd") + _pack(t.dtype)
        self._src = _pack("src")
        self._labels: dict[int, bytes] = {}
        self._headers = _Headers()
        self._num_classes = schema.num_classes
        # bytes of a payload without its source name, and where the input starts in it
        self.x_start = 1 + len(_KEY_FIELD) + KEY_DIGITS + len(self._x_head)
        self._fixed = self.x_start + self.x_len + len(self._mid) + len(self._y_head) + self.y_len + len(self._tail)

    # ------------------------------------------------------------------ sizes (for planning)

    def payload_size(self, source: str | None, label: int = 0) -> int:
        """Bytes of the record of a sample named ``source`` (a class label's size counts too)."""
        n = self._fixed + (len(_pack(label)) if self.kind == "class" else 0)
        return n + (len(self._src) + len(_str_field(source)) if source is not None else 0)

    def member_size(self, source: str | None, label: int = 0) -> int:
        """Bytes the sample takes in a shard: header, record, padding."""
        size = self.payload_size(source, label)
        return BLOCK + size + (-size % BLOCK)

    def member_sizes(self, name_bytes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """:meth:`member_size` of many samples at once, from the UTF-8 lengths of their names.

        ``labels`` (class targets) give each record's label size; without them the largest
        label size of this schema is assumed (an upper bound).
        """
        n = np.asarray(name_bytes, np.int64)
        head = np.where(n < 32, 1, np.where(n < 256, 2, np.where(n < 65536, 3, 5)))
        size = self._fixed + len(self._src) + head + n
        if self.kind == "class":
            if labels is None:
                size = size + len(_pack(max(self._num_classes - 1, 0)))
            else:
                lab = np.asarray(labels, np.int64)
                size = size + np.where(lab < 128, 1, np.where(lab < 256, 2, np.where(lab < 65536, 3, 5)))
        return BLOCK + size + (-size % BLOCK)

    def label_sizes_vary(self) -> bool:
        """Whether records of this schema differ in size by class label (msgpack ints: 0..127 take 1 byte)."""
        return self.kind == "class" and self._num_classes > 128

    # ------------------------------------------------------------------ encoding

    def _label(self, label: int) -> bytes:
        b = self._labels.get(label)
        if b is None:
            b = self._labels[label] = _pack(label)
        return b

    def encode(self, first_key: int, offset: int, x: np.ndarray, y: Any, names: list[str] | None,
               parts: list[Any], rows: list[tuple[int, ...]]) -> int:
        """Append the members of ``len(x)`` samples to ``parts`` and their rows to ``rows``.

        Sample ``i`` gets key ``first_key + i`` and its member starts at byte ``offset`` of
        the shard (plus the members before it); returns the offset after the last member.
        ``x`` is uint8 ``(n, *input_shape)``; ``y`` int labels ``(n,)`` for a class target,
        else ``(n, *target_shape)`` uint8 (mask) or float32 (regression); ``names`` the
        source names (or None: records without ``src``).
        """
        n = len(x)
        if n == 0:
            return offset
        if first_key + n > 10**KEY_DIGITS:
            raise FormatError(f"sample number {first_key + n - 1} is outside 0..{10**KEY_DIGITS - 1} (a split holds < 10^9 samples)")
        xbuf = memoryview(np.ascontiguousarray(x, dtype=np.uint8).reshape(-1)).cast("B")
        if xbuf.nbytes != n * self.x_len:
            raise FormatError(f"inputs of {xbuf.nbytes // max(n, 1)} bytes each, the schema's input takes {self.x_len}")
        xl, yl = self.x_len, self.y_len
        head_k, x_head, mid, y_head, tail, src_f = _KEY_FIELD, self._x_head, self._mid, self._y_head, self._tail, self._src
        templates = self._headers.template
        append, row = parts.append, rows.append
        xxh = _xxh3
        map8, map9 = b"\x88" + head_k, b"\x89" + head_k
        if self.kind == "class":
            labels = np.asarray(y).astype(np.int64, copy=False).tolist()
            ybuf = None
        else:
            want = "<u1" if self.kind == "mask" else "<f4"
            ybuf = memoryview(np.ascontiguousarray(np.asarray(y), dtype=want).reshape(-1)).cast("B")
            if ybuf.nbytes != n * yl:
                raise FormatError(f"targets of {ybuf.nbytes // max(n, 1)} bytes each, the schema's target takes {yl}")
            labels = None
        x_at = self.x_start
        joined: dict[tuple[int, bool], tuple[bytes, bytes, int]] = {}  # (size, src?) -> (header middle, header tail + map, sum)
        after_x: dict[int, bytes] = {}  # class label -> the record's bytes after the input, up to the source name
        for i in range(n):
            key = b"%09d" % (first_key + i)
            xb = xbuf[i * xl : (i + 1) * xl]
            if labels is not None:
                label = labels[i]
                rest = after_x.get(label)
                if rest is None:
                    rest = after_x[label] = mid + (self._labels.get(label) or self._label(label)) + tail
                y_hash = ylen_i = 0
            else:
                label = -1
                yb = ybuf[i * yl : (i + 1) * yl]  # type: ignore[index]
                rest = b""
                y_hash = xxh(yb) if yl else 0
                ylen_i = yl
            s = src_f + _pack(names[i]) if names is not None else b""
            size = x_at + xl + (len(rest) if labels is not None else len(mid) + len(y_head) + yl + len(tail)) + len(s)
            t = joined.get((size, bool(s)))
            if t is None:
                h_mid, h_tail, base = templates(size)
                t = joined[(size, bool(s))] = (_SUFFIX + h_mid, h_tail + (map9 if s else map8), base)
            pos = offset + BLOCK
            append(key)
            append(t[0])
            append(b"%06o\0 " % (t[2] + sum(key)))
            append(t[1])
            append(key)
            append(x_head)
            append(xb)
            if labels is not None:
                append(rest)
                y_off = 0
            else:
                append(mid)
                append(y_head)
                append(yb)
                append(tail)
                y_off = pos + x_at + xl + len(mid) + len(y_head)
            if s:
                append(s)
            pad = -size % BLOCK
            if pad:
                append(_PAD[pad])
            row((pos, size, pos + x_at, xl, y_off, ylen_i, label, xxh(xb) ^ label_mix(label), y_hash))
            offset = pos + size + pad
        return offset


def with_key(payload: bytes, key: str) -> bytes:
    """``payload`` (an encoded record) with its key replaced by ``key`` (same length)."""
    kb = key.encode("ascii")
    if len(kb) != KEY_DIGITS or not kb.isdigit():
        raise FormatError(f"key {key!r} is not {KEY_DIGITS} digits")
    if payload[1:_KEY_AT] != _KEY_FIELD or payload[0] not in (0x88, 0x89):
        raise FormatError("record does not start with a key field of the writer's form")
    return payload[:_KEY_AT] + kb + payload[_KEY_AT + KEY_DIGITS :]
