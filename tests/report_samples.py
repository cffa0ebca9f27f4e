"""Small made-up results of every kind a report section renders, for the report's tests.

Each sample is a result object (the real dataclass where it is cheap to build, else a
:func:`stub` with the same JSON and tables) shaped like what the analysis writes, with
numbers that are plausible but not measured: a section only renders what it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from attractor.measure.basins import Basins
from attractor.measure.connectivity import LMCResult
from attractor.measure.lm import LMMeasures
from attractor.measure.spread import Measures
from attractor.measure.structural import StructuralResult
from attractor.sensitivity.suggest import Suggestions


@dataclass(frozen=True)
class _Stub:
    """A result of any kind: given JSON and tables (for kinds whose classes are costly to build)."""

    name: str
    data: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    kind: ClassVar[str] = ""
    schema: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        return self.data

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return self.tables


def stub(
    kind: str, name: str, data: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None
) -> Any:
    """A result of ``kind`` called ``name`` with JSON ``data`` and ``tables``."""
    cls = type(f"Stub_{kind.replace('-', '_')}", (_Stub,), {"kind": kind})
    return cls(name, data, tables or {})


def _symmetric(rng: np.random.Generator, m: int, scale: float = 1.0) -> np.ndarray:
    a = rng.random((m, m)) * scale
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0.0)
    return a


def measures(members: list[int], steps: list[int]) -> Measures:
    """Every part of a classification run's spread measures (two basins, one LMC path)."""
    m, rng = len(members), np.random.default_rng(0)
    labels = [i % 2 for i in range(m)]
    alpha = np.linspace(0, 1, 30)
    bump = np.sin(np.pi * alpha)
    curve = pd.DataFrame({"alpha": alpha, "loss": 1 + 0.5 * bump, "error": 0.3 + 0.1 * bump})
    basins = Basins(
        members=list(members),
        labels=labels,
        sizes=[labels.count(0), labels.count(1)],
        representatives=[members[0], members[1]],
        silhouette=0.41,
        order=sorted(range(m), key=lambda i: labels[i]),
        method="n_basins",
    )
    path = LMCResult(
        (members[0], members[1]),
        steps[-1],
        curve,
        {"loss": 0.5, "error": 0.1},
        curve.assign(loss=1 + 0.05 * bump),
        {"loss": 0.05, "error": 0.01},
    )
    return Measures(
        summary={
            "test_accuracy": {"value": 0.65, "low": 0.6, "high": 0.7},
            "pairwise_js": {"value": 0.0123, "low": 0.01, "high": 0.015},
        },
        members=pd.DataFrame(
            {"member": members, "loss": rng.random(m), "accuracy": rng.random(m), "basin": labels}
        ),
        pairwise={
            "js": _symmetric(rng, m, np.log(2)),
            "disagreement": _symmetric(rng, m),
            "weight_distance": _symmetric(rng, m, 5),
            "aligned_distance": _symmetric(rng, m, 3),
        },
        cka={"net.0": 1 - _symmetric(rng, m, 0.5)},
        basins=basins,
        trajectory=pd.DataFrame(
            {
                "step": steps,
                "members": m,
                "js": np.linspace(0.001, 0.02, len(steps)),
                "disagreement": np.linspace(0.5, 0.2, len(steps)),
            }
        ),
        lmc=[path],
    )


def summary_and_lmc(members: list[int], steps: list[int]) -> Any:
    """Spread measures holding only a summary and one LMC path (no per-member values)."""
    full = measures(members, steps).to_json()
    empty = pd.DataFrame(
        {
            "measure": pd.Series(dtype=str),
            "member_a": pd.Series(dtype="int64"),
            "member_b": pd.Series(dtype="Int64"),
            "value": pd.Series(dtype=float),
        }
    )
    return stub(
        "measures", "measures", {"summary": full["summary"], "lmc": full["lmc"]}, {"": empty}
    )


def instability() -> Any:
    """An instability result as ``attractor instability`` stores it (summary per spawn step)."""
    summary = pd.DataFrame(
        {
            "spawn_step": [0, 5, 20, 100],
            "pairs": 4,
            "barrier_error_mean": [0.2, 0.1, 0.015, 0.005],
            "barrier_error_ci_low": [0.15, 0.05, 0.005, 0.0],
            "barrier_error_ci_high": [0.25, 0.15, 0.025, 0.01],
        }
    )
    data = {
        "spawn_steps": [0, 5, 20, 100],
        "threshold": 0.02,
        "onset": 20,
        "onset_upper": 100,
        "summary": summary.to_dict("records"),
    }
    return stub("instability", "instability", data, {"summary": summary})


def lm_measures(members: list[int]) -> LMMeasures:
    """A language-model run's next-token measures."""
    m = len(members)
    js = _symmetric(np.random.default_rng(1), m, 0.3).tolist()
    estimate = {"value": 0.1, "low": 0.05, "high": 0.2, "draws": 50, "level": 0.95}
    return LMMeasures(
        run="run",
        split="test",
        members=list(members),
        documents=5,
        windows=20,
        loss={"per_member": [2.0 + 0.1 * i for i in range(m)], **estimate},
        pairwise_js={"matrix": js, **estimate},
        kl_to_mean=estimate,
        cka={"embeddings": np.eye(m).tolist(), "block 1": np.eye(m).tolist()},
    )


def structural(members: list[int], perturbation: str = "dropconnect") -> StructuralResult:
    """Perturbation curves at three levels (t intervals over samples)."""
    levels = [0.0, 0.1, 0.3]
    ensemble = pd.DataFrame(
        {
            "level": levels,
            "acc_drop": [0, 0.02, 0.1],
            "acc_drop_low": [0, 0.01, 0.05],
            "acc_drop_high": [0, 0.03, 0.15],
            "kl": [0, 0.01, 0.08],
            "kl_low": [0, 0.005, 0.05],
            "kl_high": [0, 0.02, 0.1],
        }
    )
    table = pd.DataFrame(
        [
            {
                "member": m,
                "level": lv,
                "accuracy": 0.9,
                "acc_drop_mean": lv / 3,
                "acc_drop_low": 0.0,
                "acc_drop_high": lv,
                "kl_mean": lv / 4,
                "kl_low": 0.0,
                "kl_high": lv / 2,
            }
            for m in members
            for lv in levels
        ]
    )
    auc = {m: 0.01 * (i + 1) for i, m in enumerate(members)}
    auc_table = pd.DataFrame(
        {"member": members, "auc": list(auc.values()), "auc_low": 0.0, "auc_high": 0.1}
    )
    return StructuralResult(
        perturbation,
        levels,
        4,
        table,
        ensemble,
        auc,
        auc_table,
        {"value": 0.02, "low": 0.01, "high": float("nan")},
    )


def sensitivity(part: str) -> Any:
    """``sensitivity-variance`` / ``-sobol`` / ``-influence`` as the run store holds them."""
    if part == "variance":
        table = pd.DataFrame(
            {
                "outcome": "test_accuracy",
                "effect": ["init_seed", "data_seed", "residual"],
                "share": [0.5, 0.3, 0.2],
                "share_low": [0.3, 0.1, 0.1],
                "share_high": [0.7, 0.5, 0.3],
                "ss_share": [0.5, 0.3, 0.2],
                "with_residual": True,
            }
        )
        data = {"factors": ["init_seed", "data_seed"], "replicates": 2}
    elif part == "sobol":
        table = pd.DataFrame(
            {
                "outcome": "test_accuracy",
                "factor": ["lr", "momentum"],
                "S1": [0.6, 0.1],
                "S1_low": [0.4, 0.0],
                "S1_high": [0.8, 0.2],
                "ST": [0.7, 0.2],
                "ST_low": [0.5, 0.0],
                "ST_high": [0.9, 0.4],
            }
        )
        data = {"base_samples": 8}
    else:
        table = pd.DataFrame(
            {
                "group": [0, 1],
                "members": 2,
                "accuracy_effect": [0.01, -0.02],
                "accuracy_low": [-0.01, -0.04],
                "accuracy_high": [0.03, 0.0],
                "spread_without": [0.1, 0.2],
                "spread_with": [0.12, 0.15],
                "spread_change": [0.02, -0.05],
            }
        )
        data = {"reference": "other groups"}
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    return stub(
        f"sensitivity-{part}", f"sensitivity-{part}", {**data, "table": records}, {"": table}
    )


def suggestions() -> Suggestions:
    """Two examples and one group to look at next."""
    rows = pd.DataFrame(
        {
            "rank": [1, 2, 1],
            "kind": ["group", "example", "example"][:3],
            "id": [3, 17, 4],
            "score": [0.2, 0.31, 0.2],
            "unit": ["accuracy", "nats", "nats"],
            "reason": ["holding it out moves accuracy", "members disagree", "members disagree"],
        }
    )
    return Suggestions(rows, "test", 2, 4)


def seed_advice(members: list[int], steps: list[int]) -> Any:
    """Two basins, readable from the middle step on."""
    from attractor.sensitivity.seed_advice import SeedAdvice

    accuracy = np.linspace(0.5, 1.0, len(steps))
    table = pd.DataFrame(
        {
            "step": steps,
            "accuracy": accuracy,
            "low": accuracy - 0.1,
            "high": np.minimum(accuracy + 0.1, 1.0),
            "chance": 0.75,
        }
    )
    labels = [0] * (len(members) - 1) + [1]
    share = (len(members) - 1) / len(members)
    return SeedAdvice(labels, list(members), 0, share, steps[len(steps) // 2], table)


#: kind -> a sample of it, given the run's members and snapshot steps.
SAMPLES: dict[str, Callable[[list[int], list[int]], list[Any]]] = {
    "measures": lambda members, steps: [measures(members, steps)],
    "lm-measures": lambda members, steps: [lm_measures(members)],
    "instability": lambda members, steps: [instability()],
    "structural": lambda members, steps: [structural(members), structural(members, "quantize")],
    "sensitivity-variance": lambda members, steps: [sensitivity("variance")],
    "sensitivity-sobol": lambda members, steps: [sensitivity("sobol")],
    "sensitivity-influence": lambda members, steps: [sensitivity("influence")],
    "suggestions": lambda members, steps: [suggestions()],
    "seed-advice": lambda members, steps: [seed_advice(members, steps)],
}
