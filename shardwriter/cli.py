"""The ``ai8x-shards`` command: one subcommand per job, each a thin shell over the API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import PackError
from .format import FormatError
from .pack import pack


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return (int(w), int(h or w))


def _classes(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    if text.isdigit():
        return list(range(int(text)))
    return [c.strip() for c in text.split(",")]


def _add_pack(sub: Any) -> None:
    p = sub.add_parser("pack", help="pack a source into a shard dataset folder")
    p.add_argument("kind", choices=["npz", "imagefolder", "dataset"], help="source kind")
    p.add_argument("src", help="source: .npz file or folder, image folder, or module:function")
    p.add_argument("out", help="output dataset folder")
    p.add_argument("--name", default="", help="dataset name recorded in the manifest")
    p.add_argument("--workers", type=int, default=1, help="worker processes (output is identical for any N)")
    p.add_argument("--max-count", type=int, default=10_000, help="samples per shard at most")
    p.add_argument("--max-bytes", type=int, default=256 << 20, help="bytes per shard at most")
    p.add_argument("--skip-bad", action="store_true", help="skip bad inputs, recording them in the manifest")
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--fold", type=int, default=1, help="fold ratio r (ai8x channel order)")
    p.add_argument("--classes", help="class names (a,b,c) or a count")
    p.add_argument("--test-fraction", type=float, default=0.1, help="test share when SRC is not pre-split")
    p.add_argument("--val-fraction", type=float, default=0.0, help="val share when SRC is not pre-split")
    p.add_argument("--size", type=_size, help="imagefolder: resize to WxH (or N for NxN)")
    p.add_argument("--mode", default="RGB", choices=["RGB", "L"], help="imagefolder: colour mode")
    p.add_argument("--layout", default="chw", choices=["chw", "hwc", "hw"], help="npz: layout of x")
    p.add_argument("--input-range", default="auto", choices=["auto", "unit", "8bit"], help="float inputs: ai8x range")
    p.add_argument("--data-dir", default=".", help="dataset: data_dir handed to an ai8x loader function")


def _source(a: argparse.Namespace) -> Any:
    from .sources import DatasetSource, ImageFolderSource, NpzSource

    common = {"name": a.name}
    if a.kind == "npz":
        return NpzSource(a.src, layout=a.layout, fold_ratio=a.fold, classes=_classes(a.classes), input_range=a.input_range,
                         test_fraction=a.test_fraction, val_fraction=a.val_fraction, **common)
    if a.kind == "imagefolder":
        return ImageFolderSource(a.src, size=a.size, mode=a.mode, fold_ratio=a.fold, test_fraction=a.test_fraction,
                                 val_fraction=a.val_fraction, **common)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return DatasetSource(a.src, data_dir=a.data_dir, classes=_classes(a.classes), input_range=a.input_range, **common)


def cmd_pack(a: argparse.Namespace) -> int:
    manifests = pack(_source(a), a.out, workers=a.workers, max_count=a.max_count, max_bytes=a.max_bytes,
                     skip_bad=a.skip_bad, quiet=True if a.quiet else None, overwrite=a.overwrite)
    for m in manifests:
        counts = ", ".join(f"{s} {v['count']}" for s, v in m["splits"].items())
        print(f"packed {m['name']}: {counts} samples; skipped {m['skipped']['count']} -> {a.out}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .verify import info

    print(info(a.dir))
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from .verify import verify

    problems = verify(a.dir)
    for p in problems:
        print(f"BAD {p}")
    print(f"{a.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def cmd_reindex(a: argparse.Namespace) -> int:
    from .verify import reindex

    for name in reindex(a.dir):
        print(f"rebuilt {name}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(a.dir), workers=a.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ai8x-shards", description="Fast data loading for ai8x-training (MAX78000/MAX78002).")
    ap.add_argument("--version", action="version", version=f"ai8x-shards {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_pack(sub)
    for name, fn, text in (
        ("info", cmd_info, "summarise a dataset folder"),
        ("verify", cmd_verify, "check every shard, sample and index; non-zero exit on any problem"),
        ("reindex", cmd_reindex, "rebuild missing or stale index files from their shards"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir", help="dataset folder (holds manifest.json)")
        p.set_defaults(func=fn)
    p = sub.add_parser("demo", help="make sample data, pack it, read it back, print a summary")
    p.add_argument("dir", nargs="?", default="demo-out", help="working folder (default: demo-out)")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_demo)
    sub.choices["pack"].set_defaults(func=cmd_pack)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PackError, FormatError, OSError) as exc:
        print(f"ai8x-shards: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
