"""Devices: ``run.device`` resolved or refused in one line, the chunk's move to a device
leaves every number as it was, chunk sizes from a GPU's free memory, and the ``gpu``-marked
checks of the member invariant on a CUDA device (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.plan import build_plan
from attractor.runs.launch import train
from attractor.tasks import build_task
from attractor.training.chunk import Chunk
from attractor.training.device import resolve_device, task_on
from attractor.training.memory import MAX_GPU_CHUNK, device_chunk_size
from tests.conftest import assert_user_error, tiny_config, tiny_mapping, write_toml

pytestmark = pytest.mark.usefixtures("one_thread")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_cpu_resolves_and_bad_names_are_refused_by_the_config() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="device must be auto, cpu, cuda or cuda:N"):
        parse_config(tiny_mapping(run={"device": "gpu"}))


@no_cuda
def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_in_one_line() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="sees no CUDA device"):
        resolve_device("cuda")


def test_a_cuda_index_the_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="has 1 CUDA device"):
        resolve_device("cuda:3")


@no_cuda
def test_run_on_a_missing_gpu_is_one_line_and_writes_nothing(cli, tmp_path) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_config())
    out = tmp_path / "run"
    assert_user_error(cli("run", config, "--out", out, "--device", "cuda"), "no CUDA device")
    assert not out.exists()


def _one_step(chunk: Chunk) -> dict[str, torch.Tensor]:
    x, y = chunk.next_batch()
    loss, grads = chunk.gradients(x, y)
    chunk.optimizer_step(grads, 1, 1.0)
    chunk.update_average(1, 10)
    return chunk.member_start(1, 1).params


def test_moving_a_chunk_changes_no_number() -> None:
    config = tiny_config(
        trainer={"ema_decay": 0.9, "sam_rho": 0.05, "clip_norm": 1.0},
        run={"track_path": True},
    )
    task = build_task(config.task)
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()[:3]
    plain = Chunk(task, config, rows, True, None)
    moved = Chunk(task, config, rows, True, None)
    moved._move(torch.device("cpu"))  # the path a GPU takes, on the CPU
    a, b = _one_step(plain), _one_step(moved)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.device.type == "cpu" for v in b.values())


def test_task_on_the_meta_device_keeps_shapes_and_leaves_indices_on_the_cpu() -> None:
    task = build_task(tiny_config().task)
    meta = task_on(task, torch.device("meta"))
    assert meta.x_train.is_meta and meta.x_train.shape == task.x_train.shape
    assert meta.groups is None or not meta.groups.is_meta


def test_gpu_chunks_are_sized_by_free_memory() -> None:
    assert device_chunk_size(1 << 20, 100 << 20) == 70
    assert device_chunk_size(1 << 30, 1 << 20) == 2
    assert device_chunk_size(1, 1 << 40) == MAX_GPU_CHUNK


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_member_invariant_holds_on_a_gpu(tmp_path) -> None:
    # Alone vs in a chunk: bitwise on the same device; CPU vs GPU: float tolerance.
    runs = {
        "chunk": {"device": "cuda", "chunk_size": 4},
        "pairs": {"device": "cuda", "chunk_size": 2},
        "cpu": {"device": "cpu"},
    }
    ens = {name: train(tiny_config(run=run), tmp_path / name) for name, run in runs.items()}
    for member in ens["chunk"].members:
        w = {name: e.params(member) for name, e in ens.items()}
        assert all(torch.equal(w["chunk"][k], w["pairs"][k]) for k in w["chunk"])
        assert all(torch.allclose(w["chunk"][k], w["cpu"][k], atol=1e-4) for k in w["chunk"])


def test_bf16_keeps_the_member_invariant_and_stays_near_fp32(tmp_path) -> None:
    def final(run: dict, name: str) -> dict[int, dict[str, torch.Tensor]]:
        ens = train(tiny_config(run=run), tmp_path / name)
        return {m: ens.params(m) for m in ens.members}

    chunk = final({"precision": "bf16", "chunk_size": 4}, "chunk")
    pairs = final({"precision": "bf16", "chunk_size": 2}, "pairs")
    fp32 = final({}, "fp32")
    for m, w in chunk.items():
        assert all(torch.equal(w[k], pairs[m][k]) for k in w)
        assert all(w[k].dtype == torch.float32 for k in w)
        assert any(not torch.equal(w[k], fp32[m][k]) for k in w)
        assert all(torch.allclose(w[k], fp32[m][k], atol=0.05) for k in w)
