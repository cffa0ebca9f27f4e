"""``benchmarks/certify_conv.py --quick`` still runs end to end, every bound holds what the
attack attains, and the differential bound is the tightest (no timing is asserted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.slow
def test_certify_conv_benchmark_quick(
    benchmark: Callable[..., tuple[str, dict[str, Any]]],
) -> None:
    stdout, report = benchmark("certify_conv", "--quick", "--models", "lenet")
    assert "CROWN / differential" in stdout
    row = report["results"]["lenet/eps0.01"]
    assert row["differential"]["max_abs"] <= row["linear"]["max_abs"] <= row["interval"]["max_abs"]
    assert row["differential"]["max_abs"] >= row["attained_max_abs"]
