"""Packing in parallel: worker processes, parts on separate "machines" merged, two packs at once, a full disk.

Real processes throughout: ``ai8x-shards pack`` and ``merge`` as child processes, worker pools
forked by the writer, a real tmpfs filled up. Every result is compared byte for byte with a
one-process pack.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from crashpoint import KILLED
from packtools import Kill, cli, env, journal_records, run, run_killed, tree_bytes, write_npz

from shardwriter import pack
from shardwriter.job import read_journal
from shardwriter.pack import JOB_FILE
from shardwriter.sources import ImageFolderSource
from shardwriter.synth import synth_aisegment, synth_imagefolder
from shardwriter.verify import verify


def _break(raw: Path, names: list[str]) -> None:
    for rel in names:
        (raw / rel).write_bytes(b"\x89PNG\r\n\x1a\n not an image")


@pytest.fixture()
def broken_folder(tmp_path: Path) -> Path:
    """48 images of 3 classes; four corrupt ones, so skipped inputs move the keys of the shards after them."""
    raw = synth_imagefolder(tmp_path / "raw", per_class=16, size=16)
    _break(raw, ["bar/0001.png", "disc/0004.png", "disc/0005.png", "square/0010.png"])
    return raw


# --------------------------------------------------------------------------- workers


@pytest.mark.parametrize("max_count", [1000, 7])
def test_any_number_of_workers_writes_the_same_bytes(tmp_path: Path, broken_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                      max_count: int) -> None:
    """Shards cut into pieces (pieces written by different processes at planned offsets), gaps left by skipped
    inputs closed, keys renumbered: the same bytes as one process."""
    monkeypatch.setattr(sys.modules["shardwriter.pack"], "MIN_PIECE_BYTES", 1)  # cut even these small shards into pieces
    trees = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        (m,) = pack(ImageFolderSource(broken_folder, test_fraction=0.25), out, workers=workers, max_count=max_count,
                    skip_bad=True, quiet=True)
        assert len(m.skipped) == 4 and verify(out) == []
        trees[workers] = tree_bytes(out)
    assert trees[1] == trees[2] == trees[3]


# --------------------------------------------------------------------------- parts


def test_parts_packed_on_separate_machines_then_merged_equal_one_pack(tmp_path: Path, broken_folder: Path) -> None:
    opts = ["--max-count", "5", "--skip-bad", "--quiet", "--test-fraction", "0.25"]
    assert run(cli("pack", "imagefolder", broken_folder, tmp_path / "one", *opts), tmp_path).returncode == 0
    procs = [subprocess.Popen(cli("pack", "imagefolder", broken_folder, tmp_path / f"machine{k}", *opts, "--part", f"{k}/3",
                                  "--workers", "2"), cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in (1, 2, 3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert b"once every part is in" in out
    for k in (1, 2, 3):
        assert not (tmp_path / f"machine{k}" / "manifest.json").exists()
    merged = tmp_path / "merged"
    merged.mkdir()
    for k in (2, 3):  # gather, like rsync -a machineK/ merged/
        shutil.copytree(tmp_path / f"machine{k}", merged, dirs_exist_ok=True)
    missing = run(cli("merge", merged), tmp_path)
    assert missing.returncode == 3 and "part(s) 1/3 missing" in missing.stderr
    shutil.copytree(tmp_path / "machine1", merged, dirs_exist_ok=True)
    done = run(cli("merge", merged), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "merged raw:" in done.stdout
    assert tree_bytes(merged) == tree_bytes(tmp_path / "one")
    assert verify(merged) == []


def test_parts_sharing_one_folder_concurrently_two_variants(tmp_path: Path) -> None:
    raw = synth_aisegment(tmp_path / "aiseg", images=8, seed=2)
    opts = ["--max-count", "3", "--quiet", "--test-fraction", "0.25"]
    assert run(cli("pack", "aisegment", raw, tmp_path / "one", *opts), tmp_path).returncode == 0
    shared = tmp_path / "shared"
    procs = [subprocess.Popen(cli("pack", "aisegment", raw, shared, *opts, "--part", f"{k}/2"), cwd=tmp_path, env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    again = run(cli("pack", "aisegment", raw, shared, *opts, "--part", "2/2"), tmp_path)
    assert again.returncode == 0  # a finished part run again: nothing to redo
    assert run(cli("merge", shared), tmp_path).returncode == 0
    assert tree_bytes(shared) == tree_bytes(tmp_path / "one")


def test_parts_started_at_the_same_moment_never_take_each_other_for_a_foreign_dataset(tmp_path: Path) -> None:
    """Each part decides what OUT holds while the other may be creating its journal and first files; before the
    folder-wide decision lock one start in about seven refused ("already holds a different (or partial) dataset")."""
    src = write_npz(tmp_path / "d.npz", 200)
    opts = ["--max-count", "20", "--quiet"]
    assert run(cli("pack", "npz", src, tmp_path / "one", *opts), tmp_path).returncode == 0
    for attempt in range(12):
        out = tmp_path / f"shared{attempt}"
        procs = [subprocess.Popen(cli("pack", "npz", src, out, *opts, "--part", f"{k}/2"), cwd=tmp_path, env=env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in (1, 2)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], (attempt, errs)
    assert run(cli("merge", out), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "one")


def test_merge_refuses_parts_of_other_inputs_and_unfinished_parts(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", 200)
    other = write_npz(tmp_path / "e.npz", 200, seed=9)
    shutil.copy(other, tmp_path / "e2.npz")
    opts = ["--max-count", "20", "--quiet", "--name", "d"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(cli("pack", "npz", src, a, *opts, "--part", "1/2"), tmp_path).returncode == 0
    assert run(cli("pack", "npz", other, b, *opts, "--part", "2/2"), tmp_path).returncode == 0
    shutil.copytree(b, a, dirs_exist_ok=True)
    got = run(cli("merge", a), tmp_path)
    assert got.returncode == 3 and "was packed from other inputs or options" in got.stderr
    assert not (a / "manifest.json").exists()
    lone = tmp_path / "lone"
    assert run(cli("merge", lone), tmp_path).returncode == 2



def _killed_after_combining(tmp: Path, parts: Path, out: Path) -> None:
    """``out``: a copy of ``parts`` whose merge was killed after writing the combined journal, before removing any
    part journal (found by killing it before its 1st, 2nd, ... file change)."""
    for k in range(1, 20):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(parts, out)
        code = f"import crashpoint; crashpoint.main({k}, ['merge', {str(out)!r}])"
        assert subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env(), timeout=120).returncode == KILLED
        if (out / JOB_FILE).exists():
            assert len(list(out.glob(JOB_FILE + "-*-of-2"))) == 2
            return
    raise AssertionError("the merge never got as far as its combined journal")


def test_merge_refuses_a_folder_it_cannot_finish_naming_what_is_wrong(tmp_path: Path) -> None:
    """An interrupted one-run pack is no merge to finish; a part journal of another job beside a half-done merge's
    combined journal is named, and nothing is assembled."""
    src, other = write_npz(tmp_path / "d.npz", 2000), write_npz(tmp_path / "e.npz", 2000, seed=9)  # 100 shards: time to kill
    opts = ["--max-count", "20", "--quiet", "--name", "d"]
    one = tmp_path / "one"
    assert run_killed(cli("pack", "npz", src, one, *opts), tmp_path, one, Kill(records=2))
    got = run(cli("merge", one), tmp_path)
    assert got.returncode == 3 and "holds an interrupted pack" in got.stderr and "not a --part pack" in got.stderr
    assert run(cli("pack", "npz", src, one, *opts), tmp_path).returncode == 0  # still resumable by its own command

    parts, foreign = tmp_path / "parts", tmp_path / "foreign"
    for k in (1, 2):
        assert run(cli("pack", "npz", src, parts, *opts, "--part", f"{k}/2"), tmp_path).returncode == 0
    assert run(cli("pack", "npz", other, foreign, *opts, "--part", "1/2"), tmp_path).returncode == 0
    out = tmp_path / "out"
    _killed_after_combining(tmp_path, parts, out)
    shutil.copy(foreign / (JOB_FILE + "-1-of-2"), out / (JOB_FILE + "-1-of-2"))
    got = run(cli("merge", out), tmp_path)
    assert got.returncode == 3 and f"{JOB_FILE}-1-of-2: a part journal of another job" in got.stderr, got.stderr
    assert not (out / "manifest.json").exists()
    (out / (JOB_FILE + "-1-of-2")).unlink()  # the one that does not belong
    assert run(cli("merge", out), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(one)


# --------------------------------------------------------------------------- two packs at once


def test_a_second_pack_into_the_same_out_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli("pack", "dataset", "pack_sources:datasets", out, "--max-count", "10", "--quiet")
    first = subprocess.Popen(args, cwd=tmp_path, env={**env(), "PACK_TEST_DELAY": "0.01"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        while journal_records(out) < 2:  # the first pack holds OUT and is writing
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = run(args, tmp_path)
        assert first.poll() is None, "the second pack must fail while the first still runs"
        assert second.returncode == 3
        assert f"is being written by another pack (pid {first.pid} on" in second.stderr
        assert "ai8x-shards pack dataset pack_sources:datasets" in second.stderr
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert verify(out) == []
    assert not (out / ".ai8x-shards-lock").exists()
    ref = tmp_path / "ref"
    assert run(cli("pack", "dataset", "pack_sources:datasets", ref, "--max-count", "10", "--quiet"), tmp_path).returncode == 0
    assert tree_bytes(out) == tree_bytes(ref)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs (root can mount one); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a small tmpfs, and mounting one needs root (not root here)")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if got.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({got.stderr.strip() or got.returncode}); a container without CAP_SYS_ADMIN?")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_names_the_path_and_the_same_command_resumes_after_space_is_freed(tmp_path: Path, small_disk: Path) -> None:
    src = write_npz(tmp_path / "d.npz", 4000, shape=(1, 16, 16))  # about 6 MiB of shards
    opts = ["--max-count", "100", "--quiet", "--workers", "2"]
    assert run(cli("pack", "npz", src, tmp_path / "ref", *opts), tmp_path).returncode == 0
    out = small_disk / "out"
    full = run(cli("pack", "npz", src, out, *opts), tmp_path)
    assert full.returncode == 4, full.stderr
    line = full.stderr.strip()
    print(line)
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{out}/" in line and "No space left on device" in line and "run the same command again to resume" in line
    left = sorted(p.name for p in out.iterdir())
    # the journal's intact records (a line torn by the full disk is what the next run cuts off, as the job does)
    records = read_journal(out / ".ai8x-shards-job")[0][1:] if (out / ".ai8x-shards-job").exists() else []
    recorded = {f"{r['split']}-{r['shard']:06d}" for r in records}
    for name in left:  # only what the journal records (resumable) and the journal itself; no manifest, no stray temp
        shard = re.match(r"^\.((?:train|test|val)-\d{6})\.(tar|idx)\.tmp$", name)
        assert name == ".ai8x-shards-job" or (shard and shard.group(1) in recorded), (name, left)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = run(cli("pack", "npz", src, out, *opts), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")
