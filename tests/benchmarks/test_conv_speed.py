"""``benchmarks/conv_speed.py --quick`` still runs end to end (no timing is asserted: the figures
live in benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.slow
def test_conv_speed_benchmark_quick(benchmark: Callable[..., tuple[str, dict[str, Any]]]) -> None:
    out, report = benchmark("conv_speed", "--quick", "--threads", "1")
    assert "training only" in out and "the member invariant" in out
    assert [(r["workload"], r["members"]) for r in report["results"]] == [
        ("digits-cnn", 2),
        ("digits-cnn", 4),
        ("resnet20", 2),
    ]
    for row in report["results"]:
        for path in ("loop", "vmap", "grouped", "stacked"):
            assert row[f"{path}_train_only"] > 0 and row[f"{path}_end_to_end"] > 0
    for checks in report["invariant"].values():
        stacked = checks["stacked"]
        assert stacked["alone_equals_chunk"] and stacked["max_diff_from_loop"] == 0
    assert report["auto_strategy"] == {"digits-cnn": "vectorized", "resnet20": "loop"}
    memory = report["memory"]
    assert memory["measured_saved_bytes"] <= memory["estimate_bytes_per_member"]
