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
    ours = list(fmt.iter_tar_members(io.BytesIO(data), "s.tar", len(data)))
    assert [(m.name, m.payload, m.offset) for m in ours] == [
        ("000000000.msgpack", b"abc", 512),
        ("000000001.msgpack", b"x" * 1000, 1536),
    ]


def test_tar_reader_names_shard_and_offset_on_corruption_and_truncation():
    data = b"".join(fmt.member_bytes(f"{i:09d}.msgpack", bytes([i]) * 700) for i in range(3)) + fmt.TAR_END
    flipped = bytearray(data)
    flipped[1536 + 10] ^= 0xFF  # inside the second member's header
    with pytest.raises(fmt.FormatError, match=r"s\.tar at byte 1536.*checksum"):
        list(fmt.iter_tar_members(io.BytesIO(bytes(flipped)), "s.tar", len(data)))
    with pytest.raises(fmt.FormatError, match=r"s\.tar.*truncated"):
        list(fmt.iter_tar_members(io.BytesIO(data[:2000]), "s.tar", len(data)))
    # Cut exactly on a header boundary: stdlib readers stop silently, we do not.
    with pytest.raises(fmt.FormatError, match=r"ends at byte 3072 without the end-of-archive"):
        list(fmt.iter_tar_members(io.BytesIO(data[:3072]), "s.tar", len(data)))
    # A header that declares more bytes than the shard holds is refused before anything is allocated.
    huge = fmt.tar_header("000000000.msgpack", 8**11 - 1) + b"\0" * 2048  # ~8 GiB declared
    with pytest.raises(fmt.FormatError, match=r"declares 8589934591 bytes, but the shard has only 2048"):
        list(fmt.iter_tar_members(io.BytesIO(huge), "s.tar", len(huge)))


def test_index_round_trip_and_errors():
    rows = np.array([(512, 10, 520, 4, 0, 0, 3, 11, 0), (1536, 20, 1544, 4, 1550, 8, -1, 12, 13)], dtype=fmt.INDEX_DTYPE)
    buf = fmt.encode_index(rows)
    assert buf[:8] == fmt.INDEX_MAGIC[2] and len(buf) == fmt.index_size(2, 2)
    assert np.array_equal(fmt.decode_index(buf, "i", 2), rows)
    v1 = fmt.encode_index(rows, 1)  # format 1: the same rows without the hashes
    assert len(v1) == fmt.index_size(2, 1) and v1[:8] == fmt.INDEX_MAGIC[1]
    back = fmt.decode_index(v1, "i")
    assert np.array_equal(back[["offset", "label"]], rows[["offset", "label"]]) and not back["x_hash"].any()
    with pytest.raises(fmt.FormatError, match="a format-1 index in a format-2 dataset"):
        fmt.decode_index(v1, "i", 2)
    with pytest.raises(fmt.FormatError, match="bad magic"):
        fmt.decode_index(b"nope" * 8, "train-000000.idx")
    with pytest.raises(fmt.FormatError, match="train-000000.idx: index says 2 rows"):
        fmt.decode_index(buf[:-3], "train-000000.idx")


def _manifest(**over):
    import hashlib

    sha = hashlib.sha256(b"x").hexdigest()
    shard = {"file": "train-000000.tar", "count": 3, "bytes": 4096, "sha256": sha,
             "index": {"file": "train-000000.idx", "bytes": fmt.index_size(3, 2), "sha256": sha}}
    good = {
        "format": "ai8x-shards", "format_version": 2, "sample_hash": "xxh3_64", "input_shape": [1, 2, 2],
        "target": {"kind": "class", "dtype": "int64", "shape": None}, "classes": [0, 1],
        "splits": {"train": {"count": 3, "shards": [shard], "class_histogram": [2, 1], "class_weights": fmt.class_weights([2, 1])}},
    }
    good.update(over)
    return good


def test_manifest_round_trips_through_typed_objects():
    m = fmt.parse_manifest(fmt.dump_manifest(_manifest()), "m")
    assert m.version == 2 and m.input_shape == (1, 2, 2) and m.target.kind == "class" and m.classes == (0, 1)
    s = m.split("train")
    assert s.count == 3 and s.shards[0].first == 0 and s.shards[0].index.file == "train-000000.idx"
    assert fmt.parse_manifest(m.dump(), "m") == m
    assert m.entry("train-000000.idx") == s.shards[0].index and m.entry("train-000001.tar") is None


@pytest.mark.parametrize("change, message", [
    ({"format_version": fmt.FORMAT_VERSION + 1}, "upgrade"),
    ({"format_version": True}, "field format_version must be an integer, not a boolean"),
    ({"format_version": 0}, "format version 0 does not exist"),
    ({"format_version": "2"}, "field format_version must be an integer, not a string"),
    ({"sample_hash": "md5"}, "field sample_hash"),
    ({"input_shape": [1, -2, 2]}, "shape"),
    ({"input_shape": "1x2"}, "field input_shape must be a list"),
    ({"target": {"kind": "segmentation"}}, "field target.kind"),
    ({"target": {"kind": "mask", "dtype": "uint8"}}, "a mask target needs a shape"),
    ({"target": {"kind": "class", "dtype": "float32"}}, "field target.dtype"),
    ({"classes": []}, "0 classes"),
    ({"classes": [{"a": 1}]}, "field classes must be a list of strings or integers"),
    ({"splits": {"training": {}}}, "field splits.training is not a split"),
    ({"splits": []}, "field splits must be an object"),
    ({"regression": True}, "field regression is True"),
])
def test_a_bad_manifest_is_one_format_error_naming_the_file_and_field(change, message):
    with pytest.raises(fmt.FormatError, match="manifest.json") as err:
        fmt.parse_manifest(fmt.dump_manifest(_manifest(**change)), "/d/manifest.json")
    assert message in str(err.value)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(count=4), "field splits.train.count is 4, but its shards hold 3"),
    (lambda s: s["shards"][0].update(file="../../etc/passwd"), "splits.train.shards[0].file"),
    (lambda s: s["shards"][0].update(file="train-000001.tar"), "shard 0 of split train is train-000000.tar"),
    (lambda s: s["shards"][0].update(count=10**12), "must lie in 1.."),
    (lambda s: s["shards"][0].update(count=True), "must be an integer, not a boolean"),
    (lambda s: s["shards"][0].update(bytes=1000), "whole number of 512-byte blocks"),
    (lambda s: s["shards"][0].update(bytes=2048), "at least 4096"),
    (lambda s: s["shards"][0].update(sha256="abc"), "is not a sha256"),
    (lambda s: s["shards"][0]["index"].update(file="x.idx"), "the index of train-000000.tar is train-000000.idx"),
    (lambda s: s["shards"][0]["index"].update(bytes=16 + 56 * 3), "a format-2 index of 3 rows is 232 bytes"),
    (lambda s: s.update(class_histogram=[3, 1]), "sums to 4"),
    (lambda s: s.update(class_weights=[9.0, 9.0]), "do not follow from class_histogram"),
    (lambda s: s.pop("shards"), "field splits.train.shards is missing"),
])
def test_split_and_shard_fields_are_checked(edit, message):
    m = _manifest()
    edit(m["splits"]["train"])
    with pytest.raises(fmt.FormatError, match="m.json") as err:
        fmt.parse_manifest(fmt.dump_manifest(m), "m.json")
    assert message in str(err.value)


def test_manifest_that_is_not_json_or_not_ours():
    for buf in (b"{", b"[]", b'{"format": "other"}', b"\xff\xfe"):
        with pytest.raises(fmt.FormatError, match="m.json"):
            fmt.parse_manifest(buf, "m.json")


def test_rows_are_checked_against_layout_shard_and_schema():
    schema = fmt.Schema((1, 2, 2), fmt.Target("class"), (0, 1))
    layout = fmt.record_layout(schema)
    recs = [fmt.encode_record(fmt.sample_key(i), np.full((1, 2, 2), i, np.uint8), "class", i % 2) for i in range(3)]
    pos, rows = 0, []
    for r in recs:
        rows.append(fmt.index_row(pos + fmt.BLOCK, r))
        pos += fmt.BLOCK + fmt.padded(len(r.payload))
    rows = np.array(rows, fmt.INDEX_DTYPE)
    size = pos + len(fmt.TAR_END)
    kw = {"where": "i.idx", "count": 3, "shard_bytes": size, "layout": layout, "schema": schema, "hashed": True}
    fmt.check_rows(rows, **kw)
    for field, value, message in [("label", 5, "label is outside 0..1"), ("x_off", rows["x_off"][1] + 1, "input bytes are not where"),
                                  ("offset", rows["offset"][2] + 512, "overlap or leave gaps"), ("x_len", 3, "input length")]:
        bad = rows.copy()
        bad[field][1 if field != "offset" else 2] = value
        with pytest.raises(fmt.FormatError, match=message):
            fmt.check_rows(bad, **kw)
    with pytest.raises(fmt.FormatError, match="row 2: the last record does not end where"):
        fmt.check_rows(rows, **{**kw, "shard_bytes": size + 512})
    with pytest.raises(fmt.FormatError, match="3 rows but its shard holds 4"):
        fmt.check_rows(rows, **{**kw, "count": 4})


def test_sample_hashes_cover_input_bytes_and_label():
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    enc = fmt.encode_record("000000001", x, "class", 3)
    assert enc.x_hash == fmt.input_hash(x.tobytes(), 3) != fmt.input_hash(x.tobytes(), 4)
    flipped = bytearray(x.tobytes())
    flipped[5] ^= 1
    assert fmt.input_hash(bytes(flipped), 3) != enc.x_hash
    m = fmt.encode_record("000000001", x, "mask", np.ones((3, 4), np.uint8))
    assert m.y_hash == fmt.target_hash(np.ones((3, 4), np.uint8).tobytes()) and m.label == -1


def test_class_weights_are_inverse_frequency():
    assert fmt.class_weights([30, 10, 0]) == [round(40 / 90, 6), round(40 / 30, 6), 0.0]


@pytest.mark.parametrize("kind, classes, tshape", [("class", 10, None), ("class", 300, None), ("mask", 3, (4, 5)),
                                                   ("regression", 1, (3,)), ("regression", 1, ())])
def test_the_batch_encoder_writes_exactly_the_one_sample_bytes(kind, classes, tshape):
    rng = np.random.default_rng(2)
    schema = fmt.Schema((3, 4, 5), fmt.Target(kind, tshape), tuple(range(classes)))
    enc = fmt.MemberEncoder(schema)
    n = 40
    x = rng.integers(0, 256, (n, 3, 4, 5), dtype=np.uint8)
    y = (rng.integers(0, classes, n) if kind == "class" else rng.integers(0, classes, (n, *tshape)).astype(np.uint8)
         if kind == "mask" else rng.standard_normal((n, *tshape)).astype(np.float32))
    names = [f"{'é' * i}{'x' * (7 * i)}[{i}]" for i in range(n)]  # names of every msgpack str header size
    for with_names in (names, None):
        parts, rows = [], []
        end = enc.encode(7, 1024, x, y, with_names, parts, rows)
        want, want_rows, pos = [], [], 1024
        for i in range(n):
            yi = int(y[i]) if kind == "class" else y[i]
            rec = fmt.encode_record(fmt.sample_key(7 + i), x[i], kind, yi, with_names[i] if with_names else None)
            member = fmt.member_bytes(fmt.sample_key(7 + i) + fmt.MEMBER_SUFFIX, rec.payload)
            want_rows.append(fmt.index_row(pos + fmt.BLOCK, rec))
            want.append(member)
            pos += len(member)
            assert enc.member_size(with_names[i] if with_names else None, int(y[i]) if kind == "class" else 0) == len(member)
        assert b"".join(parts) == b"".join(want) and rows == want_rows and end == pos
    sizes = enc.member_sizes(np.array([len(nm.encode()) for nm in names]), y if kind == "class" else None)
    assert sizes.tolist() == [enc.member_size(nm, int(y[i]) if kind == "class" else 0) for i, nm in enumerate(names)]
    payload = fmt.encode_record(fmt.sample_key(5), x[0], kind, int(y[0]) if kind == "class" else y[0], "a").payload
    again = fmt.encode_record(fmt.sample_key(123), x[0], kind, int(y[0]) if kind == "class" else y[0], "a").payload
    assert fmt.with_key(payload, fmt.sample_key(123)) == again
