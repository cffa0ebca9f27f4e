"""Each member's final outcome on a split, a diverged member counted at its initial values.

The convention every analysis of finished runs shares (hparam maps, variance components,
Sobol indices): a member whose loss turned NaN/inf has no final snapshot, so its final
loss *and* accuracy are taken to be its values at initialisation (step 0). A diverged run
is then as bad as not training, never better, and means over members stay finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from attractor.runs.ensemble import Ensemble


def member_outcomes(ens: Ensemble, split: str = "test") -> pd.DataFrame:
    """Per member: ``member, lr, momentum, diverged, init_loss, final_loss, final_accuracy``.

    Final values come from the member's last metrics row on ``split`` ("test" or "train");
    a diverged member gets its step-0 values instead (see the module docstring).
    """
    metrics = ens.metrics.sort_values(["member", "step"])
    first = metrics.groupby("member").first()
    last = metrics.groupby("member").last()
    plan = ens.plan.set_index("member")
    diverged = plan["status"] == "diverged"
    out = pd.DataFrame(
        {
            "lr": plan["lr"].astype(float),
            "momentum": plan["momentum"].astype(float),
            "diverged": diverged,
        }
    )
    out["init_loss"] = first[f"{split}_loss"]
    out["init_accuracy"] = first[f"{split}_accuracy"]
    out["final_loss"] = last[f"{split}_loss"].where(~diverged, out["init_loss"])
    out["final_accuracy"] = last[f"{split}_accuracy"].where(~diverged, out["init_accuracy"])
    return out.reset_index()
