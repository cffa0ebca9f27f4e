"""``benchmarks/device_agreement.py`` (the GPU check's tolerance figures) runs end to end on the
CPU, where a device run is the CPU run: the invariant holds and the CPU distance is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.mark.slow
def test_device_agreement_quick_on_the_cpu(benchmark: Callable) -> None:
    stdout, report = benchmark(
        "device_agreement", "--quick", "--device", "cpu", "--workloads", "digits-mlp,digits-cnn"
    )
    assert "member invariant" in stdout and report["invariant"] is True
    for found in report["results"].values():
        assert found["device_vs_cpu"]["bitwise"]
        bf16 = found["bf16_vs_fp32"]
        assert not bf16["bitwise"] and 0 < bf16["max_abs_weight"] < 0.1


def test_a_missing_gpu_stops_the_benchmarks_in_one_line() -> None:
    import subprocess
    import sys

    import torch

    from tests.benchmarks.conftest import ROOT

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in ("device_agreement", "lm_speed", "ensemble_speed"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--device", "cuda"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode != 0 and "Traceback" not in done.stderr, (name, done.stderr)
        assert "no CUDA device" in done.stderr.strip().splitlines()[-1], name
