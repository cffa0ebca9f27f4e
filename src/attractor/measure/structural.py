"""Structural stability of trained members: how much do their predictions change when the
model itself is perturbed at inference (dropout, DropConnect, weight noise, quantization)?

For every member and perturbation level, ``K`` perturbed copies of the member's weights are
stacked along the member dimension and run through one batched forward. Each copy is
compared with the unperturbed member on the same inputs:

* accuracy drop: unperturbed accuracy minus perturbed accuracy;
* KL(unperturbed || perturbed) of the predictive distributions, mean over examples (nats).

    res = perturbation_curves(ens, "dropconnect", [0, 0.01, 0.05, 0.1, 0.2])
    res.table       # member x level: acc_drop_mean/low/high, kl_mean/low/high
    res.ensemble    # level: mean over members with a multi-bootstrap interval
    res.auc         # member -> area under its KL curve (rank members: smaller is stabler)
    res.auc_table   # member, auc, auc_low, auc_high: is a ranking more than sampling noise?

Masks and noise come from :mod:`attractor.seeds` keyed by (kind, level, seed, member), so a
member's curve does not depend on which other members or levels are measured.

Convolutional and residual nets work the same way: dropout drops whole input channels of
every conv (and input units of every linear layer) after the first, DropConnect drops
kernel entries, noise and quantization act on every parameter tensor; BatchNorm's running
statistics are buffers and are never perturbed, and the template runs in eval mode, so
they normalize as in training (:mod:`attractor.measure.perturbations`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.bootstrap import multibootstrap
from attractor.measure.curve_intervals import (
    PerSample,
    ensemble_curves,
    member_aucs,
    member_row,
)
from attractor.measure.perturbations import (
    KINDS,
    HiddenInputs,
    Perturbation,
    check_levels,
    dropconnect,
    dropout,
    hidden_inputs,
    quantize,
    weight_noise,
)
from attractor.runs.ensemble import Ensemble
from attractor.seeds import torch_generator
from attractor.training.forward import Params, batched_forward

# The perturbations moved to perturbations.py; their names stay importable from here.
__all__ = [
    "KINDS",
    "StructuralResult",
    "check_levels",
    "dropconnect",
    "dropout",
    "perturbation_curves",
    "quantize",
    "weight_noise",
]
_BATCH = 1024


def _run(
    forward: Callable[[Params, Params, Tensor], Tensor], params: Params, buffers: Params, x: Tensor
) -> Tensor:
    """Outputs of the ``K`` stacked copies on ``x [batch, ...]`` in chunks: ``[K, batch, ...]``."""
    k = next(iter(params.values())).shape[0]
    return torch.cat(
        [
            forward(
                params, buffers, x[s : s + _BATCH].unsqueeze(0).expand(k, *x[s : s + _BATCH].shape)
            )
            for s in range(0, len(x), _BATCH)
        ],
        1,
    )


def _scores(logits: Tensor, base_log_probs: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``logits [K, B, ..., C]`` vs ``base_log_probs [B, ..., C]`` -> (accuracy [K], KL [K])."""
    log_probs = torch.log_softmax(logits.to(torch.float64), -1)
    kl = (base_log_probs.exp() * (base_log_probs - log_probs)).sum(-1).flatten(1).mean(1)
    accuracy = (logits.argmax(-1) == y).to(torch.float64).flatten(1).mean(1)
    return accuracy, kl


@dataclass
class StructuralResult:
    """Perturbation curves of members and of the ensemble: a result ``structural-<perturbation>``.

    Attributes:
        perturbation: the perturbation kind (``dropout``, ``dropconnect``, ...; the JSON's
            ``"kind"``).
        levels: sorted levels.
        samples: masks / noises per level (1 for deterministic quantization).
        table: one row per (member, level): ``accuracy`` (unperturbed), ``acc_drop_mean``,
            ``acc_drop_low``, ``acc_drop_high``, ``kl_mean``, ``kl_low``, ``kl_high`` (95 %
            Student-t intervals over samples).
        ensemble: one row per level: ``acc_drop``, ``kl`` with ``_low`` / ``_high``: mean
            over members, 95 % multi-bootstrap interval resampling members and samples.
        auc: member -> area under its KL curve (trapezoid in level units).
        auc_table: ``member, auc, auc_low, auc_high``: the AUC with a 95 % t interval over
            samples (sample k's curve across levels), so a ranking of members can be
            checked against sampling noise before it is trusted.
        auc_ensemble: mean AUC over members with a bootstrap interval over members.
    """

    perturbation: str
    levels: list[float]
    samples: int
    table: pd.DataFrame
    ensemble: pd.DataFrame
    auc: dict[int, float]
    auc_table: pd.DataFrame
    auc_ensemble: dict[str, float]

    kind: ClassVar[str] = "structural"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        """``structural-<perturbation>``: one result per perturbation kind in a run."""
        return f"structural-{self.perturbation}"

    def to_json(self) -> dict[str, Any]:
        """Everything (:meth:`to_dict`)."""
        return self.to_dict()

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The member x level table (95 % t intervals over samples) as the main table."""
        return {"": self.table}

    def for_report(self) -> pd.DataFrame:
        """The ensemble curves with a ``level`` column, for ``series_panels(..., x="level")``."""
        return self.ensemble.copy()

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the perturbation, the ensemble curve, every member's rows, the AUCs."""
        return {
            "kind": self.perturbation,
            "levels": self.levels,
            "samples": self.samples,
            "ensemble": self.ensemble.to_dict("records"),
            "members": self.table.to_dict("records"),
            "auc": {str(k): v for k, v in self.auc.items()},
            "auc_table": self.auc_table.to_dict("records"),
            "auc_ensemble": self.auc_ensemble,
        }


@torch.no_grad()
def perturbation_curves(
    ens: Ensemble,
    kind: str,
    levels: Sequence[float],
    samples: int = 8,
    x: Tensor | None = None,
    y: Tensor | None = None,
    members: list[int] | None = None,
    seed: int = 0,
    step: int | None = None,
    draws: int = 500,
) -> StructuralResult:
    """Accuracy drop and KL to the unperturbed model of each member vs perturbation level.

    Args:
        ens: a trained ensemble.
        kind: ``dropout``, ``dropconnect``, ``weight_noise`` or ``quantize`` (see :data:`KINDS`).
        levels: drop probabilities, relative noise scales, or bit counts.
        samples: masks / noises per member and level (at least 2; quantization uses 1).
        x: inputs ``[batch, ...]`` (default: the task's test split).
        y: targets ``[batch, ...]`` (default: the task's test targets).
        members: members to perturb (default: every finished, non-diverged member).
        seed: seed of the masks and noises.
        step: snapshot step (default: each member's last).
        draws: multi-bootstrap draws of the ensemble intervals.

    Returns:
        :class:`StructuralResult`.

    References:
        Srivastava et al. (2014), "Dropout"; Wan et al. (2013), "Regularization of Neural
        Networks using DropConnect"; Jacob et al. (2018), "Quantization and Training of
        Neural Networks for Efficient Integer-Arithmetic-Only Inference".
    """
    # Over 60 lines only by its signature and docstring; the body is short.
    levels = check_levels(kind, levels)
    samples = _check_samples(kind, samples)
    x, y, members, forward, hidden = _inputs(ens, kind, x, y, members)
    all_params, all_buffers = ens.stacked(members, step)
    rows: list[dict[str, float]] = []
    per_sample: PerSample = {"acc_drop": [], "kl": []}
    for i, member in enumerate(members):
        params = {k: v[i : i + 1].expand(samples, *v.shape[1:]) for k, v in all_params.items()}
        buffers = {k: v[i : i + 1].expand(samples, *v.shape[1:]) for k, v in all_buffers.items()}
        copies = _Copies(forward, params, buffers, x, y, hidden, ens.device)
        for j, level in enumerate(levels):
            gen = torch_generator(f"structural:{kind}:{level!r}", seed, member)
            drop, kl = copies.scores(KINDS[kind][0], level, gen)
            per_sample["acc_drop"].append((j, i, drop))
            per_sample["kl"].append((j, i, kl))
            rows.append(member_row(member, level, copies.accuracy, drop, kl))
    table = pd.DataFrame(rows)
    ensemble = ensemble_curves(levels, per_sample, seed, draws)
    auc, auc_table = member_aucs(table, per_sample["kl"], members, levels)
    est = multibootstrap(np.array([auc[int(m)] for m in members]), draws=draws, seed=seed)
    return StructuralResult(
        kind,
        levels,
        samples,
        table,
        ensemble,
        auc,
        auc_table,
        {"value": est.value, "low": est.low, "high": est.high},
    )


def _check_samples(kind: str, samples: int) -> int:
    """Samples per level: at least 2 for a stochastic kind, 1 for a deterministic one."""
    if not KINDS[kind][3]:
        return 1
    if samples < 2:
        raise UserError(
            f"--samples must be at least 2 for '{kind}' (the interval is over samples), got "
            f"{samples}"
        )
    return samples


def _inputs(
    ens: Ensemble, kind: str, x: Tensor | None, y: Tensor | None, members: list[int] | None
) -> tuple[Tensor, Tensor, list[int], Callable[[Params, Params, Tensor], Tensor], HiddenInputs]:
    """Inputs and targets (default: test split), members, the batched forward, hidden inputs."""
    if (x is None) != (y is None):
        raise UserError("give both x and y, or neither (the task's test split)")
    x, y = (ens.task.x_test, ens.task.y_test) if x is None else (x, y)
    members = ens.members if members is None else members
    if not members:
        raise UserError("no finished member to perturb; train the run first")
    template = ens.task.make_model().eval().to(ens.device)
    forward, hidden = batched_forward(template), hidden_inputs(template)
    if kind == "dropout" and not hidden:
        raise UserError(
            "dropout needs a model with a linear or conv layer after its first one (their "
            "inputs are the hidden units); this one has none"
        )
    return x, y, members, forward, hidden


class _Copies:
    """``K`` copies of one member's weights with the unperturbed reference computed once."""

    def __init__(
        self,
        forward: Callable[[Params, Params, Tensor], Tensor],
        params: Params,
        buffers: Params,
        x: Tensor,
        y: Tensor,
        hidden: HiddenInputs,
        device: torch.device = torch.device("cpu"),
    ) -> None:
        # Masks and noises are drawn on the CPU (the same on every device); the perturbed
        # copies' forward passes run on ``device``, their scores back on the CPU.
        self.forward, self.params, self.device = forward, params, device
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.x, self.y, self.hidden = x.to(device), y, hidden
        # The reference runs through the same batched call as the perturbed copies, so that
        # level 0 gives exactly zero (a different batch shape can change BLAS rounding).
        base = self._logits(params)[0]
        self.base_log_probs = torch.log_softmax(base.to(torch.float64), -1)
        self.accuracy = float((base.argmax(-1) == y).to(torch.float64).mean())

    def scores(
        self, perturb: Perturbation, level: float, gen: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy drop and KL to the reference of each perturbed copy: ``([K], [K])``."""
        perturbed = perturb(self.params, level, gen, self.hidden)
        acc, kl = _scores(self._logits(perturbed), self.base_log_probs, self.y)
        return self.accuracy - acc.numpy(), kl.numpy()

    def _logits(self, params: Params) -> Tensor:
        """Outputs of the copies ``params`` (on the CPU) computed on the device, back on the CPU."""
        placed = {k: v.to(self.device) for k, v in params.items()}
        return _run(self.forward, placed, self.buffers, self.x).cpu()
