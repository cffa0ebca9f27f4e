"""Replay a config's members with tangents attached and record what they say.

:func:`tangent_analysis` replays every member (vectorized per chunk of one batch size and
optimizer) with ``directions`` random tangent directions and one tangent per
hyperparameter, runs power iteration for the worst-case growth, optionally two
finite-scale runs per hyperparameter, checks the tangent against perturbed replays (the
basin around each run, :mod:`~attractor.tangent.basin`) and puts each hypergradient beside
the slope across the plan's members (:mod:`~attractor.tangent.globalsens`). It returns a
:class:`~attractor.tangent.store.TangentResult` and writes nothing;
:mod:`attractor.experiments.tangent` is the experiment around it.

The replay runs on ``config.run.device`` (resolved as training resolves it: ``auto`` is
CUDA when torch sees one), the float64 basin replays included. Everything random is drawn
on the CPU and then moved, so the numbers drawn are the same on every device, and the
result's tables are built from CPU copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import PlanRow, build_plan
from attractor.tangent.basin import DEFAULT_EPS, basin_scan
from attractor.tangent.globalsens import global_sensitivity
from attractor.tangent.hypergrad import central_difference, check_hypers, finite_step, hyper_columns
from attractor.tangent.lyapunov import propagate, random_directions
from attractor.tangent.power import top_growth
from attractor.tangent.store import TangentResult, summarize
from attractor.tangent.unroll import Unrolled, unroll
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.device import resolve_device

# : Outcomes differentiated by every hyperparameter (logits_rms: RMS over eval examples of |d
# logits|).
_OUTCOMES = ("test_loss", "true_class_prob", "logits_rms")


# : Members per chunk when ``run.chunk_size`` leaves it open: tangents take (columns + 1) x the
# weights.
_CHUNK = 16


def _chunks(rows: list[PlanRow], size: int) -> list[list[PlanRow]]:
    """Rows that train together: one batch size and optimizer, at most ``size`` of them."""
    groups: dict[tuple[int, str], list[PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.batch_size, row.optimizer), []).append(row)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _engine_gap(out: Path, run: Unrolled, final: dict[str, torch.Tensor]) -> list[float | None]:
    """Max |difference| to the weights the engine saved for each member in run ``out``.

    None for a member when ``out`` holds no run of this config or not that member. The saved
    snapshots are CPU tensors, so ``final`` is brought to the CPU first.
    """
    from attractor.runs.store import RunStore

    store = RunStore(out)
    if (
        not (out / "manifest.json").is_file()
        or store.manifest().get("config_hash") != run.config.hash()
    ):
        return [None] * run.members
    final = {k: v.cpu() for k, v in final.items()}
    gaps: list[float | None] = []
    for i, row in enumerate(run.rows):
        try:
            saved = store.load_snapshot(row.member, run.steps)
            gaps.append(
                max(
                    float((saved[k].double() - v[i].double()).abs().max()) for k, v in final.items()
                )
            )
        except Exception:  # a member the run has not (or not healthily) finished
            gaps.append(None)
    return gaps


def tangent_analysis(
    config: Config,
    out: str | Path,
    directions: int = 8,
    hypers: Sequence[str] = ("lr", "momentum"),
    *,
    members: Sequence[int] | None = None,
    reorth_every: int = 10,
    power_iterations: int = 4,
    finite_scale: float | None = 0.1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    method: str = "linearized",
    basin_eps: Sequence[float] | None = DEFAULT_EPS,
    basin_tolerance: float = 0.1,
) -> TangentResult:
    """Replay ``config``'s members with tangents; what they say (written by nobody here).

    Runs on ``config.run.device`` (see the module docstring); the result is the same
    tables wherever it ran.

    Args:
        out: the run directory of ``config``: if it holds the trained run, each member's
            replayed final weights are compared with the saved ones (``engine_max_abs_diff``).
        directions: random directions ``k`` for the Lyapunov spectrum (0: none).
        hypers: hyperparameters to differentiate by: lr, momentum, weight_decay, init_scale.
        members: plan members to analyse (default all).
        reorth_every: QR re-orthonormalization period in steps.
        power_iterations: power-iteration rounds for the worst-case growth (0: skip).
        finite_scale: relative step of the finite-scale central differences (None: skip).
        dtype: float32 (as the engine trains) or float64.
        seed: seed of the random directions (with each member's row seeds).
        method: ``"linearized"`` (Hessian-vector products, fast) or ``"jvp"`` (``vmap(jvp)``
            through the functional step, the reference); same numbers to round-off.
        basin_eps: perturbation sizes of the basin cross-check: each member is replayed in
            float64 from ``x0 + eps v`` (``v`` its first random direction) beside
            ``eps |J v|`` (``None`` or ``()``: skip; needs ``directions >= 1``).
        basin_tolerance: the linear picture breaks down at the smallest ``eps`` with
            ``|distance / (eps |J v|) - 1| >`` this.
    """
    # Over 60 lines only by its signature and docstring; the body is short.
    hypers = check_hypers(tuple(hypers))
    if directions < 0:
        raise UserError("--directions must be >= 0")
    out = Path(out)
    device = resolve_device(config.run.device)
    task = build_task(config.task)
    rows = _member_rows(config, task, members)
    if basin_eps and any(e <= 0 for e in basin_eps):
        raise UserError(f"basin eps must be positive, got {list(basin_eps)}")
    options = _Options(
        directions,
        hypers,
        reorth_every,
        power_iterations,
        finite_scale,
        dtype,
        seed,
        method,
        basin_eps,
        basin_tolerance,
        device,
    )
    found = _Found()
    for chunk in _chunks(rows, config.run.chunk_size or _CHUNK):
        _analyse_chunk(task, config, chunk, out, options, found)
    return _result(config, out, options, found)


def _member_rows(config: Config, task: Task, members: Sequence[int] | None) -> list[PlanRow]:
    """The plan rows of ``members`` (all when None); none of them is a user error."""
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    if members is not None:
        wanted = set(members)
        rows = [r for r in rows if r.member in wanted]
        if not rows:
            raise UserError(f"no plan member among {sorted(wanted)}")
    return rows


def _result(config: Config, out: Path, o: _Options, found: _Found) -> TangentResult:
    """The result of the gathered rows, with the global sensitivity and the summary."""
    member_frame, hyper_frame = pd.DataFrame(found.members), pd.DataFrame(found.hypers)
    result = TangentResult(
        out=str(out),
        config_hash=config.hash(),
        directions=o.directions,
        hypers=o.hypers,
        dtype=str(o.dtype).removeprefix("torch."),
        reorth_every=o.reorth_every,
        power_iterations=o.power_iterations,
        finite_scale=o.finite_scale,
        curves=pd.DataFrame(found.curves),
        members=member_frame,
        hypergrads=hyper_frame,
        summary={},
        basin=pd.DataFrame(found.basin),
        sensitivity=global_sensitivity(member_frame, hyper_frame, o.hypers, seed=o.seed),
        basin_tolerance=o.basin_tolerance if found.basin else None,
    )
    return summarize(result)


@dataclass(frozen=True)
class _Options:
    """:func:`tangent_analysis`'s settings, handed to each chunk."""

    directions: int
    hypers: tuple[str, ...]
    reorth_every: int
    power_iterations: int
    finite_scale: float | None
    dtype: torch.dtype
    seed: int
    method: str
    basin_eps: Sequence[float] | None
    basin_tolerance: float
    device: torch.device  # where the replay runs (placement, not part of the result)


@dataclass
class _Found:
    """Rows gathered over the chunks: curves, members, hypergradients, basin cross-check."""

    curves: list[dict[str, Any]] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    hypers: list[dict[str, Any]] = field(default_factory=list)
    basin: list[dict[str, Any]] = field(default_factory=list)


def _analyse_chunk(
    task: Task, config: Config, chunk: list[PlanRow], out: Path, o: _Options, found: _Found
) -> None:
    """Tangents, power iteration, basin scan and finite differences of one chunk of members."""
    run = unroll(task, config, chunk, o.dtype, o.device)
    k = min(o.directions, sum(v[0].numel() for v in run.params0.values()))
    dparams, dhyper = dparams_h, dhyper_h = hyper_columns(run, o.hypers)
    dirs = random_directions(run, k, o.seed) if k else {}
    if k:
        dparams = {n: torch.cat([dirs[n], dparams_h[n]], 1) for n in dirs}
        zeros = torch.zeros(run.members, k, dtype=torch.float64, device=run.device)
        dhyper = {h: torch.cat([zeros, v], 1) for h, v in dhyper_h.items()}
    records, z, diverged = propagate(
        run, dparams, dhyper, k, o.hypers, o.reorth_every, method=o.method
    )
    found.curves += records
    # From the first random direction, so the estimate starts at that direction's growth.
    power = None
    if o.power_iterations and k:
        power = top_growth(run, o.power_iterations, o.seed, {n: d[:, 0] for n, d in dirs.items()})
    gaps = _engine_gap(out, run, z.params)
    final = {r["member"]: r for r in records if r["step"] == run.steps}
    basins = {}
    if o.basin_eps and k:
        wide = (
            run
            if o.dtype == torch.float64
            else unroll(task, config, chunk, torch.float64, o.device)
        )
        basins = {
            b.member: b
            for b in basin_scan(wide, o.basin_eps, o.seed, o.basin_tolerance, directions=k)
        }
        found.basin += [r for b in basins.values() for r in b.rows]
    for i, row in enumerate(run.rows):
        rec, basin = final[row.member], basins.get(row.member)
        found.members.append(
            {
                "member": row.member,
                "optimizer": row.optimizer,
                "lr": row.lr,
                "momentum": row.momentum,
                "weight_decay": row.weight_decay,
                "init_scale": row.init_scale,
                "steps": run.steps,
                "test_loss": rec.get("test_loss"),
                "true_class_prob": rec.get("true_class_prob"),
                "diverged_step": int(diverged[i]) or None,
                "leading_exponent": rec.get("exponent_0"),
                "random_growth": math.exp(rec.get("log_growth_top", math.nan)),
                "function_growth_top": rec.get("function_growth_top"),
                "power_top_growth": None if power is None else float(power.sigma[i]),
                "engine_max_abs_diff": gaps[i],
                **(
                    {"basin_eps": basin.breakdown_eps, "basin_growth": basin.growth}
                    if basin
                    else {}
                ),
                **{f"exponent_{j}": rec.get(f"exponent_{j}") for j in range(k)},
            }
        )
    found.hypers += _hyper_rows(run, final, o, task.x_test, task.y_test)


def _hyper_rows(
    run: Unrolled, final: dict[int, dict[str, Any]], o: _Options, x: torch.Tensor, y: torch.Tensor
) -> list[dict[str, Any]]:
    """One row per (member, hyper, outcome): the derivative beside the finite-scale difference."""
    rows = []
    for h in o.hypers:
        fd, step = None, None
        if o.finite_scale:
            step = finite_step(run, h, o.finite_scale)
            fd = central_difference(run, h, step, x, y)
        for i, row in enumerate(run.rows):
            for name in _OUTCOMES:
                rows.append(
                    {
                        "member": row.member,
                        "hyper": h,
                        "outcome": name,
                        "derivative": final[row.member][f"d_{name}_d_{h}"],
                        "finite_scale": None if fd is None else float(fd[name][i]),
                        "finite_step": None if step is None else float(step[i]),
                    }
                )
    return rows
