"""Parts of a spread section that classification and language-model runs share: the summary
table with its 95 % intervals, and heat maps of member x member matrices (distances, CKA).

:mod:`attractor.report.sections.measures` and :mod:`attractor.report.sections.lm_measures`
build their sections from these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from attractor.report import plots
from attractor.report.page import figure, section, table

#: What a summary name means, shown beside it; unknown names are shown as they are.
MEANINGS = {
    "test_accuracy": "mean member accuracy on the test split",
    "test_loss": "mean member loss on the test split",
    "train_accuracy": "mean member accuracy on the training split",
    "train_loss": "mean member loss on the training split",
    "accuracy_sd_over_members": "spread of accuracy across members (sd): how much the seed matters",
    "ensemble_accuracy": "accuracy of the averaged probabilities (only examples resampled)",
    "ensemble_minus_mean_member_accuracy": "what averaging the members gains over a typical member",
    "pairwise_js": "mean Jensen–Shannon divergence over pairs (nats, ≤ ln 2)",
    "pairwise_symmetric_kl": "mean symmetric KL over pairs (nats)",
    "pairwise_disagreement": "share of inputs where two members predict different classes (churn)",
    "kl_to_mean": "mean KL of a member to the ensemble mean",
    "mutual_information": "epistemic part of the ensemble's predictive entropy (nats)",
}
#: Pairwise matrices: (title, colour map); bounded similarity maps get a fixed [0, 1] scale.
PAIRWISE = {
    "js": ("Jensen–Shannon divergence (nats)", "viridis"),
    "disagreement": ("prediction disagreement", "viridis"),
    "weight_distance": ("weight distance (L2)", "cividis"),
    "aligned_distance": ("weight distance after permutation alignment", "cividis"),
}
Style = Callable[[str], tuple[str, str, float | None, float | None]]


def summary_section(summary: Mapping[str, Mapping[str, float]]) -> str:
    """The table of estimates with their 95 % intervals and what each one means."""
    rows = [
        {
            "measure": name,
            "value": s.get("value"),
            "95 % CI low": s.get("low"),
            "95 % CI high": s.get("high"),
            "meaning": MEANINGS.get(
                name, "linear CKA at this layer, mean over pairs" if name.startswith("cka_") else ""
            ),
        }
        for name, s in summary.items()
    ]
    lead = (
        "Point estimates with 95 % intervals from the multi-bootstrap: each draw resamples "
        "members and eval examples together."
    )
    return section("summary", "Spread with confidence intervals", lead, table(pd.DataFrame(rows)))


def matrices_section(
    key: str,
    title: str,
    lead: str,
    found: Mapping[str, np.ndarray],
    ids: list[int],
    basins: Mapping[str, Any] | None,
    style: Style,
) -> str:
    """Heat maps of member x member matrices, rows and columns grouped by basin when known."""
    if basins:  # without an explicit order, group members by basin label
        order = (
            list(basins["order"])
            if basins.get("order") is not None
            else sorted(range(len(ids)), key=lambda i: basins["labels"][i])
        )
    else:
        order = list(range(len(ids)))
    labels = [int(basins["labels"][i]) for i in order] if basins else []
    starts = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    images = []
    for name, matrix in found.items():
        heading, cmap, vmin, vmax = style(name)
        matrix = np.asarray(matrix)[np.ix_(order, order)]
        uri = plots.heatmap(
            matrix,
            [ids[i] for i in order],
            heading,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            boundaries=starts,
        )
        images.append(figure(uri, heading))
    return section(key, title, lead, f'<div class="grid">{"".join(images)}</div>')


def pair_style(name: str) -> tuple[str, str, float | None, float | None]:
    """Title and colour map of a distance matrix; distances start at 0."""
    heading, cmap = PAIRWISE.get(name, (name.replace("_", " "), "viridis"))
    return heading, cmap, 0.0, None


def cka_style(name: str) -> tuple[str, str, float | None, float | None]:
    """CKA is a similarity in [0, 1]: one fixed scale for every layer."""
    return f"CKA at {name}", "magma", 0.0, 1.0


PAIRWISE_LEAD = (
    "Distance between every two members, rows and columns ordered by basin (white lines separate "
    "basins): "
    "dark blocks on the diagonal are basins."
)
CKA_LEAD = (
    "Linear CKA between members' representations at each layer: 1 means the same representation "
    "up to rotation and scale."
)
