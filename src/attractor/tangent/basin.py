"""The size of the basin around a run: where the linear picture of the tangent breaks down.

Forward mode says that two runs of a member whose initial weights differ by ``eps v``
(``|v| = 1``) end ``d(eps) ~ eps g(v)`` apart, ``g(v) = |J_T v|`` the growth of ``v`` along
the whole run. This module checks that against the ensemble picture: it replays the member
from ``x0`` and from ``x0 + eps v`` for every ``eps`` of a grid, with the same batches, and
records

* ``distance`` ``d(eps) = |x_T(eps) - x_T(0)|`` (Euclidean over all parameters),
* ``predicted`` ``eps g(v)`` and ``ratio = d / predicted`` (1 in the linear regime),
* ``flips``: activation-pattern flips *over the run*: the number of (step, training
  example, unit) triples whose ReLU-type pre-activation sign (``> 0``) differs between the
  two runs, on each step's training batch before the step (the weights the step's gradient
  is taken at); ReLU and LeakyReLU units of a flat MLP only (0 for a model without them,
  ``None`` for a model that is not a flat ``nn.Sequential``),
* ``flips_eval``: the same count on the eval set at the final weights.

The *breakdown* ``eps`` of a member is the smallest ``eps`` of the grid with
``|ratio - 1| > tolerance`` (or a non-finite distance); ``None`` if the grid never leaves
the linear regime. Once broken the picture does not mend: at large ``eps`` (``|eps v|``
comparable to the weights) the ratio often comes back near 1 by coincidence, two
unrelated runs ending about as far apart as their starts, with tens of thousands of
flips; the flips tell the two apart. ``v`` is the member's first random tangent direction (the same
draw as
the Lyapunov spectrum's first column, :func:`~attractor.tangent.lyapunov.random_directions`),
and ``g(v)`` is recomputed by forward mode in the replay's dtype (float64 by default), so
the ratio compares like with like.

All ``eps`` of all members run as one vectorized ensemble: ``members x len(eps)`` copies
stepped in lockstep with the unperturbed members (which carry the one tangent column).
On linear dynamics (least squares, :mod:`attractor.tangent.oracles`) the ratio is 1 for
every ``eps``; a ReLU network leaves the linear regime once an activation flips and the
flip cascades.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from attractor.tangent.linearized import linearized_step
from attractor.tangent.lyapunov import flat, random_directions
from attractor.tangent.types import HYPERS, Params, Tangents
from attractor.tangent.unroll import Unrolled
from attractor.training.forward import batched_linear, is_stacked_mlp

#: The default grid: cheap (four perturbed copies per member) and wide (1e-6 .. 1).
DEFAULT_EPS = (1e-6, 1e-4, 1e-2, 1.0)
#: Activations with a kink at 0, whose pattern (pre-activation > 0) can flip.
_KINKED = (nn.ReLU, nn.LeakyReLU)


@dataclass(frozen=True)
class Basin:
    """One member's cross-check: ``rows`` (one per ``eps``) and the breakdown ``eps`` (None:
    never).
    """

    member: int
    growth: float
    breakdown_eps: float | None
    rows: list[dict[str, float | int | None]]


def _patterns_fn(module: nn.Module):  # noqa: ANN202 - returns a closure or None
    """``(params [n, ...], x [n, B, ...]) -> [n, B, U] bool`` pre-activation signs of kinked units,
    or None.

    A model without any ReLU-type unit has nothing to flip (``U = 0``); one with such units
    that is not a flat ``nn.Sequential`` is not looked into (None).
    """
    if not any(isinstance(m, _KINKED) for m in module.modules()):
        return lambda params, x: torch.zeros(
            x.shape[0], x.shape[1], 0, dtype=torch.bool, device=x.device
        )
    if not is_stacked_mlp(module):
        return None
    children = list(module.named_children())

    def patterns(params: Params, x: Tensor) -> Tensor:
        h, signs = x.flatten(2), []
        for name, layer in children:
            if isinstance(layer, nn.Linear):
                h = batched_linear(params, name, h)
            else:
                if isinstance(layer, _KINKED):
                    signs.append(h > 0)
                h = layer(h)
        return torch.cat(signs, -1) if signs else h.new_zeros(*h.shape[:2], 0, dtype=torch.bool)

    return patterns


def _copies(run: Unrolled, eps: Tensor, v: Params) -> tuple[Unrolled, Params]:
    """``run`` with every member repeated ``len(eps)`` times (member-major), started at ``x0 +
    eps v``.
    """
    e = len(eps)
    rows = tuple(r for r in run.rows for _ in range(e))
    params0 = {}
    for k, x0 in run.params0.items():
        scale = eps.to(x0.dtype).to(x0.device).repeat(run.members)
        scale = scale.view(-1, *([1] * (x0.dim() - 1)))
        params0[k] = x0.repeat_interleave(e, 0) + scale * v[k].repeat_interleave(e, 0)
    copies = replace(
        run,
        rows=rows,
        params0=params0,
        targets=run.targets.repeat_interleave(e, 0),
        hyper={h: t.repeat_interleave(e, 0) for h, t in run.hyper.items()},
    )
    return copies, params0


def _empty(run: Unrolled, params: Params, columns: Params | None) -> Tangents:
    """Tangents at ``params`` with the given columns ``[n, K, ...]`` (None: no columns) and zero
    state tangents.
    """
    n = next(iter(params.values())).shape[0]
    dparams = (
        columns
        if columns is not None
        else {k: v.new_zeros(v.shape[0], 0, *v.shape[1:]) for k, v in params.items()}
    )
    state = run.init_state(params)
    dstate = {k: {s: torch.zeros_like(dparams[k]) for s in slots} for k, slots in state.items()}
    width = next(iter(dparams.values())).shape[1]
    return Tangents(
        params,
        state,
        dparams,
        dstate,
        {h: torch.zeros(n, width, dtype=torch.float64, device=run.device) for h in HYPERS},
    )


def basin_scan(
    run: Unrolled,
    eps: Sequence[float] = DEFAULT_EPS,
    seed: int = 0,
    tolerance: float = 0.1,
    directions: int = 1,
) -> list[Basin]:
    """For every member of ``run``: replay from ``x0 + eps v`` for each ``eps`` and compare with
    ``eps |J_T v|``.

    Args:
        run: the members (use a float64 :class:`Unrolled` to see small ``eps``).
        eps: the grid of perturbation sizes (positive).
        seed: seed of the random directions (as in :func:`tangent_analysis`); ``v`` is the first.
        directions: how many directions the analysis draws (the draw of the first depends on it).
        tolerance: the linear picture breaks down where ``|ratio - 1| > tolerance``.
    """
    eps = sorted(float(e) for e in eps)
    if not eps or eps[0] <= 0:
        raise ValueError(f"basin eps must be positive, got {eps}")
    e = len(eps)
    # v: [members, *shape], unit norm.
    v = {k: d[:, 0] for k, d in random_directions(run, directions, seed).items()}
    copies, start = _copies(run, torch.tensor(eps, dtype=torch.float64), v)
    base_step, copy_step = linearized_step(run), linearized_step(copies)
    base = _empty(run, dict(run.params0), {k: d.unsqueeze(1) for k, d in v.items()})
    moved = _empty(copies, start, None)
    patterns = _patterns_fn(run.module)
    flips = torch.zeros(run.members, e, dtype=torch.long, device=run.device)
    batches = run.batches()
    for t in range(1, run.steps + 1):
        x, y = batches.next()
        factor = run.factor(t)
        if patterns is not None:
            flips += _flips(patterns, base.params, moved.params, x, e)
        base = base_step(base, run.hyper, x, y, t, factor)
        x_copies, y_copies = x.repeat_interleave(e, 0), y.repeat_interleave(e, 0)
        moved = copy_step(moved, copies.hyper, x_copies, y_copies, t, factor)
    final0 = flat(base.params, 1).double()  # [n, D]
    final = flat(moved.params, 1).double().view(run.members, e, -1)
    distance = (final - final0.unsqueeze(1)).norm(dim=-1)  # [n, E]
    growth = flat({k: d[:, 0] for k, d in base.dparams.items()}, 1).double().norm(dim=-1)  # [n]
    flips_eval = None
    if patterns is not None:
        x_eval = run.task.x_test.to(run.device)
        x_eval = x_eval.to(run.dtype) if x_eval.is_floating_point() else x_eval
        flips_eval = _flips(
            patterns, base.params, moved.params, x_eval.expand(run.members, *x_eval.shape), e
        ).cpu()
    # Replayed on the run's device; the table is read on the CPU (one copy, not one per number).
    distance, growth = distance.cpu(), growth.cpu()
    counts = None if patterns is None else (flips.cpu(), flips_eval)
    return [
        _basin(run.rows[i].member, eps, float(growth[i]), distance[i], counts, i, tolerance)
        for i in range(run.members)
    ]


def _flips(
    patterns: Callable[[Params, Tensor], Tensor], base: Params, moved: Params, x: Tensor, e: int
) -> Tensor:
    """``[members, E]`` units whose activation pattern differs between a member and its copies."""
    with torch.no_grad():
        a = patterns(base, x)  # [n, B, U]
        b = patterns(moved, x.repeat_interleave(e, 0)).view(a.shape[0], e, *a.shape[1:])
        return (a.unsqueeze(1) != b).flatten(2).sum(-1)


def _basin(
    member: int,
    eps: list[float],
    growth: float,
    distance: Tensor,
    counts: tuple[Tensor, Tensor] | None,
    i: int,
    tolerance: float,
) -> Basin:
    """Member ``member``'s rows (one per ``eps``) and its breakdown ``eps``."""
    rows, breakdown = [], None
    for j, size in enumerate(eps):
        predicted = size * growth
        d = float(distance[j])
        ratio = d / predicted if predicted > 0 else float("nan")
        # NaN (diverged or zero growth) counts as broken.
        broken = not (abs(ratio - 1) <= tolerance)
        if broken and breakdown is None:
            breakdown = size
        rows.append(
            {
                "member": member,
                "eps": size,
                "distance": d,
                "predicted": predicted,
                "ratio": ratio,
                "flips": None if counts is None else int(counts[0][i, j]),
                "flips_eval": None if counts is None else int(counts[1][i, j]),
            }
        )
    return Basin(member, growth, breakdown, rows)
