"""The wheel: its import names, its license, and an install that works away from the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from shardwriter import __version__

REPO = Path(__file__).resolve().parent.parent
NOT_SOURCES = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "demo-out", "api")


def pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True,
                         timeout=600, cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our wheel, built offline from a copy of the checkout (the checkout gets no build/ folder)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(root / "dist"), str(src))
    (found,) = (root / "dist").glob("ai8x_shards-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only the wheel installed; its dependencies come from this one."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip("--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel))
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()} if Path(p).is_dir()]
    (purelib / "_test_deps.pth").write_text("\n".join(deps) + "\n")  # appended after the wheel's own site-packages
    return python


def run_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300, cwd=str(cwd), env=env)


def test_the_wheel_installs_only_our_three_import_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ai8x_shards", "shardwriter", "loaders"}
    assert "ai8x_shards/benchmarks/run.py" in names and "ai8x_shards/benchmarks/measure.py" in names
    assert "loaders/wds.py" in names and "shardwriter/format/records.py" in names
    dist = f"ai8x_shards-{__version__}.dist-info"
    assert any(n.startswith(f"{dist}/") and n.rsplit("/", 1)[-1] == "LICENSE" for n in names), "LICENSE travels with the wheel"
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"{dist}/METADATA").decode()
        entry_points = z.read(f"{dist}/entry_points.txt").decode()
    assert "License: Apache-2.0" in meta or "License-Expression: Apache-2.0" in meta
    assert "Requires-Dist: xxhash" in meta
    assert "ai8x-shards = ai8x_shards.cli:main" in entry_points


def test_the_installed_command_and_benchmark_work_away_from_the_checkout(installed: Path, tmp_path: Path) -> None:
    bindir = installed.parent
    out = run_in(bindir / "ai8x-shards", "--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"ai8x-shards {__version__}", out.stderr
    code = """
import importlib.util, sys
import ai8x_shards, loaders, shardwriter
import ai8x_shards.benchmarks.run as run
site = sys.argv[1]
for mod in (ai8x_shards, loaders, shardwriter, run):
    assert mod.__file__.startswith(site), (mod.__name__, mod.__file__)
spec = importlib.util.find_spec(run.MEASURE)  # what each benchmark subprocess runs with -m
assert run.MEASURE == "ai8x_shards.benchmarks.measure" and spec.origin.startswith(site), spec
try:
    import benchmarks  # noqa: F401
except ModuleNotFoundError:
    print("no top-level benchmarks")
"""
    site_dir = run_in(installed, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip()
    out = run_in(installed, "-c", code, site_dir, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no top-level benchmarks" in out.stdout
    out = run_in(bindir / "ai8x-shards", "bench", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "--quick" in out.stdout, out.stderr
    out = run_in(installed, "-m", "ai8x_shards.benchmarks.measure", cwd=tmp_path)  # no request on stdin: fails, but after importing
    assert "No module named" not in out.stderr and "JSONDecodeError" in out.stderr, out.stderr


def test_the_checkout_runs_the_benchmark_as_benchmarks_too() -> None:
    """From a checkout (tests, `python -m benchmarks.run`) the same modules are the top-level benchmarks."""
    from benchmarks import run

    assert run.MEASURE == "benchmarks.measure"
    from ai8x_shards.cli import _bench  # noqa: F401 - imports nothing until called
