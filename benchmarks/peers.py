"""F: the peers, MosaicML Streaming (MDS) and LitData, writing and reading the same samples.

Both are optional benchmark extras (``pip install -e '.[bench]'``); an approach whose
package is missing is skipped with the reason. Both write uncompressed shards (chunks) of
``ceil(n / 8)`` samples, like our shards, and both read with their own shuffle on, through
a DataLoader at the same batch size, normalizing each sample with the same arithmetic.

mosaicml-streaming 0.13 imports torchvision at import time (``streaming.vision``), and
PyPI's torchvision fails to import beside the CPU torch wheel this project pins
("operator torchvision::nms does not exist"). :func:`import_streaming` therefore puts a
stub ``torchvision`` in ``sys.modules`` before importing ``streaming``, in the benchmark's
measuring process only (nothing of ours imports torchvision); the stub is never called,
since the benchmark uses only ``streaming.base``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import types
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from .approaches import Approach, per_shard, source_arrays, to_sample
from .cases import Case


def _missing(dist: str, module: str) -> str | None:
    """Why distribution ``dist`` (module ``module``) cannot be used, or None (cheap: imports nothing)."""
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} is not installed (an optional benchmark extra: pip install -e '.[bench]')"
    if importlib.util.find_spec(module) is None:
        return f"{dist} {version} is installed but module {module!r} is not importable"
    return None


def _stub_torchvision() -> None:
    """Install a do-nothing ``torchvision`` (with the names ``streaming.vision`` imports)."""
    names = ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional")
    mods = {n: types.ModuleType(n) for n in names}

    class VisionDataset:  # pragma: no cover - never instantiated
        pass

    def to_tensor(*_: Any, **__: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("torchvision is stubbed in the benchmark")

    mods["torchvision.datasets"].VisionDataset = VisionDataset  # type: ignore[attr-defined]
    mods["torchvision.datasets"].CIFAR10 = VisionDataset  # type: ignore[attr-defined]
    mods["torchvision.transforms.functional"].to_tensor = to_tensor  # type: ignore[attr-defined]
    mods["torchvision"].datasets = mods["torchvision.datasets"]  # type: ignore[attr-defined]
    mods["torchvision"].transforms = mods["torchvision.transforms"]  # type: ignore[attr-defined]
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    mods["torchvision"].__version__ = "0.0+benchmark-stub"  # type: ignore[attr-defined]
    for name, mod in mods.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod


def import_streaming() -> Any:
    """``import streaming`` (mosaicml-streaming) with ``torchvision`` stubbed (unless already imported)."""
    if "streaming" in sys.modules:
        return sys.modules["streaming"]
    if importlib.util.find_spec("streaming") is None:
        raise ImportError("mosaicml-streaming is not installed (pip install -e '.[bench]')")
    if "torchvision" not in sys.modules:
        _stub_torchvision()  # never import the real one: beside the CPU torch wheel it raises
    import streaming

    return streaming


# --------------------------------------------------------------------------- MosaicML Streaming


def _mds_dataset_class() -> type:
    streaming = import_streaming()

    class MDSBench(streaming.StreamingDataset):
        """MDS samples ``{"x": bytes, "y": bytes | int}`` -> normalized tensors."""

        def __init__(self, case: Case, **kw: Any) -> None:
            super().__init__(**kw)
            self.x_shape, self.y_shape, self.mask = case.x_shape, case.y_shape, case.y_kind == "mask"

        def __iter__(self) -> Any:
            # filelock >= 4 refuses a lock inherited across fork; the dataset creates its
            # barrier's FileLock lazily, so after an epoch in the main process (0 workers) the
            # forked workers would inherit it. Give each process its own lock on the same file.
            barrier = getattr(self, "_shared_barrier", None)
            lock = getattr(barrier, "lock", None)
            if lock is not None and getattr(lock, "_creator_pid", os.getpid()) != os.getpid():
                from filelock import FileLock

                barrier.lock = FileLock(barrier.filelock_path)
            return super().__iter__()

        def __getitem__(self, i: int) -> Any:
            d = super().__getitem__(i)
            x = np.frombuffer(d["x"], np.uint8).reshape(self.x_shape)
            y = np.frombuffer(d["y"], np.uint8).reshape(self.y_shape) if self.mask else d["y"]
            return to_sample(x, y)

    return MDSBench


class MosaicStreamingPeer(Approach):
    key, label, kind = "F-mds", "F. MosaicML Streaming 0.13 (MDS)", "iter"

    def unavailable(self) -> str | None:
        return _missing("mosaicml-streaming", "streaming")

    def imports(self) -> None:
        import_streaming()
        import streaming.base.util  # noqa: F401

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        streaming = import_streaming()
        x, y = source_arrays(src)
        columns = {"x": "bytes", "y": "bytes" if case.y_kind == "mask" else "int"}
        limit = per_shard(case.n) * (case.sample_bytes + 64) + 1024
        with streaming.MDSWriter(out=str(out), columns=columns, compression=None, hashes=[], size_limit=limit) as w:
            for i in range(case.n):
                yi = np.asarray(y[i]).tobytes() if case.y_kind == "mask" else int(y[i])
                w.write({"x": np.asarray(x[i]).tobytes(), "y": yi})

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return _MDSHolder(case, out, batch)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Any:
        return DataLoader(ds.for_workers(workers), batch_size=batch, num_workers=workers)


class _MDSHolder:
    """An MDS dataset, rebuilt when the number of DataLoader workers changes.

    One ``StreamingDataset`` object iterated first in the main process and then by forked
    workers hangs in its shared-memory barrier (the barrier's counters are per worker
    layout), so each worker count gets its own object, as a training run would have.
    """

    def __init__(self, case: Case, out: Path, batch: int) -> None:
        self.case, self.out, self.batch = case, out, batch
        self.workers: int | None = None
        self.ds = self._make()

    def _make(self) -> Any:
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        return _mds_dataset_class()(self.case, local=str(self.out), shuffle=True, shuffle_seed=0, batch_size=self.batch)

    def for_workers(self, workers: int) -> Any:
        if self.workers is not None and workers != self.workers:
            import gc

            del self.ds
            gc.collect()
            self.ds = self._make()
        self.workers = workers
        return self.ds


# --------------------------------------------------------------------------- LitData


def _lit_item(xpath: str, ypath: str, mask: bool, i: int) -> dict[str, Any]:
    x, y = np.load(xpath, mmap_mode="r"), np.load(ypath, mmap_mode="r")
    return {"x": np.array(x[i]), "y": np.array(y[i]) if mask else int(y[i])}


class _LitTransform:
    """Picklable LitData ``transform``: a stored item -> normalized tensors."""

    def __call__(self, item: dict[str, Any]) -> Any:
        return to_sample(item["x"], item["y"])


class LitDataPeer(Approach):
    key, label, kind = "F-litdata", "F. LitData 0.2 (optimize + StreamingDataset)", "iter"

    def unavailable(self) -> str | None:
        return _missing("litdata", "litdata")

    def imports(self) -> None:
        import litdata  # noqa: F401
        import litdata.processing.functions  # noqa: F401

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        from litdata import optimize

        fn = partial(_lit_item, src["x"], src["y"], case.y_kind == "mask")
        optimize(
            fn=fn,
            inputs=list(range(case.n)),
            output_dir=str(out),
            chunk_size=per_shard(case.n),
            num_workers=1,
            mode="overwrite",
            reorder_files=False,
            verbose=False,
        )

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from litdata import StreamingDataset

        return StreamingDataset(str(out), shuffle=True, seed=0, transform=_LitTransform())

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Any:
        from litdata import StreamingDataLoader

        return StreamingDataLoader(ds, batch_size=batch, num_workers=workers)
