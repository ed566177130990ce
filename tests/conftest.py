"""Suite-wide checks.

No fork of a multi-threaded process: a child forked while another thread holds a lock
(a queue's feeder, a server, a read-ahead) can deadlock, and Python 3.12+ warns about it
(``DeprecationWarning: This process ... is multi-threaded, use of fork() may lead to
deadlocks``) from ``multiprocessing`` rather than from the code that asked for the fork.
This guard sees every ``os.fork()`` (DataLoader workers, the pack pool) on every Python
version and fails the test during which a process with more than one thread forked,
naming the threads, so a regression shows up on CI's Python 3.11 too. Threads are
counted in the parent just after the fork, as Python 3.12 counts them: thread pools that
stop themselves for a fork (OpenBLAS does, in a ``pthread_atfork`` handler) do not count.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

_forks: list[str] = []


def os_threads() -> int:
    """Threads of this process, as Python 3.12's fork warning counts them (native ones included)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return threading.active_count()


def _native_names() -> list[str]:
    try:
        tasks = sorted(os.listdir("/proc/self/task"), key=int)[1:]
        return [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
    except OSError:
        return []


def _all_leaving(others: list[threading.Thread]) -> bool:
    """Whether every thread but this one was on its way out at the fork.

    A DataLoader that finished an epoch closes its queues but does not wait for their
    feeder threads, and a Python thread that returned is gone from
    ``threading.enumerate()`` a moment before the OS thread ends: the next fork can catch
    either. Such a thread runs no more Python code and holds no lock the child could need.
    A feeder of a live queue (a DataLoader iterator left alive), any other Python thread,
    or a native pool that stays (torch's OpenMP threads) is reported.
    """
    if any(t.name != "QueueFeederThread" for t in others):
        return False
    deadline = time.monotonic() + 1.0
    for t in others:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in others):
        return False
    while os_threads() > 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    return os_threads() == 1


def _after_fork_in_parent() -> None:
    n = os_threads()
    if n > 1:
        others = [t for t in threading.enumerate() if t is not threading.main_thread()]
        if _all_leaving(others):
            return
        names = sorted(t.name for t in others)
        native = n - 1 - len(names)
        if native > 0:
            names.append(f"{native} native: {', '.join(_native_names())}")
        _forks.append(f"fork() with {n} threads running ({', '.join(names)})")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_after_fork_in_parent)


@pytest.fixture(autouse=True)
def _no_fork_of_a_threaded_process():
    del _forks[:]
    yield
    found, _forks[:] = list(_forks), []
    if found:
        pytest.fail("forked a multi-threaded process: " + "; ".join(sorted(set(found))), pytrace=False)
