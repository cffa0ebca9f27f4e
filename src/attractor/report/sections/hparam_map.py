"""The ``hparam-map`` section: accuracy over the learning rate × momentum grid and the good-lr
range.

:func:`heatmap_png` is also what ``attractor hparam-map`` saves as ``hparam-map.png``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

from attractor.report.page import figure, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

CELL = ["lr", "momentum"]


def heatmap_png(result: StoredResult) -> bytes:
    """Mean final accuracy over the lr × momentum grid, sd and diverged fraction in each cell.

    Good cells (inside each momentum's good-lr range) are outlined. PNG bytes, without
    software metadata (equal maps give equal bytes).
    """
    # matplotlib's object API (no pyplot state), in matplotlib's default style as before.
    from matplotlib.figure import Figure

    cells, ranges = result.table(""), result.table("ranges")
    tolerance, split = result.data["tolerance"], result.data.get("split", "test")
    lrs, momenta = sorted(cells["lr"].unique()), sorted(cells["momentum"].unique())
    grid = cells.set_index(CELL)
    mean = np.array([[grid.loc[(lr, m), "accuracy_mean"] for lr in lrs] for m in momenta])
    fig = Figure(figsize=(1.2 + 0.75 * len(lrs), 1.4 + 0.6 * len(momenta)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(mean, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for i, m in enumerate(momenta):
        ranged = ranges.set_index("momentum").loc[m]
        for j, lr in enumerate(lrs):
            cell = grid.loc[(lr, m)]
            sd = 0.0 if pd.isna(cell["accuracy_sd"]) else cell["accuracy_sd"]
            text = f"{cell['accuracy_mean']:.2f}\n±{sd:.2f}"
            if cell["diverged"] > 0:
                text += f"\n{cell['diverged']:.0%} div"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cell["accuracy_mean"] < 0.6 else "black",
            )
            if ranged["lr_min"] <= lr <= ranged["lr_max"]:
                ax.add_patch(_outline(j, i))
    ax.set_xticks(range(len(lrs)), [f"{lr:.3g}" for lr in lrs], rotation=45)
    ax.set_yticks(range(len(momenta)), [f"{m:g}" for m in momenta])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("momentum")
    ax.set_title(
        f"final {split} accuracy (mean ± sd); outlined: within {tolerance:.0%} of the best error"
    )
    fig.colorbar(image, ax=ax, label="accuracy")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _outline(x: float, y: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1.0, 1.0, fill=False, edgecolor="red", linewidth=1.5)


def hparam_map_section(result: StoredResult) -> str:
    """Section ``hparam-map``: the heat map, the good-lr ranges per momentum, every cell."""
    uri = "data:image/png;base64," + base64.b64encode(heatmap_png(result)).decode("ascii")
    body = figure(uri, "accuracy over the lr x momentum grid") + table(result.table("ranges"))
    body += table(result.table(""))
    lead = (
        f"Final {result.data.get('split', 'test')} accuracy per cell (mean and sd over seeds; "
        "diverged "
        "members at their values at init). Per momentum: the contiguous range of learning rates "
        "around the "
        f"best whose error is within {result.data['tolerance']:.0%} of the best, its width in "
        "decades with "
        "a seed-bootstrap 95 % interval, and LR sensitivity (Wortsman et al. 2023)."
    )
    return section("hparam-map", "Learning rate × momentum map", lead, body)


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``hparam-map`` result of the directory (one per experiment)."""
    del context  # everything shown is in the result itself
    return "".join(hparam_map_section(r) for r in results)


SECTION = Section(kind="hparam-map", order=100, render=render)
