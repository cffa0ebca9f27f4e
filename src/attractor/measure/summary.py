"""The first look at an ensemble: how good are the members and how far apart did they land."""

from __future__ import annotations

from typing import Any

import torch

from attractor.measure.function import pairwise_disagreement
from attractor.runs.ensemble import Ensemble


def summarize(ens: Ensemble) -> dict[str, Any]:
    """Accuracy mean ± sd, test-loss spread and mean pairwise disagreement on the test split."""
    status = ens.plan["status"].value_counts().to_dict()
    members = ens.members
    summary: dict[str, Any] = {
        "run": str(ens.store.root),
        "task": ens.config.task.name,
        "members": len(ens),
        "done": int(status.get("done", 0)),
        "diverged": int(status.get("diverged", 0)),
        "pending": int(status.get("pending", 0)),
    }
    if not members:
        return summary
    final = ens.final_metrics()
    final = final[final["member"].isin(members)]
    for column in [c for c in final.columns if c.startswith("test_") or c.startswith("train_")]:
        values = torch.tensor(final[column].to_numpy(), dtype=torch.float64)
        summary[column] = {
            "mean": float(values.mean()),
            "sd": float(values.std()) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    if len(members) > 1 and ens.task.num_classes is not None:
        predictions = ens.predict(ens.task.x_test, members).argmax(-1).reshape(len(members), -1)
        matrix = pairwise_disagreement(predictions)
        upper = matrix[torch.triu_indices(len(members), len(members), offset=1).unbind()]
        summary["pairwise_disagreement"] = {"mean": float(upper.mean()), "max": float(upper.max())}
    return summary
