"""Helpers for the writer's process tests: run ``ai8x-shards`` as a real process, kill it, compare trees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardwriter import format as fmt

TESTS = Path(__file__).parent


def env() -> dict[str, str]:
    """The environment of a child ``ai8x-shards``: tests/ importable (for module:function sources)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ai8x_shards", *map(str, args)]


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes), for byte-identity checks."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def journal_records(out: Path, name: str = ".ai8x-shards-job") -> int:
    """Complete lines in a job journal (0 when there is none)."""
    try:
        return (out / name).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def finals(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name.endswith(".tar") and not p.name.startswith("."))


def sealed_records(out: Path, name: str = ".ai8x-shards-job") -> int:
    """Shards the journal records as sealed (each record covers every output)."""
    try:
        return (out / name).read_bytes().count(b'"t":"sealed"')
    except FileNotFoundError:
        return 0


@dataclass
class Kill:
    """When to SIGKILL a run: after ``records`` more journal lines, once ``sealed`` shards are recorded in all,
    ``seconds`` after start, or once a final shard exists (``assembling``)."""

    records: int = 0
    sealed: int = 0
    seconds: float = 0.0
    assembling: bool = False


def run_killed(args: list[str], cwd: Path, out: Path, kill: Kill, timeout: float = 120) -> bool:
    """Start ``args`` as a real process group, SIGKILL it at ``kill``; True when it was killed while running."""
    before = journal_records(out)
    had = len(finals(out))
    proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    start = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - start < timeout:
            if kill.records and journal_records(out) - before >= kill.records:
                break
            if kill.sealed and sealed_records(out) >= kill.sealed:
                break
            if kill.seconds and time.monotonic() - start >= kill.seconds:
                break
            if kill.assembling and len(finals(out)) > had:
                break
            time.sleep(0.002)
        running = proc.poll() is None
        if running:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if not running:
            err = proc.stderr.read().decode() if proc.stderr else ""
            assert proc.returncode == 0, f"the run failed before its kill: {err}"
        return running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def check_consistent(out: Path) -> None:
    """What a reader may see after any kill: complete files under final names, manifests only over complete data."""
    for p in finals(out):
        data = p.read_bytes()
        assert len(data) % fmt.BLOCK == 0 and data.endswith(fmt.TAR_END), f"{p} is under its final name but incomplete"
    for m in out.rglob(fmt.MANIFEST_NAME):
        man = fmt.parse_manifest(m.read_bytes(), str(m))
        for s in man.shards():
            assert (m.parent / s.file).stat().st_size == s.bytes, f"{m} lists {s.file}, which is not complete"


def write_npz(path: Path, n: int, shape: tuple[int, ...] = (1, 12, 12), classes: int = 7, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y=rng.integers(0, classes, n).astype(np.int64))
    return path
