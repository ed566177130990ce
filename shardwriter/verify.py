"""Check and describe dataset folders: ``ai8x-shards verify`` and ``ai8x-shards info``.

verify reads every byte: each shard's size and sha256 against the manifest, every tar
header and record decoded and checked against the manifest's schema, each index file
against the index rebuilt from its shard. It reports every problem found, each naming
the shard (and sample or byte offset), rather than stopping at the first.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from . import format as fmt


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check ``DIR/manifest.json``; :class:`FormatError` names what is wrong."""
    path = Path(directory) / fmt.MANIFEST_NAME
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise fmt.FormatError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    return fmt.parse_manifest(buf, str(path))


def verify(directory: str | Path) -> list[str]:
    """Return a list of problems (empty when the dataset is sound)."""
    directory = Path(directory)
    try:
        m = load_manifest(directory)
    except fmt.FormatError as exc:
        return [str(exc)]
    problems: list[str] = []
    for info in m["splits"].values():
        for shard in info["shards"]:
            problems += _verify_shard(directory, m, shard)
    return problems


def _verify_shard(directory: Path, m: dict[str, Any], shard: dict[str, Any]) -> list[str]:
    name = shard["file"]
    path = directory / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [f"{name}: missing or unreadable ({exc.strerror or exc})"]
    problems = []
    if len(data) != shard["bytes"]:
        problems.append(f"{name}: {len(data)} bytes, manifest says {shard['bytes']} (truncated or altered)")
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        problems.append(f"{name}: sha256 mismatch (shard altered or corrupt)")
    shape = list(m["input_shape"])
    kind = m["target"]["kind"]
    tshape = m["target"].get("shape")
    k = len(m["classes"])
    rows = []
    count = 0
    try:
        for member in fmt.iter_tar_members(io.BytesIO(data), name):
            key = fmt.member_key(member.name, f"{name} at byte {member.header_offset}")
            where = f"{name} sample {key} (byte {member.header_offset})"
            rec = fmt.decode_record(member.payload, where)
            count += 1
            if list(rec.x.shape) != shape:
                problems.append(f"{where}: input shape {list(rec.x.shape)}, manifest says {shape}")
            if rec.target_kind != kind:
                problems.append(f"{where}: target kind {rec.target_kind}, manifest says {kind}")
            elif kind == "class" and not 0 <= int(rec.y) < k:  # type: ignore[arg-type]
                problems.append(f"{where}: label {rec.y} out of range ({k} classes)")
            elif kind != "class" and tshape is not None and list(np.shape(rec.y)) != list(tshape):
                problems.append(f"{where}: target shape {list(np.shape(rec.y))}, manifest says {tshape}")
            enc = fmt.encode_record(rec.key, rec.x, rec.target_kind, rec.y, rec.source)
            rows.append(fmt.index_row(member.offset, enc))
    except fmt.FormatError as exc:
        problems.append(str(exc))
        return problems
    if count != shard["count"]:
        problems.append(f"{name}: holds {count} samples, manifest says {shard['count']}")
    idx_path = directory / shard["index"]["file"]
    try:
        stored = fmt.decode_index(idx_path.read_bytes(), str(idx_path.name))
    except OSError:
        problems.append(f"{idx_path.name}: index missing (rebuild it with: ai8x-shards reindex {directory})")
        return problems
    except fmt.FormatError as exc:
        problems.append(str(exc))
        return problems
    if not np.array_equal(stored, np.array(rows, dtype=fmt.INDEX_DTYPE)):
        problems.append(f"{idx_path.name}: does not match its shard (rebuild it with: ai8x-shards reindex {directory})")
    return problems


def reindex(directory: str | Path) -> list[str]:
    """Rebuild every missing or stale index from its shard; returns the files rewritten."""
    from .writer import write_atomic

    directory = Path(directory)
    m = load_manifest(directory)
    written = []
    for info in m["splits"].values():
        for shard in info["shards"]:
            with open(directory / shard["file"], "rb") as f:
                rows = fmt.build_index(f, shard["file"])
            buf = fmt.encode_index(rows)
            idx = directory / shard["index"]["file"]
            if not idx.exists() or idx.read_bytes() != buf:
                write_atomic(idx, buf)
                written.append(idx.name)
    return written


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def info(directory: str | Path) -> str:
    """A readable summary of a dataset folder."""
    m = load_manifest(directory)
    classes = m["classes"]
    lines = [
        f"dataset   {m.get('name', '')}" + (f" ({m['variant']})" if m.get("variant") else ""),
        f"format    {fmt.FORMAT_NAME} v{m['format_version']} ({m.get('created_by', '?')})",
        f"input     uint8 {tuple(m['input_shape'])}",
        *(f"  {k:<14} {v}" for k, v in m.get("preprocessing", {}).items()),
        f"target    {m['target']['kind']}" + (f" {tuple(m['target']['shape'])}" if m['target'].get('shape') else ""),
        f"classes   {len(classes)}: {', '.join(map(str, classes[:12]))}{' ...' if len(classes) > 12 else ''}",
    ]
    for split, s in m["splits"].items():
        total = sum(sh["bytes"] for sh in s["shards"])
        lines.append(f"{split:<9} {s['count']} samples in {len(s['shards'])} shard(s), {_size(total)}")
        if "class_histogram" in s:
            lines.append(f"{'':<9} histogram {s['class_histogram']}  weights {s['class_weights']}")
    sk = m.get("skipped", {})
    lines.append(f"skipped   {sk.get('count', 0)} bad input(s)" + "".join(f"\n          {r['name']}: {r['reason']}" for r in sk.get("inputs", [])[:10]))
    return "\n".join(lines)
