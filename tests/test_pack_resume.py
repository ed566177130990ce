"""A pack killed with SIGKILL at many points and re-run gives the dataset an uninterrupted pack gives, byte for byte.

Real ``ai8x-shards pack`` processes (with real worker processes), killed as a process group:
after k journal records for several k, at seeded random times, and while the finished shards
are being renamed; after every kill the folder holds nothing a reader could mistake for
complete, and after the last run the tree (manifests included) equals the reference.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crashpoint import AGAIN, KILLED
from packtools import Kill, check_consistent, cli, env, run, run_killed, tree_bytes, write_npz

from shardwriter.synth import synth_aisegment, synth_imagefolder
from shardwriter.verify import verify


def _kind(kind: str, tmp: Path) -> list[str]:
    """The pack arguments (before OUT) of one source kind, with its inputs written under ``tmp``."""
    if kind == "npz":
        return ["npz", str(write_npz(tmp / "d.npz", 3000)), "--max-count", "12", "--workers", "2"]
    if kind == "imagefolder":
        synth_imagefolder(tmp / "raw", per_class=50, size=12)
        return ["imagefolder", str(tmp / "raw"), "--max-count", "2", "--workers", "2"]
    if kind == "dataset":
        return ["dataset", "pack_sources:datasets", "--max-count", "12", "--workers", "2"]
    synth_aisegment(tmp / "aiseg", images=10, seed=3)
    return ["aisegment", str(tmp / "aiseg"), "--max-count", "3", "--workers", "2", "--test-fraction", "0.3"]


KINDS = ("npz", "imagefolder", "dataset", "aisegment")


def _schedule(kind: str, total: int, seconds: float) -> list[Kill]:
    """A seeded schedule: an early kill at a random share of ``seconds`` (what an uninterrupted run took here: a
    fixed time can outlast a whole run on a fast machine), then once shares of the shards are recorded (each share
    jittered at random), then while the finished shards are being renamed."""
    rng = random.Random(f"kills-{kind}")
    shares = [0.05, 0.2, 0.35, 0.5, 0.7, 0.9]
    points = sorted({max(1, min(total - 1, round(total * (p + rng.uniform(-0.04, 0.04))))) for p in shares})
    return [Kill(seconds=seconds * rng.uniform(0.1, 0.5)), Kill(records=1)] + [Kill(sealed=k) for k in points] + [Kill(assembling=True)]


@pytest.mark.parametrize("kind", KINDS)
def test_killed_at_many_points_then_rerun_gives_the_identical_dataset(tmp_path: Path, kind: str) -> None:
    args = _kind(kind, tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "out"
    start = time.monotonic()
    done = run(cli("pack", *args[:2], ref, *args[2:], "--quiet"), tmp_path)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    total = sum(len(s["shards"]) for s in json.loads(next(ref.rglob("manifest.json")).read_text())["splits"].values())
    schedule = _schedule(kind, total, took)
    landed = []
    for kill in schedule:
        landed.append(run_killed(cli("pack", *args[:2], out, *args[2:], "--quiet"), tmp_path, out, kill))
        check_consistent(out)
    by_progress = landed[1:-1]
    assert sum(by_progress) >= len(by_progress) - 1, f"kills by progress must land while the pack runs: {landed}"
    final = run(cli("pack", *args[:2], out, *args[2:], "--quiet"), tmp_path)
    assert final.returncode == 0, final.stderr
    assert tree_bytes(out) == tree_bytes(ref)
    for m in sorted(out.rglob("manifest.json")):
        assert verify(m.parent) == []
    again = run(cli("pack", *args[:2], out, *args[2:], "--quiet"), tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_two_variants_keep_their_own_class_weights_across_kills(tmp_path: Path) -> None:
    """Issue #10's first bug: a killed two-variant pack re-run counted samples twice in one variant's histogram."""
    synth_aisegment(tmp_path / "aiseg", images=8, seed=5)
    args = ["aisegment", str(tmp_path / "aiseg")]
    opts = ["--max-count", "3", "--workers", "2", "--max-bytes", "4M", "--quiet"]  # AISegment_352 rolls over first
    assert run(cli("pack", *args, tmp_path / "ref", *opts), tmp_path).returncode == 0
    out = tmp_path / "out"
    total = sum(len(s["shards"]) for s in json.loads((tmp_path / "ref" / "AISegment_352" / "manifest.json").read_text())["splits"].values())
    for kill in (Kill(records=1), Kill(sealed=total // 4), Kill(sealed=total // 2), Kill(sealed=3 * total // 4)):
        assert run_killed(cli("pack", *args, out, *opts), tmp_path, out, kill)
    assert run(cli("pack", *args, out, *opts), tmp_path).returncode == 0
    for sub in ("AISegment_80", "AISegment_352"):
        got = json.loads((out / sub / "manifest.json").read_text())
        want = json.loads((tmp_path / "ref" / sub / "manifest.json").read_text())
        for split in want["splits"]:
            assert got["splits"][split]["class_histogram"] == want["splits"][split]["class_histogram"]
            assert got["splits"][split]["class_weights"] == want["splits"][split]["class_weights"]
            assert sum(got["splits"][split]["class_histogram"]) == got["splits"][split]["count"] * got["target"]["shape"][0] ** 2
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")


def test_a_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", 300)
    args = ["npz", str(src)]
    opts = ["--max-count", "20", "--quiet"]
    assert run(cli("pack", *args, tmp_path / "ref", *opts), tmp_path).returncode == 0
    out = tmp_path / "out"
    assert run_killed(cli("pack", *args, out, *opts), tmp_path, out, Kill(records=4)) or True
    journal = out / ".ai8x-shards-job"
    if journal.exists():  # a crash in the middle of an append: half a line, no newline
        with open(journal, "ab") as f:
            f.write(b'{"t": "sealed", "split": "train", "sha')
    assert run(cli("pack", *args, out, *opts), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")


def test_a_killed_merge_is_finished_by_merging_again(tmp_path: Path) -> None:
    synth_imagefolder(tmp_path / "raw", per_class=30, size=12)
    opts = ["--max-count", "3", "--quiet"]
    assert run(cli("pack", "imagefolder", tmp_path / "raw", tmp_path / "ref", *opts), tmp_path).returncode == 0
    out = tmp_path / "out"
    for k in (1, 2):
        assert run(cli("pack", "imagefolder", tmp_path / "raw", out, *opts, "--part", f"{k}/2"), tmp_path).returncode == 0
    run_killed(cli("merge", out), tmp_path, out, Kill(assembling=True))
    check_consistent(out)
    done = run(cli("merge", out), tmp_path)
    assert done.returncode == 0, done.stderr
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")
    again = run(cli("merge", out), tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def _small(kind: str, tmp: Path) -> list[str]:
    """Pack arguments (before OUT) of a small source: skipped inputs (shards rebuilt under new keys) or two outputs."""
    if kind == "imagefolder":
        synth_imagefolder(tmp / "raw", per_class=6, size=12)
        for rel in ("bar/0001.png", "disc/0004.png"):
            (tmp / "raw" / rel).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        return ["imagefolder", str(tmp / "raw"), "--max-count", "4", "--skip-bad", "--quiet"]
    synth_aisegment(tmp / "aiseg", images=6, seed=5)
    return ["aisegment", str(tmp / "aiseg"), "--max-count", "2", "--test-fraction", "0.3", "--quiet"]


def _every_crash_point(tmp: Path, start: Path | None, argv: list[str], finish: list[str], ref: dict[str, bytes]) -> int:
    """Run ``argv`` (its OUT a copy of ``start``, or new) killed before its 1st, 2nd, ... file change; after each kill
    the folder is consistent, ``finish`` (the command to run again) gives ``ref`` byte for byte and a further run has
    nothing to do. The number of changes the command makes."""
    k = 0
    while True:
        k += 1
        out = tmp / f"k{k}"
        if start is not None:
            shutil.copytree(start, out)
        code = f"import crashpoint; crashpoint.main({k}, {[*argv, str(out)]!r})"
        got = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env(), capture_output=True, text=True, timeout=120)
        if got.returncode == 0:  # no k-th change: every crash point was tried
            assert tree_bytes(out) == ref
            print(f"{argv[0]}: {k - 1} file changes, each one a crash point tried")
            return k - 1
        assert got.returncode == KILLED, got.stderr
        check_consistent(out)
        code = f"import crashpoint; crashpoint.again({[*finish, str(out)]!r})"
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"killed before change {k}: {done.stderr}"
        assert tree_bytes(out) == ref, f"killed before change {k}"
        assert "nothing to do" in done.stdout.split(AGAIN)[1], f"killed before change {k}: {done.stdout}"
        shutil.rmtree(out)


@pytest.mark.parametrize("kind", ["imagefolder", "aisegment"])
def test_a_merge_killed_before_any_of_its_file_changes_is_finished_by_merging_again(tmp_path: Path, kind: str) -> None:
    """Every crash point of a merge, one run each (a kill between removing one part's journal and the next's once
    left a folder that said a part was missing)."""
    args = _small(kind, tmp_path)
    assert run(cli("pack", *args, tmp_path / "ref"), tmp_path).returncode == 0
    parts = tmp_path / "parts"
    for k in (1, 2, 3):
        assert run(cli("pack", *args, parts, "--part", f"{k}/3"), tmp_path).returncode == 0
    changes = _every_crash_point(tmp_path, parts, ["merge"], ["merge"], tree_bytes(tmp_path / "ref"))
    assert changes > 8, f"only {changes} file changes counted: the crash points are not being reached"


def test_a_pack_killed_before_any_of_its_file_changes_is_resumed_by_packing_again(tmp_path: Path) -> None:
    """Every crash point of a one-process pack, from the first temporary shard to the lock's removal."""
    args = _small("imagefolder", tmp_path)
    assert run(cli("pack", *args, tmp_path / "ref"), tmp_path).returncode == 0
    changes = _every_crash_point(tmp_path, None, ["pack", *args], ["pack", *args], tree_bytes(tmp_path / "ref"))
    assert changes > 8, f"only {changes} file changes counted: the crash points are not being reached"
