"""Packaging: metadata in setup.cfg; the import packages are named here.

The wheel installs three import packages: ``shardwriter`` (writer, format, storage),
``loaders`` (PyTorch datasets, ai8x-training glue) and ``ai8x_shards`` (the command line
and a one-import facade). The benchmark lives in the repository's ``benchmarks/`` folder
but installs as ``ai8x_shards.benchmarks``, so site-packages gets no top-level
``benchmarks`` package (an unrelated project on PyPI has that name).
"""

from setuptools import find_packages, setup

OURS = ("ai8x_shards", "shardwriter", "loaders")

setup(
    packages=find_packages(include=[p for name in OURS for p in (name, f"{name}.*")])
    + ["ai8x_shards.benchmarks"],
    package_dir={"ai8x_shards.benchmarks": "benchmarks"},
)
