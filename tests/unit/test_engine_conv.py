"""Convolutional and BatchNorm members in the engine: the plain loop over ``nn.Module`` s is
the specification, and a member still depends only on its plan row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attractor.config import Config, parse_config
from attractor.plan import PlanRow
from attractor.runs.launch import plan_chunks, resolve_strategy, train
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.tasks.conv_models import VGG, LeNet, ResNet
from attractor.training.chunk import Chunk
from attractor.training.forward import (
    _VmappedModule,
    batched_forward,
    can_vectorize,
    vectorizing_pays,
)
from attractor.training.forward_conv import StackedConvNet, stacked_conv_net
from attractor.training.memory import CHUNK_MEMORY_BYTES, default_chunk_size, estimate_chunk
from tests.conftest import tiny_mapping
from tests.unit.test_engine import LAST_METRICS, final_params, rows_for

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_config(**sections: dict[str, object]) -> Config:
    """digits-cnn (ResNet-8, width 8, BatchNorm) for a few steps."""
    data = tiny_mapping(**sections)
    data["task"] = {"name": "digits-cnn"}
    return parse_config(data)


@pytest.fixture(scope="module")
def digits_cnn() -> Task:
    return build_task(conv_config().task)


def stacked(models: list[nn.Module]) -> tuple[dict, dict]:
    """``(params, buffers)`` of ``models`` stacked along a new first dimension (copies)."""
    template = models[0]
    params = {
        k: torch.stack([m.get_parameter(k).detach() for m in models]).requires_grad_(True)
        for k, _ in template.named_parameters()
    }
    buffers = {
        k: torch.stack([m.get_buffer(k).detach().clone() for m in models])
        for k, _ in template.named_buffers()
    }
    return params, buffers


def bn_net(momentum: float | None) -> nn.Module:
    """Conv, BatchNorm2d, pooling, a BatchNorm1d between two linear layers."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4, momentum=momentum),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.BatchNorm1d(16, momentum=momentum),
        nn.Tanh(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize(
    "make",
    [lambda: ResNet(8, 8, 1, 10), lambda: bn_net(0.1), lambda: bn_net(None)],
    ids=["resnet8", "bn-momentum", "bn-cumulative"],
)
def test_batch_norm_is_the_module_per_member(make) -> None:
    """Training steps through the stacked forward update running mean, variance and
    num_batches_tracked exactly as each member's own ``nn.BatchNorm`` does; eval mode
    normalizes with them.
    """
    torch.manual_seed(0)
    members = 3
    models = [make() for _ in range(members)]
    params, buffers = stacked(models)
    template = make()
    forward = batched_forward(template)
    assert isinstance(forward, StackedConvNet)
    for step in range(3):
        x = torch.randn(members, 16, 1, 8, 8, generator=torch.Generator().manual_seed(step))
        template.train()
        ours = forward(params, buffers, x)
        reference = torch.stack([m.train()(x[i]) for i, m in enumerate(models)])
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    for name, value in buffers.items():
        expected = torch.stack([m.get_buffer(name) for m in models])
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        if name.endswith("num_batches_tracked"):
            assert value.tolist() == [3] * members
    template.eval()
    with torch.no_grad():
        x = torch.randn(members, 5, 1, 8, 8)
        ours = forward(params, buffers, x)
        reference = torch.stack([m.eval()(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    before = {k: v.clone() for k, v in buffers.items()}
    assert all(torch.equal(before[k], buffers[k]) for k in buffers)  # eval leaves them


@pytest.mark.parametrize("threads", [1, 2])
def test_member_is_bitwise_independent_of_its_chunk(digits_cnn: Task, threads: int) -> None:
    """Weights and BatchNorm buffers of a member alone (a chunk of one: nothing to pad), in
    chunks of 2, 3 and 5 and in one chunk of all 11 are bitwise equal, with one thread and
    with two (vmap's grouped convolution splits its weight gradient by the number of
    members with two threads).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = conv_config(trainer={"steps": 4}, run={"snapshots": [4]})
        rows = rows_for(11)
        together, _ = final_params(digits_cnn, config, rows, vectorized=True)
        metrics = dict(LAST_METRICS)
        for chunk in (rows[0:1], rows[1:3], rows[3:6], rows[6:11]):
            apart, _ = final_params(digits_cnn, config, chunk, vectorized=True)
            for row in chunk:
                assert together[row.member].keys() == apart[row.member].keys()
                for name, value in together[row.member].items():
                    assert torch.equal(value, apart[row.member][name]), (row.member, name)
                assert metrics[row.member] == LAST_METRICS[row.member]
    finally:
        torch.set_num_threads(before)
    assert any(k.endswith("running_var") for k in together[0])  # snapshots hold buffers


def test_vectorized_is_the_loop_bitwise(digits_cnn: Task) -> None:
    """Every layer with weights runs per member with the loop's kernels, the rest are exact or
    per-plane: the vectorized strategy's weights, buffers and metrics are the loop's bits
    (the contract asks only 1e-5).
    """
    config = conv_config(trainer={"steps": 10}, run={"snapshots": [10]})
    rows = rows_for(4, label_noise=0.1, noise_seed=3)
    vec, _ = final_params(digits_cnn, config, rows, vectorized=True)
    vec_metrics = dict(LAST_METRICS)
    for row in rows:
        loop, _ = final_params(digits_cnn, config, [row], vectorized=False)
        for name, value in loop[row.member].items():
            assert torch.equal(vec[row.member][name], value), (row.member, name)
        assert vec_metrics[row.member] == LAST_METRICS[row.member]


def test_resnet20_step_is_bitwise_independent_of_its_chunk() -> None:
    """One step of ResNet-20 on 32x32 images (where vmap's grouped stem convolution takes
    other kernels for 2 members than for 3 or more): gradients and updated BatchNorm
    statistics per member, alone and in chunks of 2, 3 and 5, and the loop's.
    """
    generator = torch.Generator().manual_seed(0)
    task = Task(
        "resnet20-shapes",
        torch.randn(16, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (16,), generator=generator),
        torch.randn(4, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (4,), generator=generator),
        lambda: ResNet(20, 16, 3, 10),
        num_classes=10,
    )
    config = conv_config(trainer={"steps": 1, "batch_size": 4})
    rows = rows_for(5, batch_size=4)

    def step(chunk_rows: list[PlanRow], vectorized: bool = True) -> dict[int, tuple[dict, dict]]:
        chunk = Chunk(task, config, chunk_rows, vectorized, None)
        chunk.template.train()
        _, grads = chunk.gradients(*chunk.next_batch())
        return {
            row.member: (
                {k: g[i] for k, g in grads.items()},
                {k: b[i] for k, b in chunk.buffers.items()},
            )
            for i, row in enumerate(chunk_rows)
        }

    together = step(rows)
    for chunk_rows, vectorized in (
        (rows[0:1], True),
        (rows[1:3], True),
        (rows[2:5], True),
        (rows[4:5], False),
    ):
        for member, (grads, buffers) in step(chunk_rows, vectorized).items():
            for name, value in {**grads, **buffers}.items():
                reference = {**together[member][0], **together[member][1]}[name]
                assert torch.equal(value, reference), (member, name, len(chunk_rows))


def test_groups_of_members_give_the_same_bits() -> None:
    """Members run in cache-sized groups: the bits do not depend on the grouping."""
    torch.manual_seed(1)
    models = [ResNet(8, 8, 1, 10) for _ in range(7)]
    x = torch.randn(7, 6, 1, 8, 8)
    results = []
    for group_bytes in (None, 1, 1 << 14):  # one group; groups of one; of a few
        params, buffers = stacked(models)
        forward = stacked_conv_net(models[0])
        assert forward is not None
        forward.group_bytes = group_bytes
        models[0].train()
        out = forward(params, buffers, x)
        grads = torch.autograd.grad(out.square().sum(), list(params.values()))
        results.append((out, grads, buffers))
    out_a, grads_a, buf_a = results[0]
    for out_b, grads_b, buf_b in results[1:]:
        assert torch.equal(out_a, out_b)
        assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
        assert all(torch.equal(buf_a[k], buf_b[k]) for k in buf_a)


def test_which_models_take_the_stacked_path() -> None:
    for model in (ResNet(8, 8, 1, 10), VGG((8, "M", 16), 3, 10), LeNet(), bn_net(0.1)):
        assert isinstance(batched_forward(model), StackedConvNet)
    # No convolution or BatchNorm: the paths they had; dropout: not batched per member here.
    assert not isinstance(batched_forward(nn.Sequential(nn.Linear(4, 2))), StackedConvNet)
    with_dropout = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten(), nn.Linear(72, 2))
    assert stacked_conv_net(with_dropout) is None


class _Branchy(nn.Module):
    """A convolution behind data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.out = nn.Linear(72, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.sum() > 0:
            h = h.relu()
        return self.out(h.flatten(1))


def test_vmap_of_a_convolution_is_refused(digits_cnn: Task) -> None:
    """A convolution only vmap would batch trains with the loop strategy under ``auto``."""
    model = _Branchy()
    assert isinstance(batched_forward(model), _VmappedModule)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    reason = can_vectorize(model, x, lambda o, t: F.cross_entropy(o, t, reduction="none"), y)
    assert reason is not None and "grouped convolution" in reason
    assert can_vectorize(ResNet(8, 8, 1, 10), x, digits_cnn.loss, y) is None


def test_run_directory_keeps_running_statistics(digits_cnn: Task, tmp_path: Path) -> None:
    """Snapshots hold every member's BatchNorm buffers, and ``Ensemble.predict`` normalizes
    with them (eval mode): the same logits as each member's own module in eval mode.
    """
    config = conv_config(
        trainer={"steps": 6}, plan={"members": 3}, run={"snapshots": [0, 6], "strategy": "auto"}
    )
    assert resolve_strategy(config, digits_cnn) == "vectorized"
    ensemble = train(config, tmp_path / "run")
    x = digits_cnn.x_test[:20]
    logits = ensemble.predict(x)
    for i, member in enumerate(ensemble.members):
        state = ensemble.params(member)
        assert int(state["stem.1.num_batches_tracked"]) == 6
        assert not torch.equal(state["stem.1.running_var"], torch.ones(8))
        module = ensemble.module(member)
        assert not module.training
        torch.testing.assert_close(logits[i], module(x), rtol=0, atol=1e-5)


def test_chunk_size_counts_conv_activations() -> None:
    """A ResNet-20 member on 32x32 images: the estimate covers what autograd really saves for
    its backward (within a small factor), and the automatic CPU chunk is sized by it, not by
    the 0.27 M parameters alone (which would allow 64 members, ~32 GB at batch 128).
    """
    batch = 16
    task = Task(
        "resnet20-shapes",
        torch.randn(batch, 3, 32, 32),
        torch.randint(0, 10, (batch,)),
        torch.randn(2, 3, 32, 32),
        torch.randint(0, 10, (2,)),
        lambda: ResNet(20, 16, 3, 10),
        num_classes=10,
    )
    model = task.make_model().train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(task.x_train)
    measured = sum(saved.values())
    config = conv_config(trainer={"batch_size": batch}, plan={"members": 64})
    estimate = estimate_chunk(config, task)
    assert estimate is not None
    assert measured <= estimate.bytes_per_member <= 4 * measured
    big = conv_config(trainer={"batch_size": 128}, plan={"members": 64})
    chunk = estimate_chunk(big, task)
    assert chunk is not None and chunk.total <= CHUNK_MEMORY_BYTES
    assert chunk.members == default_chunk_size(chunk.parameters, chunk.bytes_per_member) < 64
    rows = rows_for(20, batch_size=128)
    assert max(len(c) for c in plan_chunks(big, task, rows, "vectorized")) == chunk.members


def test_auto_vectorizes_small_conv_nets_only(digits_cnn: Task) -> None:
    """On the CPU a conv net's layers with weights run per member either way: ``auto`` batches
    only nets whose activations are small enough for the saved calls to pay (bits are the
    same either way).
    """
    cpu = torch.device("cpu")
    assert vectorizing_pays(digits_cnn.make_model(), cpu, digits_cnn.x_train[:2])
    images = torch.randn(2, 3, 32, 32)
    assert not vectorizing_pays(ResNet(20, 16, 3, 10), cpu, images)
    assert vectorizing_pays(ResNet(20, 16, 3, 10), torch.device("cuda"), images)
    task = Task(
        "resnet20-shapes",
        images,
        torch.tensor([0, 1]),
        images,
        torch.tensor([0, 1]),
        lambda: ResNet(20, 16, 3, 10),
        num_classes=10,
    )
    assert resolve_strategy(conv_config(run={"strategy": "auto"}), task) == "loop"
    assert resolve_strategy(conv_config(run={"strategy": "vectorized"}), task) == "vectorized"


def test_a_lone_conv_member_is_not_padded(digits_cnn: Task) -> None:
    """Padding exists for batched matmuls over members; a conv net's layers with weights run
    per member, so a chunk of one holds one member (an MLP's still holds two).
    """
    config = conv_config()
    assert Chunk(digits_cnn, config, rows_for(1), True, None).n == 1
    mlp = build_task(parse_config(tiny_mapping()).task)
    assert Chunk(mlp, parse_config(tiny_mapping()), rows_for(1), True, None).n == 2


class _FunctionalPooling(nn.Module):
    """The shape of examples/my_task.py: functional max pooling and a flatten from dim -3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(F.avg_pool2d(h, 1).flatten(-3))


def test_functional_pooling_runs_stacked_and_equals_each_module() -> None:
    torch.manual_seed(0)
    models = [_FunctionalPooling() for _ in range(3)]
    params, buffers = stacked(models)
    forward = batched_forward(models[0])
    assert isinstance(forward, StackedConvNet)
    x = torch.randn(3, 5, 1, 8, 8)
    reference = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(forward(params, buffers, x), reference, rtol=0, atol=1e-6)
