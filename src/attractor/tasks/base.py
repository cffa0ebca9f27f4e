"""The Task contract: data, a model factory, a per-example loss.

Any ``torch.nn.Module`` can be a task's model. Inputs and targets are tensors indexed by
example along dim 0; the engine draws each member's minibatches by index, so data order,
bootstrap resamples, held-out groups and label noise are all per member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-example cross-entropy: ``logits [..., C]``, ``targets [...]`` -> ``[...]``."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return flat.view(targets.shape)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-example 0/1 correctness: ``logits [..., C]``, ``targets [...]`` -> ``[...]``."""
    return (logits.argmax(-1) == targets).to(logits.dtype)


@dataclass(frozen=True, eq=False)
class Task:
    """What a member learns.

    Attributes:
        name: registry name or ``module:function``.
        x_train: training inputs, ``[n_train, ...]``.
        y_train: training targets, ``[n_train, ...]`` (class ids for classification).
        x_test: evaluation inputs, ``[n_test, ...]``.
        y_test: evaluation targets, ``[n_test, ...]``.
        make_model: builds a fresh ``nn.Module`` from the global torch RNG (the engine
            seeds it per member); called once per member.
        loss: per-example loss ``(logits [..., C], targets [...]) -> [...]``; a member's
            training loss is its mean.
        num_classes: number of classes when targets are class ids (enables accuracy and
            label noise); ``None`` otherwise.
        groups: ``[n_train]`` group id of each training example, for ``holdout_group``;
            ``None`` uses the class id where there is one.
        description: one line for ``attractor tasks``.
        metrics: extra per-example metrics recorded at every snapshot, name -> function.
        probes: extra evaluation sets, name -> ``(inputs, targets)``, for questions the
            test split alone cannot answer; tasks with a shortcut feature provide
            ``shortcut_agree`` (test inputs whose shortcut is the true label) and
            ``shortcut_random`` (shortcut drawn independently of the label).
        units: ``[n_train]`` resampling unit of every training example (e.g. the document a
            language-model window was cut from): the bootstrap draws whole units.
        test_units: ``[n_test]`` unit of every test example; language-model runs have it.
        documents: names of the training units, indexed by ``units``.
        test_documents: names of the held-out units, indexed by ``test_units``.
        model_config: keyword arguments that rebuild the model's Hugging Face config, so a
            member can be saved as a Hugging Face model directory.
        augment: a random transform of a training minibatch, ``(x [B, ...], generator) ->
            [B, ...]`` (e.g. random crop and flip of images), drawing only from
            ``generator`` (a CPU ``torch.Generator``; ``x`` may be on another device). The
            engine seeds it per member and per step from the member's ``data_seed``, so it
            is part of the data-order perturbation and a member's draws do not depend on its
            chunk or on a resume. Evaluation never augments.

    The last six are optional extras: ``None`` where a task has no such structure (code
    tests ``is None``; ``test_units`` marks a language-model run).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    make_model: Callable[[], nn.Module]
    loss: Callable[[Tensor, Tensor], Tensor] = cross_entropy
    num_classes: int | None = None
    groups: Tensor | None = None
    description: str = ""
    metrics: dict[str, Callable[[Tensor, Tensor], Tensor]] = field(default_factory=dict)
    probes: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    units: Tensor | None = None
    test_units: Tensor | None = None
    documents: tuple[str, ...] | None = None
    test_documents: tuple[str, ...] | None = None
    model_config: dict[str, Any] | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def train_groups(self) -> Tensor | None:
        """Group id per training example (explicit groups, else the class id, else None)."""
        if self.groups is not None:
            return self.groups
        if self.num_classes is not None:
            return self.y_train
        return None

    @property
    def group_ids(self) -> list[int]:
        groups = self.train_groups
        return [] if groups is None else sorted(int(g) for g in torch.unique(groups))

    def evaluation_metrics(self) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
        """Per-example metrics recorded at every snapshot: loss, accuracy if classes, extras."""
        found: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"loss": self.loss}
        if self.num_classes is not None:
            found["accuracy"] = accuracy
        found.update(self.metrics)
        return found
