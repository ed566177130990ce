"""The ``aisegment`` source: bit-exact with the ai8x-training reference chain, one decode per
image for both variants, worker-count independent, bad inputs named, CLI synth + pack."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xxhash
from PIL import Image

from ai8x_shards.cli import main
from shardwriter import format as fmt
from shardwriter.pack import PackError, pack
from shardwriter.sources import AISegmentSource
from shardwriter.sources.base import BadInput
from shardwriter.synth import synth_aisegment
from shardwriter.verify import verify

TEST_FRACTION, VAL_FRACTION = 0.3, 0.2
VARIANTS = {"AISegment_80": (80, 1), "AISegment_352": (352, 4)}


# --------------------------------------------------------------------------- the reference, written out again


def ref_matte_file(data_root: Path, img_rel: str) -> Path:
    """datasets/aisegment.py: swap the clip_img root for matting, clip_ -> matting_, .jpg -> .png."""
    assert img_rel.startswith("clip_img/")
    return data_root / ("matting" + img_rel[len("clip_img") :].replace("clip_", "matting_").replace(".jpg", ".png"))


def ref_sample(img_file: Path, matting_file: Path, img_crp_idx: int, dim: int, fold_ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """AISegment.__gen_datasets for one row, then ToTensor's HWC -> CHW (no scaling kept)."""
    img_dim, img_crp_dim, num_of_cropped_imgs = (800, 600), (600, 600), 3
    img = Image.open(img_file)
    lbl_rgba = Image.open(matting_file)
    vertical_crop_area = img_dim[0] - img_crp_dim[0]
    step_size = vertical_crop_area / (num_of_cropped_imgs - 1)
    top_left_x = 0
    top_left_y = 0 + img_crp_idx * step_size
    bottom_right_x = img_crp_dim[0]
    bottom_right_y = top_left_y + img_crp_dim[0]
    img_crp = img.crop((top_left_x, top_left_y, bottom_right_x, bottom_right_y))
    img_crp_lbl = lbl_rgba.crop((top_left_x, top_left_y, bottom_right_x, bottom_right_y))
    img_crp = img_crp.resize([dim, dim])
    img_crp = np.asarray(img_crp).astype(np.uint8)
    img_crp_lbl = img_crp_lbl.resize([dim, dim])
    img_crp_lbl = (np.asarray(img_crp_lbl)[:, :, 3] == 0).astype(np.uint8)
    if fold_ratio == 1:
        img_crp_folded = img_crp
    else:
        img_crp_folded = None
        for i in range(fold_ratio):
            for j in range(fold_ratio):
                if img_crp_folded is not None:
                    img_crp_folded = np.concatenate((img_crp_folded, img_crp[i::fold_ratio, j::fold_ratio, :]), axis=2)
                else:
                    img_crp_folded = img_crp[i::fold_ratio, j::fold_ratio, :]
    return img_crp_folded.transpose(2, 0, 1), img_crp_lbl


def ref_split(image_rel: str, test_fraction: float, val_fraction: float) -> str:
    """Stable split by image name: sha256 of the basename without extension."""
    stem = image_rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    u = int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


# --------------------------------------------------------------------------- helpers


def read_records(folder: Path) -> dict[str, list[fmt.Record]]:
    """Every record of a dataset folder, per split, in shard order (sequential tar reads)."""
    m = json.loads((folder / fmt.MANIFEST_NAME).read_text())
    out: dict[str, list[fmt.Record]] = {}
    for split, info in m["splits"].items():
        recs = out.setdefault(split, [])
        for shard in info["shards"]:
            with open(folder / shard["file"], "rb") as f:
                for member in fmt.iter_tar_members(f, shard["file"], shard["bytes"]):
                    key = fmt.member_key(member.name, shard["file"])
                    rec = fmt.decode_record(member.payload, f"{shard['file']} {key}")
                    assert rec.key == key
                    recs.append(rec)
    return out


def images_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "clip_img").rglob("*.jpg"))


def check_against_reference(out: Path, raw: Path, images: list[str], test_fraction: float, val_fraction: float) -> None:
    """Every sample of both folders equals the reference chain; order, splits and manifest agree."""
    for sub, (dim, r) in VARIANTS.items():
        folder = out / sub
        m = json.loads((folder / fmt.MANIFEST_NAME).read_text())
        assert m["name"] == sub and m["variant"] == str(dim)
        assert m["input_shape"] == [3 * r * r, dim // r, dim // r]
        assert m["target"] == {"kind": "mask", "dtype": "uint8", "shape": [dim, dim]}
        assert m["classes"] == [0, 1]
        records = read_records(folder)
        expected_names: dict[str, list[str]] = {}
        for rel in images:
            split = ref_split(rel, test_fraction, val_fraction)
            expected_names.setdefault(split, []).extend(f"{rel}#crop{k}" for k in range(3))
        written = {s: [rec.source for rec in recs] for s, recs in records.items() if recs}
        assert {s: sorted(v) for s, v in written.items()} == {s: sorted(v) for s, v in expected_names.items()}
        for names in written.values():  # shuffled by image, each image's crops together and in order
            order = [n.partition("#crop")[0] for n in names[::3]]
            assert names == [f"{rel}#crop{k}" for rel in order for k in range(3)]
            assert order == sorted(order, key=lambda rel: xxhash.xxh3_64_intdigest(rel.encode(), 0)), "the seed-0 shuffle"
        for split, recs in records.items():
            hist = np.zeros(2, np.int64)
            for rec in recs:
                rel, _, crop = rec.source.partition("#crop")
                x, y = ref_sample(raw / rel, ref_matte_file(raw, rel), int(crop), dim, r)
                assert rec.x.dtype == np.uint8 and rec.x.shape == x.shape == tuple(m["input_shape"])
                assert np.array_equal(rec.x, x), f"{sub} {rec.source}: input differs from the reference chain"
                assert rec.y.dtype == np.uint8 and rec.y.shape == (dim, dim)
                assert np.array_equal(rec.y, y), f"{sub} {rec.source}: label differs from the reference chain"
                hist += np.bincount(rec.y.ravel(), minlength=2)
            assert m["splits"][split]["count"] == len(recs)
            assert m["splits"][split]["class_histogram"] == hist.tolist()


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_aisegment(tmp_path_factory.mktemp("aiseg") / "AISegment", images=9, seed=7)


@pytest.fixture(scope="module")
def packed(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aiseg-out") / "out"
    pack(AISegmentSource(raw, test_fraction=TEST_FRACTION, val_fraction=VAL_FRACTION), out, workers=1, quiet=True)
    return out


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    return synth_aisegment(tmp_path / "raw", images=6, seed=11)


# --------------------------------------------------------------------------- tests


def test_synth_layout_and_determinism(raw: Path, tmp_path: Path) -> None:
    images = images_of(raw)
    assert len(images) == 9
    assert len({rel.split("/")[1] for rel in images}) == 3  # groups
    assert len({tuple(rel.split("/")[1:3]) for rel in images}) >= 5  # group/clip_<sub> folders
    partial = 0
    for rel in images:
        with Image.open(raw / rel) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (600, 800))
        with Image.open(ref_matte_file(raw, rel)) as mt:
            assert (mt.format, mt.mode, mt.size) == ("PNG", "RGBA", (600, 800))
            a = np.asarray(mt)[:, :, 3]
        assert (a == 0).any() and (a == 255).any()
        partial += int(((a > 0) & (a < 255)).sum())
        assert (a[0, :] == 0).all()  # the top row is background
    assert partial > 1000
    again = synth_aisegment(tmp_path / "again", images=9, seed=7)
    assert tree_bytes(again) == tree_bytes(raw)
    other = synth_aisegment(tmp_path / "other", images=9, seed=8)
    assert tree_bytes(other) != tree_bytes(raw)


def test_both_variants_match_reference_chain(packed: Path, raw: Path) -> None:
    images = images_of(raw)
    splits = {ref_split(rel, TEST_FRACTION, VAL_FRACTION) for rel in images}
    assert splits == {"train", "test", "val"}  # the fixture exercises every split
    check_against_reference(packed, raw, images, TEST_FRACTION, VAL_FRACTION)
    for sub in VARIANTS:
        assert verify(packed / sub) == []
    # Labels are not trivial: each variant holds background and portrait pixels.
    for sub in VARIANTS:
        m = json.loads((packed / sub / fmt.MANIFEST_NAME).read_text())
        assert all(c > 0 for c in m["splits"]["train"]["class_histogram"])


def test_noisy_matte_labels_match_reference(small: Path) -> None:
    """The source resizes only the alpha band; on a matte of random RGBA noise (RGB behind
    zero alpha, isolated partial values) that must still equal resizing the whole RGBA crop."""
    rng = np.random.default_rng(5)
    rel = images_of(small)[0]
    a = rng.integers(0, 256, (800, 600, 4), dtype=np.uint8)
    a[:, :, 3] = np.where(rng.random((800, 600)) < 0.4, 0, a[:, :, 3])
    a[:350, :300, 3] = 0  # a background block that every crop overlaps
    Image.fromarray(a, "RGBA").save(ref_matte_file(small, rel))
    samples = AISegmentSource(small).load(rel)
    assert [(s.name, s.output) for s in samples] == [
        (f"{rel}#crop{k}", sub) for k in range(3) for sub in ("AISegment_80", "AISegment_352")
    ]
    for s in samples:
        dim, r = VARIANTS[s.output]
        x, y = ref_sample(small / rel, ref_matte_file(small, rel), int(s.name[-1]), dim, r)
        assert np.array_equal(s.x, x) and np.array_equal(s.y, y)
        assert 0 < int(s.y.sum()) < s.y.size


def test_float_crop_box_is_the_integer_box(raw: Path) -> None:
    rel = images_of(raw)[0]
    with Image.open(raw / rel) as im:
        im.load()
        for k in range(3):
            top = k * ((800 - 600) / (3 - 1))
            assert isinstance(top, float)
            a = np.asarray(im.crop((0, top, 600, top + 600)))
            b = np.asarray(im.crop((0, 100 * k, 600, 100 * k + 600)))
            assert np.array_equal(a, b)
            assert np.array_equal(a, np.asarray(im)[100 * k : 100 * k + 600])


def test_split_is_stable_and_keeps_crops_together(raw: Path, packed: Path) -> None:
    src = AISegmentSource(raw, test_fraction=TEST_FRACTION, val_fraction=VAL_FRACTION)
    plan = src.plan()
    assert plan == AISegmentSource(raw, test_fraction=TEST_FRACTION, val_fraction=VAL_FRACTION).plan()
    for split, items in plan.items():
        assert items == sorted(items)
        for rel in items:
            assert ref_split(rel, TEST_FRACTION, VAL_FRACTION) == split
    # In the written data every crop of an image sits in one split, in crop order.
    for sub in VARIANTS:
        where: dict[str, list[tuple[str, int]]] = {}
        for split, recs in read_records(packed / sub).items():
            for rec in recs:
                rel, _, crop = rec.source.partition("#crop")
                where.setdefault(rel, []).append((split, int(crop)))
        assert set(where) == set(images_of(raw))
        for rel, places in where.items():
            assert [c for _, c in places] == [0, 1, 2]
            assert len({s for s, _ in places}) == 1, f"{rel}: crops split across {places}"


def test_split_follows_the_image_name_not_its_folder(tmp_path: Path, raw: Path) -> None:
    """Two images with the same basename in different groups share a split."""
    root = tmp_path / "twins"
    shutil.copytree(raw, root)
    rel = images_of(root)[0]
    twin = rel.replace("clip_img/1803151818/", "clip_img/1903151818/")
    assert twin != rel
    (root / twin).parent.mkdir(parents=True)
    shutil.copy(root / rel, root / twin)
    ref_matte_file(root, twin).parent.mkdir(parents=True)
    shutil.copy(ref_matte_file(root, rel), ref_matte_file(root, twin))
    for fractions in ((0.5, 0.0), (0.3, 0.3), (0.5, 0.2)):  # (an empty train split is an error)
        plan = AISegmentSource(root, test_fraction=fractions[0], val_fraction=fractions[1]).plan()
        split_of_item = {item: s for s, items in plan.items() for item in items}
        assert split_of_item[rel] == split_of_item[twin]


def test_one_decode_per_file_for_both_variants(small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    decoders: list[str] = []
    real_open, real_getdecoder = Image.open, Image._getdecoder

    def counting_open(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(Path(fp).relative_to(small).as_posix())
        return real_open(fp, *args, **kwargs)

    def counting_getdecoder(mode, decoder_name, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoders.append(decoder_name)
        return real_getdecoder(mode, decoder_name, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(Image, "_getdecoder", counting_getdecoder)
    manifests = pack(AISegmentSource(small), tmp_path / "out", workers=1, quiet=True)
    monkeypatch.undo()
    images = images_of(small)
    expected = sorted(images + [ref_matte_file(small, rel).relative_to(small).as_posix() for rel in images])
    assert sorted(opened) == expected  # each image and each matte opened exactly once
    assert sorted(decoders) == sorted(["jpeg"] * len(images) + ["zip"] * len(images))  # and decoded once
    assert [m.name for m in manifests] == ["AISegment_80", "AISegment_352"]
    for m in manifests:
        assert sum(s.count for s in m.splits.values()) == 3 * len(images)


def test_workers_give_identical_bytes(raw: Path, packed: Path, tmp_path: Path) -> None:
    out2 = tmp_path / "w2"
    pack(AISegmentSource(raw, test_fraction=TEST_FRACTION, val_fraction=VAL_FRACTION), out2, workers=2, quiet=True)
    a, b = tree_bytes(packed), tree_bytes(out2)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("AISegment_80/") for k in a) and any(k.startswith("AISegment_352/") for k in a)
    for name in a:
        assert a[name] == b[name], f"{name} differs between workers=1 and workers=2"


def test_only_requested_variants(small: Path, tmp_path: Path) -> None:
    (m,) = pack(AISegmentSource(small, variants=[352]), tmp_path / "o", quiet=True)
    assert m.name == "AISegment_352" and m.input_shape == (48, 88, 88)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["AISegment_352"]
    with pytest.raises(ValueError, match="variant 96"):
        AISegmentSource(small, variants=[80, 96])


# --------------------------------------------------------------------------- bad input


def _break(root: Path, how: str) -> tuple[str, str]:
    """Damage one image pair in ``root``; return (image name, the file a message must name).

    :data:`REASONS` holds what the reason must say for each kind of damage.
    """
    images = images_of(root)
    index = {"missing_matte": 0, "no_alpha": 1, "wrong_size": 2, "corrupt_jpeg": 3, "matte_size": 4, "corrupt_matte": 5}[how]
    rel = images[index]
    matte = ref_matte_file(root, rel)
    mrel = matte.relative_to(root).as_posix()
    if how == "missing_matte":
        matte.unlink()
        return rel, mrel
    if how == "no_alpha":
        with Image.open(matte) as mt:
            mt.convert("RGB").save(matte)
        return rel, mrel
    if how == "wrong_size":
        with Image.open(root / rel) as im:
            im.resize((640, 800)).save(root / rel, quality=90)
        return rel, rel
    if how == "corrupt_jpeg":
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 3])
        return rel, rel
    if how == "matte_size":
        with Image.open(matte) as mt:
            mt.crop((0, 0, 600, 700)).save(matte)
        return rel, mrel
    data = matte.read_bytes()
    matte.write_bytes(data[: len(data) // 2])
    return rel, mrel


REASONS = {
    "missing_matte": "missing",
    "no_alpha": "no alpha channel (mode RGB)",
    "wrong_size": "640x800, expected 600x800",
    "corrupt_jpeg": "corrupt",
    "matte_size": "600x700",
    "corrupt_matte": "corrupt",
}
BREAKS = list(REASONS)


@pytest.mark.parametrize("how", BREAKS)
def test_bad_input_is_named(small: Path, tmp_path: Path, how: str) -> None:
    rel, named = _break(small, how)
    src = AISegmentSource(small, test_fraction=0.0)
    with pytest.raises(BadInput) as exc_info:
        src.load(rel)
    assert exc_info.value.name == rel and named in str(exc_info.value)
    assert REASONS[how] in exc_info.value.reason
    with pytest.raises(PackError) as pack_error:
        pack(src, tmp_path / "out", quiet=True)
    assert rel in str(pack_error.value) and named in str(pack_error.value)


def test_skip_bad_counts_names_and_keeps_the_rest(small: Path, tmp_path: Path) -> None:
    hows = ("missing_matte", "no_alpha", "wrong_size", "corrupt_jpeg")
    damaged = [(how, *_break(small, how)) for how in hows]
    broken = {rel: named for _, rel, named in damaged}
    out = tmp_path / "out"
    manifests = pack(AISegmentSource(small, test_fraction=0.5), out, workers=2, skip_bad=True, quiet=True)
    good = [rel for rel in images_of(small) if rel not in broken]
    assert len(good) == 2
    for m in manifests:
        assert len(m.skipped) == 4
        skipped = {r.name: r for r in m.skipped}
        assert set(skipped) == set(broken)
        for how, rel, named in damaged:
            assert named in f"{rel}: {skipped[rel].reason}" and REASONS[how] in skipped[rel].reason
            assert skipped[rel].split == ref_split(rel, 0.5, 0.0)
        assert sum(s.count for s in m.splits.values()) == 3 * len(good)
    check_against_reference(out, small, good, 0.5, 0.0)


# --------------------------------------------------------------------------- CLI


def test_cli_synth_and_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["synth", "aisegment", str(raw), "--images", "4", "--seed", "3"]) == 0
    assert len(images_of(raw)) == 4
    assert tree_bytes(raw) == tree_bytes(synth_aisegment(tmp_path / "api", images=4, seed=3))
    assert main(["pack", "aisegment", str(raw), str(out), "--workers", "2", "--quiet"]) == 0
    for sub in VARIANTS:
        assert (out / sub / fmt.MANIFEST_NAME).is_file()
        assert verify(out / sub) == []
    check_against_reference(out, raw, images_of(raw), 0.1, 0.0)
    assert "packed AISegment_352" in capsys.readouterr().out
    # One variant only; and a bad input fails the run with the file named.
    assert main(["pack", "aisegment", str(raw), str(tmp_path / "o80"), "--variants", "80", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "o80").iterdir()) == ["AISegment_80"]
    rel, named = _break(raw, "missing_matte")
    assert main(["pack", "aisegment", str(raw), str(tmp_path / "bad"), "--quiet"]) == 3  # bad input: PackError
    assert named in capsys.readouterr().err
    assert main(["pack", "aisegment", str(raw), str(tmp_path / "skip"), "--quiet", "--skip-bad"]) == 0
    m = json.loads((tmp_path / "skip" / "AISegment_80" / fmt.MANIFEST_NAME).read_text())
    assert [r["name"] for r in m["skipped"]["inputs"]] == [rel]
