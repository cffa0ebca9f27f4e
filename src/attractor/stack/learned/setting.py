"""The contract of a learned-evaluator setting: what the experiment asks of digits or text.

A setting owns everything that depends on what the items are (images, texts): the human's
examples and their perturbed copies as features, the held-out truth, the generator and its
fine-tuning, and how items are shown in the report. The experiment
(:mod:`attractor.stack.learned.experiment`) owns the rest: the factorial, the evaluators,
the measures. A new setting is one file implementing :class:`Setting` plus one line in the
experiment's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.runs.store import RunStore
from attractor.stack.learned.examples import ExampleRow, ExampleSets
from attractor.stack.learned.reward_model import Evaluators
from attractor.training.forward import Params


@dataclass(frozen=True)
class Trained:
    """What fine-tuning ``m`` generators produced, in the experiment's terms.

    Attributes:
        proxy: float64 ``[m, rounds + 1]`` mean evaluator reward of each model's evaluation
            samples (column 0: the base).
        true: float64 ``[m, rounds + 1]`` their mean true preference.
        true_final: float64 ``[m, e]`` the final models' true preference per evaluation
            sample (the same ``e`` noises or seeds for every model).
        classes: int64 ``[m, e]`` a class read off each final sample (images), or None.
        distances: float64 ``[m, m, k]`` the models' distance in function space on ``k``
            shared items (images from the same noise; next-token JS on held-out text).
        distance: the name of that measure and its note, for the spread table.
        samples: a few final samples per model for the report (``member`` and ``pixels``,
            or ``member`` and ``text``).
    """

    proxy: Tensor
    true: Tensor
    true_final: Tensor
    classes: Tensor | None
    distances: Tensor
    distance: tuple[str, str]
    samples: pd.DataFrame


class Setting(Protocol):
    """One kind of item (see the module docstring).

    Built with the device the evaluators and generators compute on; every tensor it gives
    or returns (features, truths, :class:`Trained`) is on the CPU.
    """

    #: The feature width evaluators read.
    inputs: int
    #: Where the evaluators train and the generators fine-tune.
    device: torch.device
    #: Where the base generator came from (recorded with the result).
    source: dict[str, Any]

    def examples(self) -> Any:
        """The human's labelled examples (``labels [n]``, ``source``, ``len``)."""
        ...

    def sets(self, examples: Any, rows: Sequence[ExampleRow]) -> ExampleSets:
        """Every row's perturbed copy of the examples, as features ``[m, n, inputs]``."""
        ...

    def held_out(self) -> tuple[Tensor, Tensor]:
        """Held-out items' features ``[k, inputs]`` and their true labels ``[k]``."""
        ...

    def train(
        self, evaluators: Evaluators, trainer: dict[str, Any], seeds: Sequence[int]
    ) -> Trained:
        """Fine-tune one copy of the base per evaluator member (member ``i`` climbs
        ``evaluators`` member ``i``) with the trainer options given (None: the default).
        """
        ...

    def shown(self, examples: Any) -> pd.DataFrame:
        """The human's examples for the report (``label`` and ``pixels`` or ``text``)."""
        ...

    def pool(self, examples: Any) -> tuple[Tensor, pd.DataFrame]:
        """Unlabelled candidates: features ``[b, inputs]`` and one row each for the report
        (``index``, ``rule`` and ``pixels`` or ``text``).
        """
        ...


@dataclass(frozen=True)
class Base:
    """The generator every member starts from: one finished member of a run.

    Attributes:
        run: its :class:`~attractor.runs.ensemble.Ensemble`; member: its id.
        template: its module; params, buffers: its weights, stacked ``[1, ...]``.
    """

    run: Any
    member: int
    template: nn.Module
    params: Params
    buffers: Params

    @property
    def source(self) -> dict[str, Any]:
        """Where it came from, as a result records it."""
        return {"run": str(self.run.store.root), "member": self.member}

    def copies(self, m: int) -> tuple[Params, Params]:
        """``m`` independent copies of its parameters and buffers, stacked ``[m, ...]``."""

        def stack(tensors: Params) -> Params:
            return {k: v.expand(m, *v.shape[1:]).clone() for k, v in tensors.items()}

        return stack(self.params), stack(self.buffers)


def base_run(model: str | None, task: str, train: Any, store: RunStore) -> Base:
    """The base generator: member ``model`` (``RUN:MEMBER``), or member 0 of a run
    ``train(root)`` trains in ``OUT/base``; one line if it is not a finished ``task`` member.
    """
    from attractor.runs.ensemble import Ensemble

    if model is not None:
        run, _, member = model.rpartition(":")
        if not run or not member.isdigit():
            raise UserError(f"model {model!r} is not RUN:MEMBER (a member is a number)")
        ensemble, index = Ensemble.load(run), int(member)
    else:
        ensemble, index = train(store.root / "base"), 0
    if ensemble.config.task.name != task:
        raise UserError(
            f"run '{ensemble.store.root}' trained {ensemble.config.task.name!r}; this setting "
            f"fine-tunes a {task} model"
        )
    if index not in ensemble.members:
        raise UserError(
            f"run '{ensemble.store.root}' has no finished member {index} "
            f"(finished: {ensemble.members})"
        )
    params, buffers = ensemble.stacked([index])
    return Base(ensemble, index, ensemble.module(index), params, buffers)


def design_options(options: dict[str, Any], design: type, setting: str) -> dict[str, Any]:
    """The trainer options a setting's design takes (None: the design's default); one line
    for an option given that the setting has no use for.
    """
    fields = design.__dataclass_fields__
    foreign = sorted(k for k, v in options.items() if v is not None and k not in fields)
    if foreign:
        raise UserError(
            f"[evaluator.trainer] {foreign[0]} is not an option of the {setting} setting; its "
            f"options: {', '.join(fields)}"
        )
    return {k: v for k, v in options.items() if v is not None}


__all__ = ["Base", "Setting", "Trained", "base_run", "design_options"]
