"""The world level: a dynamical system that a trained model acts in.

A :class:`World` is the contract every world satisfies (one file per world, one line in
:data:`attractor.world.WORLDS`). Everything is batched over ``m`` members (the ensemble's
models, or perturbed copies of one) times ``s`` initial states: a state tensor is
``[m, s, *state]``. A rollout (:func:`attractor.world.rollout.rollout`) is the loop

    x_0 = initial states (the same for every member)   [s, *state] -> [m, s, *state]
    x_{t+1} = world.step(x_t, policy, t, constants)
    outcome = world.features(x_T, constants), goal = world.goal(x_T, constants)

where ``policy(inputs [m, s, ...]) -> outputs [m, s, ...]`` applies member ``i``'s model to
row ``i`` (:class:`~attractor.world.rollout.EnsemblePolicy`). A *stable* model is one for
which the initial state hardly matters: the outcomes of perturbed initial states fall
into one basin (the goal, or one majority value of ``basin_feature``).

Devices. A rollout runs where its states are: :meth:`World.on` gives the world whose
``initial`` and ``at`` states are drawn on the CPU (the same numbers on every device) and
then moved to the device, and ``step`` must keep states on the device of its input (create
new tensors with ``device=x.device``; draw any noise on the CPU and move it). The measures
(:func:`~attractor.world.basins.rollout_labels`, the world experiment) bring final states
and trajectories back to the CPU first, so there ``features``, ``goal``, ``project`` and
``describe`` get CPU tensors, and tables are the same wherever the rollouts ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

#: ``policy(inputs [m, s, ...]) -> outputs [m, s, ...]``: member ``i``'s model on row ``i``.
Policy = Callable[[Tensor], Tensor]
#: A world's own constants (pole length, gravity, noise schedule, ...), by name.
Constants = Mapping[str, float]


@dataclass(frozen=True)
class World:
    """A dynamical system driven by a model, batched over members x initial states.

    Attributes:
        name: the registry key.
        description: one line for ``attractor worlds`` and the report.
        factors: initial-state perturbation factors, name -> default half-width (the
            "default range" at perturbation scale 1).
        constants: the world's own constants and their defaults; structural stability of
            the world level perturbs these.
        steps: default rollout length.
        task: the ``[task]`` section (name and options) of the task whose ensemble the
            engine trains as this world's model; ``None`` for a world without a model.
        initial: ``(n, scale, generator) -> [n, *state]``: ``n`` initial states at
            perturbation ``scale`` (1 = the default range of every factor).
        at: ``(values) -> [n, *state]``: states with the named factors set to the given
            ``[n]`` values and every other factor at its nominal value (basin maps over two
            factors); ``None`` if the world's factors cannot be set one by one.
        step: ``(x [m, s, *state], policy, t, constants) -> x'`` one step of the closed loop,
            ``x'`` on ``x``'s device (a tensor constant arrives there too).
        features: ``(x_T, constants) -> name -> [m, s]`` outcome features of final states;
            integer tensors are categorical (a class, a basin label).
        goal: ``(x_T, constants) -> bool [m, s]``: whether a final state reached the goal;
            ``None`` if the world has none (its basins are then the values of
            ``basin_feature``).
        basin_feature: the categorical feature that names a final state's basin.
        project: ``x [..., *state] -> [..., 2]``: coordinates for phase portraits.
        describe: optional renderer of final states for the report, ``x_T [k, *state] ->``
            images ``Tensor [k, h, w]`` (generated digits) or ``list[str]`` of ``k`` texts
            (continuations).
        differentiable: whether ``step`` is differentiable in the state (Lyapunov
            exponents by forward mode); a world of discrete states (tokens) is not.
        axes: the names of ``project``'s two coordinates (phase-portrait axis labels).
        trainer: the ``[trainer]`` defaults for training the world's model (``task``) when
            a world experiment trains it itself.
        options: the options the world was made with (recorded with its results).
        for_model: ``(models) -> (World, Policy)``: the world re-made for models attractor
            did not train, one per member (causal LMs from local Hugging Face directories,
            :class:`~attractor.tasks.lm_models.LanguageModel`: their tokenizer, vocabulary
            and context), and their policy; ``None`` if the world's model must come from a
            run.
    """

    name: str
    description: str
    factors: dict[str, float]
    constants: dict[str, float]
    steps: int
    task: dict[str, Any] | None
    initial: Callable[[int, float, torch.Generator], Tensor]
    step: Callable[[Tensor, Policy | None, int, Constants], Tensor]
    features: Callable[[Tensor, Constants], dict[str, Tensor]]
    basin_feature: str
    project: Callable[[Tensor], Tensor]
    goal: Callable[[Tensor, Constants], Tensor] | None = None
    at: Callable[[Mapping[str, Tensor]], Tensor] | None = None
    describe: Callable[[Tensor], Tensor | list[str]] | None = None
    differentiable: bool = True
    axes: tuple[str, str] = ("projection 1", "projection 2")
    trainer: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    for_model: Callable[[Sequence[Any]], tuple[World, Policy]] | None = None

    def on(self, device: torch.device) -> World:
        """This world with its initial states (``initial``, ``at``) moved to ``device`` after
        they are drawn on the CPU, so a rollout from them runs there and starts from the same
        numbers on every device. The CPU: the world itself.
        """
        if device.type == "cpu":
            return self
        at = None if self.at is None else partial(_moved, self.at, device)
        return replace(self, initial=partial(_moved, self.initial, device), at=at)

    def with_constants(self, **changes: float) -> dict[str, float]:
        """The world's constants with ``changes`` applied (unknown names refused)."""
        unknown = sorted(set(changes) - set(self.constants))
        if unknown:
            from attractor.errors import UserError

            raise UserError(
                f"world '{self.name}' has no constant {unknown[0]!r}; its constants: "
                f"{', '.join(sorted(self.constants))}"
            )
        return {**self.constants, **changes}


def _moved(draw: Callable[..., Tensor], device: torch.device, *args: Any) -> Tensor:
    """``draw(*args)`` (on the CPU) moved to ``device``."""
    return draw(*args).to(device)


def check_factors(world: str, known: Iterable[str], values: Mapping[str, Any]) -> None:
    """One line (:class:`UserError`) for a factor in ``values`` a world's ``at`` cannot set."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        from attractor.errors import UserError

        raise UserError(
            f"world '{world}' has no factor {unknown[0]!r}; its factors: {', '.join(known)}"
        )


__all__ = ["Constants", "Policy", "World", "check_factors"]
