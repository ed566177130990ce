"""Benchmarks: the data-loader design note's Table 1 reproduced, with the peers side by side.

``ai8x-shards bench`` (or ``python -m benchmarks.run``) makes synthetic samples, writes
them in every approach's format and reads them back, each approach measured in a fresh
subprocess, the approaches interleaved over passes. See ``benchmarks/RESULTS.md``.

Modules: :mod:`benchmarks.cases` (the synthetic data), :mod:`benchmarks.approaches`
(A, B: the note's two approaches; C, D: ours; E: stock webdataset; G: ceilings),
:mod:`benchmarks.peers` (F: MosaicML Streaming and LitData, optional),
:mod:`benchmarks.measure` (what runs in each subprocess), :mod:`benchmarks.report`
(tables, floors, RESULTS.md, the plot) and :mod:`benchmarks.run` (the command).
"""
