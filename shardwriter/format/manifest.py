"""``manifest.json``, parsed once into typed, validated, immutable objects.

:func:`parse_manifest` checks every field's type and range and the relations between
them (shard names and numbering, index names and sizes, counts equal to the sum of the
shards', histograms and weights that follow from each other, shard sizes that can hold
their counts) and returns a :class:`Manifest`. A bad manifest is one
:class:`~shardwriter.errors.FormatError` naming the file and the field. No other module
walks the JSON: they use these objects, and the writer builds its manifest through
:meth:`Manifest.from_json` too, so it can never write one a reader would refuse.

Unknown top-level fields are kept (``extra``) and written back: additive fields keep the
format version (docs/FORMAT.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from ..errors import FormatError
from .index import INDEX_DTYPES, index_size
from .names import FORMAT_NAME, MAX_SPLIT_SAMPLES, SPLITS, index_name, shard_name
from .records import SAMPLE_HASH, RecordLayout, record_layout
from .schema import TARGET_DTYPES, Schema, Target
from .tar import BLOCK, TAR_END

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: write-time shuffle seeds are unsigned 64-bit integers (the XXH3 seed)
MAX_SEED = 2**64 - 1
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_XXH3_RE = re.compile(r"^[0-9a-f]{32}$")
#: The smallest member: a header and one block of payload.
MIN_MEMBER = 2 * BLOCK


def class_weights(histogram: list[int] | tuple[int, ...]) -> list[float]:
    """Inverse-frequency weights ``total / (K * count)``, 0.0 for an absent class."""
    total, k = sum(histogram), len(histogram)
    return [round(total / (k * c), 6) if c else 0.0 for c in histogram]


# --------------------------------------------------------------------------- typed objects


@dataclass(frozen=True)
class FileEntry:
    """A file the manifest vouches for: its name, size and sha256."""

    file: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class ShardEntry(FileEntry):
    """One shard: its file entry, sample count, index file, and where it starts in its split.

    ``xxh3`` (optional, format 2): XXH3-128 of the whole shard, hex; a second digest of the
    same bytes as ``sha256``, ~40x cheaper to compute, which streaming readers check.
    """

    count: int = 0
    index: FileEntry = field(default_factory=lambda: FileEntry("", 0, ""))
    split: str = ""
    number: int = 0  # position among the split's shards
    first: int = 0  # split position of its first sample
    xxh3: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {**super().to_json(), "count": self.count, "index": self.index.to_json()}
        if self.xxh3 is not None:
            d["xxh3"] = self.xxh3
        return d


@dataclass(frozen=True)
class SplitEntry:
    """One split: its shards in order, the sample count, and class statistics."""

    name: str
    count: int
    shards: tuple[ShardEntry, ...]
    class_histogram: tuple[int, ...] | None = None

    @property
    def class_weights(self) -> tuple[float, ...] | None:
        return None if self.class_histogram is None else tuple(class_weights(self.class_histogram))

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"count": self.count, "shards": [s.to_json() for s in self.shards]}
        if self.class_histogram is not None:
            d["class_histogram"] = list(self.class_histogram)
            d["class_weights"] = list(self.class_weights or ())
        return d


@dataclass(frozen=True)
class Skipped:
    """One input skipped as bad at pack time (``--skip-bad``)."""

    split: str
    name: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """A dataset folder's manifest: schema, splits with their shards, provenance."""

    version: int
    schema: Schema
    splits: Mapping[str, SplitEntry]
    name: str = ""
    variant: str = ""
    created_by: str = ""
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    source_kind: str = ""
    fingerprint: str = ""
    skipped: tuple[Skipped, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: what :attr:`fingerprint` covers, in words (e.g. "names, sizes and mtime_ns of 69 files")
    source_covers: str = ""
    #: the pack options that shaped the data (shard limits, shuffle seed, source options)
    source_options: Mapping[str, Any] = field(default_factory=dict)
    #: the write-time shuffle seed; None: samples in source order (and in manifests before the field)
    shuffle_seed: int | None = None
    #: what the writer reported about the inputs (empty class folders, files that are not images, ...)
    warnings: tuple[str, ...] = ()

    # -- derived facts every reader needs, computed in one place
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.schema.input_shape

    @property
    def target(self) -> Target:
        return self.schema.target

    @property
    def classes(self) -> tuple[Any, ...]:
        return self.schema.classes

    @property
    def regression(self) -> bool:
        return self.schema.target.kind == "regression"

    @property
    def hashed(self) -> bool:
        """Index rows carry per-sample hashes (format 2)."""
        return self.version >= 2

    @property
    def fold_ratio(self) -> int:
        r = self.preprocessing.get("fold_ratio", 1)
        return r if type(r) is int and r >= 1 else 1

    @cached_property
    def layout(self) -> RecordLayout:
        return record_layout(self.schema)

    @cached_property
    def _files(self) -> dict[str, FileEntry]:
        out: dict[str, FileEntry] = {}
        for s in self.shards():
            out[s.file], out[s.index.file] = s, s.index
        return out

    def split(self, name: str, where: str = "") -> SplitEntry:
        """Split ``name``; a FormatError naming the splits there are when it is absent."""
        if name not in self.splits:
            raise FormatError(f"{where or self.name or 'dataset'}: no split {name!r}; it has {', '.join(self.splits) or 'none'}")
        return self.splits[name]

    def shards(self) -> Iterator[ShardEntry]:
        """Every shard of every split, in manifest order."""
        for s in self.splits.values():
            yield from s.shards

    def entry(self, file: str) -> FileEntry | None:
        """The entry of shard or index file ``file``, or None when the manifest does not list it."""
        return self._files.get(file)

    def to_json(self) -> dict[str, Any]:
        t = self.schema.target
        d: dict[str, Any] = dict(self.extra)
        d.update({
            "format": FORMAT_NAME,
            "format_version": self.version,
            "created_by": self.created_by,
            "name": self.name,
            "variant": self.variant,
            "preprocessing": dict(self.preprocessing),
            "input_shape": list(self.schema.input_shape),
            "input_dtype": "uint8",
            "target": {"kind": t.kind, "dtype": t.dtype, "shape": list(t.shape) if t.shape is not None else None},
            "classes": list(self.schema.classes),
            "regression": self.regression,
            "splits": {name: s.to_json() for name, s in self.splits.items()},
            "source": {"kind": self.source_kind, "fingerprint": self.fingerprint, "covers": self.source_covers,
                       "options": dict(self.source_options)},
            "shuffle": None if self.shuffle_seed is None else {"seed": self.shuffle_seed},
            "warnings": list(self.warnings),
            "skipped": {"count": len(self.skipped), "inputs": [{"split": r.split, "name": r.name, "reason": r.reason} for r in self.skipped]},
        })
        if self.version >= 2:
            d["sample_hash"] = SAMPLE_HASH
        return d

    def dump(self) -> bytes:
        return dump_manifest(self.to_json())

    def with_splits(self, splits: Mapping[str, SplitEntry], version: int | None = None) -> Manifest:
        """The same manifest with other splits (and format version): re-validated."""
        m = replace(self, splits=dict(splits), version=self.version if version is None else version)
        return parse_manifest(m.dump(), "manifest")


def dump_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical manifest bytes (sorted keys, fixed indentation, trailing newline)."""
    return (json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


# --------------------------------------------------------------------------- parsing


class _Fields:
    """Typed field access on one JSON object; every error names the file and the field path."""

    def __init__(self, obj: Any, where: str, path: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: {path or 'the manifest'} must be a JSON object, not {_kind(obj)}")
        self.obj, self.where, self.path = obj, where, path

    def fail(self, name: str, what: str) -> FormatError:
        return FormatError(f"{self.where}: field {self._at(name)} {what}")

    def _at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self.obj:
            if default is ...:
                raise self.fail(name, "is missing")
            return default
        v = self.obj[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) and bool not in kinds:
            raise self.fail(name, f"must be {_names(kinds)}, not a boolean")
        if not isinstance(v, kinds):
            raise self.fail(name, f"must be {_names(kinds)}, not {_kind(v)}")
        return v

    def int(self, name: str, lo: int = 0, hi: int | None = None, default: Any = ...) -> int:
        v = self.get(name, int, default)
        if v is default and default is not ...:
            return v
        if v < lo or (hi is not None and v > hi):
            raise self.fail(name, f"is {v}; it must lie in {lo}..{hi if hi is not None else 'inf'}")
        return v

    def sha(self, name: str) -> str:
        v = self.get(name, str)
        if not _SHA_RE.match(v):
            raise self.fail(name, f"{v[:80]!r} is not a sha256 (64 lowercase hex digits)")
        return v

    def sub(self, name: str, default: Any = ...) -> _Fields:
        return _Fields(self.get(name, dict, default if default is ... else dict(default)), self.where, self._at(name))

    def items(self, name: str) -> list[Any]:
        return self.get(name, list)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object",
                        bool: "a boolean", type(None): "null"}.get(k, k.__name__) for k in kinds)


def parse_manifest(buf: bytes, where: str) -> Manifest:
    """Parse and check a manifest; ``where`` names it in errors."""
    try:
        obj = json.loads(buf)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{where}: not valid JSON ({exc})") from None
    return manifest_from_json(obj, where)


def manifest_from_json(obj: Any, where: str) -> Manifest:
    """A :class:`Manifest` from decoded JSON, every field checked (see the module docstring)."""
    top = _Fields(obj, where, "")
    if obj.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not an {FORMAT_NAME} manifest (field format is {obj.get('format')!r})")
    version = top.get("format_version", int)
    if version > FORMAT_VERSION:
        raise FormatError(f"{where}: format version {version}; this ai8x-shards reads up to {FORMAT_VERSION} (upgrade the package)")
    if version not in READABLE_VERSIONS:
        raise FormatError(f"{where}: format version {version} does not exist (known: {', '.join(map(str, READABLE_VERSIONS))})")
    if version >= 2 and top.get("sample_hash", str) != SAMPLE_HASH:
        raise top.fail("sample_hash", f"is {obj['sample_hash']!r}; format {version} uses {SAMPLE_HASH!r}")
    if top.get("input_dtype", str, "uint8") != "uint8":
        raise top.fail("input_dtype", f"is {obj['input_dtype']!r}; inputs are always uint8")

    t = top.sub("target")
    kind = t.get("kind", str)
    if kind not in TARGET_DTYPES:
        raise t.fail("kind", f"is {kind!r}; expected one of {', '.join(TARGET_DTYPES)}")
    if t.get("dtype", str, TARGET_DTYPES[kind]) != TARGET_DTYPES[kind]:
        raise t.fail("dtype", f"is {t.obj['dtype']!r}; a {kind} target is {TARGET_DTYPES[kind]}")
    tshape = t.get("shape", (list, type(None)), None)
    classes = top.items("classes")
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
        raise top.fail("classes", "must be a list of strings or integers")
    try:
        schema = Schema(tuple(top.get("input_shape", list)), Target(kind, None if tshape is None else tuple(tshape)), tuple(classes))
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if top.get("regression", bool, kind == "regression") != (kind == "regression"):
        raise top.fail("regression", f"is {obj['regression']}, but the target kind is {kind}")

    splits_obj = top.sub("splits")
    splits: dict[str, SplitEntry] = {}
    for name in splits_obj.obj:
        if name not in SPLITS:
            raise splits_obj.fail(name, f"is not a split (expected {', '.join(SPLITS)})")
        splits[name] = _split(splits_obj.sub(name), name, schema, version)

    src = top.sub("source", {})
    sk = top.sub("skipped", {"count": 0, "inputs": []})
    skipped = []
    for i, r in enumerate(sk.items("inputs") if "inputs" in sk.obj else []):
        f = _Fields(r, where, f"skipped.inputs[{i}]")
        skipped.append(Skipped(f.get("split", str), f.get("name", str), f.get("reason", str)))
    if sk.int("count", default=len(skipped)) != len(skipped):
        raise sk.fail("count", f"is {sk.obj['count']}, but {len(skipped)} inputs are listed")
    shuffle = top.get("shuffle", (dict, type(None)), None)
    seed = None
    if shuffle is not None:
        seed = _Fields(shuffle, where, "shuffle").int("seed", 0, MAX_SEED)
    warns = top.get("warnings", list, [])
    if not all(isinstance(w, str) for w in warns):
        raise top.fail("warnings", "must be a list of strings")
    known = {"format", "format_version", "sample_hash", "input_dtype", "target", "classes", "input_shape", "regression",
             "splits", "source", "skipped", "created_by", "name", "variant", "preprocessing", "shuffle", "warnings"}
    return Manifest(
        version=version,
        schema=schema,
        splits=splits,
        name=top.get("name", str, ""),
        variant=top.get("variant", str, ""),
        created_by=top.get("created_by", str, ""),
        preprocessing=top.get("preprocessing", dict, {}),
        source_kind=src.get("kind", str, ""),
        fingerprint=src.get("fingerprint", str, ""),
        skipped=tuple(skipped),
        extra={k: v for k, v in obj.items() if k not in known},
        source_covers=src.get("covers", str, ""),
        source_options=src.get("options", dict, {}),
        shuffle_seed=seed,
        warnings=tuple(warns),
    )


def _split(f: _Fields, name: str, schema: Schema, version: int) -> SplitEntry:
    count = f.int("count", 0, MAX_SPLIT_SAMPLES - 1)
    shards = []
    first = 0
    for i, raw in enumerate(f.items("shards")):
        s = _Fields(raw, f.where, f"{f.path}.shards[{i}]")
        file = s.get("file", str)
        if file != shard_name(name, i):
            raise s.fail("file", f"is {file[:80]!r}; shard {i} of split {name} is {shard_name(name, i)}")
        n = s.int("count", 1, MAX_SPLIT_SAMPLES - 1)
        size = s.int("bytes", 0)
        if size % BLOCK or size < n * MIN_MEMBER + len(TAR_END):
            raise s.fail("bytes", f"is {size}: a shard of {n} samples is a whole number of 512-byte blocks, at least {n * MIN_MEMBER + len(TAR_END)}")
        ix = s.sub("index")
        ixfile = ix.get("file", str)
        if ixfile != index_name(file):
            raise ix.fail("file", f"is {ixfile[:80]!r}; the index of {file} is {index_name(file)}")
        ixbytes = ix.int("bytes", 0)
        if ixbytes != index_size(n, version):
            raise ix.fail("bytes", f"is {ixbytes}; a format-{version} index of {n} rows is {index_size(n, version)} bytes")
        xxh3 = s.get("xxh3", str, None)
        if xxh3 is not None and not _XXH3_RE.match(xxh3):
            raise s.fail("xxh3", f"{xxh3[:80]!r} is not an XXH3-128 digest (32 lowercase hex digits)")
        shards.append(ShardEntry(file, size, s.sha("sha256"), count=n, index=FileEntry(ixfile, ixbytes, ix.sha("sha256")),
                                 split=name, number=i, first=first, xxh3=xxh3))
        first += n
    if first != count:
        raise f.fail("count", f"is {count}, but its shards hold {first} samples")
    hist = None
    if schema.target.kind != "regression":
        raw_hist = f.get("class_histogram", list, None)
        if raw_hist is not None:
            if len(raw_hist) != schema.num_classes or not all(type(c) is int and c >= 0 for c in raw_hist):
                raise f.fail("class_histogram", f"must be {schema.num_classes} non-negative integers")
            per = 1 if schema.target.kind == "class" else _elements(schema)
            if sum(raw_hist) != count * per:
                raise f.fail("class_histogram", f"sums to {sum(raw_hist)}; {count} samples of {per} label(s) each make {count * per}")
            hist = tuple(raw_hist)
            weights = f.get("class_weights", list, None)
            if weights is not None and [float(w) if type(w) in (int, float) else w for w in weights] != class_weights(hist):
                raise f.fail("class_weights", "do not follow from class_histogram (total / (K * count)); the manifest was edited or damaged")
    return SplitEntry(name, count, tuple(shards), hist)


def _elements(schema: Schema) -> int:
    n = 1
    for d in schema.target.served_shape:
        n *= d
    return n


def row_bytes(version: int) -> int:
    """Bytes per index row in format ``version``."""
    return INDEX_DTYPES[version].itemsize
