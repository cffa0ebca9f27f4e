"""On a CUDA device: the member invariant of every engine path, the same files as a CPU run,
and measures on the device that agree with the CPU's.

Marked ``gpu``: skipped without CUDA. ``ATTRACTOR_GPU_TEST_DEVICE=cpu`` runs them on the CPU
instead, which checks the tests' own logic on a machine without a GPU (``benchmarks/
gpu_check.sh`` runs them on the card).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from attractor.config import parse_config
from attractor.runs.launch import train
from tests.conftest import tiny_mapping

DEVICE = os.environ.get("ATTRACTOR_GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

#: CPU vs device after a few steps: float32 kernels that sum in other orders (cuBLAS vs MKL).
CPU_TOLERANCE = 1e-3

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits-mlp": {"task": {"name": "digits-mlp", "hidden": [32]}},
    "digits-cnn": {"task": {"name": "digits-cnn", "depth": 8, "width": 4}},
    "tiny-lm": {
        "task": {"name": "tiny-lm", "width": 32, "context": 32, "layers": 1},
        "trainer": {"optimizer": "adam", "lr": 0.003, "batch_size": 8},
    },
}


def _train(workload: str, root: Path, **run: Any) -> dict[int, dict[str, torch.Tensor]]:
    if workload == "tiny-lm":
        pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    spec = WORKLOADS[workload]
    mapping = tiny_mapping(
        trainer={"steps": 6, **spec.get("trainer", {})},
        plan={"members": 3},
        run={"snapshots": [6], "strategy": "vectorized", **run},
    )
    config = parse_config({**mapping, "task": spec["task"]})
    ensemble = train(config, root)
    return {m: ensemble.params(m) for m in ensemble.members}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_every_engine_path_keeps_the_member_invariant_on_the_device(
    workload: str, tmp_path: Path
) -> None:
    chunk = _train(workload, tmp_path / "chunk", device=DEVICE, chunk_size=3)
    alone = _train(workload, tmp_path / "alone", device=DEVICE, chunk_size=2)  # member 2 alone
    cpu = _train(workload, tmp_path / "cpu", device="cpu", chunk_size=3)
    for member, weights in chunk.items():
        for name, value in weights.items():
            assert value.device.type == "cpu"  # results leave the device
            assert value.dtype == torch.float32 or not value.is_floating_point()
            assert torch.equal(value, alone[member][name]), (member, name)
            gap = float((value.double() - cpu[member][name].double()).abs().max())
            assert gap <= CPU_TOLERANCE, (member, name, gap)


def test_a_device_run_writes_the_files_a_cpu_run_writes(tmp_path: Path) -> None:
    _train("digits-mlp", tmp_path / "device", device=DEVICE)
    _train("digits-mlp", tmp_path / "cpu", device="cpu")

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    assert files(tmp_path / "device") == files(tmp_path / "cpu")
    manifest = json.loads((tmp_path / "device" / "manifest.json").read_text())
    assert (
        manifest["config_hash"]
        == json.loads((tmp_path / "cpu" / "manifest.json").read_text())["config_hash"]
    )


def _summary(cli: Callable, run: Path, device: str) -> dict[str, Any]:
    result = cli("measure", run, "--draws", "50", "--device", device, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["summary"]


def test_measures_on_the_device_agree_with_the_cpu(tmp_path: Path, cli: Callable) -> None:
    _train("digits-mlp", tmp_path / "run", device="cpu")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    on_device, on_cpu = (
        _summary(cli, tmp_path / "run", DEVICE),
        _summary(cli, tmp_path / "copy", "cpu"),
    )
    assert on_device.keys() == on_cpu.keys()
    for name, found in on_cpu.items():
        value = on_device[name]["value"]
        if found["value"] is None:
            assert value is None, name
        else:
            assert value == pytest.approx(found["value"], abs=1e-4), name


def test_lm_compare_on_the_device_agrees_with_the_cpu(tmp_path: Path, cli: Callable) -> None:
    run = tmp_path / "lm"
    _train("tiny-lm", run, device="cpu")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("def add(a, b):\n    return a + b\n\n" * 8 + "\n\n") * 6)

    def means(device: str) -> dict[str, dict[str, Any]]:
        result = cli(
            "lm-compare", f"{run}:0", f"{run}:1", "--corpus", corpus, "--device", device, "--json"
        )
        assert result.code == 0, result.err
        data = json.loads(result.out)
        assert data["tokens"] > 0
        return data["means"]

    on_device, on_cpu = means(DEVICE), means("cpu")
    assert on_cpu and on_device.keys() == on_cpu.keys()
    compared = 0
    for name, found in on_cpu.items():
        for key, value in found.items():
            if isinstance(value, float):
                assert on_device[name][key] == pytest.approx(value, rel=1e-3, abs=1e-5), (name, key)
                compared += 1
    assert compared >= len(on_cpu)


def test_diff_searches_on_the_device(tmp_path: Path, cli: Callable) -> None:
    _train("digits-mlp", tmp_path / "run", device="cpu")
    run = tmp_path / "run"
    result = cli(
        "diff", f"{run}:0", f"{run}:1", "--points", "2", "--device", DEVICE, "--out", tmp_path / "d"
    )
    assert result.code == 0, result.err


def test_world_rollouts_on_the_device_agree_with_the_cpu(tmp_path: Path) -> None:
    from attractor.experiments import run_experiment
    from attractor.experiments.world import WorldSettings
    from tests.integration.test_world_device import _settings
    from tests.integration.test_world_device import _train as train_world_model

    model = train_world_model(
        tmp_path / "run", {"name": "cartpole-lqr", "hidden": [16], "samples": 512}, 150
    )
    found = {
        device: run_experiment(
            "world", WorldSettings(**_settings("cartpole", model, device=device)), tmp_path / device
        )[1][0]
        for device in (DEVICE, "cpu")
    }
    on_device, on_cpu = found[DEVICE].summary, found["cpu"].summary
    states = 12  # _settings' initial states: one state's basin is a share of 1/12
    assert abs(on_device["basin_share"] - on_cpu["basin_share"]) <= 1 / states + 1e-9


def test_the_evaluator_on_the_device_agrees_with_the_cpu(tmp_path: Path, cli: Callable) -> None:
    from tests.integration.test_evaluator_device import _config

    config = _config(tmp_path)
    found = {}
    for device in dict.fromkeys((DEVICE, "cpu")):
        out = tmp_path / f"out-{device}"
        result = cli("evaluator", config, "--device", device, "--out", out, "--json")
        assert result.code == 0, result.err
        found[device] = json.loads((out / "evaluator.json").read_text())["summary"]
    on_device, on_cpu = found[DEVICE], found["cpu"]
    # True preference is a share of 16 samples per model, so one sample flipped by float
    # rounding (the base too trains on the device) moves a model by 1/16, the mean less.
    for stage in ("true_base", "true_final"):
        assert abs(on_device[stage]["true"] - on_cpu[stage]["true"]) <= 1 / 16, stage
