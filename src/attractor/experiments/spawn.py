"""Training for the instability analysis: one parent, children spawned from its state.

The parent trains with ``[trainer]``'s values and hands its complete training state
(weights, buffers, optimizer state, step count) at every spawn step to
:func:`train_children`, whose children train on to the end from that state, each with its
own data-order seed. Everything stays in memory: nothing here writes a run directory.
"""

from __future__ import annotations

from torch import Tensor

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.tasks.base import Task
from attractor.training.engine import Start, train_chunk

#: Seeds of parent and children are drawn below this (the plan's seed range).
SEED_SPACE = 2**31


def spawn_row(config: Config, member: int, data_seed: int) -> PlanRow:
    """A parent or child: the shared init seed, its own data order, ``[trainer]``'s values."""
    trainer = config.trainer
    return PlanRow(
        member=member,
        init_seed=derive_seed("instability-init", config.plan.seed) % SEED_SPACE,
        data_seed=data_seed,
        lr=trainer.lr,
        momentum=trainer.momentum,
        weight_decay=trainer.weight_decay,
        batch_size=trainer.batch_size,
        optimizer=trainer.optimizer,
    )


def train_parent(
    task: Task, config: Config, spawn: list[int], vectorized: bool
) -> tuple[PlanRow, dict[int, Start]]:
    """The parent's row and its complete training state at every spawn step."""
    parent = spawn_row(
        config, 0, derive_seed("instability-parent-data", config.plan.seed) % SEED_SPACE
    )
    starts: dict[int, Start] = {}
    outcome = train_chunk(
        task,
        with_snapshots(config, spawn),
        [parent],
        vectorized,
        lambda *_: None,
        on_state=lambda _row, step, state: starts.__setitem__(step, state),
    )[0]
    missing = [k for k in spawn if k not in starts]
    if missing:
        raise UserError(
            f"the parent diverged at step {outcome.diverged_step}, before spawn step "
            f"{missing[0]}; lower trainer.lr"
        )
    return parent, starts


def train_children(
    task: Task, config: Config, children: list[PlanRow], vectorized: bool, start: Start, steps: int
) -> dict[int, dict[str, Tensor]]:
    """Final parameters and buffers of every child that did not diverge, all spawned from
    ``start``.
    """
    final: dict[int, dict[str, Tensor]] = {}

    def keep(
        child: PlanRow, step: int, state: dict[str, Tensor], _metrics: dict[str, float]
    ) -> None:
        if step == steps:
            final[child.member] = state

    train_chunk(task, config, children, vectorized, keep, start=[start] * len(children))
    return final


def with_snapshots(config: Config, steps: list[int]) -> Config:
    """``config`` with ``run.snapshots`` set to ``steps`` (0 and the last step are always in)."""
    data = config.resolved()
    data["run"]["snapshots"] = list(steps) if steps else 1
    return Config.model_validate(data)
