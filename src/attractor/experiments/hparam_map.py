"""Trainer-level structural stability: learning rate × momentum maps and the good-lr range.

One factorial plan crosses every learning rate with every momentum, ``seeds`` replicates
per cell (each with its own init and data-order seed), and trains all cells as one
ensemble run in ``out`` (resumable like any run directory). Everything is then read off
the test set at each member's last snapshot.

Definitions (exact, because the issue leaves them open):

* **Diverged members.** A member whose loss turned NaN/inf has no final snapshot; its
  final loss *and* accuracy are taken to be its values at initialisation (step 0). A
  diverged run is then as bad as not training, never better, and the cell means stay finite.
* **Good-lr range** (per momentum). Error ``e(lr) = 1 - mean final accuracy`` of the cell;
  ``e* = min_lr e(lr)``. A learning rate is *good* when ``e(lr) <= e* · (1 + tolerance)``
  (``tolerance = 0.1``: within 10 % of the best accuracy gap). The range is the
  **contiguous** run of good learning rates on the sorted grid that contains the best one;
  good learning rates separated from it by a bad one do not widen it. Its width is
  ``log10(lr_max / lr_min)``, 0 when only the best learning rate is good.
* **Width CI.** Seeds are resampled with replacement within each cell, the cell means and
  the width recomputed, ``draws`` times; the 95 % percentile interval.
* **LR sensitivity** (per momentum). Per member ``min(final loss, loss at init)``
  (diverged: the loss at init), averaged over the cell's seeds to ``capped_loss``; the
  sensitivity is ``mean_lr capped_loss - min_lr capped_loss``. It is 0 when every learning
  rate is as good as the best and grows as learning rates fail.

References:
    Wortsman et al., "Small-scale proxies for large-scale Transformer training
    instabilities", ICLR 2024 (arXiv 2309.14322), section 3.1 (LR sensitivity).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attractor.config import Config, PlanConfig
from attractor.errors import UserError
from attractor.runs.store import atomic_path, write_json
from attractor.seeds import numpy_generator

CELL = ["lr", "momentum"]


@dataclass(frozen=True, eq=False)
class HparamMap:
    """A learning rate × momentum map of one trainer.

    Attributes:
        cells: one row per (lr, momentum): ``seeds``, ``loss_mean``, ``loss_sd``,
            ``accuracy_mean``, ``accuracy_sd`` (final test values, diverged members at their
            init values), ``init_loss``, ``capped_loss``, ``diverged`` (fraction) and
            ``spread_js`` (mean pairwise JS between the finished members, NaN if < 2).
        ranges: one row per momentum: ``width`` (decades), its 95 % interval ``low`` /
            ``high``, ``lr_min`` / ``lr_max`` of the good range, ``best_lr`` and ``sensitivity``.
        tolerance: relative tolerance on the best error that defines a good learning rate.
        out: the run directory that also holds ``hparam-map.{parquet,json,png}``.
    """

    cells: pd.DataFrame
    ranges: pd.DataFrame
    tolerance: float
    out: Path
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        clean = lambda df: df.astype(object).where(df.notna(), None).to_dict(orient="records")  # noqa: E731 - NaN → null
        return {"tolerance": self.tolerance, "split": self.split, "out": str(self.out), "cells": clean(self.cells), "ranges": clean(self.ranges)}


def check_grid(lrs: list[float], momenta: list[float], seeds: int, tolerance: float) -> None:
    """Refuse a grid the map cannot be computed on, with one line."""
    if len(lrs) < 2:
        raise UserError(f"an hparam map needs at least 2 learning rates, got {len(lrs)}")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise UserError(f"learning rates must be positive and finite, got {lrs}")
    if len(set(lrs)) != len(lrs) or len(set(momenta)) != len(momenta):
        raise UserError("learning rates and momenta must not repeat")
    if not momenta or any(not (0 <= m < 1) for m in momenta):
        raise UserError(f"momenta must lie in [0, 1), got {momenta}")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")
    if not tolerance > 0:
        raise UserError(f"tolerance must be positive, got {tolerance}")


def member_outcomes(ens: Any, split: str = "test") -> pd.DataFrame:
    """Per member: ``member, lr, momentum, diverged, init_loss, final_loss, final_accuracy``.

    Final values come from the member's last metrics row on ``split`` ("test" or "train");
    a diverged member gets its step-0 values instead (see the module docstring).
    """
    metrics = ens.metrics.sort_values(["member", "step"])
    first = metrics.groupby("member").first()
    last = metrics.groupby("member").last()
    plan = ens.plan.set_index("member")
    diverged = plan["status"] == "diverged"
    out = pd.DataFrame({"lr": plan["lr"].astype(float), "momentum": plan["momentum"].astype(float), "diverged": diverged})
    out["init_loss"] = first[f"{split}_loss"]
    out["init_accuracy"] = first[f"{split}_accuracy"]
    out["final_loss"] = last[f"{split}_loss"].where(~diverged, out["init_loss"])
    out["final_accuracy"] = last[f"{split}_accuracy"].where(~diverged, out["init_accuracy"])
    return out.reset_index()


def summarize_cells(members: pd.DataFrame) -> pd.DataFrame:
    """Cell table from :func:`member_outcomes` rows (``spread_js`` is added by :func:`hparam_map`)."""
    members = members.assign(capped=np.minimum(members["final_loss"], members["init_loss"]))
    grouped = members.groupby(CELL, sort=True)
    cells = pd.DataFrame({
        "seeds": grouped.size(),
        "loss_mean": grouped["final_loss"].mean(),
        "loss_sd": grouped["final_loss"].std(ddof=1),
        "accuracy_mean": grouped["final_accuracy"].mean(),
        "accuracy_sd": grouped["final_accuracy"].std(ddof=1),
        "init_loss": grouped["init_loss"].mean(),
        "capped_loss": grouped["capped"].mean(),
        "diverged": grouped["diverged"].mean().astype(float),
    })
    return cells.reset_index()


def good_lr_range(lrs: np.ndarray, accuracy: np.ndarray, tolerance: float) -> tuple[float, float, float]:
    """``(width, lr_min, lr_max)`` of the contiguous good range around the best lr.

    Args:
        lrs: ``[n]`` learning rates (any order); accuracy: ``[n]`` mean final accuracy per lr.
        tolerance: an lr is good if its error is at most ``e* · (1 + tolerance)``.
    """
    order = np.argsort(lrs)
    lrs, error = np.asarray(lrs, float)[order], 1.0 - np.asarray(accuracy, float)[order]
    best = int(np.nanargmin(error))
    good = error <= error[best] * (1.0 + tolerance)
    lo = hi = best
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(lrs) - 1 and good[hi + 1]:
        hi += 1
    return float(math.log10(lrs[hi] / lrs[lo])), float(lrs[lo]), float(lrs[hi])


def lr_sensitivity(capped_loss: np.ndarray) -> float:
    """Wortsman et al.'s LR sensitivity from ``[n]`` per-lr capped losses: mean minus min."""
    capped = np.asarray(capped_loss, float)
    return float(np.mean(capped) - np.min(capped))


def range_table(cells: pd.DataFrame, members: pd.DataFrame, tolerance: float, draws: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per momentum: good-lr width with its seed-bootstrap 95 % interval, range and sensitivity."""
    rng = numpy_generator("hparam-map-bootstrap", seed)
    rows = []
    for momentum, part in cells.groupby("momentum", sort=True):
        width, lr_min, lr_max = good_lr_range(part["lr"].to_numpy(), part["accuracy_mean"].to_numpy(), tolerance)
        # Per lr the seeds' accuracies; resample each cell's seeds independently.
        lrs = part["lr"].to_numpy()
        accs = [members.loc[(members["momentum"] == momentum) & (members["lr"] == lr), "final_accuracy"].to_numpy() for lr in lrs]
        widths = np.empty(draws)
        for d in range(draws):
            means = np.array([a[rng.integers(len(a), size=len(a))].mean() for a in accs])
            widths[d] = good_lr_range(lrs, means, tolerance)[0]
        low, high = np.percentile(widths, [2.5, 97.5])
        best_lr = float(lrs[int(np.argmax(part["accuracy_mean"].to_numpy()))])
        rows.append({"momentum": float(momentum), "width": width, "low": float(low), "high": float(high), "lr_min": lr_min,
                     "lr_max": lr_max, "best_lr": best_lr, "sensitivity": lr_sensitivity(part["capped_loss"].to_numpy())})
    return pd.DataFrame(rows)


def hparam_map(config: Config, lrs: list[float], momenta: list[float], seeds: int, out: Path, tolerance: float = 0.1, draws: int = 500,
               split: str = "test") -> HparamMap:
    """Train the lr × momentum grid of ``config``'s trainer as one ensemble and map it.

    Args:
        config: task, trainer (everything but lr / momentum) and run settings; its plan is replaced.
        lrs: ``[L]`` learning rates; momenta: ``[M]`` momenta in [0, 1); seeds: replicates per cell.
        out: run directory (resumed if it holds this run); the map files are written into it.
        tolerance: relative tolerance on the best error (see the module docstring).
        draws: bootstrap resamples for the width's interval.
        split: whose loss and accuracy define "trains well": "test" (generalizes) or
            "train" (fits; e.g. where no cell generalizes yet, as in modular addition
            before grokking). The seed spread is always measured on the test split.

    Returns:
        :class:`HparamMap` with ``L · M`` cells and ``M`` ranges.

    References:
        Wortsman et al. 2023 (LR sensitivity).
    """
    from attractor.measure.function import pairwise_js, probabilities
    from attractor.runs.launch import train

    check_grid(lrs, momenta, seeds, tolerance)
    plan = PlanConfig(design="factorial", members=len(lrs) * len(momenta) * seeds, levels={"lr": list(lrs), "momentum": list(momenta)},
                      vary=["init_seed", "data_seed"], seed=config.plan.seed)
    out = Path(out)
    ens = train(config.model_copy(update={"plan": plan}), out)
    members = member_outcomes(ens, split)
    cells = summarize_cells(members)
    done = members.merge(ens.plan[["member", "status"]], on="member")
    x = ens.task.x_test
    spreads = []
    for cell in cells.itertuples():
        ids = done.loc[(done["lr"] == cell.lr) & (done["momentum"] == cell.momentum) & (done["status"] == "done"), "member"].tolist()
        if len(ids) < 2:
            spreads.append(math.nan)
            continue
        js = pairwise_js(probabilities(ens.predict(x, members=[int(i) for i in ids])))
        n = js.shape[0]
        spreads.append(float(js.sum() / (n * (n - 1))))  # mean over off-diagonal pairs (diagonal is 0)
    cells["spread_js"] = spreads
    ranges = range_table(cells, members, tolerance, draws, config.plan.seed)
    result = HparamMap(cells, ranges, tolerance, out, split)
    with atomic_path(out / "hparam-map.parquet") as tmp:
        cells.to_parquet(tmp, index=False)
    write_json(out / "hparam-map.json", result.to_dict())
    heatmap_figure(result, out / "hparam-map.png")
    return result


def heatmap_figure(result: HparamMap, path: Path | None = None) -> str:
    """Mean final accuracy over the lr × momentum grid, sd and diverged fraction in each cell.

    Good cells (inside each momentum's good-lr range) are outlined. Returns a PNG data
    URI; also writes the PNG to ``path`` (atomically) when given.
    """
    # matplotlib's object API (no pyplot state): the measure layer must not import report/.
    from matplotlib.figure import Figure

    cells = result.cells
    lrs, momenta = sorted(cells["lr"].unique()), sorted(cells["momentum"].unique())
    grid = cells.set_index(CELL)
    mean = np.array([[grid.loc[(lr, m), "accuracy_mean"] for lr in lrs] for m in momenta])
    fig = Figure(figsize=(1.2 + 0.75 * len(lrs), 1.4 + 0.6 * len(momenta)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(mean, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for i, m in enumerate(momenta):
        ranged = result.ranges.set_index("momentum").loc[m]
        for j, lr in enumerate(lrs):
            cell = grid.loc[(lr, m)]
            sd = 0.0 if pd.isna(cell["accuracy_sd"]) else cell["accuracy_sd"]
            text = f"{cell['accuracy_mean']:.2f}\n±{sd:.2f}" + (f"\n{cell['diverged']:.0%} div" if cell["diverged"] > 0 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if cell["accuracy_mean"] < 0.6 else "black")
            if ranged["lr_min"] <= lr <= ranged["lr_max"]:
                ax.add_patch(_outline(j, i))
    ax.set_xticks(range(len(lrs)), [f"{lr:.3g}" for lr in lrs], rotation=45)
    ax.set_yticks(range(len(momenta)), [f"{m:g}" for m in momenta])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("momentum")
    ax.set_title(f"final {result.split} accuracy (mean ± sd); outlined: within {result.tolerance:.0%} of the best error")
    fig.colorbar(image, ax=ax, label="accuracy")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    if path is not None:
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(buffer.getvalue())
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _outline(x: float, y: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1.0, 1.0, fill=False, edgecolor="red", linewidth=1.5)
