"""``benchmarks/stabilize.py --quick`` still runs end to end (no timing is asserted: the
figures live in benchmarks/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_stabilize_benchmark_quick(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    out = tmp_path / "stabilize.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "stabilize.py"),
            "--quick",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "end to end" in done.stdout and "goal (from the issue" in done.stdout
    report = json.loads(out.read_text())
    assert 0 < report["trials_finished"] <= 4
    for side in ("search", "end to end"):
        figures = report["figures"][side]
        assert figures["ours_s"] > 0 and figures["baseline_s"] > 0 and figures["ratio"] > 0
    assert report["baseline_parts"]["search: training"] > 0
    assert report["ours_parts"]["search: training (train_trials)"] > 0
