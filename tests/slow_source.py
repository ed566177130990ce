"""A dataset factory for the crash/resume test: deterministic samples, a little slow each."""

from __future__ import annotations

import time

import numpy as np


class Slow:
    classes = list(range(5))

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        time.sleep(0.004)
        rng = np.random.default_rng(self.seed * 100_003 + i)
        return rng.integers(0, 256, (3, 16, 16), dtype=np.uint8), int(rng.integers(0, 5))


def datasets():
    return Slow(600, 1), Slow(150, 2)
