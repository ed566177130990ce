"""The benchmark's smoke test: the quick run, into a temporary folder, with sane figures."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import cases, measure, report, run
from benchmarks.approaches import registry

REPO_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"
OURS = ("C. ours: map-style", "D. ours: streaming")


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _rows(md: str, header_start: str) -> dict[str, list[str]]:
    """Rows of the first markdown table whose header starts with ``header_start``, by first cell."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def _num(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-out")


@pytest.fixture(scope="module")
def quick(quick_out: Path) -> tuple[dict, str]:
    out = quick_out
    before = _digest(REPO_RESULTS)
    # The peers (F) are optional extras and slow to import; the quick run here leaves them out.
    args = run.parse_args(["--quick", "--cache", "both", "--out", str(out), "--keep", "--work", str(out / "work"),
                           "--only", "A,B,C,D,C-aug,D-aug,E,G-raw,G-memmap"])
    summary, status = run.run(args, "ai8x-shards bench --quick (test)")
    assert status == 0, (out / "RESULTS.md").read_text()
    assert _digest(REPO_RESULTS) == before, "the quick run must not overwrite benchmarks/RESULTS.md"
    return summary, (out / "RESULTS.md").read_text()


def test_headline_has_our_rows_with_positive_rates(quick: tuple[dict, str]) -> None:
    _, md = quick
    rows = _rows(md, "| approach | large, 1 process")
    for name in OURS:
        row = next((cells for label, cells in rows.items() if label.startswith(name)), None)
        assert row is not None, f"no headline row for {name}"
        if row[0] == "skipped":  # the streaming reader may not be importable yet; then a reason is printed
            assert "Skipped: D:" in md
            continue
        rates = [_num(c) for c in row[:4]]
        assert all(r > 0 for r in rates), row
    for label, cells in rows.items():
        if label.startswith(("A.", "B.", "C.", "E.", "G.")):
            assert _num(cells[0]) > 0 and _num(cells[2]) > 0, (label, cells)


def test_every_reader_delivered_every_sample_once(quick: tuple[dict, str]) -> None:
    summary, md = quick
    assert "**Failures:**" not in md
    for case, entry in summary.items():
        for key, s in entry["rows"].items():
            if s.get("skip"):
                continue
            assert not s["errors"], (case, key, s["errors"])
            assert s["checks"] and all(v.startswith("ok") for v in s["checks"].values()), (case, key, s["checks"])


def test_a_short_warm_epoch_is_repeated_and_a_cold_one_is_not(quick: tuple[dict, str], quick_out: Path) -> None:
    raw = json.loads((quick_out / "work" / "results.json").read_text())["raw"]
    runs = raw["small"]["rows"]["C"]["passes"][0]["runs"]  # 2,000 small samples: an epoch of a few milliseconds
    assert runs["w0-cold"]["epochs"] == 1
    assert runs["w0-warm"]["epochs"] == measure.WARM_EPOCHS
    assert runs["w0-warm"]["check"].startswith("ok")


def test_ratios_and_table1_are_computed(quick: tuple[dict, str]) -> None:
    summary, md = quick
    for case in ("large", "small"):
        rows = summary[case]["rows"]
        c = rows["C"]
        assert set(c["rates"]) == {"w0-cold", "w0-warm", "wN-cold", "wN-warm"}
        assert 0 < c["x_fastest"]["w0-warm"] <= 1.0
        assert c["x_raw"]["w0-warm"] > 0
        assert max(s["x_fastest"]["w0-warm"] or 0 for s in rows.values() if "x_fastest" in s) == pytest.approx(1.0)
        assert rows["G-raw"]["rates"].keys() == {"w0-cold", "w0-warm"}  # bytes only: no worker columns
        for key in ("A", "B", "C"):
            s = rows[key]
            assert s["peak_rss"] > s["rss_base"] > 0
            assert s["disk_alloc"] >= s["disk_apparent"] * 0.9 > 0
            assert s["max_samples"] > 0 and s["open_s"] >= 0 and s["create_s"] > 0
        # One pickle per small sample costs at least a filesystem block each; a shard record does not.
    small = summary["small"]["rows"]
    assert small["B"]["disk_alloc"] > 2 * small["C"]["disk_alloc"]
    throughput = _rows(md, "| approach | 1 proc, cold")
    c_row = next(cells for label, cells in throughput.items() if label.startswith("C."))
    assert _num(c_row[4]) > 0 and _num(c_row[5]) > 0  # × fastest, × raw read
    assert "| case | floor |" in md and "quick run: not judged" in md
    assert "Command: `ai8x-shards bench --quick (test)`" in md


def test_augmentation_cost_is_reported_for_c_and_d(quick: tuple[dict, str]) -> None:
    summary, md = quick
    rows = [line for line in md.split("## What augmentation costs", 1)[1].split("\n## ", 1)[0].splitlines() if line.startswith("| large") or line.startswith("| small")]
    assert len(rows) == 8  # {large, small} x {C, D} x {1 process, workers}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert _num(cells[3]) > 0 and _num(cells[4]) > 0 and cells[5].endswith("%"), line


def test_the_writer_section_packs_the_same_bytes_with_1_and_2_workers(quick: tuple[dict, str]) -> None:
    _, md = quick
    lines = [ln for ln in md.split("## Writer: packing speed", 1)[1].split("\n## ", 1)[0].splitlines() if ln.startswith(("| small", "| large"))]
    assert {(ln.split("|")[2].strip()) for ln in lines} == {"1", "2"}
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert _num(cells[2]) > 0 and _num(cells[4]) > 0 and cells[8] == "yes", ln


def test_sample_tags_round_trip() -> None:
    case = cases.small(300)
    x = np.zeros((300, *case.x_shape), np.uint8)
    cases._tag(x, 0)
    xt = (torch.from_numpy(x).float() - 128) / 128
    assert (cases.sample_ids(xt) == np.arange(300)).all()


def test_every_approach_is_registered_and_says_why_it_is_missing() -> None:
    reg = registry()
    assert list(reg) == ["A", "B", "C", "C-nocheck", "D", "D-nocheck", "C-aug", "D-aug", "D-http", "E", "F-mds", "F-litdata",
                         "G-raw", "G-batched", "G-batched-dl", "G-bandwidth", "G-memmap"]
    for a in reg.values():
        why = a.unavailable()
        assert why is None or (isinstance(why, str) and why)


def test_floors_name_a_structural_reason() -> None:
    """A floor that no reader here could meet says why, from the figures."""

    def row(rates: dict[str, float], **kw: float) -> dict:
        return {"rates": rates, "peak_rss": kw.get("peak", 0), "rss_base": kw.get("base", 0), "anon_growth": kw.get("growth", 0)}

    summary = {"large": {"info": {"n": 100}, "rows": {
        "A": row({"w0-warm": 100, "wN-warm": 100}, peak=600 << 20, base=100 << 20, growth=400 << 20),
        "B": row({"w0-cold": 100, "wN-cold": 100}),
        "C": row({"w0-warm": 300, "wN-warm": 300, "w0-cold": 200, "wN-cold": 200}, peak=180 << 20, base=100 << 20),
        "G-raw": row({"w0-cold": 450}),
    }}}
    floors = {(f["floor"]): f for f in report.floors(summary, 2)}
    cold = floors["C ≥ 5x B (1 proc, cold)"]
    assert cold["met"] is False and "above the fastest rate" in cold["why"]
    rss = floors["C ≥ A's samples/s (1 proc, warm) at ≤ 1/10 of A's peak RSS"]
    assert rss["met"] is False and re.search(r"from about [\d,]+ samples", rss["why"])
