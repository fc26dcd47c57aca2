"""Every command answers a missing or malformed input file with one line naming it and a
non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perception.cli import main, user_error


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perception", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--card", "models/missing.toml"],
        ["export", "--card", "models/missing.toml"],
        ["eval", "missing.mcap", "--out", "rep"],
        ["export-gt", "missing.mcap", "--coco", "gt.json"],
        ["launch", "missing.yaml"],
    ],
)
def test_missing_file_is_one_line_naming_it(args: list[str], tmp_path: Path) -> None:
    r = run_cli(args, tmp_path)
    assert r.returncode != 0
    said = (r.stderr + r.stdout).strip()
    assert "Traceback" not in said, said
    assert "missing" in said.splitlines()[-1], said


def test_malformed_card_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    r = run_cli(["export", "--card", "bad.toml"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "bad.toml" in r.stderr


def test_bugs_keep_their_traceback() -> None:
    assert not user_error(ValueError("some library's complaint"))
    assert not user_error(OSError("no file involved"))
    assert user_error(FileNotFoundError(2, "No such file or directory", "x.toml"))
    from perception.node.config import ConfigError

    assert user_error(ConfigError("launch.yaml: key 'fps' must be > 0"))


def test_main_returns_2_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--card", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
