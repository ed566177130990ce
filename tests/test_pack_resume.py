"""A pack killed with SIGKILL at many points and re-run gives the dataset an uninterrupted pack gives, byte for byte.

Real ``ai8x-shards pack`` processes (with real worker processes), killed as a process group:
after k journal records for several k, at seeded random times, and while the finished shards
are being renamed; after every kill the folder holds nothing a reader could mistake for
complete, and after the last run the tree (manifests included) equals the reference.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from packtools import Kill, check_consistent, cli, run, run_killed, tree_bytes, write_npz

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
