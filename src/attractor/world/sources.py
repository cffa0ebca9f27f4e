"""Where the spread of a world outcome comes from: the member, the initial state, or both.

An outcome feature ``y [m, s]`` (final distance to the goal, reward, a 0/1 basin
indicator) over ``m`` members crossed with ``s`` initial states is decomposed with the
two-way random-effects model

    y_ij = mu + a_i + b_j + (ab)_ij + e_ij,

``a`` the member (model seed), ``b`` the initial world state. The design is crossed with
one observation per cell, so the interaction ``(ab)_ij`` — a member that handles *this*
state differently — cannot be told apart from the residual ``e_ij``: the third source is
their sum (``interaction+residual``), and a deterministic world with a deterministic
policy has no residual at all, so there it *is* the interaction.

The estimator and the intervals are those of :func:`attractor.sensitivity.decompose`
(reused, not copied): the balanced ANOVA (method-of-moments) components ``sigma^2``
clipped at 0, their shares of the total, and percentile intervals of the pigeonhole
bootstrap (members and initial states resampled independently, Owen 2007). With one
observation per cell its ``member:state`` row is the interaction plus the residual and its
residual row is empty; that row is renamed here and the empty one dropped.

References:
    Searle, Casella & McCulloch (1992), "Variance Components", ch. 4; Owen (2007), "The
    pigeonhole bootstrap", Ann. Appl. Stat. 1(2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import Tensor

from attractor.errors import UserError
from attractor.sensitivity import decompose

__all__ = ["PERTURBED_SOURCES", "SOURCES", "outcome_sources", "perturbed_sources"]

#: The sources, in the order of the returned rows.
SOURCES = ("member", "state", "interaction+residual")


def _values(values: Tensor | np.ndarray, axes: int = 2) -> np.ndarray:
    """``Float[ndarray, "m s"]`` (or ``"k m s"`` with ``axes=3``), categorical outcomes only
    as 0/1 indicators.
    """
    raw = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if raw.ndim != axes or min(raw.shape) < 2:
        what = "[members, initial states]" if axes == 2 else "[draws, members, initial states]"
        raise UserError(
            f"an outcome to split into sources must be {what} with at least 2 of each, got "
            f"shape {tuple(raw.shape)}"
        )
    if (np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_) and len(np.unique(raw)) > 2:
        # The variance of class indices depends on how the classes are numbered.
        raise UserError(
            f"a categorical outcome with {len(np.unique(raw))} classes has no variance; "
            "decompose an indicator such as (labels == basin)"
        )
    array = raw.astype(np.float64)
    if not np.isfinite(array).all():
        raise UserError("the outcome has values that are not finite; leave diverged rollouts out")
    return array


def outcome_sources(
    values: Tensor | np.ndarray, draws: int = 500, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Split the variance of ``values`` ``[m, s]`` into member, state and interaction+residual.

    Args:
        values: ``Float[Tensor, "m s"]`` an outcome per (member, initial state); a
            categorical one only as a 0/1 indicator.
        draws: pigeonhole bootstrap draws (0: no intervals, ``low``/``high`` NaN).
        seed: seed of the bootstrap.
        level: coverage of the intervals.

    Returns:
        Three rows (:data:`SOURCES`): ``source, variance`` (the clipped ANOVA component),
        ``share`` (of the summed components; NaN when all are 0), ``low, high`` (interval
        of the share).
    """
    names = {"member": "member", "state": "state"}
    return _split(_values(values), names, "interaction+residual", draws, seed, level)


#: The sources of :func:`perturbed_sources`, in the order of the returned rows.
PERTURBED_SOURCES = ("model perturbation", "member", "state", "interactions+residual")


def perturbed_sources(
    values: Tensor | np.ndarray, draws: int = 500, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Split ``values [k, m, s]`` into model perturbation, member, state and the rest.

    ``k`` perturbed copies of every member (independent draws of one structural
    perturbation at one level: dropout masks, weight noise) crossed with the ``m`` members
    and the ``s`` initial states: the three-way random-effects model of
    :func:`attractor.sensitivity.decompose` (the same estimator and pigeonhole bootstrap as
    :func:`outcome_sources`, now over three factors). The three two-way interactions and
    the three-way one (confounded with the residual, one observation per cell) are summed
    into ``interactions+residual``; its interval ends are the parts' ends added (a
    conservative reading), capped at 1.
    """
    names = {"perturbation": "model perturbation", "member": "member", "state": "state"}
    return _split(_values(values, axes=3), names, "interactions+residual", draws, seed, level)


def _split(
    array: np.ndarray, names: dict[str, str], rest: str, draws: int, seed: int, level: float
) -> pd.DataFrame:
    """The crossed ANOVA of ``array`` (one axis per factor of ``names``, in order): a row per
    main effect (renamed by ``names``), then every interaction and the residual summed as
    ``rest`` (with one observation per cell the highest interaction *is* the residual).
    """
    factors = list(names)
    design = pd.DataFrame(
        dict(zip(factors, np.indices(array.shape).reshape(array.ndim, -1), strict=True))
    )
    table = decompose(design, factors, array.reshape(-1), "y", draws, seed, level)
    columns = {"component": "variance", "share": "share", "share_low": "low", "share_high": "high"}
    main = table[table["effect"].isin(factors)]
    rows = [
        {"source": names[row["effect"]], **{new: float(row[old]) for old, new in columns.items()}}
        for row in main.to_dict("records")
    ]
    others = table[~table["effect"].isin(factors)]
    summed = {new: float(others[old].sum(min_count=1)) for old, new in columns.items()}
    # Shares of parts add; their interval ends are added too (conservative), capped at 1.
    summed["low"], summed["high"] = (float(np.minimum(1.0, summed[k])) for k in ("low", "high"))
    rows.append({"source": rest, **summed})
    return pd.DataFrame(rows)
