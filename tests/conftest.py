"""Suite-wide checks.

No fork of a multi-threaded process: a child forked while another thread holds a lock
(a queue's feeder, a server, a read-ahead) can deadlock, and Python 3.12+ warns about it
(``DeprecationWarning: This process ... is multi-threaded, use of fork() may lead to
deadlocks``) from ``multiprocessing`` rather than from the code that asked for the fork.
This guard sees every ``os.fork()`` (DataLoader workers, the pack pool) on every Python
version and fails the test during which a process running another *Python* thread forked,
naming the threads, so a regression in our code (a read-ahead thread, a progress bar's
monitor, a pool started beside a thread) shows up on CI's Python 3.11 too. Native thread
pools that are not ours (torch's intra-op pool, OpenBLAS's) come and go with the work
the tests do and are left out: counting them made the guard fail at random (a pool
thread was alive at one fork and gone by the next), and what a DataLoader does next to
them is torch's documented behaviour, not our code's.
"""

from __future__ import annotations

import os
import threading

import pytest

_forks: list[str] = []


def _after_fork_in_parent() -> None:
    # A multiprocessing queue's feeder belongs to a DataLoader (torch's own threads beside the forks it
    # makes, e.g. a persistent-worker loader's while another loader starts its workers): not ours.
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.name != "QueueFeederThread"]
    if others:
        names = sorted(t.name for t in others)
        _forks.append(f"fork() with {len(others) + 1} threads running ({', '.join(names)})")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_after_fork_in_parent)


@pytest.fixture(autouse=True)
def _no_fork_of_a_threaded_process():
    del _forks[:]
    yield
    found, _forks[:] = list(_forks), []
    if found:
        pytest.fail("forked a multi-threaded process: " + "; ".join(sorted(set(found))), pytrace=False)
