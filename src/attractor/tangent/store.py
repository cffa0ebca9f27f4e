"""The tangent analysis' result (kind ``tangent``): ``tangent.parquet`` (curves) and
``tangent.json`` (all of it).

The run store writes it (:meth:`attractor.runs.store.RunStore.write`); :func:`read_result`
reads it back from a directory.

``tangent.parquet``: one row per (member, snapshot step): ``test_loss``, ``true_class_prob``,
``log_growth_top`` (log of the first random direction's growth ``|J_t v_1|``),
``function_growth_top`` (RMS over eval examples of ``|J_f J_t v_1|``), ``exponent_i``
(finite-time Lyapunov exponents, nats per step), ``function_sv_i`` (singular values of
the eval-logit map on the span of the directions) and ``d_<outcome>_d_<hyper>``
(forward-mode hypergradients). ``tangent.json`` holds the run settings, those curves,
one row per member, the hypergradient table (derivative beside finite-scale difference),
the basin cross-check (``basin``: member, eps, distance, predicted, ratio, flips,
flips_eval; :mod:`attractor.tangent.basin`), local beside global sensitivity
(``sensitivity``; :mod:`attractor.tangent.globalsens`) and a summary of the spread across
members. Schema 2 added ``basin``, ``basin_tolerance`` and ``sensitivity``; schema-1 files
read with them empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from attractor.runs.results import strict_json
from attractor.runs.store import RunStore

SCHEMA = 2


@dataclass(frozen=True, eq=False)
class TangentResult:
    """Everything one tangent analysis found; :meth:`to_json` is what ``tangent.json`` holds.

    ``out`` is the run directory that was analysed (where ``attractor sensitivity`` may
    have left Sobol indices to show beside the hypergradients).
    """

    kind: ClassVar[str] = "tangent"
    schema: ClassVar[int] = SCHEMA

    out: str
    config_hash: str
    directions: int
    hypers: tuple[str, ...]
    dtype: str
    reorth_every: int
    power_iterations: int
    finite_scale: float | None
    curves: pd.DataFrame
    members: pd.DataFrame
    hypergrads: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    basin: pd.DataFrame = field(default_factory=pd.DataFrame)
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    basin_tolerance: float | None = None

    @property
    def name(self) -> str:
        """The file stem: ``tangent``."""
        return "tangent"

    def to_json(self) -> dict[str, Any]:
        """JSON-able: NaN and missing values become ``None``."""
        keys = (
            "out",
            "config_hash",
            "directions",
            "dtype",
            "reorth_every",
            "power_iterations",
            "finite_scale",
            "basin_tolerance",
        )
        settings = {k: getattr(self, k) for k in keys}
        return strict_json(
            {
                **settings,
                "hypers": list(self.hypers),
                "summary": self.summary,
                "members": self.members,
                "hypergrads": self.hypergrads,
                "basin": self.basin,
                "sensitivity": self.sensitivity,
                "curves": self.curves,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The curves: one row per (member, snapshot step)."""
        return {"": self.curves}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TangentResult:
        return cls(
            out=data["out"],
            config_hash=data["config_hash"],
            directions=data["directions"],
            hypers=tuple(data["hypers"]),
            dtype=data["dtype"],
            reorth_every=data["reorth_every"],
            power_iterations=data["power_iterations"],
            finite_scale=data["finite_scale"],
            curves=pd.DataFrame(data["curves"]),
            members=pd.DataFrame(data["members"]),
            hypergrads=pd.DataFrame(data["hypergrads"]),
            summary=data.get("summary", {}),
            basin=pd.DataFrame(data.get("basin", [])),
            sensitivity=pd.DataFrame(data.get("sensitivity", [])),
            basin_tolerance=data.get("basin_tolerance"),
        )


def _spread(values: pd.Series) -> dict[str, float | None]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def summarize(result: TangentResult) -> TangentResult:
    """The result with ``summary``: spread across members of growth, exponents and every
    hypergradient.
    """
    m = result.members
    summary: dict[str, Any] = {
        "members": len(m),
        "diverged": int(m["diverged_step"].notna().sum()) if "diverged_step" in m else 0,
    }
    for name in (
        "leading_exponent",
        "random_growth",
        "function_growth_top",
        "power_top_growth",
        "engine_max_abs_diff",
        "basin_growth",
    ):
        if name in m:
            summary[name] = _spread(m[name])
    hyper = {}
    for (h, outcome), rows in (
        result.hypergrads.groupby(["hyper", "outcome"], sort=False)
        if len(result.hypergrads)
        else []
    ):
        hyper[f"{outcome}/{h}"] = {
            "derivative": _spread(rows["derivative"]),
            "finite_scale": _spread(rows["finite_scale"]),
        }
    summary["hypergradients"] = hyper
    if "basin_eps" in m:
        eps = pd.to_numeric(m["basin_eps"], errors="coerce")
        summary["basin"] = {
            "breakdown_eps": _spread(eps),
            "never_broke": int(eps.isna().sum()),
            "members": len(m),
        }
    return replace(result, summary=summary)


def read_result(out: str | Path) -> TangentResult:
    """The analysis held by directory ``out`` (its ``tangent`` result)."""
    return TangentResult.from_dict(RunStore(out).result("tangent").data)
