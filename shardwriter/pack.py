"""Pack a source into shard dataset folders: check, plan, write in workers or parts, assemble.

:func:`pack` runs one job, in this order, and does nothing until every check has passed:

1. **Settings and inputs.** The options are checked (:class:`~.errors.SettingsError`)
   and the source is made, which checks everything it was told against the data (see
   :mod:`shardwriter.sources`).
2. **Plan** (:mod:`shardwriter.plan`): every split's items in write order (a seeded
   shuffle by default), cut into shards whose bytes are known in advance.
3. **OUT.** A lock on OUT (:mod:`shardwriter.lock`); then, under a short folder-wide
   lock (the parts of a ``--part`` job start side by side), what OUT holds decides: the
   same dataset (same fingerprint) is left alone ("nothing to do"); an interrupted job
   of the same inputs and options is resumed; anything else of ours is refused unless
   ``overwrite``, naming what changed.
4. **Work** (:mod:`shardwriter.work`): each worker process writes whole shards, or pieces
   of shards at their planned offsets, by itself; the main process only records what is
   done in the job's journal (:mod:`shardwriter.job`).
5. **Assemble**: shards renamed to their final names, manifests last. With
   ``part=(K, N)`` only every N-th shard is written (from the K-th) and assembling waits
   for :func:`merge`, once all N parts are in one folder.

The bytes depend only on the inputs and the options, never on ``workers``, ``part``, or
where a run was killed: every shard's place, keys and bytes follow from the plan.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import json
import multiprocessing as mp
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from . import format as fmt
from .errors import FormatError, PackError, SettingsError
from .job import (
    JOURNAL_PREFIX,
    Journal,
    PackJob,
    assemble,
    final_fingerprint,
    journal_line,
    journal_name,
    read_journal,
    sealed_record,
    shard_keys,
    write_atomic_named,
)
from .lock import LOCK_PREFIX, OutLock, deciding, held, lock_name
from .plan import Plan, ShardPlan, make_plan
from .sources.base import OutputSpec, Source
from .work import Context, PieceTask, init_worker, make_context, piece_in_worker, run_piece, run_seal, seal_in_worker
from .writer import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, Segment, _named

#: The job journal of a whole (not ``--part``) pack.
JOB_FILE = JOURNAL_PREFIX
DEFAULT_SEED = 0
#: A shard is cut into pieces for balance only down to pieces of about this many bytes.
MIN_PIECE_BYTES = 4 << 20

_OURS = re.compile(
    r"^(manifest\.json|\.manifest\.json\.tmp"
    r"|\.?(train|test|val)-\d{6}\.(tar|idx)(\.tmp)?(\.rebuild\.tmp)?"
    r"|\.ai8x-shards-job(-\d+-of-\d+)?(\.json)?(\.tmp)?|\.\.ai8x-shards-job(-\d+-of-\d+)?(\.json)?\.tmp"
    r"|\.ai8x-shards-lock(-\d+-of-\d+)?)$"
)


def our_files(directory: Path) -> list[Path]:
    """Files in ``directory`` that this package writes (never anything else)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and _OURS.match(p.name))


@dataclass(frozen=True)
class Settings:
    """The writer's own options, checked: a wrong one is a SettingsError before any work."""

    workers: int = 1
    max_count: int = DEFAULT_MAX_COUNT
    max_bytes: int = DEFAULT_MAX_BYTES
    skip_bad: bool = False
    shuffle: bool = True
    seed: int = DEFAULT_SEED
    part: tuple[int, int] = (1, 1)
    checksum: bool = False

    def __post_init__(self) -> None:
        for flag, v in (("--workers", self.workers), ("--max-count", self.max_count), ("--max-bytes", self.max_bytes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"{flag} {v!r}: give a whole number of at least 1")
        if self.max_bytes < 2 * fmt.BLOCK + len(fmt.TAR_END):
            raise SettingsError(f"--max-bytes {self.max_bytes}: a shard takes at least {2 * fmt.BLOCK + len(fmt.TAR_END)} bytes")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= fmt.MAX_SEED:
            raise SettingsError(f"--seed {self.seed!r}: a shuffle seed is a whole number in 0..2^64-1")
        k, n = self.part
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise SettingsError(f"--part {k}/{n}: K/N with 1 <= K <= N (part K of N)")


def parse_part(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"2/5"`` -> (2, 5); None -> (1, 1)."""
    if text is None:
        return (1, 1)
    if isinstance(text, tuple):
        return text
    k, sep, n = str(text).partition("/")
    try:
        part = (int(k), int(n))
    except ValueError:
        raise SettingsError(f"--part {text!r}: expected K/N, such as 2/8 (part 2 of 8)") from None
    if not sep or not 1 <= part[0] <= part[1]:
        raise SettingsError(f"--part {text!r}: expected K/N with 1 <= K <= N, such as 2/8")
    return part


class PackResult(list):  # type: ignore[type-arg]
    """The manifests written (a list, as before), and what the run did.

    ``status``: ``"packed"``, ``"resumed"`` (some shards were already done), ``"unchanged"``
    (OUT already held this dataset: nothing written), ``"part"`` (one part of a ``--part``
    job written; run :func:`merge`) or ``"dry-run"``. ``warnings``: what the user should
    know about the inputs; ``lines``: a description (dry runs).
    """

    def __init__(self, manifests: Iterable[fmt.Manifest] = (), *, status: str = "packed", warnings: list[str] | None = None,
                 lines: list[str] | None = None, done_before: int = 0, shards: int = 0) -> None:
        super().__init__(manifests)
        self.status = status
        self.warnings = list(warnings or [])
        self.lines = list(lines or [])
        self.done_before = done_before
        self.shards = shards


# --------------------------------------------------------------------------- sources from anything


def as_source(obj: Any, **options: Any) -> Source:
    """A :class:`Source` from a source, a ``"module:function"``, a map-style dataset or an iterable of samples."""
    if isinstance(obj, Source):
        if options:
            raise SettingsError(f"{', '.join(options)}: options of a dataset; give them to the source itself")
        return obj
    from .sources.dataset import DatasetSource

    if isinstance(obj, (str, os.PathLike)) and ":" not in os.fspath(obj):
        raise SettingsError(f"{obj!r}: expected a source, a 'module:function' string, a map-style dataset or an "
                            "iterable of (x, y) samples (for a folder or an .npz, use the sources in shardwriter.sources)")
    return DatasetSource(os.fspath(obj) if isinstance(obj, os.PathLike) else obj, **options)


# --------------------------------------------------------------------------- the job header


def _skeleton(spec: OutputSpec, source: Source, covers: str, options: dict[str, Any], seed: int | None,
              warnings: list[str]) -> dict[str, Any]:
    t = spec.schema.target
    return {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "created_by": f"ai8x-shards {__version__}",
        "name": spec.name,
        "variant": spec.variant,
        "preprocessing": spec.preprocessing,
        "input_shape": list(spec.input_shape),
        "input_dtype": "uint8",
        "target": {"kind": t.kind, "dtype": t.dtype, "shape": list(t.shape) if t.shape is not None else None},
        "classes": list(spec.classes),
        "regression": t.kind == "regression",
        "source": {"kind": source.kind, "fingerprint": "", "covers": covers, "options": options},
        "shuffle": None if seed is None else {"seed": seed},
        "warnings": warnings,
        "sample_hash": fmt.SAMPLE_HASH,
    }


def _header(source: Source, plan: Plan, settings: Settings, fingerprint: str, covers: str, summary: dict[str, Any],
            options: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    seed = settings.seed if settings.shuffle else None
    return {
        "t": "header",
        "journal": 1,
        "created_by": f"ai8x-shards {__version__}",
        "fingerprint": fingerprint,
        "plan": plan.digest(source),
        "content_checked": bool(source.content_checked),
        "table": plan.table(),
        "part": list(settings.part),
        "options": options,
        "inputs": summary,
        "outputs": [{"subdir": s.subdir, "manifest": _skeleton(s, source, covers, options, seed, warnings)} for s in plan.outputs],
    }


def _same_job(a: dict[str, Any], b: dict[str, Any], part: bool = True) -> bool:
    skip = {"command"} | (set() if part else {"part"})
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def _what_changed(old_options: dict[str, Any], new_options: dict[str, Any], old_inputs: dict[str, Any] | None,
                  new_inputs: dict[str, Any], same_inputs: bool) -> str:
    diffs = [f"{k} was {old_options.get(k)!r}, now {new_options.get(k)!r}"
             for k in sorted(set(old_options) | set(new_options)) if old_options.get(k) != new_options.get(k)]
    if not same_inputs:
        if old_inputs and old_inputs != new_inputs:
            diffs.append(f"the inputs changed ({_describe(old_inputs)} then, {_describe(new_inputs)} now)")
        else:
            diffs.append(f"the inputs changed ({_describe(new_inputs)}; names, sizes, mtimes or contents differ)")
    return "; ".join(diffs) or "the writer's plan differs (another ai8x-shards version?)"


def _describe(summary: dict[str, Any]) -> str:
    if "samples" in summary:
        return f"{summary['samples']} samples"
    return f"{summary.get('files', '?')} files, {summary.get('bytes', '?')} bytes"


# --------------------------------------------------------------------------- pack


def pack(
    source: Any,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    skip_bad: bool = False,
    quiet: bool | None = None,
    overwrite: bool = False,
    shuffle: bool = True,
    seed: int = DEFAULT_SEED,
    part: str | tuple[int, int] | None = None,
    checksum: bool = False,
    dry_run: bool = False,
    command: str = "",
    **dataset_options: Any,
) -> PackResult:
    """Pack ``source`` into ``out``; the manifests of the output folders, as a :class:`PackResult`.

    ``source``: a :class:`~shardwriter.sources.base.Source`, a ``"module:function"``, a
    map-style dataset (or a ``(train, test)`` tuple / ``{split: dataset}`` dict of them) or
    an iterable of ``(x, y)`` samples; ``dataset_options`` (``name``, ``classes``,
    ``input_range``, ``target``, ``data_dir``) go to the
    :class:`~shardwriter.sources.DatasetSource` made for the last three kinds.
    ``workers``: processes writing shards (the same bytes for any number). ``shuffle``,
    ``seed``: the write-time shuffle. ``part``: ``(K, N)`` or ``"K/N"``, write part K of N
    (then :func:`merge`). ``checksum``: the fingerprint covers file contents, not only
    names, sizes and mtimes. ``dry_run``: plan and describe, write nothing.

    Raises :class:`SettingsError` for a wrong option (before any work), :class:`PackError`
    on bad input (naming it) unless ``skip_bad``, when OUT holds something else (unless
    ``overwrite``) or another pack holds OUT, and :class:`StorageError` naming the path
    when a file cannot be written. ``quiet=None`` shows a progress bar only on a terminal.
    """
    settings = Settings(workers, max_count, max_bytes, bool(skip_bad), bool(shuffle), seed, parse_part(part), bool(checksum))
    src = as_source(source, **dataset_options)
    from .storage.locations import is_url

    remote = is_url(out)
    if remote and not dry_run:
        raise SettingsError(f"{out}: pack writes a local folder; for a bucket use shardwriter.storage.staged_output (the CLI does)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{out}: exists and is not a folder; give a folder for the dataset")
    specs = src.outputs()
    for s in specs:
        if s.subdir and (not re.match(r"^[A-Za-z0-9_.-]+$", s.subdir) or s.subdir in (".", "..")):
            raise SettingsError(f"output {s.name!r}: sub-folder {s.subdir!r} is not a plain folder name")
    dirs = [out / s.subdir if s.subdir else out for s in specs]
    inputs = src.inputs(settings.checksum)
    options = {**src.options(), "max_count": settings.max_count, "max_bytes": settings.max_bytes,
               "shuffle_seed": settings.seed if settings.shuffle else None, "checksum": settings.checksum}
    fingerprint = hashlib.sha256(json.dumps({"kind": src.kind, "format": fmt.FORMAT_VERSION, "options": options,
                                             "inputs": inputs.digest}, sort_keys=True, default=str).encode()).hexdigest()
    plan = make_plan(src, settings.max_count, settings.max_bytes, settings.shuffle, settings.seed)
    warnings = list(src.warnings())
    header = json.loads(json.dumps(_header(src, plan, settings, fingerprint, inputs.covers, inputs.summary, options, warnings),
                                   default=str))  # exactly as the journal gives it back
    header["command"] = command
    k, n = settings.part
    mine = [s for g, s in enumerate(plan.shards()) if g % n == k - 1]
    warnings += [f"split {name} is empty" for name, sp in plan.splits.items() if not sp.items]
    if dry_run:
        return _dry_run(out, dirs, plan, settings, header, mine, warnings, remote)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _named(Path(exc.filename or out), exc, "create the folder") from None
    lock = OutLock(out, settings.part, command or f"pack {src.kind}").acquire()
    journal = Journal(out / journal_name(settings.part))
    try:
        ctx = make_context(src, dirs)
        with deciding(out):
            state = _open_job(out, dirs, header, settings, overwrite, journal, ctx, plan)
        if isinstance(state, PackResult):
            state.warnings = warnings
            return state
        job = state
        done_before = len(job.sealed)
        _work(ctx, job, journal, plan, mine, settings, quiet)
        if settings.part != (1, 1):
            return PackResult(status="part", warnings=warnings, done_before=done_before, shards=len(mine))
        manifests = assemble(out, header, job.sealed)
        journal.close()
        _remove(out / journal_name(settings.part))
        return PackResult(manifests, status="resumed" if done_before or job.pieces else "packed", warnings=warnings,
                          done_before=done_before, shards=len(mine))
    finally:
        journal.close()
        lock.release()


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise _named(path, exc, "remove") from None


# --------------------------------------------------------------------------- what OUT holds


def _manifests(dirs: list[Path]) -> list[fmt.Manifest] | None:
    paths = [d / fmt.MANIFEST_NAME for d in dirs]
    if not all(p.is_file() for p in paths):
        return None
    try:
        return [fmt.parse_manifest(p.read_bytes(), str(p)) for p in paths]
    except FormatError:
        return None
    except OSError as exc:
        raise _named(paths[0], exc, "read") from None


def _intact(d: Path, m: fmt.Manifest) -> str | None:
    for s in m.shards():
        for f in (s, s.index):
            try:
                size = (d / f.file).stat().st_size
            except OSError:
                return f"{d / f.file} is missing"
            if size != f.bytes:
                return f"{d / f.file} has {size} bytes, its manifest says {f.bytes}"
    return None


def _other_journals(out: Path, mine: str) -> list[Path]:
    return sorted(p for p in out.glob(JOURNAL_PREFIX + "*") if p.name != mine and not p.name.endswith(".tmp")
                  and re.match(r"^\.ai8x-shards-job(-\d+-of-\d+)?$", p.name))


def _clean(out: Path, dirs: list[Path]) -> None:
    """Delete every file of ours in OUT and the output folders (locks held by others stop it)."""
    for p in sorted(out.glob(LOCK_PREFIX + "-*")):
        who = held(out, p.name)
        if who:
            raise PackError(f"{out}: a part of a --part pack is being written there ({who}); wait for it, or stop it")
    for d in {out, *dirs}:
        for p in our_files(d):
            if p.name.startswith(LOCK_PREFIX):
                continue
            try:
                p.unlink()
            except OSError as exc:
                raise _named(p, exc, "remove") from None


def _open_job(out: Path, dirs: list[Path], header: dict[str, Any], settings: Settings, overwrite: bool, journal: Journal,
              ctx: Context, plan: Plan) -> PackJob | PackResult:
    """Resume, skip, or start the job, by what OUT holds (see the module docstring)."""
    records, length = read_journal(journal.path)
    whole = settings.part == (1, 1)
    others = _other_journals(out, journal.path.name)
    sibling = False  # other parts of this very job share the folder
    if others:
        foreign = []
        for p in others:
            recs, _ = read_journal(p)
            if not recs or not _same_job(recs[0], header, part=False) or whole or tuple(recs[0]["part"])[1] != settings.part[1]:
                foreign.append(p.name)
        if foreign and not overwrite:
            what = ("the journals of a --part pack" if whole else "journals of another job or of a --part split with another N")
            raise PackError(f"{out} holds {what} ({', '.join(foreign)}); finish those parts and run ai8x-shards merge {out}, "
                            "or pass --overwrite to discard them")
        if foreign:
            _clean(out, dirs)
            records, length = [], 0
        sibling = not foreign
    if records:
        old = records[0]
        if _same_job(old, header):
            job = PackJob(old, records[1:])
            if _resumable(job, settings, ctx, plan, out, overwrite, journal):
                journal.resume(length)
                return job
        elif not overwrite:
            raise PackError(f"{out} holds an interrupted pack of other inputs or options: "
                            f"{_what_changed(old.get('options', {}), header['options'], old.get('inputs'), header['inputs'], old.get('fingerprint') == header['fingerprint'])}; "
                            "pass --overwrite to discard it and start over")
        _clean(out, dirs)
    else:
        manifests = _manifests(dirs)
        if manifests is not None:
            got = _compare_finished(manifests, dirs, header, settings, ctx, plan)
            if got is None:
                return PackResult(manifests, status="unchanged")
            if not overwrite:
                raise PackError(f"{out} already holds a different dataset: {got}; pass --overwrite to replace it, "
                                "or choose another output folder")
            _clean(out, dirs)
        elif not sibling and any(not _uncommitted(p) for d in {out, *dirs} for p in our_files(d)):
            if not overwrite:
                raise PackError(f"{out} already holds a different (or partial) dataset; pass --overwrite to replace it, "
                                "or choose another output folder")
            _clean(out, dirs)
    journal.create(header)
    return PackJob(header)


def _uncommitted(p: Path) -> bool:
    """A lock file, or a job journal never put under its name (a run killed before it began): nothing written."""
    return p.name.startswith(LOCK_PREFIX) or (p.name.startswith("." + JOURNAL_PREFIX) and p.name.endswith(".tmp"))


def _compare_finished(manifests: list[fmt.Manifest], dirs: list[Path], header: dict[str, Any], settings: Settings,
                      ctx: Context, plan: Plan) -> str | None:
    """None when the finished dataset in OUT is the one this job would write; else what differs."""
    m = manifests[0]
    options = header["options"]
    if any(x.source_options != options for x in manifests) or m.source_kind != ctx.source.kind:
        return _what_changed(dict(m.source_options), options, None, header["inputs"], True)
    if header["content_checked"]:
        fp = final_fingerprint(header, _check_all(ctx, plan, settings))
    else:
        fp = header["fingerprint"]
    if any(x.fingerprint != fp for x in manifests):
        return _what_changed(dict(m.source_options), options, None, header["inputs"], False)
    for x, d in zip(manifests, dirs):
        why = _intact(d, x)
        if why:
            return f"its files are damaged ({why}; ai8x-shards verify {d} lists every problem)"
    if any(x.skipped for x in manifests) and not settings.skip_bad:
        raise PackError(f"{dirs[0]}: the dataset there skipped {len(m.skipped)} bad input(s) (packed with --skip-bad); "
                        "pass --skip-bad to accept it as it is, or fix the inputs and pass --overwrite")
    return None


def _resumable(job: PackJob, settings: Settings, ctx: Context, plan: Plan, out: Path, overwrite: bool,
               journal: Journal) -> bool:
    """Whether an interrupted job resumes: its files are there and (content-checked) its samples unchanged.

    False (start over) only with ``overwrite``; without it, a job that cannot resume raises.
    """
    recorded = [r for rs in job.pieces.values() for r in rs] + list(job.sealed.values())
    if not settings.skip_bad and any(r["skipped"] for r in recorded):
        n = sum(len(r["skipped"]) for r in recorded)
        raise PackError(f"{out}: the interrupted pack skipped {n} bad input(s) (it ran with --skip-bad); pass --skip-bad "
                        "again to resume it, or fix the inputs and pass --overwrite")
    for (split, number), r in job.sealed.items():
        for o, d in enumerate(ctx.dirs):
            tmp = d / f".{fmt.shard_name(split, number)}.tmp"
            if r["outputs"][o]["count"] and tmp.exists() and tmp.stat().st_size != r["outputs"][o]["bytes"]:
                raise PackError(f"{tmp}: recorded as complete in {journal.path} but changed since; pass --overwrite to start over")
    if not job.header["content_checked"] or not recorded:
        return True
    changed = _recheck(ctx, job, plan, settings)
    if changed and not overwrite:
        raise PackError(f"{out} holds an interrupted pack whose samples have changed since ({changed}); "
                        "pass --overwrite to discard it and start over")
    return not changed


def _recheck(ctx: Context, job: PackJob, plan: Plan, settings: Settings) -> str | None:
    """Read again the samples of every recorded piece and shard; the first that differs, or None."""
    tasks, want = [], []
    for (split, number), r in job.sealed.items():
        sh = plan.shard(split, number)
        tasks.append(_task(plan, sh, sh.start, sh.stop, check=True))
        want.append((r["digest"], f"{split} shard {number}"))
    for (split, number), rs in job.pieces.items():
        sh = plan.shard(split, number)
        for r in rs:
            tasks.append(_task(plan, sh, r["start"], r["stop"], check=True))
            want.append((r["digest"], f"{split} shard {number} items {r['start']}:{r['stop']}"))
    got = _execute_checks(ctx, tasks, settings)
    for (digest, where), g in zip(want, got):
        if g != digest:
            return where
    return None


def _check_all(ctx: Context, plan: Plan, settings: Settings) -> dict[tuple[str, int], dict[str, Any]]:
    """Every shard's content digest, from reading every sample again (nothing written)."""
    tasks = [_task(plan, sh, sh.start, sh.stop, check=True) for sh in plan.shards()]
    got = _execute_checks(ctx, tasks, settings)
    return {(t.split, t.shard): {"digest": g} for t, g in zip(tasks, got)}


def _execute_checks(ctx: Context, tasks: list[PieceTask], settings: Settings) -> list[str]:
    results: dict[int, str] = {}

    def done(i: int, r: dict[str, Any]) -> None:
        results[i] = r["digest"]

    _execute(ctx, [(("check", i), t) for i, t in enumerate(tasks)], settings.workers, lambda tag, r: done(tag[1], r) or [],
             None, digest=True)
    return [results[i] for i in range(len(tasks))]


# --------------------------------------------------------------------------- the work


def _task(plan: Plan, shard: ShardPlan, start: int, stop: int, check: bool = False) -> PieceTask:
    sp = plan.splits[shard.split]
    n_out = len(plan.outputs)
    offsets = tuple(plan.piece_offset(shard, start, o) for o in range(n_out))
    planned = tuple(plan.piece_offset(shard, stop, o) - offsets[o] for o in range(n_out))
    row = plan.first_sample(shard, start)
    return PieceTask(shard.split, shard.number, start, stop, sp.items[start:stop], sp.names[start:stop], shard.first + row, row,
                     offsets, planned,
                     sum(sp.per_item[start:stop]), whole=(start, stop) == (shard.start, shard.stop), check=check)


def balance(ranges: list[tuple[Any, int, int]], workers: int, min_items: int, slack: float = 1.05) -> list[tuple[Any, int, int]]:
    """Cut ``(key, start, stop)`` ranges until a largest-first schedule on ``workers`` is within ``slack`` of even.

    Only the largest piece is ever cut (in two), and never below ``min_items`` items, so
    shards stay whole where they can (a whole shard is finished by its writer; pieces need
    a sealing pass). The pieces only decide who writes which bytes, never the bytes.
    """
    if workers <= 1:
        return list(ranges)
    out = list(ranges)
    total = sum(b - a for _, a, b in out)
    for _ in range(8 * workers):
        loads = [0] * workers
        for size in sorted((b - a for _, a, b in out), reverse=True):
            heapq.heapreplace(loads, loads[0] + size)
        if max(loads) <= slack * total / workers:
            break
        big = max(range(len(out)), key=lambda i: out[i][2] - out[i][1])
        key, a, b = out[big]
        if b - a < 2 * min_items:
            break
        mid = a + (b - a) // 2
        out[big : big + 1] = [(key, a, mid), (key, mid, b)]
    return sorted(out, key=lambda r: (r[0], r[1]))


def _work(ctx: Context, job: PackJob, journal: Journal, plan: Plan, mine: list[ShardPlan], settings: Settings,
          quiet: bool | None) -> None:
    gaps: list[tuple[tuple[str, int], int, int]] = []
    unsealed: list[tuple[str, int]] = []
    for sh in mine:
        key = (sh.split, sh.number)
        if key in job.sealed:
            continue
        unsealed.append(key)
        pos = sh.start
        for r in job.done_pieces(*key):
            if r["start"] > pos:
                gaps.append((key, pos, r["start"]))
            pos = max(pos, r["stop"])
        if pos < sh.stop:
            gaps.append((key, pos, sh.stop))
    item_bytes = max(1, sum(int(off[-1]) for sp in plan.splits.values() for off in sp.offsets)
                     // max(1, sum(len(sp.items) for sp in plan.splits.values())))  # every output's bytes
    ranges = balance(gaps, settings.workers, max(1, MIN_PIECE_BYTES // item_bytes)) if plan.exact else gaps
    pending: dict[tuple[str, int], set[tuple[int, int]]] = {key: set() for key in unsealed}
    tasks: list[tuple[Any, PieceTask | None]] = []
    for key, a, b in ranges:
        pending[key].add((a, b))
        tasks.append(((key, (a, b)), _task(plan, plan.shard(*key), a, b)))
    for key in unsealed:
        if not pending[key]:  # every piece done, not sealed yet
            tasks.append((("seal", key), None))
    tasks.sort(key=lambda t: -(t[1].stop - t[1].start) if t[1] is not None else 0)  # largest first
    todo_items = sum(b - a for _, a, b in ranges)
    _drop_unrecorded(ctx, job, mine)
    bar = _progress(todo_items, quiet)

    def segments(key: tuple[str, int]) -> tuple[list[list[Segment]], int]:
        sh = plan.shard(*key)
        rs = job.done_pieces(*key)
        segs = [[Segment(plan.piece_offset(sh, r["start"], o), r["outputs"][o]["bytes"], plan.first_sample(sh, r["start"]),
                         r["outputs"][o]["count"]) for r in rs] for o in range(len(plan.outputs))]
        return segs, sh.first

    def on_result(tag: Any, result: Any) -> list[tuple[Any, Any]]:
        if tag[0] == "seal":
            key = tag[1]
            rec = sealed_record(key[0], key[1], job.done_pieces(*key), result)
            journal.append(rec)
            job.record(rec)
            return []
        key, _ = tag
        if result["skipped"] and not settings.skip_bad:
            name, reason = result["skipped"][0]
            raise PackError(f"bad input {name}: {reason} (pass --skip-bad to skip and record such inputs)")
        if result["whole"]:
            rec = {"t": "sealed", "split": key[0], "shard": key[1], "skipped": result["skipped"], "digest": result["digest"],
                   "outputs": result["outputs"]}
            journal.append(rec)
            job.record(rec)
            return []
        rec = {"t": "piece", **{k: result[k] for k in ("split", "shard", "start", "stop", "outputs", "skipped", "digest")}}
        journal.append(rec)
        job.record(rec)
        pending[key].discard((result["start"], result["stop"]))
        if not pending[key]:
            segs, first = segments(key)
            return [(("seal", key), (key[0], key[1], segs, first))]
        return []

    initial = []
    for tag, task in tasks:
        if task is None:
            segs, first = segments(tag[1])
            initial.append((tag, (tag[1][0], tag[1][1], segs, first)))
        else:
            initial.append((tag, task))
    try:
        _execute(ctx, initial, settings.workers, on_result, bar, digest=bool(job.header["content_checked"]))
    except BaseException:
        _drop_unrecorded(ctx, job, mine)
        raise
    finally:
        if bar is not None:
            bar.close()


def _drop_unrecorded(ctx: Context, job: PackJob, mine: list[ShardPlan]) -> None:
    """Delete temporary files of shards the journal records nothing of (a failed run frees their space)."""
    for sh in mine:
        key = (sh.split, sh.number)
        names = [f".{fmt.shard_name(*key)}.tmp", f".{fmt.index_name(fmt.shard_name(*key))}.tmp"]
        if key in job.sealed or key in job.pieces:
            names = []  # resumable: kept
        for d in ctx.dirs:
            for name in [*names, f".{fmt.shard_name(*key)}.tmp.rebuild.tmp", f".{fmt.index_name(fmt.shard_name(*key))}.tmp.rebuild.tmp"]:
                try:
                    (d / name).unlink(missing_ok=True)
                except OSError:
                    pass


def _progress(total: int, quiet: bool | None) -> Any:
    show = sys.stderr.isatty() if quiet is None else not quiet
    if not show or not total:
        return None
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: the workers are then forked from a single-threaded process
    return tqdm(total=total, desc="pack", unit="input", dynamic_ncols=True, file=sys.stderr)


def pool_context() -> Any:
    """The workers' start method: ``fork`` (fast: the job is inherited, not pickled), but never a fork of a
    process running other Python threads (a notebook's, a server's, a DataLoader's queue feeders: a forked
    child could inherit a lock one of them held; Python 3.12+ warns), where ``forkserver`` (or ``spawn``)
    is used instead. The written bytes are the same either way."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and sys.platform != "darwin" and threading.active_count() == 1:
        return mp.get_context("fork")
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _execute(ctx: Context, work: list[tuple[Any, Any]], workers: int, on_result: Callable[[Any, Any], list[tuple[Any, Any]]],
             bar: Any, digest: bool) -> None:
    """Run pieces and seals (``(tag, PieceTask)`` or ``(("seal", key), args)``), in this process or in workers."""
    queue = list(work)
    if workers <= 1 or len(queue) <= 1:
        update = bar.update if bar is not None else None
        ctx.source.prepare_worker()
        while queue:
            tag, arg = queue.pop(0)
            result = run_seal(ctx, *arg) if tag[0] == "seal" else run_piece(ctx, arg, update, digest)
            queue += on_result(tag, result)
        return
    counter = pool_context().Value("q", 0)
    n = min(workers, len(queue))
    seen = 0
    gc.freeze()  # forked workers then share this process's objects without copying them on a collection
    with ProcessPoolExecutor(n, mp_context=pool_context(), initializer=init_worker, initargs=(ctx, counter)) as pool:
        running: dict[Future[Any], Any] = {}

        def submit(tag: Any, arg: Any) -> None:
            f = pool.submit(seal_in_worker, *arg) if tag[0] == "seal" else pool.submit(piece_in_worker, arg, digest)
            running[f] = tag

        for tag, arg in queue:
            submit(tag, arg)
        try:
            while running:
                done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                if bar is not None:
                    value = counter.value
                    bar.update(value - seen)
                    seen = value
                for f in done:
                    tag = running.pop(f)
                    try:
                        result = f.result()
                    except BrokenProcessPool:
                        raise PackError("a worker process died while packing (killed, or out of memory?); run the same "
                                        "command again to resume, with fewer --workers if memory is short") from None
                    for t, a in on_result(tag, result):
                        submit(t, a)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            gc.unfreeze()


# --------------------------------------------------------------------------- dry run


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _dry_run(out: Path, dirs: list[Path], plan: Plan, settings: Settings, header: dict[str, Any], mine: list[ShardPlan],
             warnings: list[str], remote: bool = False) -> PackResult:
    lines = ["dry run: nothing is written"]
    for o, (spec, d) in enumerate(zip(plan.outputs, dirs)):
        t = spec.schema.target
        lines.append(f"{d}: {spec.name}, input uint8 {tuple(spec.input_shape)}, target {t.kind}"
                     f"{' ' + str(tuple(t.shape)) if t.shape else ''}, {len(spec.classes)} classes")
        for name, sp in plan.splits.items():
            nbytes = sum(s.bytes[o] for s in sp.shards)
            lines.append(f"  {name:<6} {sum(sp.per_item)} samples from {len(sp.items)} inputs in {len(sp.shards)} shard(s), "
                         f"{'~' if not plan.exact else ''}{_size(nbytes)}")
    lines.append(f"order     {'shuffled, seed ' + str(settings.seed) if settings.shuffle else 'source order (no shuffle)'}")
    if settings.part != (1, 1):
        lines.append(f"part      {settings.part[0]}/{settings.part[1]}: {len(mine)} of {len(plan.shards())} shards")
    lines.append(f"OUT       {'a bucket location (not examined by a dry run)' if remote else _out_state(out, dirs, header, settings)}")
    lines += [f"warning   {w}" for w in warnings]
    return PackResult(status="dry-run", warnings=warnings, lines=lines, shards=len(mine))


def _out_state(out: Path, dirs: list[Path], header: dict[str, Any], settings: Settings) -> str:
    who = held(out, lock_name(settings.part)) if out.is_dir() else None
    if who:
        return f"another pack is writing there ({who})"
    records, _ = read_journal(out / journal_name(settings.part))
    if records:
        if _same_job(records[0], header):
            job = PackJob(records[0], records[1:])
            return f"an interrupted pack of this dataset: would resume ({len(job.sealed)} shard(s) done)"
        return "an interrupted pack of other inputs or options: would need --overwrite"
    manifests = _manifests(dirs)
    if manifests is not None:
        m = manifests[0]
        if m.source_options != header["options"]:
            return f"a different dataset ({_what_changed(dict(m.source_options), header['options'], None, header['inputs'], True)}): would need --overwrite"
        if header["content_checked"]:
            return "a dataset packed with these options: a run reads every sample to compare"
        if m.fingerprint == header["fingerprint"]:
            return "this dataset already: nothing to do"
        return "a different dataset (the inputs changed): would need --overwrite"
    if any(our_files(d) for d in {out, *dirs}):
        return "a partial or different dataset: would need --overwrite"
    return "empty: would pack"


# --------------------------------------------------------------------------- merge


def merge(out: str | os.PathLike[str]) -> PackResult:
    """Assemble the parts of a ``--part K/N`` job, all present in ``out``: the same dataset as one pack.

    Crash-safe in three steps, each one file operation a re-run can tell from the others: (1) the
    parts' journals are checked and their sealed shards written, atomically, as the journal of
    the same job packed in one run (``.ai8x-shards-job``, part 1/1); (2) the part journals are
    removed; (3) that journal is assembled like a one-run pack's and removed. A merge killed
    anywhere is finished by merging again (or by the one-run ``pack`` command, which resumes
    that journal)."""
    out = Path(out)
    if not out.is_dir():
        raise SettingsError(f"{out}: no such folder; pack with --part K/N into it first, then merge")
    whole = out / journal_name()
    with OutLock(out, None, "merge"):  # taken even when done: it clears the lock file of a merge killed at its end
        paths = sorted(p for p in out.glob(JOURNAL_PREFIX + "-*-of-*") if re.match(r"^\.ai8x-shards-job-\d+-of-\d+$", p.name))
        if not paths and not whole.is_file():
            done = [m for d in [out, *sorted(p for p in out.iterdir() if p.is_dir())] for m in (_manifests([d]) or [])]
            if done:  # merged already (or run twice)
                return PackResult(done, status="unchanged")
            raise SettingsError(f"{out}: no parts to merge (no {JOURNAL_PREFIX}-K-of-N journals); pack with --part K/N "
                                "first, then gather every part's folder here (rsync -a part/ OUT/)")
        for p in sorted(out.glob(LOCK_PREFIX + "-*")):
            who = held(out, p.name)
            if who:
                raise PackError(f"{out}: {p.name[len(LOCK_PREFIX) + 1:].replace('-of-', '/')} is still being packed ({who})")
        jobs = []
        for p in paths:
            records, _ = read_journal(p)
            if not records:
                raise PackError(f"{p}: an empty or damaged job journal; pack that part again")
            jobs.append(PackJob(records[0], records[1:]))
        records, _ = read_journal(whole)
        if records:  # step 1 was done: a merge was killed after it (or a one-run pack was interrupted)
            job = PackJob(records[0], records[1:])
            lacking_shards = [k for k in shard_keys(job.header) if k not in job.sealed]
            if lacking_shards:
                raise PackError(f"{out} holds an interrupted pack ({whole.name}, {len(lacking_shards)} shard(s) to write), "
                                f"not a --part pack to merge; run it again to resume ({job.header.get('command') or 'pack ...'})")
            for j, p in zip(jobs, paths):
                if not _same_job(j.header, job.header, part=False):
                    raise PackError(f"{p}: a part journal of another job beside the merged journal {whole.name}; "
                                    "remove the one that does not belong, then merge again")
        else:
            if not paths:
                raise PackError(f"{whole}: an empty or damaged job journal; pack again (with --overwrite)")
            job = _merged_job(out, jobs, paths)
            write_atomic_named(whole, b"".join(journal_line(r) for r in [job.header, *job.sealed.values()]))
        for p in paths:
            _remove(p)
        manifests = assemble(out, job.header, job.sealed)
        _remove(whole)
        return PackResult(manifests, status="packed", warnings=list(job.header["outputs"][0]["manifest"].get("warnings", [])),
                          shards=len(job.sealed))


def _merged_job(out: Path, jobs: list[PackJob], paths: list[Path]) -> PackJob:
    """The one-run job that the parts' journals add up to (every part present and finished, of one job)."""
    first = jobs[0].header
    n = first["part"][1]
    for j, p in zip(jobs, paths):
        if not _same_job(j.header, first, part=False) or j.header["part"][1] != n:
            raise PackError(f"{p}: part {j.header['part'][0]}/{j.header['part'][1]} was packed from other inputs or "
                            f"options than {paths[0].name} ({_what_changed(first['options'], j.header['options'], first['inputs'], j.header['inputs'], first['fingerprint'] == j.header['fingerprint'])}); "
                            "pack every part with the same command and inputs")
    have = {j.header["part"][0] for j in jobs}
    lacking = [k for k in range(1, n + 1) if k not in have]
    if lacking:
        raise PackError(f"{out}: part(s) {', '.join(f'{k}/{n}' for k in lacking)} missing; run them (pack ... --part K/{n} "
                        f"into this folder, or copy their folders here), then merge again")
    by_part = {j.header["part"][0]: j for j in jobs}
    sealed: dict[tuple[str, int], dict[str, Any]] = {}
    for g, key in enumerate(shard_keys(first)):
        k = g % n + 1
        rec = by_part[k].sealed.get(key)
        if rec is None:
            lacking_shards = [w for h, w in enumerate(shard_keys(first)) if h % n == k - 1 and w not in by_part[k].sealed]
            s, i = lacking_shards[0]
            raise PackError(f"{out}: part {k}/{n} is not finished ({len(lacking_shards)} shard(s) to write, e.g. "
                            f"{fmt.shard_name(s, i)}); run it again ({by_part[k].header.get('command') or f'pack ... --part {k}/{n}'})")
        sealed[key] = rec
    header = {**first, "part": [1, 1], "command": f"ai8x-shards merge {out}"}
    return PackJob(header, list(sealed.values()))


__all__ = ["JOB_FILE", "PackResult", "Settings", "as_source", "merge", "our_files", "pack", "parse_part"]
