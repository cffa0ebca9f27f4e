"""What ``attractor tangent`` writes: ``OUT/tangent.parquet`` (curves) and ``OUT/tangent.json`` (all of it).

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

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from attractor.runs.store import atomic_path, write_json

SCHEMA = 2


@dataclass(frozen=True, eq=False)
class TangentResult:
    """Everything one tangent analysis found; :meth:`to_dict` is what ``tangent.json`` holds."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN and missing values become ``None``."""
        settings = {k: getattr(self, k) for k in ("out", "config_hash", "directions", "dtype", "reorth_every", "power_iterations", "finite_scale",
                                               "basin_tolerance")}
        return _clean({"schema": SCHEMA, **settings, "hypers": list(self.hypers), "summary": self.summary,
                       "members": _records(self.members), "hypergrads": _records(self.hypergrads), "basin": _records(self.basin),
                       "sensitivity": _records(self.sensitivity), "curves": _records(self.curves)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TangentResult:
        return cls(out=data["out"], config_hash=data["config_hash"], directions=data["directions"], hypers=tuple(data["hypers"]),
                   dtype=data["dtype"], reorth_every=data["reorth_every"], power_iterations=data["power_iterations"],
                   finite_scale=data["finite_scale"], curves=pd.DataFrame(data["curves"]), members=pd.DataFrame(data["members"]),
                   hypergrads=pd.DataFrame(data["hypergrads"]), summary=data.get("summary", {}), basin=pd.DataFrame(data.get("basin", [])),
                   sensitivity=pd.DataFrame(data.get("sensitivity", [])), basin_tolerance=data.get("basin_tolerance"))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _spread(values: pd.Series) -> dict[str, float | None]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


def summarize(result: TangentResult) -> TangentResult:
    """The result with ``summary``: spread across members of growth, exponents and every hypergradient."""
    m = result.members
    summary: dict[str, Any] = {"members": len(m), "diverged": int(m["diverged_step"].notna().sum()) if "diverged_step" in m else 0}
    for name in ("leading_exponent", "random_growth", "function_growth_top", "power_top_growth", "engine_max_abs_diff", "basin_growth"):
        if name in m:
            summary[name] = _spread(m[name])
    hyper = {}
    for (h, outcome), rows in result.hypergrads.groupby(["hyper", "outcome"], sort=False) if len(result.hypergrads) else []:
        hyper[f"{outcome}/{h}"] = {"derivative": _spread(rows["derivative"]), "finite_scale": _spread(rows["finite_scale"])}
    summary["hypergradients"] = hyper
    if "basin_eps" in m:
        eps = pd.to_numeric(m["basin_eps"], errors="coerce")
        summary["basin"] = {"breakdown_eps": _spread(eps), "never_broke": int(eps.isna().sum()), "members": len(m)}
    return replace(result, summary=summary)


def write_result(result: TangentResult, out: str | Path) -> None:
    """Write ``tangent.parquet`` and ``tangent.json`` into ``out`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "tangent.parquet") as tmp:
        result.curves.to_parquet(tmp, index=False)
    write_json(out / "tangent.json", result.to_dict())


def read_result(out: str | Path) -> TangentResult:
    """The analysis saved in run directory ``out`` (``tangent.json``)."""
    return TangentResult.from_dict(json.loads((Path(out) / "tangent.json").read_text()))
