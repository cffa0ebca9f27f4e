"""The two baselines of ``ensemble_speed.py``, and what times them on any device.

* :func:`plain_loop`: for each member one after another, ``task.make_model()``,
  ``torch.optim.SGD``, and per step a random minibatch, ``F.cross_entropy``, ``zero_grad``,
  ``backward``, ``step``.
* :func:`recipe`: PyTorch's own ensembling recipe: ``torch.func.stack_module_state`` over the
  same members, ``vmap(grad(functional_call))`` for every member's gradient at once on its
  own minibatch, and the same SGD-momentum update (torch's formula, dampening 0) written
  functionally on the stacked tensors.

Both train the same members (member ``m``: ``torch.manual_seed(m)`` before
``task.make_model()``) on the same minibatches (member ``m`` draws ``torch.randint`` from a
CPU generator seeded ``m``; the indices then move to the device, as the engine's do), so
:func:`recipe_vs_loop` can check that they compute the same thing. On CUDA every timed call
ends with ``torch.cuda.synchronize``, so a time covers the work, not its launch.

References:
    PyTorch tutorial "Model ensembling" (``torch.func.stack_module_state``, ``vmap``);
    ``torch.func`` documentation, "functional_call".
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import best_time, sync
from torch import Tensor
from torch.func import functional_call, grad, stack_module_state, vmap

from attractor.tasks.base import Task

LR, MOMENTUM, BATCH = 0.05, 0.9, 64


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls of ``fn``, the device synchronized before and after."""

    def run() -> None:
        fn()
        sync(device)

    sync(device)
    return best_time(run, repeats)


def matmul_gflops(size: int, repeats: int, device: torch.device) -> float:
    """Best float32 ``torch.mm`` throughput for ``size x size`` operands on ``device``, GFLOP/s.

    On CUDA TensorFloat-32 is switched off first: the figure is the card's true fp32 rate,
    the one the engine's default ``precision = "fp32"`` trains at.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    inner = max(1, int((2e11 if device.type == "cuda" else 2e9) // (2 * size**3)))
    for _ in range(3):
        torch.mm(a, b)
    seconds = timed(lambda: [torch.mm(a, b) for _ in range(inner)], device, repeats)
    return 2 * size**3 * inner / seconds / 1e9


def _models(task: Task, members: list[int], device: torch.device) -> list[torch.nn.Module]:
    """Member ``m``'s initial model: ``task.make_model()`` after ``torch.manual_seed(m)``."""
    models = []
    for member in members:
        torch.manual_seed(member)
        models.append(task.make_model().to(device))
    return models


def plain_loop(
    task: Task, members: list[int], steps: int, device: torch.device
) -> list[dict[str, Tensor]]:
    """Train ``members`` one after another with ``torch.optim.SGD``; their final parameters."""
    x_train, y_train = task.x_train.to(device), task.y_train.to(device)
    finals = []
    for member, model in zip(members, _models(task, members, device), strict=True):
        generator = torch.Generator().manual_seed(member)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        for _ in range(steps):
            index = torch.randint(task.n_train, (BATCH,), generator=generator).to(device)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        finals.append({k: v.detach() for k, v in model.named_parameters()})
    return finals


def recipe(
    task: Task,
    members: list[int],
    steps: int,
    device: torch.device,
    on_step: Callable[[], object] | None = None,
) -> dict[str, Tensor]:
    """Train ``members`` together with ``vmap(grad(functional_call))``; stacked final params.

    ``on_step`` is called after every step (as ``train_chunk``'s, for per-step timings).
    """
    models = _models(task, members, device)
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")  # the architecture only, no storage

    def loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    member_grads = vmap(grad(loss))  # [members, ...] gradients of [members, B, ...] batches
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}
    generators = [torch.Generator().manual_seed(m) for m in members]
    x_train, y_train = task.x_train.to(device), task.y_train.to(device)
    for _ in range(steps):
        index = torch.stack(
            [torch.randint(task.n_train, (BATCH,), generator=g) for g in generators]
        ).to(device)
        grads = member_grads(params, buffers, x_train[index], y_train[index])
        # torch.optim.SGD, dampening 0: buf = momentum * buf + g; p = p - lr * buf.
        momentum = {k: torch.add(grads[k], momentum[k], alpha=MOMENTUM) for k in params}
        params = {k: torch.add(params[k], momentum[k], alpha=-LR) for k in params}
        if on_step is not None:
            on_step()
    return params


def rates(
    train: Callable[[int], object], members: int, steps: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Training-only and end-to-end member-steps/s of ``train(steps)`` on ``members`` members.

    ``train(1)`` and ``train(steps)`` are timed interleaved, best of ``repeats`` each; the
    training-only rate ``members * (steps - 1) / (t(steps) - t(1))`` cancels set-up.
    """
    t_long = t_short = float("inf")
    for _ in range(repeats):
        t_short = min(t_short, timed(lambda: train(1), device))
        t_long = min(t_long, timed(lambda: train(steps), device))
    delta = t_long - t_short
    return {
        "seconds_S_steps": t_long,
        "seconds_1_step": t_short,
        "train_only": members * (steps - 1) / delta if delta > 0 else float("nan"),
        "end_to_end": members * steps / t_long,
    }


def recipe_vs_loop(task: Task, members: int, steps: int, device: torch.device) -> float:
    """Max |recipe - plain loop| over every final parameter of ``members`` members: the two
    baselines train the same members on the same batches (float rounding apart).
    """
    ids = list(range(members))
    stacked = recipe(task, ids, steps, device)
    loop = plain_loop(task, ids, steps, device)
    return max(
        float((stacked[k][i] - loop[i][k]).abs().max()) for i in range(members) for k in stacked
    )


def step_matmuls_gflops(members: int, repeats: int, device: torch.device) -> float:
    """GFLOP/s of one training step's batched matmuls alone, nothing else, for ``members``.

    The engine's own calls for digits-mlp (``attractor.training.forward``: the 10-wide output
    layer as ``W @ x^T``, biases inside ``baddbmm``): forward of the three layers, weight
    gradients of all three, input gradients of the last two. No engine can beat this rate
    with these kernels, so it is the ceiling of the engine's "of matmul" fraction.
    """

    def r(*shape: int) -> Tensor:
        return torch.randn(members, *shape, device=device)

    x1, w1, b1, x2, w2, b2 = (
        r(BATCH, 64),
        r(128, 64),
        r(1, 128),
        r(BATCH, 128),
        r(128, 128),
        r(1, 128),
    )
    x3, w3, b3, g1, g2, g3 = (
        r(BATCH, 128),
        r(10, 128),
        r(10, 1),
        r(BATCH, 128),
        r(BATCH, 128),
        r(BATCH, 10),
    )

    def step() -> None:
        torch.baddbmm(b1, x1, w1.transpose(1, 2))
        torch.baddbmm(b2, x2, w2.transpose(1, 2))
        torch.baddbmm(b3, w3, x3.transpose(1, 2))
        torch.bmm(g3, w3), torch.bmm(g3.transpose(1, 2), x3)
        torch.bmm(g2, w2), torch.bmm(g2.transpose(1, 2), x2)
        torch.bmm(g1.transpose(1, 2), x1)

    flops = members * 2 * BATCH * (3 * (64 * 128 + 128 * 128 + 128 * 10) - 64 * 128)
    step()
    return flops * 10 / timed(lambda: [step() for _ in range(10)], device, repeats) / 1e9
