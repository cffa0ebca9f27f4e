"""The training loop: a chunk of members, each on its own data, with its own hyperparameters.

This file is the specification of what training *means*; read it top to bottom. The
vectorized and loop strategies run this same loop and differ only in the forward pass
(``batched_forward`` for many members at once, ``single_forward`` one member at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from attractor.config import Config
from attractor.optim import get_optimizer
from attractor.optim.base import Hyper, member_sum
from attractor.optim.schedules import lr_factor
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.tasks.base import Task
from attractor.training.data import BatchStream, member_pool, member_targets, steps_per_epoch
from attractor.training.forward import BatchedForward, Params, batched_forward, single_forward
from attractor.training.init import initial_module
from attractor.training.snapshots import snapshot_steps

# Rows (members x examples) evaluated in one forward pass at a snapshot.
_EVAL_ROWS = 1 << 15

#: Called at every snapshot for every still-healthy member:
#: (row, step, parameters and buffers of that member, metric name -> value).
SnapshotSink = Callable[[PlanRow, int, Params, dict[str, float]], None]


@dataclass(frozen=True, eq=False)
class Start:
    """A member's complete training state after ``step`` optimizer steps: enough to go on.

    Children spawned from a parent (Frankle et al. 2020) start here instead of at their
    row's initial weights; their own row still sets their data order, label noise and
    hyperparameters. Tensors are one member's, without the member dimension.

    Attributes:
        step: optimizer steps already taken; training continues with step ``step + 1``,
            so the lr schedule and Adam's bias correction go on where they were.
        params: parameter name -> tensor.
        buffers: buffer name -> tensor (BatchNorm running statistics, ...).
        optimizer_state: parameter name -> slot name -> tensor (SGD ``momentum_buffer``,
            Adam ``exp_avg`` / ``exp_avg_sq``).

    References:
        Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
    """

    step: int
    params: Params
    buffers: Params
    optimizer_state: dict[str, dict[str, Tensor]]


#: Called at every snapshot for every still-healthy member with its full :class:`Start`
#: state there: (row, step, state).
StateSink = Callable[[PlanRow, int, Start], None]


@dataclass(frozen=True)
class Outcome:
    """How a member's training ended."""

    member: int
    status: str  # "done" | "diverged"
    steps: int
    diverged_step: int | None = None


def total_steps(config: Config, task: Task, batch_size: int) -> int:
    """Optimizer steps of a member: ``trainer.steps``, or ``epochs`` passes of ``n_train // batch_size``."""
    if config.trainer.steps is not None:
        return config.trainer.steps
    return max(1, math.ceil(config.trainer.epochs * steps_per_epoch(task, batch_size)))


def train_chunk(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    vectorized: bool,
    on_snapshot: SnapshotSink,
    on_step: Callable[[int], None] | None = None,
    *,
    start: list[Start] | None = None,
    on_state: StateSink | None = None,
) -> list[Outcome]:
    """Train ``rows`` together (they must share ``batch_size`` and ``optimizer``).

    A chunk of one member is padded with a copy of itself: a batch of one takes another
    matmul kernel than a batch of many, and a member must not depend on its chunk.

    Args:
        start: one :class:`Start` per row, all at the same step ``k``: each member begins
            from that state (weights, buffers, optimizer state) and takes steps
            ``k + 1 .. total``; only snapshots at steps ``>= k`` are taken. Its data
            stream starts afresh from its row's ``data_seed``. ``None``: every member
            starts at step 0 from its row's initial weights.
        on_state: receives every healthy member's full state at every snapshot step,
            the states a later ``start`` can spawn children from.

    With ``run.track_path`` every snapshot's metrics also hold ``path_length`` (the sum of
    the members' step lengths ``|x_t - x_{t-1}|`` over all parameters, from the first step
    trained here: a spawned child's path starts at its spawn step) and ``init_distance``
    (``|x_t - x_0|`` to the row's own initial weights).
    """
    assert len({(r.batch_size, r.optimizer) for r in rows}) == 1, "a chunk shares batch_size and optimizer"
    pad = vectorized and len(rows) == 1
    members = list(rows) + ([rows[0]] if pad else [])
    n, batch_size = len(members), rows[0].batch_size
    steps = total_steps(config, task, batch_size)
    if start is not None:
        _check_start(start, len(rows), steps)
        start = list(start) + ([start[0]] if pad else [])
    first = 0 if start is None else start[0].step
    snaps = {s for s in snapshot_steps(config.run.snapshots, steps) if s >= first}

    # Each member: its own initial weights (or its start state), data pool, label noise
    # and batch order.
    modules = [initial_module(task, r) for r in members]
    template = modules[0]
    if start is None:
        params: Params = {k: torch.stack([m.get_parameter(k).detach() for m in modules]).requires_grad_(True) for k, _ in template.named_parameters()}
        buffers: Params = {k: torch.stack([m.get_buffer(k).detach().clone() for m in modules]) for k, _ in template.named_buffers()}
    else:
        params = {k: torch.stack([s.params[k].detach() for s in start]).requires_grad_(True) for k, _ in template.named_parameters()}
        buffers = {k: torch.stack([s.buffers[k] for s in start]) for k, _ in template.named_buffers()}
    streams = [BatchStream(member_pool(task, r), batch_size, r.data_seed) for r in members]
    noisy_targets = [member_targets(task, r) for r in members]
    shared_targets = all(t is task.y_train for t in noisy_targets)
    target_table = None if shared_targets else torch.stack(noisy_targets)
    forward: BatchedForward = batched_forward(template) if vectorized else single_forward(template)

    optimizer = get_optimizer(rows[0].optimizer)
    state = optimizer.init(params)
    if start is not None:
        state = {name: {slot: torch.stack([s.optimizer_state[name][slot] for s in start]) for slot in slots} for name, slots in state.items()}
    trainer = config.trainer
    hyper = _member_hyper(members, config)
    active = torch.ones(n, dtype=torch.bool)
    diverged_at: list[int | None] = [None] * n
    path = _PathTracker(params, [dict(m.named_parameters()) for m in modules]) if config.run.track_path else None

    def member_start(i: int, step: int) -> Start:
        slots = {name: {slot: v[i].detach().clone() for slot, v in held.items()} for name, held in state.items()}
        return Start(step, {k: v[i].detach().clone() for k, v in params.items()}, {k: v[i].clone() for k, v in buffers.items()}, slots)

    def snapshot(step: int) -> None:
        metrics = evaluate(task, template, forward, params, buffers, config.run.eval_batch_size)
        if path is not None:
            metrics.update(path.metrics(params))
        for i, row in enumerate(rows):
            if active[i]:
                member_state = {k: v[i].detach().clone() for k, v in {**params, **buffers}.items()}
                on_snapshot(row, step, member_state, {name: float(v[i]) for name, v in metrics.items()})
                if on_state is not None:
                    on_state(row, step, member_start(i, step))

    if first in snaps:
        snapshot(first)
    template.train()
    # Randomness inside the forward pass (dropout) draws from the global RNG, seeded here
    # from the rows. Only the loop strategy gets here with such a model (vmap refuses
    # random ops), and it trains one row at a time, so each member draws its own stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("forward", *(seed for r in rows for seed in (r.noise_seed, r.data_seed))))
        for step in range(first + 1, steps + 1):
            index = torch.stack([s.next() for s in streams])  # [n, batch]
            x = task.x_train[index]
            y = task.y_train[index] if target_table is None else torch.gather(target_table, 1, index)

            logits = forward(params, buffers, x)
            per_example = task.loss(logits, y)
            if trainer.logit_penalty:
                # Spectral decoupling (Pezeshki et al. 2021): penalize the logits themselves, not
                # the weights, so no feature can grow without bound and starve the others.
                per_example = per_example + 0.5 * trainer.logit_penalty * logits.pow(2).sum(-1)
            loss = per_example.reshape(n, -1).mean(1)  # [n]: each member's own mean loss
            grads = torch.autograd.grad(loss.sum(), list(params.values()))

            # Divergence is data, not a crash: a member whose loss is no longer finite is
            # frozen and recorded; the others' slices never see its numbers.
            newly = active & ~torch.isfinite(loss.detach())
            for i in torch.nonzero(newly).flatten().tolist():
                diverged_at[i] = step
            active &= ~newly

            factor = lr_factor(trainer.schedule, step, steps, trainer.warmup_fraction)
            scaled = replace(hyper, lr=hyper.lr * factor)
            # The mask costs a copy of every tensor: pass it only once some member has diverged.
            mask = None if bool(active.all()) else active
            if path is not None:
                path.before_step(params)
            optimizer.step(params, dict(zip(params, grads, strict=True)), state, scaled, step, mask)
            if path is not None:
                path.after_step(params)
            if on_step is not None:
                on_step(len(rows))
            if step in snaps:
                snapshot(step)

    return [
        Outcome(row.member, "done" if diverged_at[i] is None else "diverged", steps, diverged_at[i])
        for i, row in enumerate(rows)
    ]


class _PathTracker:
    """Each member's path length and distance from init in weight space, over all parameters.

    Differences are taken in float64 (exact for float32 weights) and summed by
    :func:`member_sum` in a fixed order, so a member's numbers do not depend on its chunk.
    """

    def __init__(self, params: Params, initial: list[dict[str, Tensor]]) -> None:
        self.x0 = {k: torch.stack([m[k].detach() for m in initial]).double() for k in params}
        self.length = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.float64)
        self.previous: Params = {}

    def before_step(self, params: Params) -> None:
        self.previous = {k: v.detach().double() for k, v in params.items()}

    def after_step(self, params: Params) -> None:
        squared = sum(member_sum((params[k].detach().double() - old).square()) for k, old in self.previous.items())
        self.length += squared.sqrt()
        self.previous = {}

    def metrics(self, params: Params) -> dict[str, Tensor]:
        squared = sum(member_sum((params[k].detach().double() - x0).square()) for k, x0 in self.x0.items())
        return {"path_length": self.length.clone(), "init_distance": squared.sqrt()}


def _check_start(start: list[Start], rows: int, steps: int) -> None:
    if len(start) != rows or len({s.step for s in start}) != 1:
        raise ValueError(f"start needs one state per row ({rows}), all at one step; got steps {[s.step for s in start]}")
    if not 0 <= start[0].step < steps:
        raise ValueError(f"start step {start[0].step} is outside training (0 .. {steps - 1})")


def _member_hyper(members: list[PlanRow], config: Config) -> Hyper:
    """Per-member hyperparameters from the rows (float64, as torch.optim keeps Python floats)."""
    trainer = config.trainer

    def column(name: str) -> Tensor:
        return torch.tensor([getattr(r, name) for r in members], dtype=torch.float64)

    # The optimizer's own randomness (a random cone angle) is minibatch noise: seeded, like
    # dropout, from the row's noise and data seeds.
    seeds = torch.tensor([derive_seed("optimizer", r.noise_seed, r.data_seed) for r in members], dtype=torch.int64)
    return Hyper(
        lr=column("lr"), momentum=column("momentum"), weight_decay=column("weight_decay"),
        nesterov=trainer.nesterov, beta2=trainer.beta2, eps=trainer.eps, cone_angle=trainer.cone_angle,
        cone_random=trainer.cone_random, cone_per_tensor=trainer.cone_per_tensor, seed=seeds,
    )


@torch.no_grad()
def evaluate(task: Task, template: torch.nn.Module, forward: BatchedForward, params: Params, buffers: Params, batch_size: int) -> dict[str, Tensor]:
    """Every member's mean metrics on the train and test splits: ``{"test_loss": [n], ...}``."""
    was_training = template.training
    template.eval()
    n = next(iter(params.values())).shape[0]
    # Bound the rows in flight (members x examples) so activations stay cache- and
    # memory-friendly however many members a chunk has.
    batch_size = max(1, min(batch_size, _EVAL_ROWS // n))
    results: dict[str, Tensor] = {}
    for split, xs, ys in (("train", task.x_train, task.y_train), ("test", task.x_test, task.y_test)):
        sums: dict[str, Tensor] = {}
        for start in range(0, len(xs), batch_size):
            xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
            logits = forward(params, buffers, xb.unsqueeze(0).expand(n, *xb.shape))
            for name, metric in task.evaluation_metrics().items():
                value = metric(logits, yb.unsqueeze(0).expand(n, *yb.shape)).reshape(n, -1).sum(1)
                sums[name] = sums.get(name, 0) + value
        for name, total in sums.items():
            results[f"{split}_{name}"] = total / ys.numel()
    template.train(was_training)
    return results
