"""The engine's training of a chunk of members, as a pure function ``jvp`` / ``vjp`` can go through.

:func:`attractor.training.engine.train_chunk` is the specification; this module replays it
for the members of one chunk (same ``batch_size`` and ``optimizer``):

* initial weights from :func:`~attractor.training.init.initial_module` (``init_scale``,
  ``init_noise``), batches from ``BatchStream(member_pool(task, row), batch_size,
  row.data_seed)``, targets from :func:`~attractor.training.data.member_targets`;
* loss ``task.loss(logits, y).mean()`` (+ the logit penalty), lr ``lr * lr_factor(step)``;
* the optimizer update of :mod:`attractor.optim.sgd` / :mod:`attractor.optim.adam` in the
  same formula order, per-member scalars computed in float64 and rounded once to the
  parameter dtype, but out of place so that forward and reverse mode see every operation.

One step is ``(params, state, hyper) -> (params, state)`` for one member without a member
dimension; :meth:`Unrolled.vstep` vmaps it over the members. Hyperparameters are float64
0-dim tensors (``lr``, ``momentum``, ``weight_decay``), never Python floats closed over, so
a tangent can be attached to them (Baydin et al. 2018).

Not supported: cone descent (its random angle and projection) and models with buffers
(BatchNorm statistics update in place) are refused with a :class:`UserError`; random
forward passes (dropout) are refused by ``vmap``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from attractor.config import Config
from attractor.errors import UserError
from attractor.optim.schedules import lr_factor
from attractor.plan import PlanRow
from attractor.tasks.base import Task
from attractor.training.data import BatchStream, member_pool, member_targets
from attractor.training.engine import total_steps
from attractor.training.init import initial_module
from attractor.training.snapshots import snapshot_steps

Params = dict[str, Tensor]
State = dict[str, dict[str, Tensor]]
HYPERS = ("lr", "momentum", "weight_decay")
SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}
StepFn = Callable[[Params, State, dict[str, Tensor], Tensor, Tensor, int, float], tuple[Params, State]]


def _scalar(value: Tensor, like: Tensor) -> Tensor:
    """A float64 per-member coefficient rounded once to ``like``'s dtype (as ``optim.base.per_member``)."""
    return value.to(like.dtype)


def _safe_sqrt(v: Tensor) -> Tensor:
    """``sqrt(v)`` whose derivative at ``v == 0`` is 0, not ``inf``.

    Adam's second moment is exactly 0 where every gradient so far was 0 (an input pixel
    that is always 0); there its tangent is 0 too, and ``0 * inf`` would poison the run.
    """
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def sgd_update(p: Tensor, g: Tensor, slots: dict[str, Tensor], lr: Tensor, mom: Tensor, wd: Tensor, step: int, nesterov: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """One parameter's SGD step: ``g += wd p; buf = mom buf + g; p -= lr (g + mom buf | buf)``."""
    g = g + p * _scalar(wd, p)  # the engine skips this when wd == 0; + 0 * p changes no finite value
    buf = slots["momentum_buffer"] * _scalar(mom, p) + g
    direction = g + buf * _scalar(mom, p) if nesterov else buf
    return p + direction * _scalar(-lr, p), {"momentum_buffer": buf}


def adam_update(p: Tensor, g: Tensor, slots: dict[str, Tensor], lr: Tensor, beta1: Tensor, wd: Tensor, step: int,
                decoupled: bool, beta2: float, eps: float) -> tuple[Tensor, dict[str, Tensor]]:
    """One parameter's Adam(W) step in :mod:`attractor.optim.adam`'s formula order."""
    if decoupled:
        p = p * _scalar(1 - lr * wd, p)
    else:
        g = g + p * _scalar(wd, p)
    m = torch.lerp(slots["exp_avg"], g, _scalar(1 - beta1, p))
    v = slots["exp_avg_sq"] * beta2 + g * g * (1 - beta2)
    denom = _safe_sqrt(v) / ((1 - beta2**step) ** 0.5) + eps
    return p + (m * _scalar(-lr / (1 - beta1**step), p)) / denom, {"exp_avg": m, "exp_avg_sq": v}


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

    @property
    def members(self) -> int:
        return len(self.rows)

    @property
    def optimizer(self) -> str:
        return self.rows[0].optimizer

    def init_state(self, params: Params) -> State:
        """Zero optimizer slots, ``{name: {slot: zeros like params[name]}}``."""
        return {k: {s: torch.zeros_like(v) for s in SLOTS[self.optimizer]} for k, v in params.items()}

    def factor(self, step: int) -> float:
        trainer = self.config.trainer
        return lr_factor(trainer.schedule, step, self.steps, trainer.warmup_fraction)

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """One member's training loss on a batch, as the engine's: mean per-example loss (+ logit penalty)."""
        logits = functional_call(self.module, params, (x,))
        per_example = self.task.loss(logits, y)
        if self.config.trainer.logit_penalty:
            per_example = per_example + 0.5 * self.config.trainer.logit_penalty * logits.pow(2).sum(-1)
        return per_example.mean()

    def step_fn(self) -> StepFn:
        """``(params, state, hyper, x, y, step, factor) -> (params, state)`` for one member."""
        gradient = grad(self.loss)
        trainer, name = self.config.trainer, self.optimizer

        def step(params: Params, state: State, hyper: dict[str, Tensor], x: Tensor, y: Tensor, t: int, factor: float) -> tuple[Params, State]:
            grads = gradient(params, x, y)
            lr, mom, wd = hyper["lr"] * factor, hyper["momentum"], hyper["weight_decay"]
            new_params: Params = {}
            new_state: State = {}
            for k, p in params.items():
                if name == "sgd":
                    new_params[k], new_state[k] = sgd_update(p, grads[k], state[k], lr, mom, wd, t, trainer.nesterov)
                else:
                    new_params[k], new_state[k] = adam_update(p, grads[k], state[k], lr, mom, wd, t, name == "adamw", trainer.beta2, trainer.eps)
            return new_params, new_state

        return step

    def vstep(self) -> StepFn:
        """:meth:`step_fn` vmapped over members: every argument but ``step``, ``factor`` has them first."""
        one = self.step_fn()

        def batched(params: Params, state: State, hyper: dict[str, Tensor], x: Tensor, y: Tensor, t: int, factor: float) -> tuple[Params, State]:
            return vmap(lambda p, s, h, xb, yb: one(p, s, h, xb, yb, t, factor))(params, state, hyper, x, y)

        return batched

    def batches(self) -> Batches:
        """Every member's minibatch stream from step 1, exactly the engine's."""
        return Batches(self)


class Batches:
    """The members' minibatches in lockstep; :meth:`save` / :meth:`restore` allow replaying a segment."""

    def __init__(self, run: Unrolled) -> None:
        self.run = run
        self.streams = [BatchStream(member_pool(run.task, r), r.batch_size, r.data_seed) for r in run.rows]

    def next(self) -> tuple[Tensor, Tensor]:
        """``x [members, batch, ...]`` in the run's dtype and ``y [members, batch]`` of the next step."""
        index = torch.stack([s.next() for s in self.streams])
        x = self.run.task.x_train[index]
        return (x.to(self.run.dtype) if x.is_floating_point() else x), torch.gather(self.run.targets, 1, index)

    def save(self) -> list[tuple[Tensor, Tensor, int]]:
        return [(s.generator.get_state(), s._order, s._cursor) for s in self.streams]

    def restore(self, saved: list[tuple[Tensor, Tensor, int]]) -> Batches:
        """A copy of these streams positioned where ``saved`` was taken."""
        other = copy.copy(self)
        other.streams = []
        for stream, (gen, order, cursor) in zip(self.streams, saved, strict=True):
            clone = copy.copy(stream)
            clone.generator = torch.Generator().set_state(gen)
            clone._order, clone._cursor = order, cursor
            other.streams.append(clone)
        return other


def unroll(task: Task, config: Config, rows: list[PlanRow], dtype: torch.dtype = torch.float64) -> Unrolled:
    """The training of ``rows`` (one batch size, one optimizer) as the engine runs it.

    Raises:
        UserError: cone descent, a model with buffers, or rows that cannot share a chunk.
    """
    if len({(r.batch_size, r.optimizer) for r in rows}) != 1:
        raise UserError("tangent rows must share batch_size and optimizer; split them into chunks")
    if rows[0].optimizer not in SLOTS:
        raise UserError(f"tangent supports optimizers {', '.join(SLOTS)}; got {rows[0].optimizer!r} (cone descent is not differentiable here)")
    modules = [initial_module(task, r) for r in rows]
    template = modules[0]
    if any(True for _ in template.buffers()):
        raise UserError("tangent supports models without buffers (no BatchNorm); use a flat MLP task such as digits-mlp")
    names = [k for k, _ in template.named_parameters()]
    params0 = {k: torch.stack([m.get_parameter(k).detach() for m in modules]).to(dtype) for k in names}
    # init = init_scale * w + noise, so d init / d init_scale = w, the unscaled weights.
    unscaled = [initial_module(task, _unit_scale(r)) for r in rows]
    scale_tangent = {k: torch.stack([m.get_parameter(k).detach() for m in unscaled]).to(dtype) for k in names}
    steps = total_steps(config, task, rows[0].batch_size)
    hyper = {h: torch.tensor([getattr(r, h) for r in rows], dtype=torch.float64) for h in HYPERS}
    return Unrolled(
        task=task, config=config, rows=tuple(rows), module=template.to(dtype), params0=params0, scale_tangent=scale_tangent,
        targets=torch.stack([member_targets(task, r) for r in rows]), hyper=hyper, steps=steps,
        snapshots=tuple(snapshot_steps(config.run.snapshots, steps)), dtype=dtype,
    )


def _unit_scale(row: PlanRow) -> PlanRow:
    from dataclasses import replace

    return replace(row, init_scale=1.0, init_noise=0.0)


def trajectory(run: Unrolled, params: Params | None = None, hyper: dict[str, Tensor] | None = None) -> Iterator[tuple[int, Tensor, Tensor, Params]]:
    """Replay the primal run: yields ``(step, x, y, params before the step)``, then ``(steps + 1, -, -, final)``."""
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


def final_params(run: Unrolled, params: Params | None = None, hyper: dict[str, Tensor] | None = None, method: str = "linearized") -> Params:
    """Every member's weights after training, ``{name: [members, *shape]}`` (no tangents).

    ``method="linearized"`` steps with plain autograd over batched matmuls (the fast path of
    :mod:`attractor.tangent.linearized`, no columns); ``"functional"`` with :meth:`Unrolled.vstep`.
    """
    if method == "linearized":
        from attractor.tangent.linearized import replay

        return replay(run, params, hyper)
    last: Params = {}
    for _, _, _, last in trajectory(run, params, hyper):  # noqa: B007 - keep only the final weights
        pass
    return last
