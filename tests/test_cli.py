"""The command line as a user meets it: help with defaults, info --json / --all-skipped, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ai8x_shards.cli import build_parser, main
from shardwriter import pack
from shardwriter.sources import ImageFolderSource
from shardwriter.synth import synth_imagefolder
from shardwriter.verify import summary

REPO = Path(__file__).resolve().parent.parent
BAD = 13  # more than the 10 skipped inputs the text summary lists


@pytest.fixture(scope="module")
def skipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image-folder dataset with BAD corrupt images skipped and recorded."""
    root = tmp_path_factory.mktemp("cli")
    raw = synth_imagefolder(root / "raw", per_class=6, size=16)
    for k in range(BAD):
        (raw / "disc" / f"bad-{k:02d}.png").write_bytes(b"not a png")
    pack(ImageFolderSource(raw, size=(16, 16)), root / "out", skip_bad=True, quiet=True)
    return root / "out"


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "ai8x_shards", *args], capture_output=True, text=True, timeout=120, env=env, **kw)


# ---------------------------------------------------------------- --help


def _subparsers() -> dict:
    ap = build_parser()
    action = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("command", ["info", "verify", "reindex", "demo", "synth", "install-ai8x", "preview"])
def test_help_shows_every_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _subparsers()[command]
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        if action.default in (None, False, [], "==SUPPRESS==") or action.help is None:
            continue
        assert f"(default: {action.default})" in text, f"{command} --help does not show the default of {action.dest}"
    assert "(default: None)" not in text and "(default: False)" not in text


def test_top_level_help_lists_the_commands_and_points_at_their_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("pack", "info", "verify", "reindex", "preview", "install-ai8x", "bench"):
        assert command in out
    assert "ai8x-shards COMMAND --help" in out


def test_preview_help_names_its_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["preview", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED" in out and "--classes A,B" in out and "--indices I,J" in out and "(default: 8)" in out


# ---------------------------------------------------------------- info


def test_info_json_is_the_summary(skipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(skipped)]) == 0
    got = json.loads(capsys.readouterr().out)
    from shardwriter.verify import load_manifest

    assert got == json.loads(json.dumps(summary(load_manifest(skipped))))
    assert set(got["classes"]) == {"bar", "disc", "square"}
    assert len(got["skipped"]) == BAD and all(s["name"].startswith("disc/bad-") for s in got["skipped"])
    assert sum(s["count"] for s in got["splits"].values()) == 18


def test_info_lists_ten_skipped_and_says_how_many_more_or_all_on_request(skipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(skipped)]) == 0
    short = capsys.readouterr().out
    assert f"skipped   {BAD} bad input(s)" in short
    assert short.count("\n          disc/bad-") == 10
    assert f"... and {BAD - 10} more (info --all-skipped lists them)" in short
    assert main(["info", "--all-skipped", str(skipped)]) == 0
    full = capsys.readouterr().out
    assert full.count("\n          disc/bad-") == BAD and "more (info --all-skipped" not in full


def test_info_of_a_missing_folder_is_one_line_and_exit_4(tmp_path: Path) -> None:
    out = run_cli("info", str(tmp_path / "nowhere"))
    assert out.returncode == 4, out
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("ai8x-shards: error: ")


# ---------------------------------------------------------------- pipes


@pytest.mark.parametrize("args", [["info"], ["info", "--json"], ["verify"]])
def test_a_reader_that_went_away_ends_the_command_quietly(skipped: Path, args: list[str]) -> None:
    """stdout's reader closed before we write: no traceback, no 'Broken pipe' line, exit 141."""
    r, w = os.pipe()
    os.close(r)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, "-m", "ai8x_shards", *args, str(skipped)], stdout=w, stderr=subprocess.PIPE,
                             text=True, timeout=120, env=env)
    finally:
        os.close(w)
    assert out.stderr == "", out.stderr
    assert out.returncode == 141


def test_head_takes_the_first_line_and_nothing_else_is_said(skipped: Path) -> None:
    """The shell form: `ai8x-shards info DIR | head -1`, repeated to fill the pipe."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = f"for i in 1 2 3 4 5 6; do {sys.executable} -m ai8x_shards info --all-skipped {skipped}; done | head -1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0
    assert out.stdout.startswith("dataset ") and out.stdout.count("\n") == 1
    assert out.stderr == "", out.stderr
