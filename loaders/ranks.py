"""Which rank this process is, and how many there are: explicit, torch.distributed, or the environment.

Kept apart from the dataset so that the rule is one function: explicit arguments win;
else an initialized ``torch.distributed`` process group; else the ``RANK`` and
``WORLD_SIZE`` environment variables (as ``torchrun`` sets them); else a single rank.
DataLoader workers have no process group, so a dataset resolves its rank in the main
process and carries the answer to its workers (see
:meth:`loaders.streaming.StreamingShardDataset.__getstate__`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch.distributed as dist

from shardwriter.errors import SettingsError

__all__ = ["check_explicit", "rank_and_world_size"]


def check_explicit(rank: int | None, world_size: int | None) -> None:
    """Refuse half-given or out-of-range explicit ranks (at construction)."""
    if (rank is None) != (world_size is None):
        raise SettingsError("give both rank and world_size, or neither")
    if world_size is not None and rank is not None:
        for what, v in (("rank", rank), ("world_size", world_size)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise SettingsError(f"{what} must be an integer, not {v!r}")
        if not 0 <= rank < world_size:
            raise SettingsError(f"rank {rank} is not in [0, {world_size})")


def rank_and_world_size(rank: int | None = None, world_size: int | None = None,
                        environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the explicit pair, else torch.distributed, else ``RANK``/``WORLD_SIZE``, else ``(0, 1)``."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        try:
            r, w = int(env["RANK"]), int(env["WORLD_SIZE"])
        except ValueError:
            raise SettingsError(f"environment RANK={env['RANK']!r} / WORLD_SIZE={env['WORLD_SIZE']!r} are not integers") from None
        if not 0 <= r < w:
            raise SettingsError(f"environment RANK={r} is not in [0, WORLD_SIZE={w})")
        return r, w
    return 0, 1
