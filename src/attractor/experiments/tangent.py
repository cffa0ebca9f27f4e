"""``attractor tangent``: train a config's members with tangents attached and record what they say.

One call trains every member (vectorized per chunk of one batch size and optimizer) with
``directions`` random tangent directions and one tangent per hyperparameter, runs power
iteration for the worst-case growth, optionally two finite-scale runs per hyperparameter,
checks the tangent against perturbed replays (the basin around each run,
:mod:`~attractor.tangent.basin`), puts each hypergradient beside the slope across the
plan's members (:mod:`~attractor.tangent.globalsens`), and writes ``OUT/tangent.parquet`` (curves) and ``OUT/tangent.json`` (everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

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
from attractor.tangent.store import TangentResult, summarize, write_result
from attractor.tangent.unroll import Unrolled, unroll
from attractor.tasks import build_task

#: Outcomes differentiated by every hyperparameter (logits_rms: RMS over eval examples of |d logits|).
_OUTCOMES = ("test_loss", "true_class_prob", "logits_rms")


#: Members per chunk when ``run.chunk_size`` leaves it open: tangents take (columns + 1) x the weights.
_CHUNK = 16


def _chunks(rows: list[PlanRow], size: int) -> list[list[PlanRow]]:
    """Rows that train together: one batch size and optimizer, at most ``size`` of them."""
    groups: dict[tuple[int, str], list[PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.batch_size, row.optimizer), []).append(row)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _engine_gap(out: Path, run: Unrolled, final: dict[str, torch.Tensor]) -> list[float | None]:
    """Max |difference| to the weights the engine saved for each member in ``out`` (None: no run of this config)."""
    from attractor.runs.store import RunStore

    store = RunStore(out)
    if not (out / "manifest.json").is_file() or store.manifest().get("config_hash") != run.config.hash():
        return [None] * run.members
    gaps: list[float | None] = []
    for i, row in enumerate(run.rows):
        try:
            saved = store.load_snapshot(row.member, run.steps)
            gaps.append(max(float((saved[k].double() - v[i].double()).abs().max()) for k, v in final.items()))
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
    """Train ``config``'s members with tangents and write ``out/tangent.parquet`` and ``out/tangent.json``.

    Args:
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

    If ``out`` already holds a trained run of this config, each member's replayed final
    weights are compared with the saved ones (``engine_max_abs_diff``).
    """
    hypers = check_hypers(tuple(hypers))
    if directions < 0:
        raise UserError("--directions must be >= 0")
    out = Path(out)
    task = build_task(config.task)
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    if members is not None:
        wanted = set(members)
        rows = [r for r in rows if r.member in wanted]
        if not rows:
            raise UserError(f"no plan member among {sorted(wanted)}")
    if basin_eps and any(e <= 0 for e in basin_eps):
        raise UserError(f"basin eps must be positive, got {list(basin_eps)}")
    curves, member_rows, hyper_rows, basin_rows = [], [], [], []
    for chunk in _chunks(rows, config.run.chunk_size or _CHUNK):
        run = unroll(task, config, chunk, dtype)
        k = min(directions, sum(v[0].numel() for v in run.params0.values()))
        dparams, dhyper = dparams_h, dhyper_h = hyper_columns(run, hypers)
        dirs = random_directions(run, k, seed) if k else {}
        if k:
            dparams = {n: torch.cat([dirs[n], dparams_h[n]], 1) for n in dirs}
            dhyper = {h: torch.cat([torch.zeros(run.members, k, dtype=torch.float64), v], 1) for h, v in dhyper_h.items()}
        records, z, diverged = propagate(run, dparams, dhyper, k, hypers, reorth_every, method=method)
        curves += records
        # From the first random direction, so the estimate starts at that direction's growth.
        power = top_growth(run, power_iterations, seed, {n: d[:, 0] for n, d in dirs.items()}) if power_iterations and k else None
        gaps = _engine_gap(out, run, z.params)
        final = {r["member"]: r for r in records if r["step"] == run.steps}
        basins = {}
        if basin_eps and k:
            wide = run if dtype == torch.float64 else unroll(task, config, chunk, torch.float64)
            basins = {b.member: b for b in basin_scan(wide, basin_eps, seed, basin_tolerance, directions=k)}
            basin_rows += [r for b in basins.values() for r in b.rows]
        for i, row in enumerate(run.rows):
            rec = final[row.member]
            basin = basins.get(row.member)
            member_rows.append({
                "member": row.member, "optimizer": row.optimizer, "lr": row.lr, "momentum": row.momentum,
                "weight_decay": row.weight_decay, "init_scale": row.init_scale, "steps": run.steps,
                "test_loss": rec.get("test_loss"), "true_class_prob": rec.get("true_class_prob"),
                "diverged_step": int(diverged[i]) or None,
                "leading_exponent": rec.get("exponent_0"), "random_growth": math.exp(rec.get("log_growth_top", math.nan)),
                "function_growth_top": rec.get("function_growth_top"),
                "power_top_growth": None if power is None else float(power.sigma[i]),
                "engine_max_abs_diff": gaps[i],
                **({"basin_eps": basin.breakdown_eps, "basin_growth": basin.growth} if basin else {}),
                **{f"exponent_{j}": rec.get(f"exponent_{j}") for j in range(k)},
            })
        x_eval, y_eval = task.x_test, task.y_test
        for h in hypers:
            fd, step = None, None
            if finite_scale:
                step = finite_step(run, h, finite_scale)
                fd = central_difference(run, h, step, x_eval, y_eval)
            for i, row in enumerate(run.rows):
                for name in _OUTCOMES:
                    hyper_rows.append({
                        "member": row.member, "hyper": h, "outcome": name, "derivative": final[row.member][f"d_{name}_d_{h}"],
                        "finite_scale": None if fd is None else float(fd[name][i]),
                        "finite_step": None if step is None else float(step[i]),
                    })
    member_frame, hyper_frame = pd.DataFrame(member_rows), pd.DataFrame(hyper_rows)
    result = TangentResult(
        out=str(out), config_hash=config.hash(), directions=directions, hypers=hypers, dtype=str(dtype).removeprefix("torch."),
        reorth_every=reorth_every, power_iterations=power_iterations, finite_scale=finite_scale,
        curves=pd.DataFrame(curves), members=member_frame, hypergrads=hyper_frame,
        summary={}, basin=pd.DataFrame(basin_rows), sensitivity=global_sensitivity(member_frame, hyper_frame, hypers, seed=seed),
        basin_tolerance=basin_tolerance if basin_rows else None,
    )
    result = summarize(result)
    write_result(result, out)
    return result
