"""The README's first command: `ai8x-shards demo` runs the whole job on built-in data."""

from __future__ import annotations

import subprocess
import sys


def test_demo_packs_verifies_and_reads_back(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ai8x_shards", "demo", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "verify AISegment_80: OK" in out.stdout and "verify AISegment_352: OK" in out.stdout
    assert "equals prepare_image(crop): True" in out.stdout
    assert "input     uint8 (48, 88, 88)" in out.stdout
    assert (tmp_path / "demo" / "shards" / "AISegment_352" / "manifest.json").exists()
