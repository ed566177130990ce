"""``module:function`` sources for the writer's process tests (deterministic; slow enough to be killed).

``PACK_TEST_SEED`` changes every sample (a "module whose samples changed"); ``PACK_TEST_DELAY``
sets the seconds each sample takes.
"""

from __future__ import annotations

import os
import time

import numpy as np


class Slow:
    classes = list(range(5))

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed + int(os.environ.get("PACK_TEST_SEED", "0")) * 1000
        self.delay = float(os.environ.get("PACK_TEST_DELAY", "0.002"))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.delay:
            time.sleep(self.delay)
        rng = np.random.default_rng(self.seed * 100_003 + i)
        return rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), int(rng.integers(0, 5))


def datasets():
    return Slow(240, 1), Slow(60, 2)


def small():
    return Slow(40, 3), Slow(10, 4)


not_callable = [1, 2, 3]
