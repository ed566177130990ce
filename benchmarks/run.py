"""``ai8x-shards bench``: run every approach on the same synthetic samples; write RESULTS.md and a plot.

Usage (``python -m benchmarks.run`` takes the same arguments)::

    ai8x-shards bench                     # the full run: 2,000 large + 20,000 small samples, 2 passes
    ai8x-shards bench --quick --out DIR   # a smoke run, under a minute (CI)
    ai8x-shards bench --large 500 --small 5000 --passes 3 --only A,C,E,G-raw

Order of work: make the source arrays of each case; create each approach's files once, each
in a fresh subprocess, timed; then ``--passes`` passes, each measuring every approach of
every case in a fresh subprocess (interleaved: A, B, C, ... then again, the second pass in
reverse order), see :mod:`benchmarks.measure`; combine (best of the passes), judge the
floors and write ``OUT/RESULTS.md`` and ``OUT/results.png`` (without matplotlib, no plot).
Exit status 1 when a reader delivered wrong samples or failed, else 0 (a missed floor is
reported, not an error).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cases as cases_mod
from . import report
from .measure import RESULT_TAG

REPO = Path(__file__).resolve().parent.parent
# Installed, this package is ai8x_shards.benchmarks (the interpreter finds it); from a checkout
# it is the top-level benchmarks, and each child gets the checkout on its PYTHONPATH.
MEASURE = f"{__package__}.measure"
DEFAULT_OUT = Path("benchmarks")
#: What --quick measures: ours, the note's two approaches and the batched ceilings, warm only.
QUICK = ("A", "B", "C", "D", "G-batched", "G-batched-dl")
PACKAGES = ("torch", "numpy", "webdataset", "msgpack", "mosaicml-streaming", "litdata", "psutil", "matplotlib")


def parse_args(argv: list[str] | None, prog: str = "ai8x-shards bench") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("``", ""))
    add_arguments(p)
    return p.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench options, for a parser of its own or a CLI subcommand."""
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 large and 2,000 small samples, one pass, warm only, ours + A, B and the batched "
                        "ceilings, a tiny writer run; about a minute on an idle 2-core machine (figures too small to judge)")
    p.add_argument("--large", type=int, help="large (AISegment_352) samples (default 2000; --quick 64; 0 skips the case)")
    p.add_argument("--small", type=int, help="small (1x28x28) samples (default 20000; --quick 2000; 0 skips the case)")
    p.add_argument("--passes", type=int, help="measurement passes, best taken (default 2; --quick 1)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the multi-process columns (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32, as the AISegment training script)")
    p.add_argument("--budget-gib", type=float, default=16.0, help="memory budget for 'samples that fit' (default 16 GiB)")
    p.add_argument("--only", help="comma-separated approach keys (A,B,C,C-nocheck,C-aug,D,D-nocheck,D-aug,D-http,E,F-mds,F-litdata,"
                                  "G-raw,G-batched,G-batched-dl,G-bandwidth,G-memmap)")
    p.add_argument("--out", type=Path, help="where RESULTS.md and results.png go (default benchmarks/; --quick: a temporary folder)")
    p.add_argument("--work", type=Path, help="scratch folder for the data (default: a new temporary folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (and results.json in it)")
    p.add_argument("--cache", choices=("both", "warm"),
                   help="page-cache states measured: cold (files evicted first) and warm, or warm only (default both; --quick warm)")
    p.add_argument("--no-writer", dest="writer", action="store_false", help="skip the writer's speed (pack, 1 and 2 workers)")
    p.add_argument("--timeout", type=float, help="seconds per subprocess (default 900; --quick 120)")
    p.add_argument("--report-only", type=Path, metavar="RESULTS_JSON",
                   help="measure nothing: rewrite RESULTS.md and the plot from a results.json kept by --keep")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    from shardwriter import __version__

    out["ai8x-shards"] = __version__
    return out


def _machine(work: Path) -> dict[str, str]:
    info = {"platform": platform.platform(), "cpus": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(work.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, info["filesystem"] = mnt, f"{fstype} ({dev} on {mnt})"
        info["load average at start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    return info


def _child(req: dict[str, Any], timeout: float, cwd: Path) -> dict[str, Any]:
    """Run one request in a fresh interpreter; its result, or {"error": ...}."""
    env = dict(os.environ)
    if __package__ == "benchmarks":
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", MEASURE], input=json.dumps(req), capture_output=True, text=True,
            timeout=timeout, env=env, cwd=str(cwd),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit status {proc.returncode}: " + " | ".join(tail)}


def _brief(r: dict[str, Any], workers: int) -> str:
    if "error" in r:
        return "ERROR " + r["error"].splitlines()[0][:200]
    runs = r.get("runs", {})
    parts = []
    for name, rr in runs.items():
        if "error" in rr:
            parts.append(f"{name} ERROR {rr['error'][:120]}")
        else:
            parts.append(f"{name} {rr['rate']:,.0f}/s" + ("" if rr["check"].startswith("ok") else f" CHECK FAILED: {rr['check']}"))
    return f"open {r['open_s']:.3f}s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB; " + ", ".join(parts)


def run(args: argparse.Namespace, command: str) -> tuple[dict[str, Any], int]:
    """Do the whole benchmark; returns (the combined summary, exit status)."""
    quick = args.quick
    n_large = args.large if args.large is not None else (64 if quick else 2000)
    n_small = args.small if args.small is not None else (2000 if quick else 20000)
    passes = args.passes or (1 if quick else 2)
    timeout = args.timeout or (120.0 if quick else 900.0)
    out = args.out or (Path(tempfile.gettempdir()) / "ai8x-shards-bench-quick" if quick else DEFAULT_OUT)
    work = args.work or Path(tempfile.mkdtemp(prefix="ai8x-shards-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    budget = int(args.budget_gib * (1 << 30))
    workers, batch = args.workers, args.batch_size
    t_start = time.perf_counter()
    machine = _machine(work)

    from .approaches import registry  # torch: imported only when a run starts

    approaches = registry()
    if quick and not args.only:  # the smoke run: ours, the note's two, the batched ceilings (about a minute)
        approaches = {k: a for k, a in approaches.items() if k in QUICK}
    if args.only:
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in approaches]
        if unknown:
            raise SystemExit(f"unknown approach {', '.join(unknown)}; choose from {', '.join(approaches)}")
        need = set(wanted) | {approaches[k].data_of for k in wanted if approaches[k].data_of}
        approaches = {k: a for k, a in approaches.items() if k in need}
    skip = {k: a.unavailable() for k, a in approaches.items()}
    for k, why in skip.items():
        if why:
            print(f"skip {k}: {why}", flush=True)

    case_list = [c for c in (cases_mod.large(n_large), cases_mod.small(n_small)) if c.n > 0]
    raw: dict[str, Any] = {}
    srcs: dict[str, dict[str, str]] = {}
    for case in case_list:
        t = time.perf_counter()
        srcs[case.name] = cases_mod.generate(case, work / case.name / "src")
        shape = "x".join(map(str, case.x_shape))
        target = ("uint8 " + "x".join(map(str, case.y_shape)) + " mask") if case.y_kind == "mask" else f"int label, {case.classes} classes"
        title = f"{case.name}: {case.n:,} samples of uint8 {shape} + {target} ({case.sample_bytes:,} bytes)"
        print(f"{title}: source arrays made in {time.perf_counter() - t:.1f} s", flush=True)
        raw[case.name] = {
            "info": {**case.to_json(), "batch": batch, "title": title},
            "rows": {k: {"label": a.label, "skip": skip[k], "data_of": a.data_of, "passes": []} for k, a in approaches.items()},
        }

    states = ("warm",) if (args.cache or ("warm" if quick else "both")) == "warm" else ("cold", "warm")

    def request(action: str, case: Any, key: str, epoch: int = 0) -> dict[str, Any]:
        a = approaches[key]
        folder = work / case.name / (a.data_of or key)
        configs = [[w, c] for w in (0, workers) for c in states]
        return {"action": action, "approach": key, "case": case.to_json(), "src": srcs[case.name], "dir": str(folder),
                "batch": batch, "configs": configs, "epoch": epoch}

    # Creation ("first run"), once per approach that owns files: ours, the note's and the
    # ceiling's in one process, each peer in its own (their imports are heavy).
    for case in case_list:
        owners = [k for k, a in approaches.items() if not skip[k] and not a.data_of]
        groups = [[k for k in owners if not k.startswith("F-")]] + [[k] for k in owners if k.startswith("F-")]
        for group in filter(None, groups):
            req = {**request("create", case, group[0]), "create": {k: str(work / case.name / k) for k in group}}
            got = _child(req, timeout, work)
            for key in group:
                r = got.get(key, got if "error" in got else {"error": "no result"})
                raw[case.name]["rows"][key]["create"] = r
                msg = f"ERROR {r['error']}" if "error" in r else f"{r['create_s']:.2f} s, {r['disk_alloc'] / 2**20:,.0f} MiB in {r['files']} files"
                print(f"create {case.name} {key}: {msg}", flush=True)
        for key, a in approaches.items():
            if a.data_of and not skip[key]:
                owner = raw[case.name]["rows"].get(a.data_of, {})
                raw[case.name]["rows"][key]["create"] = owner.get("create")
                if "error" in (owner.get("create") or {"error": "not created"}):
                    raw[case.name]["rows"][key]["skip"] = f"reads {a.data_of}'s files, which were not created"

    subprocess.run(["sync"], check=False)
    for p in range(passes):
        order = list(approaches) if p % 2 == 0 else list(approaches)[::-1]
        for case in case_list:
            for key in order:
                if raw[case.name]["rows"][key]["skip"]:
                    continue
                r = _child(request("measure", case, key, epoch=10 * p), timeout, work)
                raw[case.name]["rows"][key]["passes"].append(r)
                print(f"[pass {p + 1}/{passes}] {case.name} {key}: {_brief(r, workers)}", flush=True)

    writer = None
    if args.writer:
        from . import writer as writer_bench

        print("writer: pack with 1 and 2 workers (benchmarks.writer)", flush=True)
        small_w, images_w = (2000, 12) if quick else (n_small or 20_000, 300)
        writer = writer_bench.measure_writer(work / "writer", small=small_w, images=images_w, passes=1 if quick else passes,
                                             log=lambda m: print(m, flush=True))
    elapsed = time.perf_counter() - t_start
    try:
        machine["load average at end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    meta = {
        "command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine, "versions": _versions(), "passes": passes, "workers": workers, "batch": batch,
        "budget": budget, "quick": quick, "elapsed": elapsed, "skip": skip, "writer": writer,
    }
    if args.keep:
        (work / "results.json").write_text(json.dumps({"meta": meta, "raw": raw}, indent=1))
        print(f"kept {work} (raw results in results.json)")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return write_report(raw, meta, out)


def write_report(raw: dict[str, Any], meta: dict[str, Any], out: Path) -> tuple[dict[str, Any], int]:
    """Combine, judge and write ``out/RESULTS.md`` (+ ``results.png``); returns (summary, exit status)."""
    workers, quick, skip = meta["workers"], meta["quick"], meta["skip"]
    summary = report.combine(raw, workers, meta["budget"])
    floors = report.floors(summary, workers) + report.writer_floors(meta.get("writer"))
    failed = [
        f"{case} {key}: {'; '.join(s['errors'][:2]) or report._check(s)}"
        for case, entry in summary.items()
        for key, s in entry["rows"].items()
        if not s.get("skip") and (s.get("errors") or not s.get("rates") or not report._check(s).startswith("ok"))
    ]
    out.mkdir(parents=True, exist_ok=True)
    png = out / "results.png"
    why_no_plot = report.plot(summary, png, workers)
    text = render(summary, floors, meta, png.name if why_no_plot is None else None, why_no_plot, skip, failed)
    (out / "RESULTS.md").write_text(text)
    print(f"wrote {out / 'RESULTS.md'}" + (f" and {png}" if why_no_plot is None else f" (no plot: {why_no_plot})")
          + f" ({meta['elapsed']:.0f} s)")
    print()
    print(report.headline(summary, workers))
    missed = [f for f in floors if f["met"] is False]
    if missed:
        print()
        print(f"Floors missed ({len(missed)} of {len(floors)}{'; quick run: sizes too small to judge' if quick else ''}; reasons in "
              f"{out / 'RESULTS.md'}):")
        print(report.misses_table(missed))
    for f in failed:
        print(f"FAILED: {f}")
    return summary, (1 if failed else 0)


def render(summary: dict[str, Any], floors: list[dict[str, Any]], meta: dict[str, Any], png: str | None,
           why_no_plot: str | None, skip: dict[str, str | None], failed: list[str]) -> str:
    w = meta["workers"]
    lines = [
        "# Benchmarks: the data-loader note's Table 1, reproduced, and the peers side by side",
        "",
        f"Command: `{meta['command']}` ({meta['date']}, {meta['elapsed']:.0f} s"
        + (", **quick smoke run: sizes too small for the figures to mean much**" if meta["quick"] else "") + ").",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in meta["machine"].items()) + ".",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        f"Every approach reads the same samples, one epoch at batch size {meta['batch']}, in a fresh process per approach and "
        f"pass; approaches interleaved over {meta['passes']} pass(es), best pass taken. Figures on a shared machine drift with "
        "its load: compare ratios within one run.",
        "",
    ]
    if png:
        lines += [f"![samples per second]({png})", ""]
    elif why_no_plot:
        lines += [f"(No plot: {why_no_plot}.)", ""]
    skipped = [f"{k}: {why}" for k, why in skip.items() if why]
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    if failed:
        lines += ["**Failures:** " + "; ".join(failed), ""]
    lines += ["## Headline", "", "Samples/s, warm cache, one epoch (one process = `num_workers=0`).", "", report.headline(summary, w), ""]
    lines += ["### Against the true ceilings", "",
              "The best readers that could exist for the same output (float32 inputs, int64 targets), on the same uint8 arrays "
              "with no format at all, measured in this run: a batched memmap gather with one normalize into fresh arrays (no "
              "DataLoader), the same as a `Dataset.__getitems__` through the DataLoader path C uses, and the memory bandwidth "
              "(only writing each batch's output bytes).", "", report.ceilings_table(summary, w), ""]
    lines += ["## Floors", "", report.floors_table(floors, judged=not meta["quick"]), ""]
    lines += ["## What the per-sample checks cost", "",
              "C and D check every sample's input and target bytes against the xxh3-64 hash in its index row on every read "
              "(format 2). The same readers with the check off (`Options(verify_samples=False)`) ran in the same run, "
              "interleaved; cost = 1 − on/off (noise on a shared machine is a few per cent either way).", "",
              report.check_cost(summary, meta["workers"]), ""]
    if any(k.endswith("-aug") for entry in summary.values() for k in entry["rows"]):
        lines += ["## What augmentation costs", "",
                  "C-aug and D-aug are C and D with an on-the-fly `HorizontalFlip(0.5)` + `RandomCrop(padding=4)` "
                  "(`loaders.augment`, on image and mask, in the folded layout, before normalization), in the same run, "
                  "interleaved; cost = 1 − augmented/plain.", "",
                  report.augment_cost(summary, meta["workers"]), ""]
    if not meta["quick"]:
        lines += [report.PROFILES, ""]
    if meta.get("writer"):
        from .writer import render_markdown

        lines += [render_markdown(meta["writer"])]
    for entry in summary.values():
        lines += [f"## {entry['info']['title']}", "", "### Throughput", "", report.throughput_table(entry, w), "",
                  "### Table 1, reproduced", "", report.table1(entry, meta["budget"]), ""]
    lines += [METHOD.format(budget=meta["budget"] / (1 << 30), workers=w), ""]
    return "\n".join(lines)


METHOD = """## How it is measured

- **Data**: synthetic, deterministic. *large*: AISegment_352-like portraits (352x352 RGB, folded r = 4 into uint8
  48x88x88, ai8x channel order) with a uint8 352x352 background mask; *small*: uint8 1x28x28 with an int label
  (10 classes). Each input carries its sample number in its first three bytes; every batch is checked (each sample
  exactly once per epoch, with its own target, as float32): the *check* column.
- **Approaches**: A. the note's in-memory approach (all samples in one pickle, `pickle.load` into RAM at
  construction); B. the note's disk approach (one pickle per sample, opened in `__getitem__`); C. ours,
  `ShardDataset` through train.py's data path (`SubsetRandomSampler` over all indices, a `DataLoader` with the
  dataset entry's `collate`); D. ours, `StreamingShardDataset` (shuffle on, batched in the dataset); E. stock
  webdataset 1.0 reading our shards (shard shuffle, 1000-sample shuffle buffer, msgpack decode, per-sample
  normalize, DataLoader batching); F. MosaicML Streaming (MDS, `bytes` columns, no compression) and LitData
  (`optimize`, no compression), each writing and reading the same samples with its own shuffle (optional extras;
  `torchvision` is stubbed for `streaming`, see `benchmarks/peers.py`); G. ceilings: `G-raw` reads C's shard files
  start to end with no decoding (the raw-read baseline of the "× raw read" ratios; "× fastest" is to the fastest
  reader that decodes), `G-memmap` is a per-sample `Dataset` over a
  numpy memmap of the same uint8 arrays (no format) through the same DataLoader path as A, B and C. Shards and
  chunks hold ceil(n/8) samples in every format. Every reader outputs float32 `(p - 128) / 128` (bit-exact with
  ai8x's `/256` + `ai8x.normalize`) and int64 targets; A, B, E, F and G-memmap use the same vectorized per-sample
  arithmetic as ours (`normalize_np`), not the reference's slower float chain, so the figures compare storage and
  reading only.
- **Samples/s**: one epoch, timed from building the DataLoader (workers are forked inside the epoch, as in
  train.py) to the last batch, minus the check's own time. *Cold*: the approach's files are evicted from the page
  cache first (`fsync`, then `os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`); *warm*: the next epoch, files
  cached (an epoch under 1 s runs again, up to 5 in a row, and the fastest is kept: short epochs are mostly noise
  on a shared machine). `torch.set_num_threads(1)` in every process (DataLoader workers use one thread by default).
- **Creation, first run**: writing the format from the source arrays (read through a memmap), in a fresh process,
  as each tool does it (ours fsyncs each shard; the others do not), one sample. **Later runs**: building the dataset
  object with its files evicted (A reads its whole pickle here).
- **Peak RSS**: `VmHWM` of the measuring process (construction plus every epoch; not `ru_maxrss`, which after
  `exec` starts from the launching process's peak) and `ru_maxrss` of its largest DataLoader worker
  (`RUSAGE_CHILDREN`; it counts the pages a forked worker shares with its parent); the worst of the passes. RSS
  includes file pages mapped by the process (the memmap ceiling's grow with what it reads).
- **Samples that fit the budget ({budget:g} GiB)**: per-sample memory = growth of the process's anonymous RSS
  (`RssAnon`) while the dataset object is built, divided by n (page cache and file-backed maps are reclaimable and
  not counted); fixed cost = peak RSS minus that growth; fit = (budget − fixed) / per-sample. A growth under 4 MiB
  is within noise, so the per-sample figure is an upper bound (≤) and the count a lower bound (≥): memory is not
  what limits such an approach, disk is. Workers forked from a process holding A's data share it copy-on-write;
  not counted again.
- **Disk**: allocated blocks (`st_blocks`), so one small file per sample costs at least a filesystem block.
- **Floors**: judged on this run's figures. "Peak RSS ≤ 1/10 of A's" compares peak RSS above the interpreter+torch
  baseline (RSS after imports, before the dataset is built), since that baseline is the same for every approach
  and is not the data path's cost; the absolute peaks are given beside it."""


def cli(args: argparse.Namespace, command: str | None = None) -> int:
    """Run the benchmark for parsed ``args`` (from :func:`add_arguments`); the exit status.

    ``command`` is what RESULTS.md records; by default the process's own command line.
    """
    if args.report_only:
        saved = json.loads(args.report_only.read_text())
        out = args.out or (DEFAULT_OUT if not saved["meta"]["quick"] else args.report_only.parent)
        _, status = write_report(saved["raw"], saved["meta"], out)
        return status
    if command is None:
        command = shlex.join(["ai8x-shards" if "bench" in sys.argv[1:2] else Path(sys.argv[0]).name, *sys.argv[1:]])
    _, status = run(args, command)
    return status


def main(argv: list[str] | None = None, prog: str = "ai8x-shards bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli(parse_args(argv, prog), shlex.join([*prog.split(), *argv]))


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.run"))
