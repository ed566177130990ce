"""Run ``ai8x-shards`` in this process and kill it (``os._exit``) just before its K-th file-system change.

``python -c "import crashpoint; crashpoint.main(K, [args...])"`` (tests/ on ``PYTHONPATH``): every
``os.replace``/``rename``/``unlink``/``remove``/``truncate``/``ftruncate`` the command makes is counted, and the
K-th one is never made: the process ends at once with :data:`KILLED`, as a SIGKILL would leave it (no cleanup, no
``finally``). Run it for K = 1, 2, ... until it exits normally, and every point where a crash can land between
two changes has been tried once. Exits 0 only when the command finished with fewer than K changes.
``crashpoint.again(args)`` runs the command twice, unarmed, with :data:`AGAIN` printed between (one process start
for "finish it, then check there is nothing left to do").
"""

from __future__ import annotations

import os
import pathlib
import sys

KILLED = 86
AGAIN = "--- crashpoint: again ---"
OPS = ("replace", "rename", "unlink", "remove", "truncate", "ftruncate")


def arm(k: int) -> None:
    count = [0]
    for name in OPS:
        real = getattr(os, name)

        def counted(*args: object, _real: object = real, **kw: object) -> object:
            count[0] += 1
            if count[0] >= k:
                os._exit(KILLED)
            return _real(*args, **kw)  # type: ignore[operator]

        setattr(os, name, counted)
        accessor = getattr(pathlib, "_NormalAccessor", None)  # Python 3.10: Path methods bound os functions early
        if accessor is not None and hasattr(accessor, name):
            setattr(accessor, name, staticmethod(counted))


def main(k: int, argv: list[str]) -> None:
    from ai8x_shards.cli import main as cli

    arm(k)
    code = cli(argv)
    sys.exit(code if code else 0)


def again(argv: list[str]) -> None:
    from ai8x_shards.cli import main as cli

    first = cli(list(argv))
    print(AGAIN, flush=True)
    second = cli(list(argv))
    sys.exit(first or second or 0)
