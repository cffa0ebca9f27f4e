"""Shortcut reliance and path dependence of one trainer variant's ensemble.

Pure measures of a finished run (:class:`~attractor.runs.ensemble.Ensemble`) trained with
``run.track_path`` on; :mod:`attractor.experiments.shortcuts` trains the variants with the
same seeds and compares them. Per member at the final snapshot: test accuracy, training
loss, distance from init, path length and their ratio (straightness) and, for tasks with
the probes ``shortcut_agree`` / ``shortcut_random``, the accuracy on each and the shortcut
reliance (agree minus random). Per variant: the 95 % multi-bootstrap interval of each
(accuracies also resample test examples; diverged members are left out and counted) and
the seed spread, the mean pairwise Jensen-Shannon divergence of the test predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from attractor.runs.ensemble import Ensemble

#: Per-member columns summarized per variant (accuracies also resample test examples).
SUMMARIZED = (
    "test_accuracy",
    "train_loss",
    "shortcut_reliance",
    "agree_accuracy",
    "random_accuracy",
    "init_distance",
    "path_length",
    "straightness",
)


def probe_correct(ens: Ensemble, step: int | None) -> tuple[np.ndarray, np.ndarray]:
    """0/1 correctness ``[members, examples]`` on the agree and random probes at ``step``."""
    out = []
    for name in ("shortcut_agree", "shortcut_random"):
        x, y = ens.task.probes[name]
        out.append((ens.predict(x, step=step).argmax(-1) == y).double().numpy())
    return out[0], out[1]


def reliance(ens: Ensemble, step: int) -> float:
    """Mean over members and examples of agree minus random correctness at ``step``."""
    agree, random = probe_correct(ens, step)
    return float((agree - random).mean())


def variant_tables(
    label: str, ens: Ensemble, has_shortcut: bool, draws: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """(members at the final snapshot, summary row, per-step curve) of one variant's run."""
    done = ens.members
    final = ens.final_metrics()
    final = final[final["member"].isin(done)].reset_index(drop=True)
    members = final[
        ["member", "test_accuracy", "train_loss", "init_distance", "path_length"]
    ].copy()
    members.insert(0, "variant", label)
    members["straightness"] = members["init_distance"] / members["path_length"]
    per_example: dict[str, np.ndarray] = {}
    if has_shortcut and done:
        agree, random = probe_correct(ens, None)
        per_example = {
            "agree_accuracy": agree,
            "random_accuracy": random,
            "shortcut_reliance": agree - random,
        }
        for name, scores in per_example.items():
            members[name] = scores.mean(1)
    summary = _summary(label, ens, members, per_example, draws, seed)
    return members, summary, _curve(label, ens, has_shortcut)


def _summary(
    label: str,
    ens: Ensemble,
    members: pd.DataFrame,
    per_example: dict[str, np.ndarray],
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """The variant's row: members, diverged, each measure with its interval, seed spread."""
    from attractor.measure.bootstrap import multibootstrap, pairwise_multibootstrap
    from attractor.measure.function import pairwise_js, probabilities

    done = ens.members
    summary: dict[str, Any] = {
        "variant": label,
        "members": len(done),
        "diverged": int((ens.plan["status"] == "diverged").sum()),
    }
    for name in SUMMARIZED:
        if name not in members or not len(members):
            continue
        est = multibootstrap(
            per_example.get(name, members[name].to_numpy()), draws=draws, seed=seed
        )
        summary.update({name: est.value, f"{name}_low": est.low, f"{name}_high": est.high})
    if len(done) >= 2:
        spread = pairwise_multibootstrap(
            pairwise_js(probabilities(ens.predict(ens.task.x_test)), per_example=True),
            draws=draws,
            seed=seed,
        )
        summary.update(
            {
                "seed_spread_js": spread.value,
                "seed_spread_js_low": spread.low,
                "seed_spread_js_high": spread.high,
            }
        )
    return summary


def _curve(label: str, ens: Ensemble, has_shortcut: bool) -> pd.DataFrame:
    """Per step: means over the finished members (and the shortcut reliance, with probes)."""
    done = ens.members
    metrics = ens.metrics
    curve = (
        metrics[metrics["member"].isin(done)]
        .groupby("step")[["test_accuracy", "init_distance", "path_length"]]
        .mean()
        .reset_index()
    )
    if has_shortcut and done:
        curve["shortcut_reliance"] = [reliance(ens, int(step)) for step in curve["step"]]
    curve.insert(0, "variant", label)
    return curve
