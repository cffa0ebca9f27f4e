"""Sensitivity of the outcome to the trainer's settings: forward-mode hypergradients and finite
differences.

*Local* sensitivity is the derivative ``d outcome / d h`` at the member's own setting,
computed by forward mode through the whole unrolled run (:mod:`attractor.tangent.lyapunov`,
Baydin et al. 2018) for ``h`` in lr, momentum, weight decay (tangent on the optimizer's
per-member hyperparameter tensor) and init scale (tangent on the initial weights).

*Finite-scale* sensitivity is the central difference ``(O(h + D) - O(h - D)) / 2D`` of two
whole primal runs. For a ReLU network the two differ: a tiny change of ``h`` already flips
some activation patterns on the way, so the outcome is piecewise smooth with many small
jumps; in float64 central differences of the final loss in lr agree with forward mode only
for ``D <= 1e-8``, and from ``1e-7`` to ``1e-4`` they jump with the flips. Both numbers are
reported, named ``d_*`` (derivative) and ``delta_*`` (finite scale), never mixed.

References:
    Maclaurin, Duvenaud, Adams, "Gradient-based hyperparameter optimization through
    reversible learning", ICML 2015.
    Baydin, Cornish, Rubio, Schmidt, Wood, "Online learning rate adaptation with
    hypergradient descent", ICLR 2018.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.tangent.lyapunov import outcome_fn
from attractor.tangent.types import HYPERS, Params
from attractor.tangent.unroll import Unrolled, final_params

#: Hyperparameters with a tangent: the optimizer's three, and the scale of the initial weights.
HYPER_NAMES = (*HYPERS, "init_scale")
#: The scale below which a finite step is taken absolutely (a setting of 0 has no relative step).
_FLOOR = {"lr": 1e-3, "momentum": 0.1, "weight_decay": 1e-4, "init_scale": 0.1}


def check_hypers(hypers: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [h for h in hypers if h not in HYPER_NAMES]
    if unknown:
        raise UserError(
            f"unknown hyperparameter {unknown[0]!r} for tangents; known: {', '.join(HYPER_NAMES)}"
        )
    return tuple(hypers)


def hyper_columns(run: Unrolled, hypers: tuple[str, ...]) -> tuple[Params, dict[str, Tensor]]:
    """Initial tangents of the hyper columns: ``dparams0 [members, H, *shape]`` and ``{h: [members,
    H]}``.

    Column ``j`` is ``d / d hypers[j]``: tangent 1 on that hyperparameter, or for
    ``init_scale`` the unscaled initial weights as the initial parameter tangent.
    """
    n, count = run.members, len(hypers)
    dparams = {
        k: torch.zeros(n, count, *v.shape[1:], dtype=v.dtype, device=v.device)
        for k, v in run.params0.items()
    }
    dhyper = {h: torch.zeros(n, count, dtype=torch.float64, device=run.device) for h in HYPERS}
    for j, h in enumerate(hypers):
        if h == "init_scale":
            for k, v in run.scale_tangent.items():
                dparams[k][:, j] = v
        else:
            dhyper[h][:, j] = 1.0
    return dparams, dhyper


def final_outcomes(run: Unrolled, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Each member's eval outcomes after a plain (tangent-free) run: ``{name: [members]}``, on
    the run's device (``x``, ``y`` are moved there).
    """
    params = final_params(run)
    x, y = x.to(run.device), y.to(run.device)
    outcomes = outcome_fn(run, x.to(run.dtype) if x.is_floating_point() else x, y)
    loss, surrogate, logits = torch.func.vmap(outcomes)(params)
    return {
        "test_loss": loss.detach(),
        "true_class_prob": surrogate.detach(),
        "logits": logits.detach(),
    }


def shifted(run: Unrolled, hyper: str, delta: Tensor) -> Unrolled:
    """The same members with ``hyper`` moved by ``delta [members]`` (a whole new run of each).

    The initial weights move by ``delta * w`` in the run's dtype, which is what ``init_scale``
    does (init = scale * w + noise) without the engine's float32 rounding of the product:
    a float64 difference of 1e-6 would otherwise see that rounding. ``delta`` may be on the
    CPU; it is moved to the run's device.
    """
    rows = tuple(
        replace(r, **{hyper: getattr(r, hyper) + float(d)})
        for r, d in zip(run.rows, delta, strict=True)
    )
    if hyper == "init_scale":
        moved = {
            k: v
            + delta.to(v.dtype).to(v.device).view(-1, *([1] * (v.dim() - 1))) * run.scale_tangent[k]
            for k, v in run.params0.items()
        }
        return replace(run, rows=rows, params0=moved)
    moved_hyper = run.hyper[hyper] + delta.double().to(run.device)
    return replace(run, rows=rows, hyper={**run.hyper, hyper: moved_hyper})


def finite_step(run: Unrolled, hyper: str, relative: float) -> Tensor:
    """``[members]`` step ``relative * max(|h|, floor)`` of each member's setting of ``hyper``
    (a CPU tensor: it is a result, and :func:`shifted` moves it where the run is).
    """
    values = torch.tensor([getattr(r, hyper) for r in run.rows], dtype=torch.float64)
    step = relative * values.abs().clamp_min(_FLOOR[hyper])
    if hyper == "momentum":  # momentum + step must stay below 1
        step = torch.minimum(step, (1 - values) / 2)
    return step


def central_difference(
    run: Unrolled, hyper: str, delta: Tensor, x: Tensor, y: Tensor
) -> dict[str, Tensor]:
    """``(O(h + delta) - O(h - delta)) / (2 delta)`` per member for the scalar outcomes, two runs
    each.

    The runs go on the run's device; their outcomes come back to the CPU before the
    differences, which are CPU tensors (as :func:`finite_step`'s ``delta``).
    """
    up = _host(final_outcomes(shifted(run, hyper, delta), x, y))
    down = _host(final_outcomes(shifted(run, hyper, -delta), x, y))
    delta = delta.cpu()
    out = {
        name: (up[name] - down[name]).double() / (2 * delta)
        for name in ("test_loss", "true_class_prob")
    }
    rms = ((up["logits"] - down["logits"]).double().pow(2).sum(-1).mean(-1).sqrt()) / (2 * delta)
    out["logits_rms"] = rms
    return out


def _host(outcomes: dict[str, Tensor]) -> dict[str, Tensor]:
    """``outcomes`` on the CPU (on the CPU already: the same tensors)."""
    return {name: v.cpu() for name, v in outcomes.items()}
