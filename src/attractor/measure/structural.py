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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.bootstrap import multibootstrap
from attractor.runs.ensemble import Ensemble
from attractor.seeds import torch_generator
from attractor.training.forward import Params, batched_forward

#: ``(params [K, ...] of one member, level, generator, hidden_inputs) -> perturbed params``.
Perturbation = Callable[[Params, float, torch.Generator, set[str]], Params]
_BATCH = 1024


def _is_weight(name: str, value: Tensor) -> bool:
    """Weight matrices (and embeddings): ``[K, out, in, ...]``; biases and norms are vectors."""
    return name.endswith("weight") and value.dim() >= 3


def dropout(params: Params, p: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Drop hidden units: zero input column j of every ``nn.Linear`` but the first; scale 1/(1-p).

    Masking the *inputs* of the next layer drops the unit's activation itself, exactly for
    any activation function (masking the previous layer's output rows is exact only for
    positively homogeneous ones such as ReLU).
    """
    out = dict(params)
    for name in hidden_inputs:
        w = params[name]  # [K, out, in]
        keep = torch.rand(w.shape[0], 1, w.shape[2], generator=gen, dtype=w.dtype) >= p
        out[name] = w * keep / (1 - p)
    return out


def dropconnect(params: Params, p: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Zero each entry of every weight matrix (Linear, Embedding) with probability p; scale 1/(1-p).

    Biases and norm scales (vectors) are left untouched.
    """
    return {
        k: v * (torch.rand(v.shape, generator=gen, dtype=v.dtype) >= p) / (1 - p)
        if _is_weight(k, v)
        else v
        for k, v in params.items()
    }


def weight_noise(
    params: Params, scale: float, gen: torch.Generator, hidden_inputs: set[str]
) -> Params:
    """Add Gaussian noise of std ``scale * RMS(tensor)`` to every parameter tensor."""
    out = {}
    for k, v in params.items():
        rms = (
            v.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (v.dim() - 1))
        )  # [K, 1, ...]: per copy, equal
        out[k] = v + scale * rms * torch.randn(v.shape, generator=gen, dtype=v.dtype)
    return out


def quantize(params: Params, bits: float, gen: torch.Generator, hidden_inputs: set[str]) -> Params:
    """Uniform symmetric per-tensor quantization of every parameter tensor to ``bits`` bits.

    ``b >= 2``: the grid ``scale * {-(2^(b-1)-1), ..., 2^(b-1)-1}`` with ``scale =
    max|W| / (2^(b-1)-1)`` (2^b - 1 values). ``b = 1``: ``sign(W) * mean|W|`` (2 values).
    Deterministic: the generator is unused.
    """
    b = int(bits)
    out = {}
    for k, v in params.items():
        absmax = v.abs().flatten(1).amax(1).view(-1, *[1] * (v.dim() - 1))
        if b == 1:
            out[k] = torch.where(v >= 0, 1.0, -1.0).to(v.dtype) * v.abs().flatten(1).mean(
                1
            ).view_as(absmax)
            continue
        q = 2 ** (b - 1) - 1
        scale = torch.where(absmax > 0, absmax / q, torch.ones_like(absmax))
        out[k] = torch.round(v / scale).clamp(-q, q) * scale
    return out


#: Registry: kind -> (perturbation, level check, description of valid levels, stochastic?).
KINDS: dict[str, tuple[Perturbation, Callable[[float], bool], str, bool]] = {
    "dropout": (dropout, lambda x: 0 <= x < 1, "a probability in [0, 1)", True),
    "dropconnect": (dropconnect, lambda x: 0 <= x < 1, "a probability in [0, 1)", True),
    "weight_noise": (weight_noise, lambda x: x >= 0, "a relative noise scale >= 0", True),
    "quantize": (
        quantize,
        lambda x: x >= 1 and float(x).is_integer(),
        "a whole number of bits >= 1",
        False,
    ),
}


def check_levels(kind: str, levels: Sequence[float]) -> list[float]:
    """Validated, sorted, de-duplicated levels of ``kind``; a :class:`UserError` names a bad one."""
    if kind not in KINDS:
        raise UserError(f"unknown perturbation kind '{kind}'; choose one of: {', '.join(KINDS)}")
    if len(levels) == 0:
        raise UserError(f"give at least one level for '{kind}' (each {KINDS[kind][2]})")
    ok, what = KINDS[kind][1], KINDS[kind][2]
    for level in levels:
        if not (np.isfinite(level) and ok(float(level))):
            raise UserError(
                f"level {level:g} is out of range for '{kind}': each level must be {what}"
            )
    return sorted({float(level) for level in levels})


def _hidden_inputs(template: nn.Module) -> set[str]:
    """Weight names of every ``nn.Linear`` but the first: their inputs are hidden units."""
    linears = [name for name, m in template.named_modules() if isinstance(m, nn.Linear)]
    return {f"{name}.weight" for name in linears[1:]}


def _t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean over samples (width 0 for one deterministic one)."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(
        stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    )
    return mean, mean - half, mean + half


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
    levels = check_levels(kind, levels)
    perturb, _, _, stochastic = KINDS[kind]
    if stochastic and samples < 2:
        raise UserError(
            f"--samples must be at least 2 for '{kind}' (the interval is over samples), got "
            f"{samples}"
        )
    samples = samples if stochastic else 1
    if (x is None) != (y is None):
        raise UserError("give both x and y, or neither (the task's test split)")
    x, y = (ens.task.x_test, ens.task.y_test) if x is None else (x, y)
    members = ens.members if members is None else members
    if not members:
        raise UserError("no finished member to perturb; train the run first")
    template = ens.task.make_model().eval()
    forward, hidden = batched_forward(template), _hidden_inputs(template)
    if kind == "dropout" and not hidden:
        raise UserError("dropout needs a model with a hidden nn.Linear layer; this one has none")
    all_params, all_buffers = ens.stacked(members, step)
    rows, per_sample = (
        [],
        {"acc_drop": [], "kl": []},
    )  # per_sample[name]: (level index, member index, [samples])
    for i, member in enumerate(members):
        params = {k: v[i : i + 1] for k, v in all_params.items()}
        buffers = {k: v[i : i + 1].expand(samples, *v.shape[1:]) for k, v in all_buffers.items()}
        stacked = {k: v.expand(samples, *v.shape[1:]) for k, v in params.items()}

        # The reference runs through the same batched call as the perturbed copies, so that
        # level 0 gives exactly zero (a different batch shape can change BLAS rounding).
        base = _run(forward, stacked, buffers, x)[0]
        base_log_probs = torch.log_softmax(base.to(torch.float64), -1)
        accuracy = float((base.argmax(-1) == y).to(torch.float64).mean())
        for j, level in enumerate(levels):
            gen = torch_generator(f"structural:{kind}:{level!r}", seed, member)
            logits = _run(forward, perturb(stacked, level, gen, hidden), buffers, x)
            acc, kl = _scores(logits, base_log_probs, y)
            drop, kl_np = accuracy - acc.numpy(), kl.numpy()
            for name, value in (("acc_drop", drop), ("kl", kl_np)):
                per_sample[name].append((j, i, value))
            mean_d, low_d, high_d = _t_interval(drop)
            mean_k, low_k, high_k = _t_interval(kl_np)
            rows.append(
                {
                    "member": member,
                    "level": level,
                    "accuracy": accuracy,
                    "acc_drop_mean": mean_d,
                    "acc_drop_low": low_d,
                    "acc_drop_high": high_d,
                    "kl_mean": mean_k,
                    "kl_low": low_k,
                    "kl_high": high_k,
                }
            )
    table = pd.DataFrame(rows)
    ensemble = _ensemble_curves(levels, per_sample, seed, draws)
    auc = {
        int(m): float(
            np.trapezoid(g.sort_values("level")["kl_mean"], g.sort_values("level")["level"])
        )
        for m, g in table.groupby("member")
    }
    auc_rows = []
    for i, member in enumerate(members):
        curves = np.stack(
            [value for lj, li, value in sorted(per_sample["kl"], key=lambda e: e[0]) if li == i]
        )  # [levels, samples]
        _, low, high = _t_interval(np.trapezoid(curves, levels, axis=0))
        auc_rows.append(
            {"member": int(member), "auc": auc[int(member)], "auc_low": low, "auc_high": high}
        )
    est = multibootstrap(np.array([auc[int(m)] for m in members]), draws=draws, seed=seed)
    return StructuralResult(
        kind,
        levels,
        samples,
        table,
        ensemble,
        auc,
        pd.DataFrame(auc_rows),
        {"value": est.value, "low": est.low, "high": est.high},
    )


def _ensemble_curves(
    levels: list[float], per_sample: dict[str, list[Any]], seed: int, draws: int
) -> pd.DataFrame:
    """Per level: mean over members and samples, multi-bootstrap over members x samples."""
    rows = []
    for j, level in enumerate(levels):
        row: dict[str, float] = {"level": level}
        for name, entries in per_sample.items():
            matrix = np.stack([value for lj, _, value in entries if lj == j])  # [members, samples]
            est = multibootstrap(matrix, draws=draws, seed=seed)
            row.update({name: est.value, f"{name}_low": est.low, f"{name}_high": est.high})
        rows.append(row)
    return pd.DataFrame(rows)
