"""The spread of a run (``RUN/measures.json`` + ``.parquet``): intervals, members, basins, matrices.

Two places on the page: the summary, members, basins, pairwise and CKA matrices before the
ensemble cloud (order 10), spread over training and linear mode connectivity after it
(order 30). Everything is read back from the stored result: the JSON holds the summary,
basins, trajectory and paths; the tidy table holds every per-member and per-pair value,
from which the member table and the symmetric matrices are rebuilt.

References:
    Sellam et al. (2021), "The MultiBERTs" (multi-bootstrap CIs shown in the report).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attractor.errors import UserError
from attractor.report import plots
from attractor.report.page import collapsible, figure, section, table
from attractor.report.sections import Context, Section
from attractor.report.sections.spread_parts import (
    CKA_LEAD,
    PAIRWISE_LEAD,
    cka_style,
    matrices_section,
    pair_style,
    summary_section,
)
from attractor.runs.results import StoredResult


# ---- reading the stored result back ----------------------------------------------------------
def member_frame(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per member (``member`` first), a column per per-member measure, in stored order."""
    rows = tidy[tidy["member_b"].isna()]
    ids = list(dict.fromkeys(int(m) for m in rows["member_a"]))
    columns: dict[str, Any] = {"member": ids}
    for name in dict.fromkeys(rows["measure"]):
        values = rows[rows["measure"] == name].set_index("member_a")["value"].reindex(ids)
        columns[name] = values.to_numpy().astype(int) if name == "basin" else values.to_numpy()
    return pd.DataFrame(columns)


def matrices(tidy: pd.DataFrame, ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Every pairwise measure as a symmetric ``[members, members]`` matrix in ``ids`` order.

    The table holds each pair once; the diagonal is a member with itself: 0 for distances,
    1 for the CKA similarities (``cka_*``).
    """
    pairs = tidy[tidy["member_b"].notna()]
    where = {m: i for i, m in enumerate(ids)}
    found: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(pairs["measure"]):
        part = pairs[pairs["measure"] == name]
        matrix = (
            np.eye(len(ids)) if str(name).startswith("cka_") else np.zeros((len(ids), len(ids)))
        )
        a = part["member_a"].map(where).to_numpy(dtype=int)
        b = part["member_b"].astype(int).map(where).to_numpy(dtype=int)
        matrix[a, b] = matrix[b, a] = part["value"].to_numpy(dtype=float)
        found[str(name)] = matrix
    return found


def basin_colours(stored: StoredResult | None) -> dict[int, int] | None:
    """Member id -> basin label of a stored ``measures`` result (the cloud's colours)."""
    basins = None if stored is None else stored.data.get("basins")
    if not basins or not basins.get("members"):
        return None
    return {int(m): int(b) for m, b in zip(basins["members"], basins["labels"], strict=True)}


# ---- parts -----------------------------------------------------------------------------------
def _basins(basins: Mapping[str, Any], ids: list[int]) -> str:
    labels = [int(b) for b in basins["labels"]]
    names = sorted(set(labels))
    sizes = list(basins.get("sizes") or [labels.count(b) for b in names])
    reps = list(basins.get("representatives") or [None] * len(names))
    rows = [
        {
            "basin": b,
            "size": sizes[i],
            "representative": reps[i],
            "members": ", ".join(str(m) for m, lab in zip(ids, labels, strict=True) if lab == b),
        }
        for i, b in enumerate(names)
    ]
    silhouette = basins.get("silhouette")
    sil = (
        ""
        if silhouette is None or pd.isna(silhouette)
        else f" (silhouette {silhouette:.3f}; near 1 means well separated, near 0 overlapping)"
    )
    text = (
        f"<p>{len(names)} basin{'s' if len(names) != 1 else ''} among {len(labels)} "
        f"members{html.escape(sil)}.</p>"
    )
    lead = (
        "Members clustered by the distance between their functions; one basin means the runs "
        "landed in the same place."
    )
    return section("basins", "Basins", lead, text + table(pd.DataFrame(rows)))


def _trajectory(frame: pd.DataFrame) -> str:
    columns = [c for c in frame.columns if c != "step" and not c.endswith(("_low", "_high"))]
    if not columns:
        return ""
    lead = (
        "Spread between members at every snapshot: falling curves mean the cloud contracts as "
        "training goes on, rising ones that it spreads out."
    )
    return section(
        "trajectory",
        "Spread vs training step",
        lead,
        figure(plots.series_panels(frame, columns, "spread across members"), "spread vs step"),
    )


def _lmc(paths: Sequence[Mapping[str, Any]]) -> str:
    curves, rows = [], []
    for path in paths:
        a, b = path["members"]
        aligned = None if path.get("aligned_curve") is None else pd.DataFrame(path["aligned_curve"])
        curves.append((f"{a}–{b}", pd.DataFrame(path["curve"]), aligned))
        # Nested as the measure names them: raw.loss, aligned.error, ...
        nested = {"raw": path.get("barriers") or {}} | (
            {"aligned": path["aligned_barriers"]} if path.get("aligned_barriers") else {}
        )
        barriers = pd.json_normalize(nested).to_dict("records")
        # Which repair of BatchNorm statistics the path was measured with, where there was one.
        repair = {} if path.get("repair", "none") == "none" else {"repair": path["repair"]}
        rows.append({"pair": f"{a}–{b}", **repair, **(barriers[0] if barriers else {})})
    lead = (
        "Loss and error on the straight line between two members' weights (dashed: after "
        "permutation alignment); "
        "a bump above the ends is a barrier, so the two sit in different basins."
    )
    return section(
        "lmc",
        "Linear mode connectivity",
        lead,
        figure(plots.path_curves(curves), "interpolation curves") + table(pd.DataFrame(rows)),
    )


def _member_ids(
    members: pd.DataFrame, basins: Mapping[str, Any] | None, tidy: pd.DataFrame
) -> list[int]:
    """Row order of the matrices: the per-member rows', else the basins', else as seen in pairs."""
    if len(members):
        return [int(m) for m in members["member"]]
    if basins and basins.get("members"):
        return [int(m) for m in basins["members"]]
    pairs = tidy[tidy["member_b"].notna()]
    return list(dict.fromkeys(int(m) for m in [*pairs["member_a"], *pairs["member_b"]]))


# ---- the two sections ------------------------------------------------------------------------
def render_spread(results: list[StoredResult], context: Context) -> str:
    """Summary, members, basins, pairwise and CKA matrices (before the ensemble cloud)."""
    return "".join(_spread(stored) for stored in results)


def _spread(stored: StoredResult) -> str:
    """The parts of :func:`render_spread` for one stored result, those it has data for."""
    data, tidy = stored.data, stored.table()
    members = member_frame(tidy)
    basins = data.get("basins")
    ids = _member_ids(members, basins, tidy)
    if basins and len(basins["labels"]) != len(ids):
        raise UserError(
            f"'{stored.path}' has {len(basins['labels'])} basin labels for {len(ids)} members; "
            "measure the run again"
        )
    found = matrices(tidy, ids)
    pairwise = {k: v for k, v in found.items() if not k.startswith("cka_")}
    cka = {k.removeprefix("cka_"): v for k, v in found.items() if k.startswith("cka_")}
    parts = []
    if data.get("summary"):
        parts.append(summary_section(data["summary"]))
    if len(members.columns) > 1:
        parts.append(_members(members, ids))
    if basins:
        parts.append(_basins(basins, ids))
    if pairwise:
        parts.append(
            matrices_section(
                "pairwise", "Pairwise distances", PAIRWISE_LEAD, pairwise, ids, basins, pair_style
            )
        )
    if cka:
        parts.append(
            matrices_section(
                "cka", "Representation similarity (CKA)", CKA_LEAD, cka, ids, basins, cka_style
            )
        )
    return "".join(parts)


def _members(members: pd.DataFrame, ids: list[int]) -> str:
    """The per-member table, folded away for large ensembles."""
    lead = "Per-member measures on the eval set; basin is the cluster the member was assigned to."
    body = collapsible(f"{len(ids)} members", table(members), open_=len(ids) <= 32)
    return section("members", "Members", lead, body)


def render_over_training(results: list[StoredResult], context: Context) -> str:
    """Spread vs training step and linear mode connectivity (after the ensemble cloud)."""
    parts = []
    for stored in results:
        # The member count is constant over steps: not worth a panel.
        trajectory = pd.DataFrame(stored.data.get("trajectory") or []).drop(
            columns="members", errors="ignore"
        )
        if not trajectory.empty:
            parts.append(_trajectory(trajectory))
        if stored.data.get("lmc"):
            parts.append(_lmc(stored.data["lmc"]))
    return "".join(parts)


SECTIONS = (Section("measures", 10, render_spread), Section("measures", 30, render_over_training))
