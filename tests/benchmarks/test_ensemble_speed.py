"""``benchmarks/ensemble_speed.py --quick --device cpu`` still runs end to end, the vmap recipe
and the device code path included (no timing is asserted: the figures live in
benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.slow
def test_ensemble_speed_quick_on_cpu(benchmark: Callable[..., tuple[str, dict[str, Any]]]) -> None:
    stdout, report = benchmark(
        "ensemble_speed",
        *("--quick", "--device", "cpu", "--members", "1,8", "--steps", "3"),
        *("--repeats", "1", "--threads", "1"),
    )
    assert "recipe" in stdout and "goals (from the issues" in stdout
    assert report["device"] == "cpu"
    assert [r["members"] for r in report["results"]] == [1, 8]
    for row in report["results"]:
        # Training-only rates of 3 steps may come out NaN (null) on a busy machine: not these.
        for key in ("baseline", "ours_end_to_end", "recipe_end_to_end"):
            assert row[key] > 0, key
        assert "recipe" in row and "ours_over_recipe" in row
    check = report["strategy_check"]
    assert check["max_abs_diff"] <= check["tolerance"]
    assert check["recipe_vs_baseline_max_abs_diff"] <= check["recipe_tolerance"]
