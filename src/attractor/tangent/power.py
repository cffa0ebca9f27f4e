"""The largest growth of an initial perturbation: power iteration on the training map's Jacobian.

Random directions show the *typical* growth ``|J v|`` of the map ``J = d params_T / d
params_0``; its worst case is the largest singular value ``sigma_1(J)``. Power iteration
on ``J^T J`` finds it with one forward-mode pass (``u = J v``, ``torch.func.jvp``) and one
reverse-mode pass (``w = J^T u``, ``torch.func.vjp``) through the unrolled run per
iteration; ``sigma_1^2 ~ v . w`` (Rayleigh quotient), then ``v <- w / |w|``.

The reverse pass needs the states ``z_t``. They are not all kept: the forward pass saves
one checkpoint (state and data-stream position) every ``c = ceil(sqrt(T))`` steps; the
reverse pass replays each segment from its checkpoint, newest first, and walks back
through it: memory ``O(sqrt(T))`` states and ``O(1)`` tangents, compute about one extra
primal run (Griewank 1992's checkpointing, in its simplest uniform form).

References:
    Griewank, "Achieving logarithmic growth of temporal and spatial complexity in reverse
    automatic differentiation", Optimization Methods and Software 1, 1992.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vjp

from attractor.tangent.lyapunov import flat, random_directions
from attractor.tangent.types import Params, State
from attractor.tangent.unroll import Unrolled


@dataclass(frozen=True)
class PowerResult:
    """Largest singular value of ``J = d params_T / d params_0`` per member.

    Attributes:
        sigma: ``[members]`` the estimate after the last iteration.
        history: ``[iterations, members]`` the estimate after each iteration.
        random_growth: ``[members]`` ``|J v_0| / |v_0|`` of the random starting direction.
    """

    sigma: Tensor
    history: Tensor
    random_growth: Tensor


def _at(run: Unrolled, x: Tensor, y: Tensor, t: int):
    """Step ``t`` of every member on batch ``(x, y)`` as a function of ``(params, state)`` alone."""
    step, factor = run.vstep(), run.factor(t)
    return lambda p, s: step(p, s, run.hyper, x, y, t, factor)


def _zeros_state(state: State) -> State:
    return {n: {s: torch.zeros_like(v) for s, v in slots.items()} for n, slots in state.items()}


def forward(
    run: Unrolled, v: Params, every: int
) -> tuple[Params, list[tuple[int, Params, State, object]]]:
    """``u = J v`` for ``v [members, *shape]``, and checkpoints ``(step, params, state,
    streams)`` every ``every`` steps.
    """
    params = dict(run.params0)
    state = run.init_state(params)
    dparams, dstate = v, _zeros_state(state)
    batches = run.batches()
    checkpoints = []
    for t in range(1, run.steps + 1):
        if (t - 1) % every == 0:
            checkpoints.append((t - 1, params, state, batches.save()))
        x, y = batches.next()
        (params, state), (dparams, dstate) = jvp(
            _at(run, x, y, t), (params, state), (dparams, dstate)
        )
    return dparams, checkpoints


def backward(
    run: Unrolled, u: Params, checkpoints: list[tuple[int, Params, State, object]]
) -> Params:
    """``J^T u``: replay each segment from its checkpoint (newest first) and pull ``u`` back
    through it.
    """
    step = run.vstep()
    start_batches = run.batches()
    cot_p, cot_s = u, None
    ends = [c[0] for c in checkpoints[1:]] + [run.steps]
    for (first, params, state, saved), last in reversed(list(zip(checkpoints, ends, strict=True))):
        batches = start_batches.restore(saved)  # type: ignore[arg-type]
        segment = []
        with torch.no_grad():
            for t in range(first + 1, last + 1):
                x, y = batches.next()
                segment.append((t, params, state, x, y))
                params, state = step(params, state, run.hyper, x, y, t, run.factor(t))
        if cot_s is None:
            cot_s = _zeros_state(state)
        for t, p, s, x, y in reversed(segment):
            _, pull = vjp(_at(run, x, y, t), p, s)
            cot_p, cot_s = pull((cot_p, cot_s))
    return cot_p


def _norm(tree: Params) -> Tensor:
    return flat(tree, 1).double().norm(dim=1)


def _scale(tree: Params, factor: Tensor) -> Params:
    return {k: v * factor.to(v.dtype).view(-1, *([1] * (v.dim() - 1))) for k, v in tree.items()}


def top_growth(
    run: Unrolled, iterations: int = 8, seed: int = 0, start: Params | None = None
) -> PowerResult:
    """Power iteration for ``sigma_1(J)`` of every member at once (members stay independent).

    Starts from ``start`` (unit ``[members, *shape]`` on the run's device; default a random
    direction). The estimate never decreases from one iteration to the next (Rayleigh
    quotients of ``J^T J`` under power iteration), so after a few iterations it is a lower
    bound. Iterates on the run's device; the result's tensors are on the CPU.
    """
    every = max(1, math.ceil(math.sqrt(run.steps)))
    v = (
        start
        if start is not None
        else {k: d[:, 0] for k, d in random_directions(run, 1, seed).items()}
    )
    history, random_growth = [], None
    for _ in range(iterations):
        u, checkpoints = forward(run, v, every)
        if random_growth is None:
            random_growth = _norm(u)
        w = backward(run, u, checkpoints)
        rayleigh = (flat(v, 1).double() * flat(w, 1).double()).sum(1)
        history.append(rayleigh.clamp_min(0).sqrt())
        v = _scale(w, 1 / _norm(w))
    stacked = torch.stack(history).cpu()
    return PowerResult(
        stacked[-1],
        stacked,
        random_growth.cpu() if random_growth is not None else torch.full((run.members,), math.nan),
    )
