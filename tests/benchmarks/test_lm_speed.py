"""``benchmarks/lm_speed.py --quick`` still runs end to end (no timing is asserted: the figures
live in benchmarks/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lm_speed_benchmark_quick(tmp_path: Path) -> None:
    pytest.importorskip(
        "transformers", reason="tiny-lm's model needs transformers ('attractor[lm]')"
    )
    out = tmp_path / "lm_speed.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lm_speed.py"),
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
    assert "training only" in done.stdout and "goal (from the issue" in done.stdout
    report = json.loads(out.read_text())
    assert [r["members"] for r in report["results"]] == [2, 4]
    for row in report["results"]:
        for path in ("loop", "vmap", "stacked"):
            assert row[f"{path}_train_only"] > 0 and row[f"{path}_end_to_end"] > 0
    assert report["auto_strategy"] == "vectorized"
    check = report["strategy_check"]
    assert check["alone_equals_chunk"] and check["max_metric_diff"] <= check["tolerance"]
