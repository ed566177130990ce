"""Never success over stale data: a re-run resumes or skips only when the fingerprint proves the inputs are the same.

Files: names, sizes and mtime_ns (contents with --checksum). module:function and Python
datasets: every sample's content, read again on a re-run. Real processes, real files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from packtools import Kill, cli, run, run_killed, tree_bytes, write_npz
from PIL import Image

from shardwriter.synth import synth_imagefolder


def _pack(cwd: Path, *args: object):
    return run(cli("pack", *map(str, args), "--quiet"), cwd)


def test_a_complete_dataset_is_left_alone_only_while_its_inputs_are_unchanged(tmp_path: Path) -> None:
    synth_imagefolder(tmp_path / "raw", per_class=6, size=12)
    out = tmp_path / "out"
    assert _pack(tmp_path, "imagefolder", tmp_path / "raw", out).returncode == 0
    before = tree_bytes(out)
    again = _pack(tmp_path, "imagefolder", tmp_path / "raw", out)
    assert again.returncode == 0 and "nothing to do" in again.stdout and "packed" not in again.stdout
    img = tmp_path / "raw" / "disc" / "0002.png"  # touched: the same name and size, another mtime
    data = img.read_bytes()
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    changed = _pack(tmp_path, "imagefolder", tmp_path / "raw", out)
    assert changed.returncode == 3
    assert "already holds a different dataset" in changed.stderr and "the inputs changed" in changed.stderr
    assert "--overwrite" in changed.stderr
    assert tree_bytes(out) == before
    img.write_bytes(data)
    # an option changed: said by name
    opt = _pack(tmp_path, "imagefolder", tmp_path / "raw", out, "--max-count", "3")
    assert opt.returncode == 3 and "max_count was 10000, now 3" in opt.stderr
    assert _pack(tmp_path, "imagefolder", tmp_path / "raw", out, "--max-count", "3", "--overwrite").returncode == 0
    assert tree_bytes(out) != before


def test_checksum_catches_an_edit_that_keeps_name_size_and_mtime(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", 200)
    out = tmp_path / "out"
    assert _pack(tmp_path, "npz", src, out, "--checksum").returncode == 0
    st = src.stat()
    with np.load(src) as z:
        x, y = z["x"].copy(), z["y"].copy()
    x[5, 0, 0, 0] ^= 0xFF  # the same arrays, one byte different: the same file size
    np.savez(src, x=x, y=y)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    same_stat = _pack(tmp_path, "npz", src, out, "--checksum")
    assert same_stat.returncode == 3 and "the inputs changed" in same_stat.stderr
    meta = json.loads((out / "manifest.json").read_text())["source"]
    assert meta["covers"] == "names, sizes and mtime_ns and contents (xxh3-128) of 1 .npz file(s)"
    # without --checksum, name + size + mtime_ns is what is compared (and said so in the manifest)
    plain = tmp_path / "plain"
    assert _pack(tmp_path, "npz", src, plain).returncode == 0
    assert json.loads((plain / "manifest.json").read_text())["source"]["covers"] == "names, sizes and mtime_ns of 1 .npz file(s)"


def test_an_input_edited_between_a_kill_and_the_resume_is_not_mixed_in(tmp_path: Path) -> None:
    synth_imagefolder(tmp_path / "raw", per_class=60, size=12)
    out = tmp_path / "out"
    args = cli("pack", "imagefolder", tmp_path / "raw", out, "--max-count", "2", "--quiet")
    assert run_killed(args, tmp_path, out, Kill(records=10))
    img = tmp_path / "raw" / "bar" / "0001.png"
    size = img.stat().st_size
    with Image.open(img) as im:  # new pixels, then padded to the old size: same name and size, new mtime
        arr = 255 - np.asarray(im)
    Image.fromarray(arr).save(img)
    data = img.read_bytes()
    img.write_bytes(data[:size] if len(data) >= size else data + b"\0" * (size - len(data)))
    assert img.stat().st_size == size
    resumed = run(args, tmp_path)
    assert resumed.returncode == 3
    assert "interrupted pack of other inputs or options" in resumed.stderr and "--overwrite" in resumed.stderr
    assert not (out / "manifest.json").exists()
    fresh = run([*args, "--overwrite"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    ref = tmp_path / "ref"
    assert run(cli("pack", "imagefolder", tmp_path / "raw", ref, "--max-count", "2", "--quiet"), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(ref)


MODULE = '''
import numpy as np

SEED = {seed}
classes = [0, 1, 2]

class DS:
    classes = classes

    def __len__(self):
        return 30

    def __getitem__(self, i):
        rng = np.random.default_rng(SEED * 1000 + i)
        return rng.integers(0, 256, (1, 4, 4), dtype=np.uint8), int(rng.integers(0, 3))

def make():
    return DS(), DS()
'''


def test_a_module_whose_samples_changed_is_not_success(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(MODULE.format(seed=1))
    out = tmp_path / "out"
    assert _pack(tmp_path, "dataset", "mymod:make", out).returncode == 0
    before = tree_bytes(out)
    same = _pack(tmp_path, "dataset", "mymod:make", out)
    assert same.returncode == 0 and "nothing to do" in same.stdout  # every sample read again, and found the same
    assert json.loads((out / "manifest.json").read_text())["source"]["covers"].startswith("every sample's content")
    (tmp_path / "mymod.py").write_text(MODULE.format(seed=2))  # same length, same shapes, other samples
    changed = _pack(tmp_path, "dataset", "mymod:make", out)
    assert changed.returncode == 3 and "already holds a different dataset" in changed.stderr, changed.stderr
    assert tree_bytes(out) == before
    assert _pack(tmp_path, "dataset", "mymod:make", out, "--overwrite").returncode == 0
    assert tree_bytes(out) != before


def test_a_module_changed_between_a_kill_and_the_resume_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli("pack", "dataset", "pack_sources:datasets", out, "--max-count", "10", "--quiet")
    assert run_killed(args, tmp_path, out, Kill(records=4))
    env_seed = dict(os.environ)
    os.environ["PACK_TEST_SEED"] = "1"  # every sample of the module changes
    try:
        resumed = run(args, tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(env_seed)
    assert resumed.returncode == 3
    assert "samples have changed since" in resumed.stderr and "--overwrite" in resumed.stderr
    assert run(args, tmp_path).returncode == 0  # the original samples: resumes
    ref = tmp_path / "ref"
    assert run(cli("pack", "dataset", "pack_sources:datasets", ref, "--max-count", "10", "--quiet"), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(ref)


def test_a_damaged_dataset_is_not_nothing_to_do(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", 100)
    out = tmp_path / "out"
    assert _pack(tmp_path, "npz", src, out, "--max-count", "30").returncode == 0
    (out / "train-000001.tar").unlink()
    got = _pack(tmp_path, "npz", src, out, "--max-count", "30")
    assert got.returncode == 3 and "train-000001.tar is missing" in got.stderr and "verify" in got.stderr
