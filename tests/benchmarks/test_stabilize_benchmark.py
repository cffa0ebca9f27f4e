"""``benchmarks/stabilize.py --quick`` still runs end to end (no timing is asserted: the
figures live in benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.slow
def test_stabilize_benchmark_quick(benchmark: Callable[..., tuple[str, dict[str, Any]]]) -> None:
    pytest.importorskip("optuna")
    stdout, report = benchmark("stabilize", "--quick", "--threads", "1")
    assert "end to end" in stdout and "goal (from the issue" in stdout
    assert 0 < report["trials_finished"] <= 4
    for side in ("search", "end to end"):
        figures = report["figures"][side]
        assert figures["ours_s"] > 0 and figures["baseline_s"] > 0 and figures["ratio"] > 0
    assert report["baseline_parts"]["search: training"] > 0
    assert report["ours_parts"]["search: training (train_trials)"] > 0
