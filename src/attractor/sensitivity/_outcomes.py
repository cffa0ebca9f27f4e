"""Per-member outcomes shared by the sensitivity analyses, diverged members included.

Every analysis here needs one value per plan row, in plan row order, for *every* row:
dropping a diverged row would unbalance a factorial table and break SALib's sample
order. The convention is the one of :mod:`attractor.experiments.hparam_map`: a diverged member
takes its values **at initialisation** (step 0): final test loss and accuracy are its
step-0 metrics, and its predictions are those of its step-0 snapshot. A diverged run is
then as bad as not training, never better, and every outcome stays finite.

Outcomes (test split unless said otherwise):

* ``test_loss``: the member's final test loss **capped at its loss at init**
  (``min(final, init)``, the "capped loss" of :mod:`attractor.experiments.hparam_map`): a run
  that ends worse than it started counts as not trained, like a diverged one, so a
  single exploding learning rate (finite loss 1e57) cannot own all the variance;
* ``test_accuracy``: the member's final test accuracy;
* ``kl_to_mean``: ``KL(p_i || mean_j p_j)``, mean over examples (nats), the member's
  distance to the ensemble's mean prediction in function space;
* ``p_true``: ``[members, examples]`` predicted probability of the true class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.function import kl_to_mean, probabilities
from attractor.measure.outcomes import member_outcomes
from attractor.runs.ensemble import Ensemble

SCALAR_OUTCOMES = ("test_loss", "test_accuracy", "kl_to_mean")
PER_EXAMPLE_OUTCOMES = ("p_true",)
OUTCOMES = SCALAR_OUTCOMES + PER_EXAMPLE_OUTCOMES


def check_finished(ens: Ensemble) -> pd.DataFrame:
    """The plan table sorted by member; refuses a run with unfinished members."""
    plan = ens.plan.sort_values("member").reset_index(drop=True)
    unfinished = plan.loc[~plan["status"].isin(["done", "diverged"]), "member"].tolist()
    if unfinished:
        raise UserError(
            f"member {unfinished[0]} of '{ens.store.root}' has not finished training "
            f"({len(unfinished)} unfinished); run `attractor train` again to resume it"
        )
    return plan


@torch.no_grad()
def member_logits(ens: Ensemble, x: Tensor) -> Tensor:
    """Logits of every plan row on ``x``: ``[members, n, C]`` in member order (diverged: step 0)."""
    plan = check_finished(ens)
    done = plan.loc[plan["status"] == "done", "member"].astype(int).tolist()
    diverged = plan.loc[plan["status"] == "diverged", "member"].astype(int).tolist()
    parts: dict[int, Tensor] = {}
    if done:
        parts.update(zip(done, ens.predict(x, members=done), strict=True))
    for member in diverged:  # few, and their last snapshots differ: one at a time at step 0
        parts[member] = ens.predict(x, members=[member], step=0)[0]
    return torch.stack([parts[int(m)] for m in plan["member"]])


def outcome_values(
    ens: Ensemble, outcomes: tuple[str, ...] | list[str] = OUTCOMES, split: str = "test"
) -> dict[str, np.ndarray]:
    """``name -> [members]`` (scalar outcomes) or ``[members, n]`` (``p_true``), member order.

    Raises:
        UserError: an unknown outcome name (the message lists the known ones).
    """
    unknown = [o for o in outcomes if o not in OUTCOMES]
    if unknown:
        raise UserError(f"unknown outcome {unknown[0]!r}; choose from {', '.join(OUTCOMES)}")
    plan = check_finished(ens)
    out: dict[str, np.ndarray] = {}
    if {"test_loss", "test_accuracy"} & set(outcomes):
        table = member_outcomes(ens).set_index("member").loc[plan["member"]]
        # Capped at the loss at init (diverged or not): a run worse than not training counts as
        # not training, so one exploding lr cannot own all the variance (Wortsman et al. 2024).
        out["test_loss"] = np.minimum(table["final_loss"], table["init_loss"]).to_numpy(np.float64)
        out["test_accuracy"] = table["final_accuracy"].to_numpy(np.float64)
    if {"kl_to_mean", "p_true"} & set(outcomes):
        x, y = ens.eval_set(split)
        probs = probabilities(member_logits(ens, x))
        out["kl_to_mean"] = kl_to_mean(probs).numpy()
        out["p_true"] = (
            probs.gather(-1, y.long().view(1, -1, 1).expand(len(probs), -1, 1)).squeeze(-1).numpy()
        )
    return {name: out[name] for name in outcomes}


def diverged_count(ens: Ensemble) -> int:
    return int((ens.plan["status"] == "diverged").sum())
