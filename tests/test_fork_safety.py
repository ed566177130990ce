"""No fork of a multi-threaded process: the pack pool picks a safe start method; the suite's guard works."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import make_npz, tree_bytes

from shardwriter import pack
from shardwriter.pack import pool_context
from shardwriter.sources import NpzSource

TESTS = Path(__file__).resolve().parent
FORK_DEFAULT = mp.get_context().get_start_method() == "fork"


@pytest.mark.skipif(not FORK_DEFAULT, reason="the platform's default start method is not fork")
def test_pack_forks_when_alone_and_does_not_fork_beside_another_thread(tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "d.npz", n=120, shape=(3, 8, 8))
    # Alone: a fresh interpreter (this one may still hold a DataLoader queue feeder an earlier test left to the
    # garbage collector, and then rightly does not fork), one thread: fork, the fast way.
    alone = textwrap.dedent(f"""
        import threading
        from shardwriter import pack
        from shardwriter.pack import pool_context
        from shardwriter.sources import NpzSource
        assert threading.active_count() == 1
        assert pool_context().get_start_method() == "fork", pool_context().get_start_method()
        pack(NpzSource({str(npz)!r}), {str(tmp_path / "forked")!r}, workers=2, max_count=30, quiet=True)
    """)
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True, name="someone-elses-thread")
    other.start()
    try:
        assert pool_context().get_start_method() in ("forkserver", "spawn")
        pack(NpzSource(npz), tmp_path / "beside", workers=2, max_count=30, quiet=True)  # the guard fails a fork here
    finally:
        stop.set()
        other.join()
    pack(NpzSource(npz), tmp_path / "serial", workers=1, max_count=30, quiet=True)
    assert tree_bytes(tmp_path / "forked") == tree_bytes(tmp_path / "serial") == tree_bytes(tmp_path / "beside")


def test_the_guard_fails_a_test_that_forks_a_threaded_process(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_it.py").write_text(textwrap.dedent("""
        import os, threading

        def fork_once():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

        def test_alone():
            fork_once()

        def test_beside_a_thread():
            stop = threading.Event()
            t = threading.Thread(target=stop.wait, name="busy-thread")
            t.start()
            try:
                fork_once()
            finally:
                stop.set()
                t.join()
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env={**os.environ, "COLUMNS": "400"})
    last = out.stdout.strip().splitlines()[-1]  # Python 3.12+ adds "1 warning": its own fork warning
    assert "2 passed" in last and "1 error" in last, out.stdout  # the test itself passes; its teardown fails
    assert "test_beside_a_thread - Failed: forked a multi-threaded process: fork() with 2 threads running (busy-thread)" in out.stdout
