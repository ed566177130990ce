"""The writer's speed: ``pack`` with 1 and 2 workers, on small and large samples.

Usage::

    python -m benchmarks.writer                      # 20,000 small samples, 300 AISegment images, 2 passes
    python -m benchmarks.writer --small 5000 --images 60 --passes 1

Cases: **small**, an .npz of ``--small`` uint8 (1, 28, 28) inputs with an int label below 10
(``pack npz``); **large**, ``--images`` synthetic AISegment portraits
(:func:`shardwriter.synth.synth_aisegment`, 600x800 JPEG + RGBA PNG) packed as both variants
at once (``pack aisegment``: three crops per image, each written as an ``AISegment_80`` and
an ``AISegment_352`` sample; "samples" counts crops). Defaults otherwise (shuffled, 10,000
samples or 256 MiB per shard).

Each (case, workers, pass) runs in a fresh subprocess that makes the source and packs into
an empty folder; it reports the wall time of that (the interpreter's start and imports
excluded) and the CPU seconds of itself and its worker processes (``RUSAGE_SELF`` +
``RUSAGE_CHILDREN`` around the job). Passes alternate the worker counts; the best wall
time of the passes is kept, with the CPU time of that run. Every run's output is checked
to be byte-identical to the 1-worker run's.

:func:`measure_writer` returns the figures, :func:`render_markdown` the RESULTS.md section.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_TAG = "@@WRITER "


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    return h.hexdigest()


def child(request: dict[str, Any]) -> dict[str, Any]:
    """One measured pack, in this (fresh) process."""
    from shardwriter import pack
    from shardwriter.sources import AISegmentSource, NpzSource

    out = Path(request["out"])
    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = _cpu(), time.perf_counter()
    source = NpzSource(request["src"]) if request["case"] == "small" else AISegmentSource(request["src"])
    result = pack(source, out, workers=request["workers"], quiet=True)
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    samples = sum(s.count for s in result[0].splits.values())
    return {"wall": wall, "cpu": cpu, "samples": samples, "digest": _tree_digest(out)}


def make_sources(work: Path, small: int, images: int) -> dict[str, str]:
    """The cases' source data under ``work`` (made once, deterministic)."""
    import numpy as np

    from shardwriter.synth import synth_aisegment, synth_arrays

    work.mkdir(parents=True, exist_ok=True)
    srcs = {}
    if small:
        path = work / f"small-{small}.npz"
        if not path.exists():
            x, y = synth_arrays(small, (1, 28, 28), 10, seed=0)
            np.savez(path, x=x, y=y)
        srcs["small"] = str(path)
    if images:
        root = work / f"aisegment-{images}"
        if not (root / "clip_img").is_dir():
            synth_aisegment(root, images=images, seed=0)
        srcs["large"] = str(root)
    return srcs


def _run_child(request: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    if __package__ == "benchmarks":  # from a checkout: the children import it from the checkout too
        repo = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    got = subprocess.run([sys.executable, "-m", f"{__package__}.writer", "--child", json.dumps(request)], capture_output=True,
                         text=True, env=env, timeout=3600)
    line = next((x for x in reversed(got.stdout.splitlines()) if x.startswith(RESULT_TAG)), None)
    if got.returncode or line is None:
        raise RuntimeError(f"writer benchmark child failed ({got.returncode}): {got.stderr.strip()[-2000:]}")
    return json.loads(line[len(RESULT_TAG):])


def measure_writer(work: Path | None = None, small: int = 20_000, images: int = 300, passes: int = 2,
                   workers: tuple[int, ...] = (1, 2), log: Any = None) -> dict[str, Any]:
    """Figures of ``pack`` per case and worker count: best wall of ``passes`` fresh subprocesses, its CPU time."""
    tmp = None
    if work is None:
        tmp = tempfile.mkdtemp(prefix="ai8x-shards-writer-bench-")
        work = Path(tmp)
    machine = _machine()
    try:
        srcs = make_sources(work, small, images)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for p in range(passes):
            for case, src in srcs.items():
                order = workers if p % 2 == 0 else tuple(reversed(workers))
                for w in order:
                    r = _run_child({"case": case, "src": src, "workers": w, "out": str(work / f"out-{case}-{w}")})
                    runs.setdefault((case, w), []).append(r)
                    if log:
                        log(f"  {case:<5} workers={w} pass {p + 1}: {r['wall']:.2f} s wall, {r['cpu']:.2f} CPU s")
        rows = []
        for (case, w), rs in sorted(runs.items()):
            best = min(rs, key=lambda r: r["wall"])
            rows.append({"case": case, "workers": w, "samples": best["samples"], "wall": best["wall"], "cpu": best["cpu"],
                         "samples_per_s": best["samples"] / best["wall"], "cpu_per_sample_us": 1e6 * best["cpu"] / best["samples"],
                         "walls": [r["wall"] for r in rs], "identical": len({r["digest"] for (c, _), v in runs.items()
                                                                             if c == case for r in v}) == 1})
        return {"small": small, "images": images, "passes": passes, "rows": rows, "machine": machine, "load_after": _load()}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average before: {_load()}"


def render_markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md section of :func:`measure_writer`'s figures."""
    rows = results["rows"]
    base = {r["case"]: r for r in rows if r["workers"] == 1}
    what = {"small": f"small: {results['small']:,} x uint8 1x28x28 + int label (`pack npz`)",
            "large": f"large: {results['images']:,} AISegment images, both variants (`pack aisegment`; samples = crops)"}
    lines = [
        "## Writer: packing speed",
        "",
        f"`python -m benchmarks.writer --small {results['small']} --images {results['images']} --passes {results['passes']}` "
        f"({results['machine']}; after: {results.get('load_after', '?')}). Each run a fresh subprocess packing into an empty folder; wall time from making the "
        "source to the manifest (imports excluded), CPU seconds of the process and its workers; best of the passes.",
        "",
        "| case | workers | samples | wall s | samples/s | CPU s (workers included) | CPU µs per sample | speed-up vs 1 worker | same bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        b = base.get(r["case"])
        speed = f"{b['wall'] / r['wall']:.2f}x" if b else "–"
        lines.append(f"| {what[r['case']]} | {r['workers']} | {r['samples']:,} | {r['wall']:.2f} | {r['samples_per_s']:,.0f} | "
                     f"{r['cpu']:.2f} | {r['cpu_per_sample_us']:,.0f} | {speed} | {'yes' if r['identical'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.writer", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=20_000, help="small samples (0 skips the case)")
    p.add_argument("--images", type=int, default=300, help="AISegment images for the large case (0 skips it)")
    p.add_argument("--passes", type=int, default=2, help="passes per configuration, best kept")
    p.add_argument("--work", type=Path, help="folder for the source data and outputs (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(RESULT_TAG + json.dumps(child(json.loads(a.child))))
        return 0
    results = measure_writer(a.work, a.small, a.images, a.passes, log=lambda m: print(m, file=sys.stderr))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    print(render_markdown(results))
    return 0 if all(r["identical"] for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
