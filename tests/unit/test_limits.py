"""Limits before allocation: a chunk's memory is estimated from the model built on the meta
device, and a run that cannot fit (or a plan over the maximum of members) is refused with
one line in seconds, before anything is allocated or written.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.tasks import build_task
from attractor.training.memory import (
    OPTIMIZER_SLOTS,
    PARAMETER_COPIES,
    check_memory,
    default_chunk_size,
    estimate_chunk,
)


def _config(hidden: list[int], **sections):
    task = {"name": "digits-mlp", "hidden": hidden}
    return parse_config({"task": task, **sections})


def test_estimate_counts_parameters_optimizer_state_and_activations() -> None:
    config = _config([32], trainer={"batch_size": 16}, plan={"members": 4})
    chunk = estimate_chunk(config, build_task(config.task))
    assert chunk is not None
    params = 64 * 32 + 32 + 32 * 10 + 10
    # Leaf outputs of one example: Linear (32), ReLU (32), Linear (10).
    activations = 32 + 32 + 10
    slots = OPTIMIZER_SLOTS["sgd"]
    expected = 4 * (params * (PARAMETER_COPIES + slots) + 2 * 16 * activations)
    assert chunk.parameters == params and chunk.members == 4
    assert chunk.bytes_per_member == expected and chunk.total == 4 * expected


def test_estimate_grows_with_members_batch_and_optimizer() -> None:
    def total(**sections) -> int:
        config = _config([64], **sections)
        chunk = estimate_chunk(config, build_task(config.task))
        assert chunk is not None
        return chunk.total

    base = total(plan={"members": 4}, run={"chunk_size": 4})
    assert total(plan={"members": 8}, run={"chunk_size": 8}) == 2 * base
    assert total(plan={"members": 4}, run={"chunk_size": 4}, trainer={"batch_size": 512}) > base
    assert total(plan={"members": 4}, run={"chunk_size": 4}, trainer={"optimizer": "adam"}) > base
    # One member at a time in the loop strategy.
    assert total(plan={"members": 4}, run={"strategy": "loop"}) == base // 4


def test_huge_model_is_sized_without_allocating_it() -> None:
    config = _config([100_000_000])
    start = time.monotonic()
    chunk = estimate_chunk(config, build_task(config.task))
    assert time.monotonic() - start < 5  # 7.5 G parameters: built on the meta device
    assert chunk is not None and chunk.parameters > 7e9
    assert chunk.members == default_chunk_size(chunk.parameters) == 2


def test_refusal_names_the_estimate_and_the_available_memory() -> None:
    config = _config([256], plan={"members": 8})
    task = build_task(config.task)
    check_memory(config, task, available=1 << 40)  # fits: no error
    with pytest.raises(UserError) as info:
        check_memory(config, task, available=1000)
    message = str(info.value)
    assert "needs about" in message and "available" in message and "\n" not in message


def test_a_remote_ray_cluster_is_not_judged_by_this_machine() -> None:
    config = _config([100_000_000], run={"backend": "ray", "ray_address": "10.0.0.1:6379"})
    check_memory(config, build_task(config.task), available=1000)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[task]\nname = "digits-mlp"\nhidden = [100000000]\n', "needs about"),
        ("[plan]\nmembers = 10000000\n", "maximum of 100000"),
    ],
)
def test_run_refuses_what_cannot_fit_in_seconds(cli, tmp_path: Path, toml: str, says: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    out = tmp_path / "run"
    start = time.monotonic()
    result = cli("run", str(config), "--out", str(out))
    assert result.code == 2, result.err
    assert says in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert time.monotonic() - start < 20
    assert not out.exists(), "nothing is written before the refusal"
