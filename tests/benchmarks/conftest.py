"""Run a benchmark script as a user would, for the smoke tests (never a timed assertion)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def benchmark(tmp_path: Path) -> Callable[..., tuple[str, dict[str, Any]]]:
    """``benchmark(name, *args)``: run ``benchmarks/NAME.py ARGS --json FILE`` from the repo
    root; its stdout and the JSON it wrote (a failing run fails the test with its stderr).
    """

    def run(name: str, *args: str) -> tuple[str, dict[str, Any]]:
        out = tmp_path / f"{name}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args]
        done = subprocess.run(
            [*command, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, json.loads(out.read_text())

    return run
