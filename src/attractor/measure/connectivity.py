"""Linear mode connectivity: loss and error along the straight line between two members.

Two trained networks ``a`` and ``b`` are *linearly mode connected* when the loss (or
error) of ``(1 - alpha) * a + alpha * b`` stays as low as at the ends for every alpha in
``[0, 1]``. The *barrier* is how far the path rises; it comes in two usual forms:

* ``barrier_*`` (Frankle et al. 2020): ``max_alpha curve(alpha) - (curve(0) + curve(1)) / 2``,
  the rise above the mean of the two ends. Both ends are on the path, so it is ``>= 0``,
  and it is positive for a straight line with unequal ends (half their difference).
* ``barrier_*_linear`` (Entezari et al. 2022): ``max_alpha [curve(alpha) -
  ((1 - alpha) curve(0) + alpha curve(1))]``, the largest rise above the chord between the
  ends, so unequal ends alone are no barrier. Also ``>= 0`` (the chord meets the curve at
  both ends).

Every point of the path is evaluated in one batched forward pass: the interpolated
parameters are stacked ``[points, ...]`` like the members of an ensemble.

Interpolated networks with BatchNorm need their statistics repaired before they are
measured (:mod:`attractor.measure.repair`): ``repair="reset"`` (the default of
:func:`lmc`) recomputes BatchNorm's running statistics at every point on training data,
``"repair"`` also applies REPAIR. A network without BatchNorm is not touched by
``"reset"``, so MLP curves are the same as without it.

References:
    Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
    Hypothesis", ICML 2020; Entezari, Sedghi, Saukh & Neyshabur, "The Role of Permutation
    Invariance in Linear Mode Connectivity of Neural Networks", ICLR 2022; Ainsworth,
    Hayase & Srinivasa, "Git Re-Basin", ICLR 2023; Jordan, Sedghi, Saukh, Entezari &
    Neyshabur, "REPAIR", ICLR 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.repair import REPAIRS, RepairData, batchnorm_layers, repair_path
from attractor.runs.ensemble import Ensemble
from attractor.tasks.base import Task
from attractor.training.forward import Params, batched_forward

#: ``align(state_a, state_b, model_template) -> (state_b permuted to match a, permutations)``.
AlignFn = Callable[
    [Mapping[str, Tensor], Mapping[str, Tensor], nn.Module], tuple[dict[str, Tensor], Any]
]

# Rows (path points x examples) in one forward pass: bounds the activations in memory.
_ROWS = 1 << 15


def interpolate(
    state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], alphas: Tensor
) -> dict[str, Tensor]:
    """States along the line from ``a`` to ``b``, stacked: ``{name: [k, *shape]}``.

    Floating tensors become ``(1 - alpha) * a + alpha * b`` by ``torch.lerp``, which is
    exactly ``a`` at ``alpha = 0``, exactly ``b`` at ``alpha = 1``, and exactly ``a``
    everywhere when ``a == b`` (so a member's path to itself is flat, barrier 0). Integer tensors
    (BatchNorm's step counter) cannot
    be mixed and take the value of the nearer end.

    Args:
        state_a: name -> tensor of one network (parameters and buffers).
        state_b: the same names and shapes for the other network.
        alphas: ``[k]`` mixing weights, 0 at ``a`` and 1 at ``b``.
    """
    if state_a.keys() != state_b.keys():
        raise ValueError(
            f"the two states name different tensors: {sorted(set(state_a) ^ set(state_b))}"
        )
    out: dict[str, Tensor] = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.is_floating_point():
            w = alphas.to(a.dtype).view(-1, *([1] * a.dim()))
            out[name] = torch.lerp(a, b, w)
        else:
            near_b = (alphas > 0.5).view(-1, *([1] * a.dim()))
            out[name] = torch.where(near_b, b, a)
    return out


@torch.no_grad()
def path_curve(
    task: Task,
    model_template: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    points: int = 30,
    repair: str = "none",
    repair_data: RepairData | None = None,
) -> pd.DataFrame:
    """Mean loss (and error, for classification tasks) at ``points`` evenly spaced alphas.

    Args:
        task: supplies the per-example loss and whether there are classes.
        model_template: a module of the architecture (its own weights are not used); the
            path's forward passes run on its device, the interpolation and the repair on the
            CPU, and the sums come back there.
        state_a, state_b: parameters and buffers of the two ends (``ens.params(m)``).
        x: ``[batch, ...]`` inputs; y: ``[batch, ...]`` targets.
        points: path points including both ends (``>= 2``).
        repair: ``"none"``, ``"reset"`` or ``"repair"``
            (:func:`~attractor.measure.repair.repair_path`), applied to every point,
            both ends included.
        repair_data: training inputs the statistics are recomputed on (needed unless
            ``repair`` is ``"none"``); default 10 seeded batches of 128 of ``task.x_train``.

    Returns:
        One row per point: ``alpha``, ``loss``, and ``error`` (share of wrong argmax
        predictions) when ``task.num_classes`` is set.
    """
    if points < 2:
        raise ValueError(f"a path needs at least its two ends; got points={points}")
    alphas = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    alphas[-1] = 1.0  # exactly the end, whatever linspace rounds to
    stacked = interpolate(state_a, state_b, alphas)
    if repair != "none":
        data = RepairData.sample(task.x_train) if repair_data is None else repair_data
        states = [{k: v[i] for k, v in stacked.items()} for i in range(points)]
        states = repair_path(repair, model_template, states, alphas, (state_a, state_b), data)
        stacked = {k: torch.stack([s[k] for s in states]) for k in stacked}
    names = {name for name, _ in model_template.named_parameters()}
    device = next(model_template.parameters()).device
    params: Params = {k: v.to(device) for k, v in stacked.items() if k in names}
    buffers: Params = {k: v.to(device) for k, v in stacked.items() if k not in names}
    was_training = model_template.training
    model_template.eval()
    forward = batched_forward(model_template)
    loss_sum = torch.zeros(points, dtype=torch.float64, device=device)
    wrong = torch.zeros(points, dtype=torch.float64, device=device)
    batch = max(1, _ROWS // points)
    try:
        for begin in range(0, len(x), batch):
            xb, yb = x[begin : begin + batch].to(device), y[begin : begin + batch].to(device)
            logits = forward(
                params, buffers, xb.unsqueeze(0).expand(points, *xb.shape)
            )  # [points, batch, C]
            targets = yb.unsqueeze(0).expand(points, *yb.shape)
            loss_sum += task.loss(logits, targets).reshape(points, -1).double().sum(1)
            if task.num_classes is not None:
                wrong += (logits.argmax(-1) != targets).reshape(points, -1).double().sum(1)
    finally:
        model_template.train(was_training)
    count = y.numel()
    loss_sum, wrong = loss_sum.cpu(), wrong.cpu()
    curve = pd.DataFrame({"alpha": alphas.numpy(), "loss": (loss_sum / count).numpy()})
    if task.num_classes is not None:
        curve["error"] = (wrong / count).numpy()
    return curve


def barrier(alpha: np.ndarray, values: np.ndarray, form: str = "frankle") -> float:
    """Height of the barrier of one curve along ``alpha`` (``alpha[0] = 0``, ``alpha[-1] = 1``).

    Args:
        alpha: ``[k]`` mixing weights; values: ``[k]`` loss or error along the path.
        form: ``"frankle"`` (above the mean of the ends) or ``"entezari"`` (above the
            chord between the ends); see the module docstring.

    References:
        Frankle et al., ICML 2020 (``"frankle"``); Entezari et al., ICLR 2022 (``"entezari"``).
    """
    alpha, values = np.asarray(alpha, dtype=np.float64), np.asarray(values, dtype=np.float64)
    start, end = values[0], values[-1]
    if form == "frankle":
        return float(values.max() - (start + end) / 2)
    if form == "entezari":
        return float((values - ((1 - alpha) * start + alpha * end)).max())
    raise ValueError(f"unknown barrier form {form!r}; known: frankle, entezari")


def barriers(curve: pd.DataFrame) -> dict[str, float]:
    """Both barrier forms of every measured column of a :func:`path_curve` table.

    Returns:
        ``barrier_loss`` and ``barrier_error`` (Frankle et al. 2020),
        ``barrier_loss_linear`` and ``barrier_error_linear`` (Entezari et al. 2022);
        the error keys only when the curve has an ``error`` column.
    """
    out: dict[str, float] = {}
    for column in ("loss", "error"):
        if column in curve:
            out[f"barrier_{column}"] = barrier(
                curve["alpha"].to_numpy(), curve[column].to_numpy(), "frankle"
            )
            out[f"barrier_{column}_linear"] = barrier(
                curve["alpha"].to_numpy(), curve[column].to_numpy(), "entezari"
            )
    return out


@dataclass(frozen=True, eq=False)
class LMCResult:
    """Linear mode connectivity between two members, before and (optionally) after alignment.

    Attributes:
        members: ``(a, b)``; step: the snapshot step compared.
        curve: :func:`path_curve` from ``a`` to ``b``.
        barriers: :func:`barriers` of ``curve``.
        aligned_curve: the path from ``a`` to ``b`` with ``b``'s hidden units permuted to
            match ``a`` (same function, other weights); ``None`` without an ``align_fn``.
        aligned_barriers: :func:`barriers` of ``aligned_curve``, or ``None``.
        repair: what was done to the statistics of every point of both curves before
            measuring (``"none"``, ``"reset"``, ``"repair"``;
            :mod:`attractor.measure.repair`); ``"none"`` also where ``"reset"`` was asked
            of a network without BatchNorm, which it leaves as it is.
    """

    members: tuple[int, int]
    step: int
    curve: pd.DataFrame
    barriers: dict[str, float]
    aligned_curve: pd.DataFrame | None = None
    aligned_barriers: dict[str, float] | None = None
    repair: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: curves as column lists."""

        def columns(frame: pd.DataFrame | None) -> dict[str, list[float]] | None:
            return (
                None if frame is None else {c: [float(v) for v in frame[c]] for c in frame.columns}
            )

        return {
            "members": list(self.members),
            "step": self.step,
            "curve": columns(self.curve),
            "barriers": self.barriers,
            "aligned_curve": columns(self.aligned_curve),
            "aligned_barriers": self.aligned_barriers,
            "repair": self.repair,
        }


def lmc(
    ens: Ensemble,
    a: int,
    b: int,
    x: Tensor | None = None,
    y: Tensor | None = None,
    align_fn: AlignFn | None = None,
    points: int = 30,
    step: int | None = None,
    repair: str = "reset",
    repair_data: RepairData | None = None,
) -> LMCResult:
    """Loss and error along the linear path between members ``a`` and ``b`` of ``ens``.

    Args:
        ens: the run; a, b: member ids.
        x, y: evaluation set, ``[batch, ...]``; default the task's test split.
        align_fn: e.g. :func:`attractor.measure.weights.align`; when given, ``b`` is also
            aligned to ``a`` and the path measured again.
        points: path points including both ends.
        step: snapshot step of both members (default: the last).
        repair: what to do to every point's statistics before measuring it, on both
            curves: ``"reset"`` (default: recompute BatchNorm statistics; no-op without
            BatchNorm, so MLP results are unchanged), ``"repair"`` (REPAIR on top) or
            ``"none"``.
        repair_data: training inputs for the repair (default 10 seeded batches of 128 of
            the task's training split).

    Raises:
        UserError: an unknown ``repair``.

    References:
        Frankle et al., ICML 2020; Entezari et al., ICLR 2022; Ainsworth et al., ICLR 2023
        (BatchNorm reset); Jordan et al., ICLR 2023 (REPAIR).
    """
    task = ens.task
    x = task.x_test if x is None else x
    y = task.y_test if y is None else y
    step = ens.steps(a)[-1] if step is None else step
    state_a, state_b = ens.params(a, step), ens.params(b, step)
    with torch.random.fork_rng(
        devices=[]
    ):  # the template's own draws must not move the caller's RNG
        template = task.make_model().to(ens.device)  # the paths are evaluated there
    if repair not in REPAIRS:
        raise UserError(f"unknown repair '{repair}'; known: {', '.join(REPAIRS)}")
    if repair != "none" and repair_data is None:
        repair_data = RepairData.sample(task.x_train)
    curve = path_curve(task, template, state_a, state_b, x, y, points, repair, repair_data)
    aligned_curve = aligned_barriers = None
    if align_fn is not None:
        aligned_b, _ = align_fn(state_a, state_b, template)
        aligned_curve = path_curve(
            task, template, state_a, aligned_b, x, y, points, repair, repair_data
        )
        aligned_barriers = barriers(aligned_curve)
    # Record what was done, not what was asked: a reset without BatchNorm does nothing.
    used = "none" if repair == "reset" and not batchnorm_layers(template) else repair
    return LMCResult((a, b), step, curve, barriers(curve), aligned_curve, aligned_barriers, used)
