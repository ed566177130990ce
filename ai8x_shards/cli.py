"""The ``ai8x-shards`` command: one subcommand per job, each a thin shell over the API.

This is the one layer above both packages: it imports :mod:`shardwriter` (writing,
checking, storage) and :mod:`loaders` (reading, ai8x-training glue), and each subcommand
imports only what it uses, when it runs. Errors of the package's family
(:class:`shardwriter.errors.ShardsError`) are printed as one line, with the exit code
of their class (see :mod:`shardwriter.errors`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from shardwriter import __version__
from shardwriter.errors import SettingsError, ShardsError, exit_code

from .pack_command import add_pack_parsers


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` that shows each option's default (not for flags, nor where there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None


def _names(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def cmd_info(a: argparse.Namespace) -> int:
    from shardwriter.verify import info

    print(info(a.dir, as_json=a.json, all_skipped=a.all_skipped))
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from shardwriter.verify import verify

    problems = verify(a.dir)
    for p in problems:
        print(f"BAD {p}")
    print(f"{a.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def cmd_reindex(a: argparse.Namespace) -> int:
    from shardwriter.verify import reindex

    for name in reindex(a.dir):
        print(f"rebuilt {name}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(a.dir), workers=a.workers)
    return 0


def cmd_synth(a: argparse.Namespace) -> int:
    from shardwriter.synth import synth_aisegment

    root = synth_aisegment(a.dir, images=a.images, seed=a.seed)
    print(f"wrote {a.images} synthetic {a.kind} images (seed {a.seed}) -> {root}")
    return 0


def cmd_install_ai8x(a: argparse.Namespace) -> int:
    return _install_ai8x(a)


def _install_ai8x(a: argparse.Namespace) -> int:
    from loaders.install import check_augment_spec, entry_from_folder, install, uninstall

    if a.uninstall:
        print(f"removed {a.checkout}/datasets/ai8x_shards.py" if uninstall(a.checkout) else "nothing to remove")
        return 0
    added = []
    for spec in a.add:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SettingsError(f"--add {spec!r}: expected NAME=DIR (DIR absolute, or relative to train.py's --data)")
        location = folder if "://" in folder or Path(folder).is_absolute() else str(Path(a.data or ".") / folder)
        added.append(entry_from_folder(name, location, folder))
    augment: dict[str, str | None] = {}
    for spec in a.augment:
        target, sep, what = spec.rpartition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
        if sep and not target:
            raise SettingsError(f"--augment {spec!r}: expected [NAME=]module:name")
        names = [target] if target else [e["name"] for e in added]
        if not names:
            raise SettingsError(f"--augment {spec!r}: without NAME= it applies to this command's --add entries, and there are none")
        for name in names:
            augment[name] = None if what.lower() == "none" else check_augment_spec(what)
    path = install(a.checkout, added, augment)
    print(f"installed {path}")
    return 0


def cmd_preview(a: argparse.Namespace) -> int:
    from loaders.preview import preview, shown_indices

    path = preview(a.dir, a.split, a.n, a.output, seed=a.seed, classes=a.classes, indices=a.indices)
    shown = shown_indices(path)
    print(f"wrote {path}: {len(shown)} {a.split} sample(s): {', '.join(map(str, shown))}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    return _bench(a.bench_args)


def _bench(argv: list[str]) -> int:
    """``ai8x-shards bench``: the benchmark, imported only here.

    Installed (also ``pip install -e .``), it is ``ai8x_shards.benchmarks`` (the
    repository's ``benchmarks/`` folder); from a checkout on ``sys.path`` without an
    install, the top-level ``benchmarks`` package.
    """
    try:
        from ai8x_shards.benchmarks.run import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name != "ai8x_shards.benchmarks":
            raise
        from benchmarks.run import main as bench_main

    return bench_main(argv)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ai8x-shards", description="Fast data loading for ai8x-training (MAX78000/MAX78002).",
                                 epilog="Each command's options and defaults: ai8x-shards COMMAND --help.", formatter_class=_Help)
    ap.add_argument("--version", action="version", version=f"ai8x-shards {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pack_parsers(sub)

    def command(name: str, fn: Any, text: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".", formatter_class=_Help, **kw)
        p.set_defaults(func=fn)
        return p

    p = command("info", cmd_info, "summarise a dataset: splits, counts, shapes, classes, sizes, skipped inputs")
    p.add_argument("dir", help="dataset folder (holds manifest.json) or URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (splits, counts, skipped, warnings)")
    p.add_argument("--all-skipped", action="store_true", help="list every skipped input (the text summary shows the first 10)")
    for name, fn, text in (
        ("verify", cmd_verify, "check every shard, sample and index; non-zero exit on any problem"),
        ("reindex", cmd_reindex, "rebuild missing or stale index files from their shards"),
    ):
        command(name, fn, text).add_argument("dir", help="dataset folder (holds manifest.json) or URL")
    p = command("demo", cmd_demo, "make sample data, pack it, read it back, print a summary")
    p.add_argument("dir", nargs="?", default="demo-out", help="working folder (emptied first)")
    p.add_argument("--workers", type=int, default=2, help="pack worker processes")
    p = command("synth", cmd_synth, "write synthetic raw data (for trials and tests)")
    p.add_argument("kind", choices=["aisegment"], help="raw layout to write")
    p.add_argument("dir", help="folder to write into")
    p.add_argument("--images", type=int, default=30, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files")
    p = command("install-ai8x", cmd_install_ai8x, "install the datasets module into an ai8x-training checkout")
    p.add_argument("checkout", help="ai8x-training folder (holds train.py and datasets/)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=DIR",
                   help="also expose the shard dataset DIR as entry NAME (DIR absolute or relative to --data); repeatable")
    p.add_argument("--augment", action="append", default=[], metavar="[NAME=]MODULE:NAME",
                   help="augment an entry's train split on the fly with MODULE:NAME (importable from train.py's folder; "
                        "see loaders.augment); without NAME=, the entries of this command's --add; NAME=none removes it")
    p.add_argument("--data", help="with a relative --add DIR: the --data folder you will give train.py")
    p.add_argument("--uninstall", action="store_true", help="remove the module")
    p = command("preview", cmd_preview, "write a PNG grid of samples as the model sees them, masks tinted, with a legend")
    p.add_argument("dir", help="dataset folder or URL")
    p.add_argument("--split", default="test", help="split to draw from")
    p.add_argument("-n", type=int, default=8, help="number of samples, drawn across the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw: same seed, same samples")
    p.add_argument("--classes", type=_names, metavar="A,B",
                   help="class targets: draw only samples of these classes; masks: tint only these classes (names or values)")
    p.add_argument("--indices", type=_ints, metavar="I,J", help="show exactly these samples (overrides -n and --seed)")
    p.add_argument("-o", "--output", default="preview.png", help="PNG file to write")
    p = sub.add_parser("bench", help="benchmarks: the design note's Table 1 and the peers; writes benchmarks/RESULTS.md",
                       add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="see ai8x-shards bench --help")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:  # the benchmark parses its own options
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away is noticed here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except ShardsError as exc:
        print(f"ai8x-shards: error: {_one_line(exc)}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # an OS failure our code did not name: still one line, with the path the OS gives
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"ai8x-shards: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """stdout's reader stopped reading (``ai8x-shards info DIR | head -1``): stop quietly.

    As a tool killed by SIGPIPE would: no message, exit status 128 + SIGPIPE (141). Python
    ignores SIGPIPE, so the write raised ``BrokenPipeError`` instead; stdout is pointed
    at the null device so the flush at interpreter exit does not raise it again. (Not
    ``signal(SIGPIPE, SIG_DFL)``: that would also kill the process on a socket a server
    closed, where the storage layer retries.)
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
