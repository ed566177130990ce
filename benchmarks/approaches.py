"""The approaches compared, each able to write the case's samples and read them back.

A. the design note's in-memory approach: every sample in one pickle, loaded into RAM at
   construction; ``__getitem__`` normalizes one sample.
B. the note's disk approach: one pickle per sample, opened and unpickled in
   ``__getitem__``.
C. ours, map-style: :class:`loaders.ShardDataset` through train.py's data path (a random
   index sampler, a DataLoader with workers, the dataset entry's ``collate``).
D. ours, streaming: :class:`loaders.streaming.StreamingShardDataset` (batched in the
   dataset, ``DataLoader(batch_size=None)``), on the same shards as C.
   ``C-nocheck`` / ``D-nocheck``: the same with the per-sample checksum check off
   (``Options(verify_samples=False)``), so the check's cost is measured side by side.
   ``C-aug`` / ``D-aug``: the same with an on-the-fly flip + crop augmentation
   (:func:`bench_augment`), so its cost is measured side by side.
E. stock webdataset 1.0 reading the same shards: shard shuffle, a 1000-sample shuffle
   buffer of raw samples, msgpack decode and the same normalization per sample.
F. the peers (MosaicML Streaming, LitData): see :mod:`benchmarks.peers`.
G. ceilings: the best readers that could exist for the same output, over the same uint8
   arrays with no format at all (numpy memmaps of ``x.npy`` / ``y.npy``):
   ``G-batched`` gathers each batch with one fancy index (sorted indices), normalizes it
   into fresh float32 and widens targets into fresh int64 (no DataLoader);
   ``G-batched-dl`` is the same gather as a ``Dataset.__getitems__`` through the same
   DataLoader path as C (sampler, batch sampler, the uint8 transit and normalize on
   arrival of :mod:`loaders.batch`); ``G-bandwidth`` only writes each batch's output bytes
   (float32 inputs + int64 targets) with ``np.copyto`` into reused buffers: the memory
   bandwidth bound. ``G-raw`` reads C's shard files with no decoding (the raw-read
   baseline), and ``G-memmap`` is the naive per-sample ``Dataset`` loop over the memmap,
   through ``default_collate`` (kept for comparison; not a ceiling).

Every reader yields float32 inputs ``(p - 128) / 128`` and int64 targets, batch by batch.
Per-sample readers (A, B, E, F, G-memmap) normalize each sample with
:func:`loaders.transforms.normalize_np` (the same arithmetic as ours, bit-exact with the
reference chain) rather than the reference's slower ``/256`` + ``ai8x.normalize`` float
chain, so that the comparison measures storage and reading, not the arithmetic.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

from loaders.augment import Augmentation, HorizontalFlip, RandomCrop
from loaders.transforms import normalize_np
from shardwriter.sources.base import OutputSpec, Sample, Source

from .cases import SIG_ROW, Case

#: Samples per shard (or chunk) = ceil(n / SHARDS), the same for every format, so that two
#: DataLoader workers each get several shards to stream.
SHARDS = 8
#: Shuffle buffer (samples) of the streaming readers D and E.
SHUFFLE_BUFFER = 1000


def to_sample(x: np.ndarray, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """One uint8 input and its target -> (normalized float32 tensor, int64 tensor)."""
    xt = torch.from_numpy(normalize_np(x))
    if isinstance(y, np.ndarray) and y.ndim:
        return xt, torch.from_numpy(y.astype(np.int64))
    return xt, torch.tensor(int(y), dtype=torch.int64)


def source_arrays(src: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The case's source arrays (memmaps of ``x.npy``, ``y.npy``)."""
    return np.load(src["x"], mmap_mode="r"), np.load(src["y"], mmap_mode="r")


def per_shard(n: int) -> int:
    return max(1, -(-n // SHARDS))


def map_loader(ds: Dataset, workers: int, batch: int, epoch: int, collate_fn: Any = None) -> DataLoader:
    """train.py's data path: a random permutation of the indices, fresh per epoch."""
    gen = torch.Generator().manual_seed(epoch)
    sampler = SubsetRandomSampler(list(range(len(ds))), generator=gen)  # type: ignore[arg-type]
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_fn)


class Approach:
    """Base: one way of storing and reading the samples."""

    key = ""
    label = ""
    #: "map" (map-style through train.py's path), "iter" (streaming) or "raw" (bytes only).
    kind = "map"
    #: Key of the approach whose files this one reads (D, E and G-raw read C's shards).
    data_of: str | None = None

    def unavailable(self) -> str | None:
        """Why this approach cannot run here (a missing package), or None. Imports nothing heavy."""
        return None

    def imports(self) -> None:
        """Import what the approach needs, before anything is timed or the RSS baseline is taken."""

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        raise NotImplementedError

    def open(self, case: Case, out: Path, batch: int) -> Any:
        """The dataset object, as a training run builds it ("subsequent run" creation)."""
        raise NotImplementedError

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any] | None:
        """Batches ``(x, y)`` of one epoch, or None where the configuration does not apply."""
        raise NotImplementedError

    def files(self, out: Path) -> list[Path]:
        """The files this approach reads (evicted for cold-cache runs; counted as disk use)."""
        return sorted(p for p in out.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- A, B


class PickleInMemory(Dataset):
    """The note's in-memory approach: one pickle holding every ``(x, y)``, loaded at construction."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            self.data = pickle.load(f)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[i]
        return to_sample(x, y)


class InMemoryPickle(Approach):
    key, label = "A", "A. note: in-memory (one pickle, in RAM)"

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        x, y = source_arrays(src)
        data = [(np.array(x[i]), np.array(y[i]) if case.y_kind == "mask" else int(y[i])) for i in range(case.n)]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "dataset.pkl", "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return PickleInMemory(out / "dataset.pkl")

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        return map_loader(ds, workers, batch, epoch)


class PicklePerSample(Dataset):
    """The note's disk approach: ``__getitem__`` opens and unpickles sample ``i``'s own file."""

    def __init__(self, folder: Path, n: int) -> None:
        self.paths = [str(folder / f"{i:09d}.pkl") for i in range(n)]
        missing = [p for p in (self.paths[0], self.paths[-1]) if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(missing[0])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with open(self.paths[i], "rb") as f:
            x, y = pickle.load(f)
        return to_sample(x, y)


class DiskPickles(Approach):
    key, label = "B", "B. note: disk (one pickle per sample)"

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        x, y = source_arrays(src)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(case.n):
            yi = np.array(y[i]) if case.y_kind == "mask" else int(y[i])
            with open(out / f"{i:09d}.pkl", "wb") as f:
                pickle.dump((np.array(x[i]), yi), f, protocol=pickle.HIGHEST_PROTOCOL)

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return PicklePerSample(out, case.n)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        return map_loader(ds, workers, batch, epoch)


# --------------------------------------------------------------------------- C, D (ours)


class ArraySource(Source):
    """A writer :class:`~shardwriter.sources.base.Source` over the case's source arrays."""

    kind = "bench-arrays"

    def __init__(self, case: Case, src: dict[str, str]) -> None:
        self.case, self.src = case, src
        self.spec = OutputSpec(
            name=f"bench-{case.name}",
            input_shape=case.x_shape,
            target_kind=case.y_kind,
            classes=list(range(case.classes)),
            target_shape=case.y_shape if case.y_kind == "mask" else None,
        )
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def outputs(self) -> list[OutputSpec]:
        return [self.spec]

    def plan(self) -> dict[str, list[Any]]:
        return {"train": list(range(self.case.n))}

    def load(self, item: Any) -> list[Sample]:
        if self._arrays is None:
            self._arrays = source_arrays(self.src)
        x, y = self._arrays
        yi = np.array(y[item]) if self.case.y_kind == "mask" else int(y[item])
        return [Sample(np.array(x[item]), yi, str(item))]

    def fingerprint_parts(self) -> dict[str, Any]:
        return {"case": self.case.to_json(), "src": self.src}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}


class OursMapStyle(Approach):
    key, label = "C", "C. ours: map-style (train.py path)"

    def imports(self) -> None:
        import loaders.mapstyle  # noqa: F401
        import shardwriter.pack  # noqa: F401

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        from shardwriter import pack

        pack(ArraySource(case, src), out, max_count=per_shard(case.n), quiet=True)

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders import ShardDataset

        return ShardDataset(out, "train")

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        from loaders.mapstyle import collate  # what the ai8x dataset entry hands train.py

        return map_loader(ds, workers, batch, epoch, collate)

    def files(self, out: Path) -> list[Path]:
        return sorted(p for p in out.iterdir() if p.suffix in (".tar", ".idx", ".json"))


class OursMapStyleUnchecked(OursMapStyle):
    """C with the per-sample checksum check turned off: the other half of the check's cost, side by side."""

    key, label, data_of = "C-nocheck", "C. ours: map-style, per-sample checks off", "C"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders import ShardDataset
        from shardwriter.options import Options

        return ShardDataset(out, "train", options=Options(verify_samples=False))


class OursStreaming(Approach):
    key, label, kind, data_of = "D", "D. ours: streaming", "iter", "C"

    def unavailable(self) -> str | None:
        try:
            from loaders.streaming import StreamingShardDataset  # noqa: F401
        except Exception as exc:  # being written: any import failure means "not yet"
            return f"loaders.streaming.StreamingShardDataset is not importable yet ({type(exc).__name__}: {exc})"
        return None

    def imports(self) -> None:
        import loaders.streaming  # noqa: F401

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders.streaming import StreamingShardDataset

        return StreamingShardDataset(out, "train", shuffle=True, seed=0, shuffle_buffer=SHUFFLE_BUFFER, batch_size=batch)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        ds.set_epoch(epoch)
        return DataLoader(ds, batch_size=None, num_workers=workers)

    def files(self, out: Path) -> list[Path]:
        return OursMapStyle().files(out)


class OursStreamingUnchecked(OursStreaming):
    """D with the per-sample checksum check turned off."""

    key, label, data_of = "D-nocheck", "D. ours: streaming, per-sample checks off", "C"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders.streaming import StreamingShardDataset
        from shardwriter.options import Options

        return StreamingShardDataset(out, "train", shuffle=True, seed=0, shuffle_buffer=SHUFFLE_BUFFER, batch_size=batch,
                                     options=Options(verify_samples=False))


def _test_servers() -> Any:
    """The repository's loopback servers (``tests/servers.py``), or None outside a checkout."""
    import sys

    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "servers.py").exists():
        return None
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import servers

    return servers


class OursStreamingHttp(OursStreaming):
    """D over HTTP: the same shards served by nginx on 127.0.0.1, read through the URL."""

    key, label, data_of = "D-http", "D. ours: streaming over HTTP (nginx on 127.0.0.1)", "C"

    def unavailable(self) -> str | None:
        srv = _test_servers()
        if srv is None:
            return "needs the repository's tests/servers.py (run ai8x-shards bench from a checkout)"
        if not srv.nginx_available():
            return "nginx is not installed (optional: apt-get install nginx-light)"
        return super().unavailable()

    def open(self, case: Case, out: Path, batch: int) -> Any:
        import atexit

        from loaders.streaming import StreamingShardDataset

        os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
        nginx = _test_servers().Nginx(out.parent, out.parent / f".nginx-{os.getpid()}").start()
        atexit.register(nginx.stop)
        return StreamingShardDataset(f"{nginx.url}/{out.name}", "train", shuffle=True, seed=0, shuffle_buffer=SHUFFLE_BUFFER,
                                     batch_size=batch)


class _CheckBytes(Augmentation):
    """Bench only: save (``restore=False``) and put back (``True``) the bytes the check identifies a sample by."""

    def __init__(self, restore: bool) -> None:
        self.restore = restore

    def apply(self, pixels: Any, rand: Any) -> None:
        x = pixels.packed
        head = (slice(None),) + (0,) * (x.ndim - 2) + (slice(0, 3),)  # the first three bytes of each sample
        if not self.restore:
            pixels.saved = (x[head].copy(), None if pixels.masks is None else pixels.masks[:, SIG_ROW].copy())
            return
        tag, row = pixels.saved
        x[head] = tag
        if row is not None:
            pixels.masks[:, SIG_ROW] = row


def bench_augment() -> list[Any]:
    """The augmentation C-aug and D-aug measure: ``HorizontalFlip(0.5)`` and ``RandomCrop(padding=4)``
    (CIFAR's and FashionMNIST's training transform in ai8x-training), on image and mask.

    Around it, :class:`_CheckBytes` puts back the bytes :class:`benchmarks.measure.Checker`
    identifies a sample by (the input's first three, the mask's signature row), so every
    batch is still checked; that moves a few hundred bytes per sample.
    """
    return [_CheckBytes(False), HorizontalFlip(0.5), RandomCrop(4), _CheckBytes(True)]


class OursMapStyleAugmented(OursMapStyle):
    """C with a flip + crop augmentation of every training sample (:func:`bench_augment`)."""

    key, label, data_of = "C-aug", "C. ours: map-style, flip+crop augmentation", "C"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders import ShardDataset

        return ShardDataset(out, "train", augment=bench_augment())


class OursStreamingAugmented(OursStreaming):
    """D with a flip + crop augmentation of every sample (:func:`bench_augment`)."""

    key, label, data_of = "D-aug", "D. ours: streaming, flip+crop augmentation", "C"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        from loaders.streaming import StreamingShardDataset

        return StreamingShardDataset(out, "train", shuffle=True, seed=0, shuffle_buffer=SHUFFLE_BUFFER, batch_size=batch,
                                     augment=bench_augment())


# --------------------------------------------------------------------------- E (webdataset)


def _shards(out: Path) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [str(out / s["file"]) for s in manifest["splits"]["train"]["shards"]]


class _DecodeMsgpack:
    """Picklable ``map`` function: a webdataset sample dict -> (x, y) tensors."""

    def __init__(self, case: Case) -> None:
        self.x_shape, self.y_shape, self.mask = case.x_shape, case.y_shape, case.y_kind == "mask"

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        import msgpack

        rec = msgpack.unpackb(sample["msgpack"], raw=False)
        x = np.frombuffer(rec["x"], np.uint8).reshape(self.x_shape)
        y = np.frombuffer(rec["y"], np.uint8).reshape(self.y_shape) if self.mask else rec["y"]
        return to_sample(x, y)


class StockWebDataset(Approach):
    key, label, kind, data_of = "E", "E. stock webdataset 1.0 (our shards)", "iter", "C"

    def unavailable(self) -> str | None:
        try:
            import webdataset  # noqa: F401
        except ImportError as exc:
            return f"webdataset is not installed ({exc})"
        return None

    def imports(self) -> None:
        import msgpack  # noqa: F401
        import webdataset  # noqa: F401

    def open(self, case: Case, out: Path, batch: int) -> Any:
        import webdataset as wds

        urls = _shards(out)
        return (
            wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False)
            .shuffle(SHUFFLE_BUFFER)
            .map(_DecodeMsgpack(case))
        )

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        return DataLoader(ds, batch_size=batch, num_workers=workers)

    def files(self, out: Path) -> list[Path]:
        return [Path(p) for p in _shards(out)]


# --------------------------------------------------------------------------- G (ceilings)


class RawRead(Approach):
    """The raw-read baseline: C's shard files read start to end into a buffer, no decoding."""

    key, label, kind, data_of = "G-raw", "G. ceiling: raw read of our shards (no decode)", "raw", "C"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return [Path(p) for p in _shards(out)]

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterator[Any] | None:
        if workers:
            return None
        return self._read(ds, case.n)

    @staticmethod
    def _read(paths: list[Path], n: int) -> Iterator[Any]:
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        total = 0
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while True:
                    got = f.readinto(view)
                    if not got:
                        break
                    total += got
        yield ("raw", n, total)

    def files(self, out: Path) -> list[Path]:
        return [Path(p) for p in _shards(out)]


class MemmapDataset(Dataset):
    """No format at all: sample ``i`` is a slice of a numpy memmap, normalized."""

    def __init__(self, out: Path) -> None:
        self.x = np.load(out / "x.npy", mmap_mode="r")
        self.y = np.load(out / "y.npy", mmap_mode="r")
        self.mask = self.y.ndim > 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_sample(self.x[i], np.asarray(self.y[i]) if self.mask else int(self.y[i]))


class MemmapCeiling(Approach):
    key, label = "G-memmap", "G-memmap: naive per-sample loop over a numpy memmap (not a ceiling)"

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src["x"], out / "x.npy")
        shutil.copyfile(src["y"], out / "y.npy")

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return MemmapDataset(out)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        return map_loader(ds, workers, batch, epoch)


class BatchedMemmap(MemmapDataset):
    """The batched ceiling: a batch is one gather from a memmap, then one normalize / widen into fresh arrays."""

    def raw(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(np.asarray(indices, dtype=np.int64))
        return self.x[idx], np.asarray(self.y[idx])

    def __getitems__(self, indices: Any) -> Any:
        from loaders.batch import Batch

        x, y = self.raw(indices)
        return Batch(torch.from_numpy(x), torch.from_numpy(y if self.mask else y.astype(np.int64)), False, self.mask)


class BatchedCeiling(Approach):
    key, label = "G-batched", "G. ceiling: batched memmap, fresh arrays, no DataLoader"

    def create(self, case: Case, src: dict[str, str], out: Path) -> None:
        MemmapCeiling().create(case, src, out)

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return BatchedMemmap(out)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any] | None:
        if workers:
            return None
        return self._batches(ds, batch, epoch)

    @staticmethod
    def _batches(ds: BatchedMemmap, batch: int, epoch: int) -> Iterator[Any]:
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch)).numpy()
        for a in range(0, len(perm), batch):
            x, y = ds.raw(perm[a : a + batch])
            out = np.subtract(x, np.float32(128.0), dtype=np.float32)  # fresh arrays, as the ceiling is defined
            np.multiply(out, np.float32(1.0 / 128.0), out=out)
            yield torch.from_numpy(out), torch.from_numpy(y.astype(np.int64))


class BatchedDataLoaderCeiling(Approach):
    key, label, data_of = "G-batched-dl", "G. ceiling: batched memmap through C's DataLoader path", "G-batched"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        return BatchedMemmap(out)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterable[Any]:
        from loaders.batch import collate

        return map_loader(ds, workers, batch, epoch, collate)

    def files(self, out: Path) -> list[Path]:
        return [out / "x.npy", out / "y.npy"]


class BandwidthCeiling(Approach):
    """Memory bandwidth: writing each batch's output bytes (float32 inputs, int64 targets), nothing else."""

    key, label, kind, data_of = "G-bandwidth", "G. ceiling: memory bandwidth (copy of the output bytes)", "raw", "G-batched"

    def open(self, case: Case, out: Path, batch: int) -> Any:
        x = np.load(out / "x.npy", mmap_mode="r")
        y = np.load(out / "y.npy", mmap_mode="r")
        src_x = normalize_np(np.asarray(x[:batch]))
        src_y = np.asarray(y[:batch]).astype(np.int64)
        return src_x, src_y, len(x)

    def loader(self, ds: Any, case: Case, workers: int, batch: int, epoch: int) -> Iterator[Any] | None:
        if workers:
            return None
        return self._copy(*ds)

    @staticmethod
    def _copy(src_x: np.ndarray, src_y: np.ndarray, n: int) -> Iterator[Any]:
        dst_x, dst_y = np.empty_like(src_x), np.empty_like(src_y)
        np.copyto(dst_x, src_x)  # first touch outside the timing of the steady state: reused buffers
        np.copyto(dst_y, src_y)
        b = len(src_x)
        for a in range(0, n, b):
            k = min(b, n - a)
            np.copyto(dst_x[:k], src_x[:k])
            np.copyto(dst_y[:k], src_y[:k])
        yield ("raw", n, n * (src_x[0].nbytes + src_y[0].nbytes))

    def files(self, out: Path) -> list[Path]:
        return [out / "x.npy", out / "y.npy"]


def registry() -> dict[str, Approach]:
    """Every approach by key, in report order (the peers from :mod:`benchmarks.peers`)."""
    from .peers import LitDataPeer, MosaicStreamingPeer

    found: list[Approach] = [
        InMemoryPickle(),
        DiskPickles(),
        OursMapStyle(),
        OursMapStyleUnchecked(),
        OursStreaming(),
        OursStreamingUnchecked(),
        OursMapStyleAugmented(),
        OursStreamingAugmented(),
        OursStreamingHttp(),
        StockWebDataset(),
        MosaicStreamingPeer(),
        LitDataPeer(),
        RawRead(),
        BatchedCeiling(),
        BatchedDataLoaderCeiling(),
        BandwidthCeiling(),
        MemmapCeiling(),
    ]
    return {a.key: a for a in found}
