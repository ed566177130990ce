"""The on-disk contract: records, tar headers, index and manifest (pure functions)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from shardwriter import format as fmt


def test_record_round_trip_and_spans_for_every_target_kind():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    targets = {
        "class": 7,
        "mask": rng.integers(0, 2, (4, 5), dtype=np.uint8),
        "regression": rng.standard_normal(3).astype(np.float32),
    }
    for kind, y in targets.items():
        enc = fmt.encode_record("000000012", x, kind, y, source="a/b.png")
        rec = fmt.decode_record(enc.payload)
        assert rec.key == "000000012" and rec.source == "a/b.png" and rec.target_kind == kind
        assert np.array_equal(rec.x, x)
        assert np.array_equal(rec.y, y)
        # The spans the index records point at the raw bytes inside the payload.
        assert enc.payload[enc.x_off : enc.x_off + enc.x_len] == x.tobytes()
        if kind == "class":
            assert enc.label == 7 and enc.y_len == 0
        else:
            assert enc.payload[enc.y_off : enc.y_off + enc.y_len] == np.asarray(y).tobytes()


@pytest.mark.parametrize("key", ["a.b", "", "x" * 65, "ключ"])
def test_bad_keys_are_refused(key):
    with pytest.raises(fmt.FormatError, match="key"):
        fmt.encode_record(key, np.zeros((1, 2, 2), np.uint8), "class", 0)


def test_non_uint8_input_is_refused():
    with pytest.raises(fmt.FormatError, match="uint8"):
        fmt.encode_record("k", np.zeros((1, 2, 2), np.float32), "class", 0)


def test_decode_names_the_record_on_garbage():
    with pytest.raises(fmt.FormatError, match="shard-x sample 3"):
        fmt.decode_record(b"\xc1\x00garbage", "shard-x sample 3")
    enc = fmt.encode_record("k", np.zeros((2, 2), np.uint8), "class", 1)
    with pytest.raises(fmt.FormatError, match="bytes, shape"):
        fmt.decode_record(enc.payload.replace(b"\x92\x02\x02", b"\x92\x02\x03"), "r")


def test_tar_headers_read_by_stdlib_tarfile_and_our_parser():
    members = [("000000000.msgpack", b"abc"), ("000000001.msgpack", b"x" * 1000)]
    data = b"".join(fmt.member_bytes(n, p) for n, p in members) + fmt.TAR_END
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        infos = tf.getmembers()
        assert [(i.name, i.size, i.mtime, i.uid, i.mode) for i in infos] == [
            (n, len(p), 0, 0, 0o644) for n, p in members
        ]
        assert [tf.extractfile(i).read() for i in infos] == [p for _, p in members]
    ours = list(fmt.iter_tar_members(io.BytesIO(data), "s.tar"))
    assert [(m.name, m.payload, m.offset) for m in ours] == [
        ("000000000.msgpack", b"abc", 512),
        ("000000001.msgpack", b"x" * 1000, 1536),
    ]


def test_tar_reader_names_shard_and_offset_on_corruption_and_truncation():
    data = b"".join(fmt.member_bytes(f"{i:09d}.msgpack", bytes([i]) * 700) for i in range(3)) + fmt.TAR_END
    flipped = bytearray(data)
    flipped[1536 + 10] ^= 0xFF  # inside the second member's header
    with pytest.raises(fmt.FormatError, match=r"s\.tar at byte 1536.*checksum"):
        list(fmt.iter_tar_members(io.BytesIO(bytes(flipped)), "s.tar"))
    with pytest.raises(fmt.FormatError, match=r"s\.tar.*truncated"):
        list(fmt.iter_tar_members(io.BytesIO(data[:2000]), "s.tar"))
    # Cut exactly on a header boundary: stdlib readers stop silently, we do not.
    with pytest.raises(fmt.FormatError, match=r"ends at byte 3072 without the end-of-archive"):
        list(fmt.iter_tar_members(io.BytesIO(data[:3072]), "s.tar"))


def test_index_round_trip_and_errors():
    rows = np.array([(512, 10, 520, 4, 0, 0, 3), (1536, 20, 1544, 4, 1550, 8, -1)], dtype=fmt.INDEX_DTYPE)
    buf = fmt.encode_index(rows)
    assert np.array_equal(fmt.decode_index(buf, "i"), rows)
    with pytest.raises(fmt.FormatError, match="bad magic"):
        fmt.decode_index(b"nope" * 8, "train-000000.idx")
    with pytest.raises(fmt.FormatError, match="train-000000.idx: index says 2 rows"):
        fmt.decode_index(buf[:-3], "train-000000.idx")


def test_manifest_checks():
    good = {
        "format": "ai8x-shards",
        "format_version": 1,
        "input_shape": [1, 2, 2],
        "target": {"kind": "class"},
        "classes": [0, 1],
        "splits": {"train": {"count": 3, "shards": [{"file": "train-000000.tar", "count": 3, "index": {"file": "train-000000.idx"}}]}},
    }
    assert fmt.parse_manifest(fmt.dump_manifest(good), "m") == good
    newer = dict(good, format_version=fmt.FORMAT_VERSION + 1)
    with pytest.raises(fmt.FormatError, match="upgrade"):
        fmt.parse_manifest(fmt.dump_manifest(newer), "m")
    evil = dict(good, splits={"train": {"count": 3, "shards": [{"file": "../../etc/passwd", "count": 3, "index": {"file": "x"}}]}})
    with pytest.raises(fmt.FormatError, match="not a plain"):
        fmt.parse_manifest(fmt.dump_manifest(evil), "m")
    wrong = dict(good, splits={"train": dict(good["splits"]["train"], count=4)})
    with pytest.raises(fmt.FormatError, match="says 4 samples, its shards hold 3"):
        fmt.parse_manifest(fmt.dump_manifest(wrong), "m")


def test_class_weights_are_inverse_frequency():
    assert fmt.class_weights([30, 10, 0]) == [round(40 / 90, 6), round(40 / 30, 6), 0.0]
