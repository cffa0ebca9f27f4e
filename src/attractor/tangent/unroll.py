"""The engine's training of a chunk of members, as a pure function ``jvp`` / ``vjp`` can go through.

:func:`attractor.training.engine.train_chunk` is the specification; this module replays it
for the members of one chunk (same ``batch_size`` and ``optimizer``):

* initial weights from :func:`~attractor.training.init.initial_module` (``init_scale``,
  ``init_noise``), batches from ``BatchStream(member_pool(task, row), batch_size,
  row.data_seed)``, targets from :func:`~attractor.training.data.member_targets`;
* the loss of :mod:`attractor.training.loss`, lr ``lr * lr_factor(step)``;
* the optimizer's own pure update (:meth:`attractor.optim.base.Optimizer.update`), the very
  function the engine's in-place step writes back: the step exists once.

One step is ``(params, state, hyper, x, y, step, factor) -> (params, state)`` on
``[members, ...]`` tensors (:meth:`Unrolled.vstep`): gradients by ``vmap(grad)`` of one
member's loss, then the update. Hyperparameters are float64 ``[members]`` tensors
(``lr``, ``momentum``, ``weight_decay``), never Python floats closed over, so a tangent can
be attached to them (Baydin et al. 2018).

Device: :func:`unroll` builds everything on the CPU -- initial weights, targets, batch orders,
all drawn there as the engine draws them -- and then moves the weights, targets, hyperparameters
and the task's tensors to ``device`` (:func:`~attractor.training.device.task_on`), so a replay
starts from the same numbers on every device. Batch orders stay CPU generators; each step's
indices move with the batch.

Not supported: cone descent (its random angle and projection) and models with buffers
(BatchNorm statistics update in place) are refused with a :class:`UserError`; random
forward passes (dropout) are refused by ``vmap``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from attractor.config import Config
from attractor.errors import UserError
from attractor.optim import get_optimizer
from attractor.optim.base import Hyper, Optimizer
from attractor.optim.schedules import trainer_lr_factor
from attractor.plan import PlanRow
from attractor.tangent.types import DIFFERENTIABLE, HYPERS, Hypers, Params, State, StepFn
from attractor.tasks.base import Task
from attractor.training.data import BatchStream, augmented, member_pool, member_targets
from attractor.training.device import task_on
from attractor.training.engine import total_steps
from attractor.training.forward import BatchedForward, batched_forward
from attractor.training.init import initial_module
from attractor.training.loss import member_losses, per_example_loss
from attractor.training.snapshots import snapshot_steps


@dataclass(frozen=True, eq=False)
class Unrolled:
    """The training of one chunk of members, ready to be replayed step by step.

    Attributes:
        task, config, rows: what is trained (rows share ``batch_size`` and ``optimizer``).
        module: the architecture (a template; its own weights are never used).
        params0: ``{name: [members, *shape]}`` initial weights in ``dtype``.
        scale_tangent: ``d params0 / d init_scale`` (the weights before scaling), same shapes.
        targets: ``[members, n_train]`` each member's (noisy) training targets.
        hyper: ``{"lr" | "momentum" | "weight_decay": [members] float64}``.
        steps: optimizer steps; ``snapshots``: the engine's snapshot steps.
        device: where the replay's tensors live (``task``'s splits and probes too).
    """

    task: Task
    config: Config
    rows: tuple[PlanRow, ...]
    module: nn.Module
    params0: Params
    scale_tangent: Params
    targets: Tensor
    hyper: dict[str, Tensor]
    steps: int
    snapshots: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")

    @property
    def members(self) -> int:
        return len(self.rows)

    @property
    def optimizer(self) -> str:
        return self.rows[0].optimizer

    @cached_property
    def optim(self) -> Optimizer:
        """The registered optimizer of these rows, whose update the replay calls."""
        return get_optimizer(self.optimizer)

    @cached_property
    def forward(self) -> BatchedForward:
        """The engine's batched forward of :attr:`module`: ``(params, buffers, x [n, B, ...])``."""
        return batched_forward(self.module)

    def init_state(self, params: Params) -> State:
        """The optimizer's initial state: ``{name: {slot: zeros like params[name]}}``."""
        return self.optim.init(params)

    def factor(self, step: int) -> float:
        """The lr schedule's factor at ``step``, as the engine's."""
        trainer = self.config.trainer
        return trainer_lr_factor(trainer, step, self.steps)

    def optimizer_hyper(self, hyper: Hypers, factor: float) -> Hyper:
        """The optimizer's per-member :class:`Hyper` at a step: lr times the schedule ``factor``."""
        trainer = self.config.trainer
        return Hyper(
            lr=hyper["lr"] * factor,
            momentum=hyper["momentum"],
            weight_decay=hyper["weight_decay"],
            nesterov=trainer.nesterov,
            beta2=trainer.beta2,
            eps=trainer.eps,
        )

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """One member's training loss on a batch (no member dimension), as the engine's."""
        logits = functional_call(self.module, params, (x,))
        return per_example_loss(self.task, self.config.trainer, logits, y).mean()

    def losses(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """``[members]`` every member's training loss, through the engine's batched forward."""
        return member_losses(self.task, self.config.trainer, self.forward(params, {}, x), y)

    def vstep(self) -> StepFn:
        """``(params, state, hyper, x, y, step, factor) -> (params, state)``, members first.

        Gradients by ``vmap(grad)`` of :meth:`loss`, so ``jvp`` / ``vjp`` see second
        derivatives; then the optimizer's own update.
        """
        gradient = vmap(grad(self.loss))

        def step(
            params: Params, state: State, hyper: Hypers, x: Tensor, y: Tensor, t: int, factor: float
        ) -> tuple[Params, State]:
            grads = gradient(params, x, y)
            return self.optim.update(params, grads, state, self.optimizer_hyper(hyper, factor), t)

        return step

    def batches(self) -> Batches:
        """Every member's minibatch stream from step 1, exactly the engine's."""
        return Batches(self)


class Batches:
    """The members' minibatches in lockstep; :meth:`save` / :meth:`restore` allow replaying a
    segment.
    """

    def __init__(self, run: Unrolled) -> None:
        self.run = run
        self.streams = [
            BatchStream(member_pool(run.task, r), r.batch_size, r.data_seed) for r in run.rows
        ]

    def next(self) -> tuple[Tensor, Tensor]:
        """``x [members, batch, ...]`` in the run's dtype and ``y [members, batch]`` of the next
        step.
        """
        # Indices from the CPU streams, moved to the data as the engine's chunk does.
        index = torch.stack([s.next() for s in self.streams]).to(self.run.device)
        x = augmented(self.run.task, self.run.task.x_train[index], self.streams)
        return (x.to(self.run.dtype) if x.is_floating_point() else x), torch.gather(
            self.run.targets, 1, index
        )

    def save(self) -> list[tuple[Tensor, Tensor, int, int]]:
        return [(s.generator.get_state(), s._order, s._cursor, s.taken) for s in self.streams]

    def restore(self, saved: list[tuple[Tensor, Tensor, int, int]]) -> Batches:
        """A copy of these streams positioned where ``saved`` was taken."""
        other = copy.copy(self)
        other.streams = []
        for stream, (gen, order, cursor, taken) in zip(self.streams, saved, strict=True):
            clone = copy.copy(stream)
            clone.generator = torch.Generator().set_state(gen)
            clone._order, clone._cursor, clone.taken = order, cursor, taken
            other.streams.append(clone)
        return other


def unroll(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Unrolled:
    """The training of ``rows`` (one batch size, one optimizer) as the engine runs it.

    ``task`` is the CPU task (everything random is drawn from it there); the replay's tensors
    then move to ``device`` (resolved by the caller, e.g. from ``config.run.device``).

    Raises:
        UserError: cone descent, SAM, gradient clipping or weight averaging, a model with
            buffers, or rows that cannot share a chunk.
    """
    if len({(r.batch_size, r.optimizer) for r in rows}) != 1:
        raise UserError("tangent rows must share batch_size and optimizer; split them into chunks")
    if rows[0].optimizer not in DIFFERENTIABLE:
        raise UserError(
            f"tangent supports optimizers {', '.join(DIFFERENTIABLE)}; got {rows[0].optimizer!r} "
            "(cone descent is not differentiable here)"
        )
    trainer = config.trainer
    if trainer.sam_rho or trainer.clip_norm is not None:
        raise UserError(
            "tangent replays plain optimizer steps; set trainer.sam_rho = 0 and leave "
            "trainer.clip_norm out (their steps are not differentiated here)"
        )
    if trainer.ema_decay or trainer.swa_start is not None:
        raise UserError(
            "tangent follows the weights a member trains, not an average of them; set "
            "trainer.ema_decay = 0 and leave trainer.swa_start out"
        )
    modules = [initial_module(task, r) for r in rows]
    template = modules[0]
    if any(True for _ in template.buffers()):
        raise UserError(
            "tangent supports models without buffers (no BatchNorm); use a flat MLP task such as "
            "digits-mlp"
        )
    names = [k for k, _ in template.named_parameters()]
    device = torch.device(device)
    params0 = {
        k: torch.stack([m.get_parameter(k).detach() for m in modules]).to(dtype).to(device)
        for k in names
    }
    # init = init_scale * w + noise, so d init / d init_scale = w, the unscaled weights.
    unscaled = [initial_module(task, _unit_scale(r)) for r in rows]
    scale_tangent = {
        k: torch.stack([m.get_parameter(k).detach() for m in unscaled]).to(dtype).to(device)
        for k in names
    }
    steps = total_steps(config, task, rows[0].batch_size)
    hyper = {
        h: torch.tensor([getattr(r, h) for r in rows], dtype=torch.float64, device=device)
        for h in HYPERS
    }
    return Unrolled(
        task=task_on(task, device),
        config=config,
        rows=tuple(rows),
        module=template.to(dtype).to(device),
        params0=params0,
        scale_tangent=scale_tangent,
        targets=torch.stack([member_targets(task, r) for r in rows]).to(device),
        hyper=hyper,
        steps=steps,
        snapshots=tuple(snapshot_steps(config.run.snapshots, steps)),
        dtype=dtype,
        device=device,
    )


def _unit_scale(row: PlanRow) -> PlanRow:
    return replace(row, init_scale=1.0, init_noise=0.0)


def trajectory(
    run: Unrolled, params: Params | None = None, hyper: dict[str, Tensor] | None = None
) -> Iterator[tuple[int, Tensor, Tensor, Params]]:
    """Replay the primal run: yields ``(step, x, y, params before the step)``, then ``(steps + 1,
    -, -, final)``.
    """
    params = dict(run.params0 if params is None else params)
    hyper = run.hyper if hyper is None else hyper
    state = run.init_state(params)
    step, batches = run.vstep(), run.batches()
    # No torch.no_grad here: a generator would leak it into the caller between yields.
    for t in range(1, run.steps + 1):
        x, y = batches.next()
        yield t, x, y, params
        params, state = step(params, state, hyper, x, y, t, run.factor(t))
    yield run.steps + 1, x, y, params


def replay(run: Unrolled, params: Params | None = None, hyper: Hypers | None = None) -> Params:
    """The primal run with plain autograd through the engine's batched forward: final weights.

    The engine's step in the run's dtype: gradients of the summed member losses, then the
    optimizer's update (pure, so nothing here is written in place).
    """
    params = dict(run.params0 if params is None else params)
    hyper = run.hyper if hyper is None else hyper
    state = run.init_state(params)
    batches = run.batches()
    for t in range(1, run.steps + 1):
        x, y = batches.next()
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            grads = torch.autograd.grad(run.losses(leaves, x, y).sum(), list(leaves.values()))
        with torch.no_grad():
            step_hyper = run.optimizer_hyper(hyper, run.factor(t))
            grads_by_name = dict(zip(leaves, grads, strict=True))
            params, state = run.optim.update(params, grads_by_name, state, step_hyper, t)
    return params


def final_params(
    run: Unrolled,
    params: Params | None = None,
    hyper: Hypers | None = None,
    method: str = "linearized",
) -> Params:
    """Every member's weights after training, ``{name: [members, *shape]}`` (no tangents).

    ``method="linearized"`` steps with plain autograd over the engine's batched forward
    (:func:`replay`, no columns); ``"functional"`` with :meth:`Unrolled.vstep`.
    """
    if method == "linearized":
        return replay(run, params, hyper)
    last: Params = {}
    for _, _, _, last in trajectory(run, params, hyper):  # noqa: B007 - keep only the final weights
        pass
    return last
