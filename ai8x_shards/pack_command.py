"""``ai8x-shards pack KIND SRC OUT [options]`` and ``ai8x-shards merge OUT``.

Each source kind has its own parser listing only the options that apply to it (an
option of another kind is a usage error, exit 2), with their defaults; the options of
the writer itself are on every kind. Settings are checked before any work
(:class:`~shardwriter.errors.SettingsError`, exit 2); bad inputs stop the run (exit 3)
unless ``--skip-bad``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shardwriter.errors import SettingsError

KINDS = {
    "npz": "arrays x (inputs) and y (targets) in one .npz file, or a folder of train.npz/test.npz[/val.npz]",
    "imagefolder": "a folder SRC/<class>/<images> (or SRC/<split>/<class>/<images>)",
    "dataset": "a map-style dataset: module:function (or module:NAME) importable from here",
    "aisegment": "the AISegment portrait archive (clip_img/ + matting/) as ai8x-training prepares it",
}
SRC_HELP = {
    "npz": ".npz file, or folder holding train.npz and test.npz",
    "imagefolder": "image folder",
    "dataset": "module:function returning the dataset(s), a (train, test) tuple, or an ai8x-training loader",
    "aisegment": "folder holding clip_img/ and matting/ (or AISegment/ with them)",
}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not the empty ones (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if (action.default is None or action.default is False or action.default == "" or action.default is argparse.SUPPRESS or "default" in (action.help or "")
                or not action.option_strings):
            return action.help or ""
        return super()._get_help_string(action)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    try:
        return (int(w), int(h or w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH or N (N x N), not {text!r}") from None


def _classes(text: str) -> Any:
    if text.strip().isdigit():
        return int(text)
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected a count or comma-separated names, not {text!r}")
    return names


def _variants(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s not in (80, 352) for s in sizes):
        raise argparse.ArgumentTypeError(f"expected 80, 352 or 80,352 (the AISegment_80 / AISegment_352 datasets), not {text!r}")
    return sizes


def _bytes(text: str) -> int:
    from shardwriter.options import parse_bytes

    try:
        return parse_bytes(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), not {text!r}") from None


def _common(p: argparse.ArgumentParser, kind: str) -> None:
    g = p.add_argument_group("writer options (every kind)")
    g.add_argument("--workers", type=int, default=1, help="worker processes, each writing shards itself (same bytes for any N)")
    g.add_argument("--max-count", type=int, default=10_000, help="samples per shard at most")
    g.add_argument("--max-bytes", type=_bytes, default=256 << 20, help="bytes per shard at most, K/M/G suffixes (default: 256M)")
    g.add_argument("--seed", type=int, default=0, help="write-time shuffle seed (recorded in the manifest)")
    g.add_argument("--no-shuffle", action="store_true", help="write samples in source order instead of a seeded shuffle")
    g.add_argument("--skip-bad", action="store_true", help="skip bad inputs, recording them in the manifest, instead of stopping")
    g.add_argument("--overwrite", action="store_true", help="replace a different (or partial) dataset of ours in OUT")
    g.add_argument("--part", metavar="K/N", help="write part K of N (every N-th shard from the K-th) for job arrays; "
                   "then run ai8x-shards merge OUT")
    if kind != "dataset":
        g.add_argument("--checksum", action="store_true",
                       help="fingerprint input file contents too, not only names, sizes and mtimes (like rsync --checksum)")
    g.add_argument("--dry-run", action="store_true", help="print what would be written (splits, counts, shapes, bytes, "
                   "shards) and what OUT holds; write nothing")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _fractions(p: argparse.ArgumentParser, presplit: bool) -> None:
    note = " (not with a pre-split SRC)" if presplit else ""
    p.add_argument("--test-fraction", type=_fraction, default=None,
                   help=f"share of inputs in the test split, by a stable name hash; default 0.1{note}")
    p.add_argument("--val-fraction", type=_fraction, default=None,
                   help=f"share of inputs in the val split (train.py's valid_indices); default 0{note}")


def add_pack_parsers(sub: Any) -> None:
    """The ``pack`` command (one sub-parser per source kind) and ``merge``."""
    p = sub.add_parser("pack", help="pack a source into a shard dataset folder",
                       description="Pack a source into a shard dataset folder. ai8x-shards pack KIND --help lists the "
                                   "options of each kind.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in KINDS.items():
        k = kinds.add_parser(kind, help=text, description=f"Pack {text}.", formatter_class=_Help)
        k.add_argument("src", help=SRC_HELP[kind])
        k.add_argument("out", help="output dataset folder, or s3://BUCKET/PREFIX / gs://BUCKET/PREFIX")
        if kind == "npz":
            k.add_argument("--name", default="", help="dataset name recorded in the manifest (default: SRC's stem)")
            k.add_argument("--layout", choices=["chw", "hwc", "hw"], default=None,
                           help="layout of x; needed unless x is (N, C, H, W) with W > 4")
            k.add_argument("--target", choices=["class", "mask", "regression"], default=None,
                           help="what y is; needed unless y is integer (N,) (class) or (N, H, W) (mask)")
            k.add_argument("--fold", type=int, default=1, help="fold ratio r (ai8x channel order); must divide H and W")
            k.add_argument("--classes", type=_classes, default=None,
                           help="class names (a,b,c) or a count; default: 0..max label")
            k.add_argument("--input-range", choices=["unit", "8bit"], default=None,
                           help="range of float x: unit = (p-128)/128, 8bit = p-128; default: decided from all of x")
            _fractions(k, presplit=True)
        elif kind == "imagefolder":
            k.add_argument("--name", default="", help="dataset name recorded in the manifest (default: SRC's name)")
            k.add_argument("--size", type=_size, default=None, help="resize every image to WxH (or N for NxN); "
                           "default: all images must have the first image's size")
            k.add_argument("--mode", default="RGB", choices=["RGB", "L"], help="colour mode")
            k.add_argument("--fold", type=int, default=1, help="fold ratio r (ai8x channel order); must divide the size")
            _fractions(k, presplit=True)
        elif kind == "dataset":
            k.add_argument("--name", default="", help="dataset name recorded in the manifest (default: the function's name)")
            k.add_argument("--data-dir", default=".", help="data_dir handed to an ai8x-training loader function")
            k.add_argument("--classes", type=_classes, default=None,
                           help="class names (a,b,c) or a count; default: the dataset's .classes")
            k.add_argument("--target", choices=["class", "mask", "regression"], default=None,
                           help="what the targets are; needed unless they are integers (class) or integer arrays (mask)")
            k.add_argument("--input-range", choices=["unit", "8bit"], default=None,
                           help="range of float inputs; default: decided from the first samples")
        else:
            k.add_argument("--variants", type=_variants, default=(80, 352),
                           help="comma-separated sizes to write, each its own folder (default: 80,352)")
            k.add_argument("--test-fraction", type=_fraction, default=0.1, help="share of images in the test split")
            k.add_argument("--val-fraction", type=_fraction, default=0.0, help="share of images in the val split")
        _common(k, kind)
        k.set_defaults(func=run_pack)
    m = sub.add_parser("merge", help="assemble the parts of a pack --part K/N job into the dataset",
                       description="Assemble the parts of a `pack ... --part K/N` job, all gathered in OUT (for example "
                                   "rsync -a partK/ OUT/ from each machine), into the dataset a one-machine pack writes.",
                       formatter_class=_Help)
    m.add_argument("out", help="the folder holding every part")
    m.set_defaults(func=run_merge)


def make_source(a: argparse.Namespace) -> Any:
    """The source ``a`` describes (its options checked by the source)."""
    from shardwriter.sources import AISegmentSource, DatasetSource, ImageFolderSource, NpzSource

    if a.kind == "aisegment":
        return AISegmentSource(a.src, variants=a.variants, test_fraction=a.test_fraction, val_fraction=a.val_fraction)
    if a.kind == "npz":
        return NpzSource(a.src, name=a.name, layout=a.layout or "auto", fold_ratio=a.fold, classes=a.classes,
                         input_range=a.input_range or "auto", target=a.target or "auto",
                         test_fraction=a.test_fraction, val_fraction=a.val_fraction)
    if a.kind == "imagefolder":
        return ImageFolderSource(a.src, name=a.name, size=a.size, mode=a.mode, fold_ratio=a.fold,
                                 test_fraction=a.test_fraction, val_fraction=a.val_fraction)
    if ":" not in a.src:
        raise SettingsError(f"{a.src!r}: expected module:function (a module importable from here, and a name in it)")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return DatasetSource(a.src, name=a.name, data_dir=a.data_dir, classes=a.classes, input_range=a.input_range or "auto",
                         target=a.target or "auto")


def _summary(m: Any) -> str:
    counts = ", ".join(f"{name} {s.count}" for name, s in m.splits.items())
    shards = sum(len(s.shards) for s in m.splits.values())
    return f"{m.name}: {counts} samples in {shards} shard(s); skipped {len(m.skipped)}"


def run_pack(a: argparse.Namespace) -> int:
    from shardwriter.pack import pack, parse_part
    from shardwriter.storage import is_url, staged_output

    part = parse_part(a.part)
    if part != (1, 1) and is_url(a.out):
        raise SettingsError(f"--part writes into a local or shared folder, not {a.out}; merge the parts there, then upload")
    kw = {"workers": a.workers, "max_count": a.max_count, "max_bytes": a.max_bytes, "skip_bad": a.skip_bad,
          "quiet": True if a.quiet else None, "overwrite": a.overwrite, "shuffle": not a.no_shuffle, "seed": a.seed,
          "part": part, "checksum": getattr(a, "checksum", False),
          "command": " ".join(["ai8x-shards", "pack", a.kind, a.src, a.out] + ([f"--part {a.part}"] if a.part else []))}
    source = make_source(a)
    if a.dry_run:
        result = pack(source, a.out, dry_run=True, **kw)
        for line in result.lines:
            print(line)
        return 0
    with staged_output(a.out, overwrite=a.overwrite) as out:  # a bucket URL: pack locally, upload, manifest last
        result = pack(source, out, **kw)
    for w in result.warnings:
        print(f"warning: {w}")
    if result.status == "unchanged":
        for m in result:
            print(f"nothing to do: {a.out} already holds this dataset ({_summary(m)})")
        return 0
    if result.status == "part":
        print(f"packed part {part[0]}/{part[1]}: {result.shards} shard(s) -> {a.out}"
              f"{f' ({result.done_before} were already written)' if result.done_before else ''}; "
              f"once every part is in {a.out}, run: ai8x-shards merge {a.out}")
        return 0
    note = f" (resumed: {result.done_before} of {result.shards} shard(s) were already written)" if result.status == "resumed" else ""
    for m in result:
        print(f"packed {_summary(m)} -> {a.out}{note}")
    return 0


def run_merge(a: argparse.Namespace) -> int:
    from shardwriter.pack import merge

    result = merge(a.out)
    for w in result.warnings:
        print(f"warning: {w}")
    for m in result:
        print(f"nothing to do: {a.out} holds the merged dataset ({_summary(m)})" if result.status == "unchanged" else
              f"merged {_summary(m)} -> {a.out}")
    return 0
