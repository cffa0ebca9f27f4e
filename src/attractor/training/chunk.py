"""The members of one chunk in training: their weights, data, optimizer state and bookkeeping.

:func:`attractor.training.engine.train_chunk` is the loop, read top to bottom; this module
holds what the loop steps: :class:`Chunk` (set up from the rows or from :class:`Start`
states), the divergence bookkeeping, the snapshot, and the weight-space path tracker. The
stability interventions it applies live beside it: SAM and clipping in
:mod:`~attractor.training.interventions`, the weight averages in
:mod:`~attractor.training.averaging`, label smoothing in :mod:`~attractor.training.loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from attractor.config import Config, TrainerConfig
from attractor.optim import get_optimizer
from attractor.optim.base import Hyper, member_sum
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.tasks.base import Task
from attractor.training.averaging import WeightAverage
from attractor.training.data import BatchStream, augmented, member_pool, member_targets
from attractor.training.device import host, precision_context, resolve_device, task_on
from attractor.training.evaluate import evaluate
from attractor.training.forward import Params, batched_forward, single_forward
from attractor.training.forward_conv import StackedConvNet
from attractor.training.init import initial_module
from attractor.training.interventions import clip_per_member, column, sam_point
from attractor.training.loss import check_loss_options, member_losses
from attractor.training.start import Start

#: Called at every snapshot for every still-healthy member:
#: (row, step, parameters and buffers of that member, metric name -> value).
SnapshotSink = Callable[[PlanRow, int, Params, dict[str, float]], None]

#: The trainer options that may differ between the members of one chunk (one trainer per
#: member); every other trainer field is the chunk's.
MEMBERWISE = ("label_smoothing", "clip_norm", "sam_rho", "ema_decay", "swa_start")


#: Called at every snapshot for every still-healthy member with its full :class:`Start`
#: state there: (row, step, state).
StateSink = Callable[[PlanRow, int, Start], None]


class Chunk:
    """Everything the members of a chunk carry from one step to the next.

    A chunk of one member is padded with a copy of itself (``vectorized`` only, but for a
    :class:`~attractor.training.forward_conv.StackedConvNet`, whose layers with weights
    run per member anyway): a batch of one takes another matmul kernel than a batch of
    many, and a member must not depend on its chunk. ``rows`` are the real members; the
    tensors have ``n`` (padded) rows.

    With ``resume``, the ``start`` states are the same members' own earlier states (a run
    killed after ``start[0].step`` steps): their data streams skip the batches already
    taken and their path lengths go on. Without it, a start state is a parent's and each
    member's stream begins afresh from its row's ``data_seed`` (a spawned child).

    ``trainers`` (one per row; ``None``: ``config.trainer`` for all) may differ in the
    :data:`MEMBERWISE` options only. An option's per-member tensor path runs for the whole
    chunk once any member uses it, and a member at the option's off value gets there
    exactly the numbers of the skipped path, so a member still does not depend on its chunk.
    """

    def __init__(
        self,
        task: Task,
        config: Config,
        rows: list[PlanRow],
        vectorized: bool,
        start: list[Start] | None,
        resume: bool = False,
        trainers: list[TrainerConfig] | None = None,
    ) -> None:
        # Each member: its own initial weights (or its start state), data pool, label noise
        # and batch order. The first member's module is the template.
        self.template = initial_module(task, rows[0])
        self.forward = (
            batched_forward(self.template) if vectorized else single_forward(self.template)
        )
        # A conv net's layers with weights run per member anyway: no kernel sees the count.
        pad = vectorized and len(rows) == 1 and not isinstance(self.forward, StackedConvNet)
        self.trainers = _member_trainers(config, rows, trainers, pad)
        check_loss_options(task, *self.trainers)
        members = list(rows) + ([rows[0]] if pad else [])
        if start is not None:
            start = list(start) + ([start[0]] if pad else [])
        self.task, self.config, self.rows, self.n = task, config, rows, len(members)
        self.first = 0 if start is None else start[0].step
        modules = [self.template] + [initial_module(task, r) for r in members[1:]]
        self.params, self.buffers = _weights(self.template, modules, start)
        batch_size = rows[0].batch_size
        self.streams = [BatchStream(member_pool(task, r), batch_size, r.data_seed) for r in members]
        if resume and start is not None:
            for stream in self.streams:
                stream.skip(self.first)
        noisy_targets = [member_targets(task, r) for r in members]
        shared = all(t is task.y_train for t in noisy_targets)
        self.target_table = None if shared else torch.stack(noisy_targets)
        self.optimizer = get_optimizer(rows[0].optimizer)
        self.state = self.optimizer.init(self.params)
        if start is not None:
            self.state = {
                name: {
                    slot: torch.stack([s.optimizer_state[name][slot] for s in start])
                    for slot in slots
                }
                for name, slots in self.state.items()
            }
        self.hyper = _member_hyper(members, config)
        self.active = torch.ones(self.n, dtype=torch.bool)
        self.diverged_at: list[int | None] = [None] * self.n
        track = config.run.track_path
        self.path = (
            _PathTracker(self.params, [dict(m.named_parameters()) for m in modules])
            if track
            else None
        )
        if self.path is not None and resume and start is not None:
            self.path.length = torch.tensor([s.path_length for s in start], dtype=torch.float64)
        smoothing = [t.label_smoothing for t in self.trainers]
        clip = [math.inf if t.clip_norm is None else t.clip_norm for t in self.trainers]
        rho = [t.sam_rho for t in self.trainers]
        self.smoothing = column(smoothing) if any(smoothing) else None
        self.clip = column(clip) if any(c < math.inf for c in clip) else None
        self.rho = column(rho) if any(rho) else None
        self.average = WeightAverage.of(self.trainers, self.params, start)
        self.device = resolve_device(config.run.device)
        if self.device.type != "cpu":
            self._move(self.device)

    def _move(self, device: torch.device) -> None:
        """Every tensor the steps touch onto ``device`` (built on the CPU, seeded there)."""
        self.task = task_on(self.task, device)
        self.params = {
            k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()
        }
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        self.state = {
            name: {slot: v.to(device) for slot, v in held.items()}
            for name, held in self.state.items()
        }
        if self.target_table is not None:
            self.target_table = self.target_table.to(device)
        if self.path is not None:
            self.path.x0 = {k: v.to(device) for k, v in self.path.x0.items()}
            self.path.length = self.path.length.to(device)
        if self.average is not None:
            self.average.params = {k: v.to(device) for k, v in self.average.params.items()}

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """Every member's next minibatch from its own stream: ``x [n, B, ...]``, ``y [n, B]``."""
        index = torch.stack([s.next() for s in self.streams]).to(self.task.x_train.device)
        x = self.task.x_train[index]
        x = augmented(self.task, x, self.streams)
        y = (
            self.task.y_train[index]
            if self.target_table is None
            else torch.gather(self.target_table, 1, index)
        )
        return x, y

    def gradients(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``[n]`` each member's loss, and every parameter's gradient.

        Autograd over the *sum* of member losses: members share no parameters, so each
        member's gradient is exactly its own.
        """
        loss, grads = self._loss_and_grads(self.params, x, y)
        if self.rho is not None:
            shifted = sam_point(self.params, grads, self.rho)
            _, grads = self._loss_and_grads(shifted, x, y)
        if self.clip is not None:
            grads = clip_per_member(grads, self.clip)
        return loss, grads

    def _loss_and_grads(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        live = (
            params
            if params is self.params
            else {k: v.requires_grad_(True) for k, v in params.items()}
        )
        with precision_context(self.config.run.precision, self.device):
            logits = self.forward(live, self.buffers, x)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # the loss and its gradient's first step in float32
        # Without per-member smoothing no member smooths: trainers[0] has the shared fields.
        loss = member_losses(self.task, self.trainers[0], logits, y, self.smoothing)
        grads = torch.autograd.grad(loss.sum(), list(live.values()))
        return loss, dict(zip(live, grads, strict=True))

    def freeze_diverged(self, loss: Tensor, step: int) -> None:
        """Record and freeze members whose loss is no longer finite at ``step``."""
        # The bookkeeping stays on the CPU (a list of steps, a mask read by Python): the
        # losses come from the device.
        newly = self.active & ~torch.isfinite(loss.detach()).to(self.active.device)
        for i in torch.nonzero(newly).flatten().tolist():
            self.diverged_at[i] = step
        self.active &= ~newly

    def optimizer_step(self, grads: dict[str, Tensor], step: int, factor: float) -> None:
        """One optimizer step of every healthy member, lr times the schedule's ``factor``."""
        scaled = replace(self.hyper, lr=self.hyper.lr * factor)
        # The mask costs a copy of every tensor: pass it only once some member has diverged.
        mask = None if bool(self.active.all()) else self.active
        if self.path is not None:
            self.path.before_step(self.params)
        self.optimizer.step(self.params, grads, self.state, scaled, step, mask)
        if self.path is not None:
            self.path.after_step(self.params)

    def update_average(self, step: int, steps: int) -> None:
        """Fold the weights after ``step`` (of ``steps``) into the members' averages."""
        if self.average is not None:
            self.average.update(self.params, step, steps)

    def model_params(self) -> Params:
        """The weights that are each member's model: the average where one is kept."""
        return self.params if self.average is None else self.average.params

    def member_start(self, i: int, step: int, rng: Tensor | None = None) -> Start:
        """Member ``i``'s full state after ``step`` steps (copies, no member dimension)."""
        slots = {
            name: {slot: host(v[i]) for slot, v in held.items()}
            for name, held in self.state.items()
        }
        params = {k: host(v[i]) for k, v in self.params.items()}
        buffers = {k: host(v[i]) for k, v in self.buffers.items()}
        path = 0.0 if self.path is None else float(self.path.length[i])
        average, averaged = None, 0
        if self.average is not None and self.average.kept[i]:
            average = {k: host(v[i]) for k, v in self.average.params.items()}
            averaged = int(self.average.count[i])
        return Start(
            step,
            params,
            buffers,
            slots,
            rng=rng,
            path_length=path,
            average=average,
            averaged=averaged,
        )

    def healthy_states(self, step: int, rng: Tensor | None) -> list[tuple[PlanRow, Start]]:
        """Every still-healthy real member's full state after ``step`` steps."""
        return [
            (row, self.member_start(i, step, rng))
            for i, row in enumerate(self.rows)
            if self.active[i]
        ]

    def snapshot(self, step: int, on_snapshot: SnapshotSink, on_state: StateSink | None) -> None:
        """Evaluate every member and hand each healthy one's weights and metrics to the sinks."""
        model = self.model_params()
        metrics = evaluate(
            self.task,
            self.template,
            self.forward,
            model,
            self.buffers,
            self.config.run.eval_batch_size,
        )
        if self.path is not None:
            metrics.update(self.path.metrics(self.params))
        for i, row in enumerate(self.rows):
            if self.active[i]:
                member_state = {k: host(v[i]) for k, v in {**model, **self.buffers}.items()}
                on_snapshot(
                    row, step, member_state, {name: float(v[i]) for name, v in metrics.items()}
                )
                if on_state is not None:
                    on_state(row, step, self.member_start(i, step))


def _member_trainers(
    config: Config, rows: list[PlanRow], trainers: list[TrainerConfig] | None, pad: bool
) -> list[TrainerConfig]:
    """One trainer per member (the padded one copies row 0's); they differ in MEMBERWISE only."""
    given = [config.trainer] * len(rows) if trainers is None else list(trainers)
    if len(given) != len(rows):
        raise ValueError(f"a chunk needs one trainer per row ({len(rows)}); got {len(given)}")
    shared = config.trainer.model_dump(exclude=set(MEMBERWISE))
    for trainer in given:
        own = trainer.model_dump(exclude=set(MEMBERWISE))
        if own != shared:
            differ = sorted(k for k in shared if own[k] != shared[k])
            raise ValueError(
                f"a chunk's trainers may differ from config.trainer only in {MEMBERWISE}; "
                f"this one differs in {differ}"
            )
    return given + given[:1] if pad else given


def _weights(
    template: torch.nn.Module, modules: list[torch.nn.Module], start: list[Start] | None
) -> tuple[Params, Params]:
    """``(params, buffers)`` stacked over members: from the modules, or from the start states."""
    names = [k for k, _ in template.named_parameters()]
    buffer_names = [k for k, _ in template.named_buffers()]
    if start is None:
        params = {
            k: torch.stack([m.get_parameter(k).detach() for m in modules]).requires_grad_(True)
            for k in names
        }
        buffers = {
            k: torch.stack([m.get_buffer(k).detach().clone() for m in modules])
            for k in buffer_names
        }
    else:
        params = {
            k: torch.stack([s.params[k].detach() for s in start]).requires_grad_(True)
            for k in names
        }
        buffers = {k: torch.stack([s.buffers[k] for s in start]) for k in buffer_names}
    return params, buffers


def _member_hyper(members: list[PlanRow], config: Config) -> Hyper:
    """Per-member hyperparameters from the rows (float64, as torch.optim keeps Python floats)."""
    trainer = config.trainer

    def column(name: str) -> Tensor:
        return torch.tensor([getattr(r, name) for r in members], dtype=torch.float64)

    # The optimizer's own randomness (a random cone angle) is minibatch noise: seeded, like
    # dropout, from the row's noise and data seeds.
    seeds = torch.tensor(
        [derive_seed("optimizer", r.noise_seed, r.data_seed) for r in members], dtype=torch.int64
    )
    return Hyper(
        lr=column("lr"),
        momentum=column("momentum"),
        weight_decay=column("weight_decay"),
        nesterov=trainer.nesterov,
        beta2=trainer.beta2,
        eps=trainer.eps,
        cone_angle=trainer.cone_angle,
        cone_random=trainer.cone_random,
        cone_per_tensor=trainer.cone_per_tensor,
        seed=seeds,
    )


class _PathTracker:
    """Each member's path length and distance from init in weight space, over all parameters.

    Differences are taken in float64 (exact for float32 weights) and summed by
    :func:`member_sum` in a fixed order, so a member's numbers do not depend on its chunk.
    """

    def __init__(self, params: Params, initial: list[dict[str, Tensor]]) -> None:
        self.x0 = {k: torch.stack([m[k].detach() for m in initial]).double() for k in params}
        self.length = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.float64)
        self.previous = {}

    def before_step(self, params: Params) -> None:
        self.previous = {k: v.detach().double() for k, v in params.items()}

    def after_step(self, params: Params) -> None:
        squared = sum(
            member_sum((params[k].detach().double() - old).square())
            for k, old in self.previous.items()
        )
        self.length += squared.sqrt()
        self.previous = {}

    def metrics(self, params: Params) -> dict[str, Tensor]:
        squared = sum(
            member_sum((params[k].detach().double() - x0).square()) for k, x0 in self.x0.items()
        )
        return {"path_length": self.length.clone(), "init_distance": squared.sqrt()}
