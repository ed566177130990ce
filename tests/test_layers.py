"""Layers and import weight: shardwriter stands alone; each command imports only what it uses."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_npz

import ai8x_shards
import loaders
import shardwriter
from shardwriter import pack
from shardwriter.sources import NpzSource

REPO = Path(__file__).resolve().parent.parent
WATCHED = ("torch", "loaders", "benchmarks", "ai8x_shards.benchmarks", "webdataset", "PIL")


def child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def loaded(code: str) -> set[str]:
    """Which of WATCHED (top-level or dotted) a fresh interpreter holds after ``code``."""
    return set(child(code + f"""
import json, sys
print(json.dumps(sorted(w for w in {WATCHED!r} if w in sys.modules)))
"""))


def test_shardwriter_imports_nothing_above_it_and_no_torch() -> None:
    """Every module under shardwriter imports with loaders, benchmarks, ai8x_shards and torch blocked."""
    got = child("""
import importlib, json, pkgutil, sys
for name in ("loaders", "benchmarks", "ai8x_shards", "torch", "torchvision"):
    sys.modules[name] = None  # `import name` now raises ImportError
import shardwriter
names = ["shardwriter"] + [m.name for m in pkgutil.walk_packages(shardwriter.__path__, "shardwriter.")]
for name in names:
    importlib.import_module(name)
print(json.dumps(names))
""")
    assert {"shardwriter.pack", "shardwriter.verify", "shardwriter.format.records", "shardwriter.storage.s3"} <= set(got)


def test_no_shardwriter_source_imports_a_layer_above_it() -> None:
    """Not even inside a function: shardwriter is the lower package."""
    above = ("loaders", "benchmarks", "ai8x_shards")
    found = []
    for path in sorted((REPO / "shardwriter").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in above]
    assert not found, found


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["info", "DIR"], ["info", "--json", "DIR"], ["verify", "DIR"],
                                  ["reindex", "DIR"], ["info", "--help"], ["preview", "--help"], ["pack", "--help"]])
def test_commands_that_do_not_read_samples_import_neither_torch_nor_the_benchmark(argv: list[str], tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "d.npz", n=20)
    pack(NpzSource(npz), tmp_path / "ds", quiet=True)
    argv = [str(tmp_path / "ds") if a == "DIR" else a for a in argv]
    got = loaded(f"""
import contextlib, io
from ai8x_shards.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main({argv!r})
    except SystemExit as exc:
        code = exc.code
assert code in (0, None), code
""")
    assert got <= {"PIL"}, f"ai8x-shards {' '.join(argv)} imported {sorted(got)}"


def test_preview_imports_the_readers_but_not_the_benchmark(tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "d.npz", n=20)
    pack(NpzSource(npz, test_fraction=0.5), tmp_path / "ds", quiet=True)
    got = loaded(f"""
from ai8x_shards.cli import main
assert main(["preview", {str(tmp_path / "ds")!r}, "-o", {str(tmp_path / "p.png")!r}]) == 0
""")
    assert {"torch", "loaders"} <= got and not got & {"benchmarks", "ai8x_shards.benchmarks"}


def test_the_facade_is_lazy_and_each_name_is_the_owners() -> None:
    assert loaded("import ai8x_shards") <= {"PIL"}
    assert loaded("import ai8x_shards as a8; a8.pack; a8.verify; a8.info; a8.Options; a8.IntegrityError; a8.NpzSource") <= {"PIL"}
    assert "torch" in loaded("import ai8x_shards as a8; a8.ShardDataset")
    for name, module in ai8x_shards.EXPORTS.items():
        value = getattr(ai8x_shards, name)
        assert value is getattr(sys.modules[module], ai8x_shards._RENAMED.get(name, name)), name
    assert set(ai8x_shards.EXPORTS) <= set(dir(ai8x_shards))
    with pytest.raises(AttributeError):
        ai8x_shards.nothing_here  # noqa: B018


def test_the_packages_export_their_public_names() -> None:
    from loaders.batch import collate

    assert loaders.collate is collate and "collate" in loaders.__all__
    for name in ("ShardDataset", "StreamingShardDataset", "normalize_batch", "prepare_image", "UnhashedDatasetWarning"):
        assert hasattr(loaders, name) and name in loaders.__all__, name
    for name in ("pack", "ShardWriter", "Options", "ShardsError", "FormatError", "IntegrityError", "StorageError"):
        assert hasattr(shardwriter, name) and name in shardwriter.__all__, name


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_import_and_name_in_the_readme_exists() -> None:
    """The README's code blocks' imports run, and each `package.name` it mentions resolves."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    imports = [line.strip() for block in blocks for line in block.splitlines() if re.match(r"\s*(from \S+ )?import ", line)]
    assert len(imports) >= 5
    for line in imports:
        exec(line, {})  # noqa: S102 - our own README
    dotted = set(re.findall(r"`((?:shardwriter|loaders|ai8x_shards)(?:\.[A-Za-z_]\w*)+)", readme))
    assert len(dotted) >= 8
    for name in sorted(dotted):
        assert _resolve(name) is not None, name
