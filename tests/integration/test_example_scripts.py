"""The example scripts still run end to end (tiny settings; their docstrings hold the real
numbers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["digits-mlp", "modular-addition"])
def test_cone_vs_sgd_runs(tmp_path: Path, task: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "cone_vs_sgd.py"),
            "--task",
            task,
            "--seeds",
            "2",
            "--steps",
            "20",
            "--snapshots",
            "5",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "equal training loss" in done.stdout and "cone-0.6" in done.stdout
