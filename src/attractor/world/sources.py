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

__all__ = ["SOURCES", "outcome_sources"]

#: The sources, in the order of the returned rows.
SOURCES = ("member", "state", "interaction+residual")
_EFFECTS = {"member": "member", "state": "state", "member:state": "interaction+residual"}


def _values(values: Tensor | np.ndarray) -> np.ndarray:
    """``Float[ndarray, "m s"]``, categorical outcomes only as 0/1 indicators."""
    raw = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if raw.ndim != 2 or raw.shape[0] < 2 or raw.shape[1] < 2:
        raise UserError(
            "an outcome to split into sources must be [members, initial states] with at least "
            f"2 of each, got shape {tuple(raw.shape)}"
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
    array = _values(values)
    m, s = array.shape
    design = pd.DataFrame({"member": np.repeat(np.arange(m), s), "state": np.tile(np.arange(s), m)})
    table = decompose(design, ["member", "state"], array.reshape(-1), "y", draws, seed, level)
    table = table[table["effect"].isin(list(_EFFECTS))]
    return pd.DataFrame(
        {
            "source": table["effect"].map(_EFFECTS).to_numpy(),
            "variance": table["component"].to_numpy(),
            "share": table["share"].to_numpy(),
            "low": table["share_low"].to_numpy(),
            "high": table["share_high"].to_numpy(),
        }
    )
