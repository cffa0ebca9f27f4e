"""Sobol' indices of continuous factors (lr, momentum, weight decay, label noise, init scale).

For an outcome ``Y = f(X_1, ..., X_D)`` with independent inputs, the first-order index
``S1_i = Var(E[Y | X_i]) / Var(Y)`` is the share of the variance that ``X_i`` explains
alone; the total index ``ST_i = E[Var(Y | X_{~i})] / Var(Y)`` adds all its interactions
(``ST_i >= S1_i``; ``sum S1 <= 1``; ``ST_i - S1_i`` is interaction). Estimated by SALib
(``SALib.analyze.sobol.analyze``, ``calc_second_order=False``) with Saltelli's (2010)
estimator for S1 and Jansen's for ST, from a ``sobol`` plan whose rows are SALib's
Saltelli sample in its own order (``N`` blocks of ``D + 2`` rows: A, AB_1..AB_D, B; see
:mod:`attractor.plan`). ``lr`` enters as ``log10(lr)``, as :func:`attractor.plan.sobol_problem`
declares it, so its indices are about decades of learning rate.

Intervals: SALib's bootstrap over the ``N`` base samples, reported as ``S ± conf``
(``conf`` = the normal-approximation half-width at ``level``). Estimates can leave
[0, 1] (negative S1 for an inert factor) when ``N`` is small; they are not clipped.

Diverged members take their values at initialisation (see ``_outcomes``): dropping them
would break the Saltelli blocks, and a diverged lr is a real effect of the lr. Seeds that
vary alongside (``vary = ["init_seed"]``) act as noise on ``f``: it inflates ``ST`` of
every factor and the widths; compare ``sum S1`` with 1 to see how much is left unexplained.

References:
    Sobol' (2001), "Global sensitivity indices for nonlinear mathematical models and their
    Monte Carlo estimates", Math. Comput. Simul. 55; Saltelli et al. (2010), "Variance based
    sensitivity analysis of model output. Design and estimator for the total sensitivity
    index", Comput. Phys. Commun. 181; Ishigami & Homma (1990) (the test function).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from attractor.errors import UserError
from attractor.plan import sobol_problem
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import strict_json
from attractor.sensitivity._outcomes import (
    SCALAR_OUTCOMES,
    check_finished,
    diverged_count,
    outcome_values,
)


@dataclass(frozen=True, eq=False)
class SobolIndices:
    """First-order and total Sobol' indices of each outcome.

    Attributes:
        problem: the SALib problem (names, bounds; lr in log10).
        base_samples: Saltelli's ``N`` (members = ``N * (D + 2)``).
        table: one row per (outcome, factor): ``S1, S1_conf, S1_low, S1_high, ST, ST_conf,
            ST_low, ST_high, interaction`` (= ST - S1), ``outcome_variance``.
        members, diverged: plan rows and how many diverged (taken at init).
        resamples, level, seed: SALib bootstrap settings.
    """

    problem: dict[str, Any]
    base_samples: int
    table: pd.DataFrame
    members: int
    diverged: int
    resamples: int
    level: float
    seed: int

    kind: ClassVar[str] = "sensitivity-sobol"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        return "sensitivity-sobol"

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.table}

    def to_dict(self) -> dict[str, Any]:
        rows = strict_json(self.table)
        return {
            "problem": self.problem,
            "base_samples": self.base_samples,
            "members": self.members,
            "diverged": self.diverged,
            "resamples": self.resamples,
            "level": self.level,
            "seed": self.seed,
            "table": rows,
        }


def sobol_indices(
    problem: Mapping[str, Any],
    outcomes: Mapping[str, Any],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """S1 and ST of each outcome vector given in Saltelli sample order (the code path of plans).

    Args:
        problem: SALib problem (``num_vars``, ``names``, ``bounds``).
        outcomes: name -> ``[N * (D + 2)]`` values, row ``i`` the outcome of sample row ``i``.
        resamples: SALib bootstrap resamples; level: interval coverage; seed: its seed.

    Returns:
        The rows of :attr:`SobolIndices.table`.
    """
    rows = []
    for name, values in outcomes.items():
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        result = _analyze(problem, name, y, resamples, level, seed)
        variance = float(y.var())
        for j, factor in enumerate(problem["names"]):
            s1, s1c, st, stc = (float(result[k][j]) for k in ("S1", "S1_conf", "ST", "ST_conf"))
            rows.append(
                {
                    "outcome": name,
                    "factor": factor,
                    "S1": s1,
                    "S1_conf": s1c,
                    "S1_low": s1 - s1c,
                    "S1_high": s1 + s1c,
                    "ST": st,
                    "ST_conf": stc,
                    "ST_low": st - stc,
                    "ST_high": st + stc,
                    "interaction": st - s1,
                    "outcome_variance": variance,
                }
            )
    return pd.DataFrame(rows)


def _analyze(
    problem: Mapping[str, Any], name: str, y: np.ndarray, resamples: int, level: float, seed: int
) -> Mapping[str, Any]:
    """SALib's ``S1, S1_conf, ST, ST_conf`` of one outcome vector (NaN for a constant one).

    Raises:
        UserError: ``y`` is not a Saltelli sample's length, or has non-finite values.
    """
    from SALib.analyze import sobol

    d = int(problem["num_vars"])
    if len(y) % (d + 2):
        raise UserError(
            f"outcome {name!r} has {len(y)} values, not a multiple of D + 2 = {d + 2} (a "
            "Saltelli sample)"
        )
    if not np.isfinite(y).all():
        raise UserError(
            f"outcome {name!r} has non-finite values; a diverged member should be taken at init"
        )
    if float(y.var()) == 0.0:  # constant outcome: no variance to share out
        return {k: np.full(d, np.nan) for k in ("S1", "S1_conf", "ST", "ST_conf")}
    with warnings.catch_warnings():  # SALib warns on small N; the intervals already say so
        warnings.simplefilter("ignore")
        return sobol.analyze(
            dict(problem),
            y,
            calc_second_order=False,
            num_resamples=resamples,
            conf_level=level,
            seed=seed + 1,
        )  # SALib reads seed 0 as "unseeded"


def plan_sample(table: pd.DataFrame, problem: Mapping[str, Any]) -> np.ndarray:
    """``[members, D]``: the plan's factor columns in SALib's units (lr -> log10), member order.

    Raises:
        UserError: the rows are not a Saltelli sample in SALib order (A, AB_1..AB_D, B blocks).
    """
    names, d = list(problem["names"]), int(problem["num_vars"])
    table = table.sort_values("member")
    x = np.column_stack(
        [
            np.log10(table[n].to_numpy(np.float64)) if n == "lr" else table[n].to_numpy(np.float64)
            for n in names
        ]
    )
    if len(x) % (d + 2):
        raise UserError(f"a sobol plan over {d} factors has N x {d + 2} rows, this one {len(x)}")
    blocks = x.reshape(-1, d + 2, d)
    a, b = blocks[:, 0], blocks[:, -1]
    for j in range(d):
        expected = a.copy()
        expected[:, j] = b[:, j]
        if not np.allclose(blocks[:, 1 + j], expected, rtol=1e-9, atol=1e-12):
            raise UserError(
                f"the plan rows are not in SALib's Saltelli order (block row AB_{j + 1} of "
                f"{names[j]!r}); "
                "was the plan reordered?"
            )
    return x


def sobol_analysis(
    ens: Ensemble,
    outcomes: Sequence[str] = SCALAR_OUTCOMES,
    split: str = "test",
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SobolIndices:
    """Sobol' indices of a trained ``sobol`` plan (outcomes in plan row order; diverged at init).

    Args:
        ens: a finished :class:`~attractor.runs.ensemble.Ensemble` trained from a ``design =
        "sobol"`` plan.
        outcomes: scalar outcomes among ``test_loss, test_accuracy, kl_to_mean``.
        split: split of the function-space outcome.
        resamples, level, seed: SALib bootstrap settings.
    """
    plan_config = ens.config.plan
    if plan_config.design != "sobol":
        raise UserError(
            f'Sobol indices need a design = "sobol" plan; this run\'s is {plan_config.design!r} '
            "(use variance components for factorial plans)"
        )
    bad = [o for o in outcomes if o not in SCALAR_OUTCOMES]
    if bad:
        raise UserError(
            f"Sobol indices take one value per member; {bad[0]!r} is not one of "
            f"{', '.join(SCALAR_OUTCOMES)}"
        )
    plan = check_finished(ens)
    problem = _problem_in_plan_order(sobol_problem(plan_config), plan)
    plan_sample(plan, problem)
    values = outcome_values(ens, tuple(outcomes), split)
    table = sobol_indices(problem, values, resamples, level, seed)
    return SobolIndices(
        problem,
        len(plan) // (problem["num_vars"] + 2),
        table,
        len(plan),
        diverged_count(ens),
        resamples,
        level,
        seed,
    )


def _problem_in_plan_order(problem: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """``problem`` with its factors in the order the plan's Saltelli blocks vary them.

    Why: the run's manifest stores the config as JSON with sorted keys, so the
    ``[plan.ranges]`` order (which fixed SALib's column order when the plan was built) is
    lost on reload. Row ``1 + j`` of each block (AB_j) differs from row A in factor ``j``
    only, which recovers the order from the table itself.
    """
    names, d = list(problem["names"]), int(problem["num_vars"])
    if len(table) % (d + 2) or d < 2:
        return problem
    values = table.sort_values("member")[names].to_numpy(np.float64).reshape(-1, d + 2, d)
    changed = (values[:, 1 : d + 1] != values[:, :1]).any(0)  # [D block rows, D factors]
    order = [int(np.argmax(row)) for row in changed]
    if sorted(order) != list(range(d)) or not all(changed[j, order[j]] for j in range(d)):
        return problem  # not a recognisable Saltelli table; plan_sample says what is wrong
    bounds = dict(zip(names, problem["bounds"], strict=True))
    return {
        **problem,
        "names": [names[i] for i in order],
        "bounds": [bounds[names[i]] for i in order],
    }


def write_sobol(ens: Ensemble, result: SobolIndices) -> dict[str, str]:
    """``RUN/sensitivity-sobol.parquet`` (the table) and ``.json`` (everything)."""
    return ens.store.write(result)
