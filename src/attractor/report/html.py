"""One self-contained HTML page per run: tables, CIs and plots embedded as PNG data URIs.

``render_report(ens, measures, path)`` always shows the run (summary, config, plan, final
metrics) and the ensemble cloud; every other section appears only when ``measures``
holds its data, so the page never shows a placeholder for something not measured.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import attractor
from attractor.report import plots
from attractor.report.sections.cloud import cloud_coordinates, cloud_panels, cloud_trails
from attractor.runs.ensemble import Ensemble
from attractor.runs.store import atomic_path

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


# Inline so the page needs nothing else; system fonts, a readable column, light tables.
CSS = """
body { margin: 0; background: #f6f7f9; color: #1f2328; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 40px; background: #fff; min-height: 100vh; box-sizing: border-box; }
header h1 { margin: 0 0 2px; font-size: 26px; letter-spacing: -0.01em; }
header .run { margin: 0 0 16px; color: #59636e; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
section { margin: 28px 0 0; padding-top: 18px; border-top: 1px solid #e4e7eb; }
h2 { margin: 0 0 4px; font-size: 19px; }
p.lead { margin: 0 0 12px; color: #59636e; font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dfe3e8; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #f1f3f5; font-weight: 600; }
td.num, th.num { text-align: right; }
table.facts th { background: #f6f7f9; font-weight: 600; white-space: nowrap; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #2c5d92; font-size: 14px; }
pre { background: #f6f7f9; border: 1px solid #e4e7eb; padding: 10px; font-size: 12px; overflow-x: auto; }
figure { margin: 10px 0; }
img { max-width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 8px 16px; align-items: start; }
.scroll { overflow-x: auto; }
footer { margin-top: 36px; color: #8c959f; font-size: 12px; }
"""


def fmt(value: Any) -> str:
    """A cell's text: ints as they are, floats to 4 significant digits, missing as a dash."""
    if value is None or (not isinstance(value, str | bool | list | tuple) and pd.isna(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def table(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` (no index); numeric columns right-aligned."""
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns}
    head = "".join(f'<th class="{"num" if numeric[c] else ""}">{html.escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = "".join(f'<td class="{"num" if numeric[c] else ""}">{html.escape(fmt(v))}</td>' for c, v in zip(frame.columns, values, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    # Wide tables scroll inside the column instead of stretching the page.
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def figure(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"></figure>'


def section(key: str, title: str, lead: str, body: str) -> str:
    """A titled section; ``lead`` is the one sentence saying how to read it."""
    return f'<section id="{key}"><h2>{html.escape(title)}</h2><p class="lead">{html.escape(lead)}</p>{body}</section>'


def collapsible(label: str, body: str, open_: bool) -> str:
    return f'<details{" open" if open_ else ""}><summary>{html.escape(label)}</summary>{body}</details>'


# ---- always there: the run -------------------------------------------------------------------
def _header(ens: Ensemble) -> str:
    counts = ens.plan["status"].value_counts().to_dict()
    steps = ens.steps()
    facts = {
        "task": ens.config.task.name,
        "members": f"{len(ens)} planned · {counts.get('done', 0)} done · {counts.get('diverged', 0)} diverged · {counts.get('pending', 0)} pending",
        "strategy": f"{ens.strategy or '–'} (backend {ens.config.run.backend})",
        "training": f"{steps[-1]} steps, {len(steps)} snapshots",
        "config hash": ens.manifest.get("config_hash", "–"),
        "plan hash": ens.manifest.get("plan_hash", "–"),
        "created": ens.manifest.get("created", "–"),
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(ens.manifest.get("versions", {}).items())),
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    config = json.dumps(ens.manifest.get("config", {}), indent=2, sort_keys=True)
    return (
        f'<header><h1>attractor report</h1><p class="run">{html.escape(str(ens.store.root))}</p></header>'
        f'<section id="run"><table class="facts">{rows}</table>'
        f'{collapsible("resolved config", f"<pre>{html.escape(config)}</pre>", open_=False)}</section>'
    )


def _plan(ens: Ensemble) -> str:
    plan = ens.plan
    fixed = {"member", "status", "diverged_step"}
    varying = [c for c in plan.columns if c not in fixed and plan[c].astype(str).nunique() > 1]
    columns = ["member", *varying, "status"] + (["diverged_step"] if plan["diverged_step"].notna().any() else [])
    lead = f"One row per member: the factors that differ between members ({', '.join(varying) or 'none'}); every other factor is the same for all."
    return section("plan", "Plan", lead, collapsible(f"{len(plan)} members", table(plan[columns]), open_=len(plan) <= 16))


def _final_metrics(ens: Ensemble) -> str:
    final = ens.final_metrics()
    if final.empty:
        return ""
    final = final.merge(ens.plan[["member", "status"]], on="member", how="left")
    values = [c for c in final.columns if c not in ("member", "step", "status")]
    done = final[final["status"] == "done"][values]
    spread = pd.DataFrame({"metric": values, "mean": done.mean().to_numpy(), "sd": done.std(ddof=1).to_numpy(),
                           "min": done.min().to_numpy(), "max": done.max().to_numpy()})
    body = table(spread) + collapsible("every member", table(final[["member", "status", "step", *values]]), open_=len(final) <= 16)
    return section("final-metrics", "Final metrics", "Each member's metrics at its last snapshot; the first table summarizes them over finished members (sd across members, not a CI).", body)


def _cloud(ens: Ensemble, basins: dict[int, int] | None) -> str:
    if not ens.members:
        return ""
    cloud = cloud_coordinates(ens)
    ends = cloud.mean.sort_values("snapshot").iloc[[0, -1]]
    at = [f"step {s:g}" if cloud.steps_agree else f"snapshot {i}" for s, i in zip(ends["step"], ends["snapshot"], strict=True)]
    r = cloud.explained_variance_ratio
    note = (f"<p>The plane holds {100 * r.sum():.0f} % of the variance of all members' probe outputs over all snapshots. "
            f"Cloud radius (members' mean distance from the ensemble mean, full probe space): {ends['radius'].iloc[0]:.3g} at "
            f"{at[0]}, {ends['radius'].iloc[1]:.3g} at {at[1]}.</p>")
    body = note + figure(cloud_trails(cloud, basins), "member paths") + figure(cloud_panels(cloud, basins), "cloud per snapshot")
    lead = ("Each dot is one member's predicted probabilities on a fixed probe of test inputs, placed by one PCA fit over all snapshots; "
            "the black cross is the ensemble mean. A cloud that shrinks is converging in function space; separate clumps are separate basins.")
    return section("cloud", "Ensemble cloud", lead, body)


# ---- present when measured --------------------------------------------------------------------
def _summary(summary: Mapping[str, Mapping[str, float]]) -> str:
    rows = [{"measure": name, "value": s.get("value"), "95 % CI low": s.get("low"), "95 % CI high": s.get("high"),
             "meaning": MEANINGS.get(name, "linear CKA at this layer, mean over pairs" if name.startswith("cka_") else "")}
            for name, s in summary.items()]
    lead = "Point estimates with 95 % intervals from the multi-bootstrap: each draw resamples members and eval examples together."
    return section("summary", "Spread with confidence intervals", lead, table(pd.DataFrame(rows)))


def _basins(basins: Mapping[str, Any], ids: list[int]) -> str:
    labels = [int(b) for b in basins["labels"]]
    names = sorted(set(labels))
    sizes = list(basins.get("sizes") or [labels.count(b) for b in names])
    reps = list(basins.get("representatives") or [None] * len(names))
    rows = [{"basin": b, "size": sizes[i], "representative": reps[i],
             "members": ", ".join(str(m) for m, lab in zip(ids, labels, strict=True) if lab == b)} for i, b in enumerate(names)]
    silhouette = basins.get("silhouette")
    sil = "" if silhouette is None or pd.isna(silhouette) else f" (silhouette {silhouette:.3f}; near 1 means well separated, near 0 overlapping)"
    text = f"<p>{len(names)} basin{'s' if len(names) != 1 else ''} among {len(labels)} members{html.escape(sil)}.</p>"
    lead = "Members clustered by the distance between their functions; one basin means the runs landed in the same place."
    return section("basins", "Basins", lead, text + table(pd.DataFrame(rows)))


def _matrices(key: str, title: str, lead: str, matrices: Mapping[str, np.ndarray], ids: list[int], basins: Mapping[str, Any] | None,
              style: Callable[[str], tuple[str, str, float | None, float | None]]) -> str:
    if basins:  # without an explicit order, group members by basin label
        order = list(basins["order"]) if basins.get("order") is not None else sorted(range(len(ids)), key=lambda i: basins["labels"][i])
    else:
        order = list(range(len(ids)))
    labels = [int(basins["labels"][i]) for i in order] if basins else []
    starts = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    images = []
    for name, matrix in matrices.items():
        heading, cmap, vmin, vmax = style(name)
        matrix = np.asarray(matrix)[np.ix_(order, order)]
        images.append(figure(plots.heatmap(matrix, [ids[i] for i in order], heading, cmap=cmap, vmin=vmin, vmax=vmax, boundaries=starts), heading))
    return section(key, title, lead, f'<div class="grid">{"".join(images)}</div>')


def _trajectory(frame: pd.DataFrame) -> str:
    columns = [c for c in frame.columns if c != "step" and not c.endswith(("_low", "_high"))]
    if not columns:
        return ""
    lead = "Spread between members at every snapshot: falling curves mean the cloud contracts as training goes on, rising ones that it spreads out."
    return section("trajectory", "Spread vs training step", lead, figure(plots.series_panels(frame, columns, "spread across members"), "spread vs step"))


def _lmc(paths: Sequence[Mapping[str, Any]]) -> str:
    curves, rows = [], []
    for path in paths:
        a, b = path["members"]
        curves.append((f"{a}–{b}", path["curve"], path.get("aligned_curve")))
        barriers = pd.json_normalize(dict(path.get("barriers") or {})).to_dict("records")
        rows.append({"pair": f"{a}–{b}", **(barriers[0] if barriers else {})})
    lead = ("Loss and error on the straight line between two members' weights (dashed: after permutation alignment); "
            "a bump above the ends is a barrier, so the two sit in different basins.")
    return section("lmc", "Linear mode connectivity", lead, figure(plots.path_curves(curves), "interpolation curves") + table(pd.DataFrame(rows)))


def _instability(data: pd.DataFrame | Mapping[str, Any]) -> str:
    spec = {"curve": data} if isinstance(data, pd.DataFrame) else dict(data)
    curve = (spec.get("curve") if spec.get("curve") is not None else spec["table"]).sort_values("spawn_step")
    onset, threshold = spec.get("onset"), spec.get("threshold")
    shown = [c for c in ("spawn_step", "pairs", "barrier_mean", "low", "high") if c in curve]
    uri = plots.band_plot(curve["spawn_step"], curve["barrier_mean"], curve["low"], curve["high"], title="error barrier between copies spawned at step k",
                          ylabel="error barrier", xlabel="spawn step k", threshold=threshold, onset=onset)
    if "onset" in spec:
        verdict = f"stable from spawn step {onset}" if onset is not None else "never fell below the threshold"
        text = f"<p>Copies spawned from the parent are {html.escape(verdict)}" + (f" (threshold {threshold:g})." if threshold is not None else ".")
        if "onset_upper" in spec:  # the conservative reading: the whole CI below the threshold
            upper = spec["onset_upper"]
            text += " Upper 95 % bound below it " + (f"from spawn step {upper}." if upper is not None else "at no spawn step.")
        text += "</p>"
    else:
        text = ""
    lead = "A parent is copied at step k and the copies continue with different data orders; where the barrier between them drops to near zero, training has become stable."
    return section("instability", "Instability analysis", lead, text + figure(uri, "barrier vs spawn step") + table(curve[shown]))


def _structural(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """One panel pair (KL, accuracy drop vs level) and table per perturbation kind (``StructuralResult.to_dict()``)."""
    body = []
    for result in [results] if isinstance(results, Mapping) else results:
        kind, curve = str(result["kind"]), pd.DataFrame(result["ensemble"])
        xlabel = "bits" if kind == "quantize" else f"{kind.replace('_', ' ')} level"
        uri = plots.series_panels(curve, ["kl", "acc_drop"], f"{kind}: mean over members, 95 % CI", x="level", xlabel=xlabel)
        auc = result.get("auc_ensemble") or {}
        ranked = sorted(result.get("auc", {}).items(), key=lambda item: item[1])
        text = (f"<p>{html.escape(kind)}, {int(result['samples'])} sample(s) per level: area under the KL curve "
                f"{fmt(auc.get('value'))} [{fmt(auc.get('low'))}, {fmt(auc.get('high'))}] (mean over members); "
                f"stablest member {html.escape(ranked[0][0]) if ranked else '–'}, least stable {html.escape(ranked[-1][0]) if ranked else '–'}.</p>")
        body.append(text + figure(uri, f"{kind} perturbation curves") + table(curve))
    lead = ("Trained members perturbed at inference, level by level: KL(unperturbed ‖ perturbed) in nats and the accuracy drop; "
            "intervals resample members and sampled masks / noises (multi-bootstrap). Flat curves mean a structurally stable model.")
    return section("structural", "Structural stability (model perturbations)", lead, "".join(body))


def _member_ids(ens: Ensemble, measures: Mapping[str, Any]) -> list[int]:
    members = measures.get("members")
    if isinstance(members, pd.DataFrame) and "member" in members:
        return [int(m) for m in members["member"]]
    return list(ens.members)


def render_report(ens: Ensemble, measures: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Write the run's report as one self-contained HTML file (atomically) and return its path.

    Args:
        ens: the run.
        measures: optional sections (all keys optional): ``summary``, ``members``,
            ``basins``, ``pairwise``, ``cka``, ``trajectory``, ``lmc``, ``instability``
            (shapes in ``attractor.report``'s docstring), ``structural`` (one
            ``StructuralResult.to_dict()`` or a list of them), ``disagreement`` (``RUN/diff.json``
            of ``attractor diff``), ``sensitivity`` (``{"variance" | "sobol" | "influence":
            the JSON of attractor sensitivity}``), ``tangent`` (``RUN/tangent.json``). Member matrices and basin
            labels follow the order of ``measures["members"]["member"]`` (else ``ens.members``).
        path: where to write, e.g. ``RUN/report.html``.

    References:
        Sellam et al. (2021), "The MultiBERTs" (multi-bootstrap CIs shown in the report).
    """
    measures = dict(measures or {})
    ids = _member_ids(ens, measures)
    basins = measures.get("basins")
    if basins and len(basins["labels"]) != len(ids):
        raise ValueError(f"measures['basins'] has {len(basins['labels'])} labels but there are {len(ids)} members")
    colours = {m: int(b) for m, b in zip(ids, basins["labels"], strict=True)} if basins else None
    parts = [_header(ens), _plan(ens), _final_metrics(ens)]
    if measures.get("summary"):
        parts.append(_summary(measures["summary"]))
    if isinstance(measures.get("members"), pd.DataFrame):
        lead = "Per-member measures on the eval set; basin is the cluster the member was assigned to."
        parts.append(section("members", "Members", lead, collapsible(f"{len(ids)} members", table(measures["members"]), open_=len(ids) <= 32)))
    if basins:
        parts.append(_basins(basins, ids))
    if measures.get("pairwise"):
        def pair_style(name: str) -> tuple[str, str, float | None, float | None]:
            heading, cmap = PAIRWISE.get(name, (name.replace("_", " "), "viridis"))
            return heading, cmap, 0.0, None
        lead = "Distance between every two members, rows and columns ordered by basin (white lines separate basins): dark blocks on the diagonal are basins."
        parts.append(_matrices("pairwise", "Pairwise distances", lead, measures["pairwise"], ids, basins, pair_style))
    if measures.get("cka"):
        lead = "Linear CKA between members' representations at each layer: 1 means the same representation up to rotation and scale."
        parts.append(_matrices("cka", "Representation similarity (CKA)", lead, measures["cka"], ids, basins, lambda name: (f"CKA at {name}", "magma", 0.0, 1.0)))
    parts.append(_cloud(ens, colours))
    if isinstance(measures.get("trajectory"), pd.DataFrame) and not measures["trajectory"].empty:
        parts.append(_trajectory(measures["trajectory"]))
    if measures.get("lmc"):
        parts.append(_lmc(measures["lmc"]))
    if measures.get("instability") is not None:
        parts.append(_instability(measures["instability"]))
    if measures.get("structural"):
        parts.append(_structural(measures["structural"]))
    if measures.get("tangent"):
        from attractor.report.sections.tangent import tangent_section  # it builds on this module

        parts.append(tangent_section(measures["tangent"]))
    if measures.get("sensitivity"):
        from attractor.report.sections.sensitivity import (
            sensitivity_section,  # it builds on this module
        )

        parts.append(sensitivity_section(measures["sensitivity"]))
    if measures.get("disagreement"):
        from attractor.report.sections.disagreement import (
            disagreement_section,  # it builds on this module
        )

        parts.append(disagreement_section(measures["disagreement"]))
    return write_page(path, f"attractor report · {ens.config.task.name} · {Path(ens.store.root).name}", parts)


def write_page(path: str | Path, title: str, parts: Sequence[str]) -> Path:
    """Write ``parts`` (header and sections) as one self-contained page, atomically."""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main>{"".join(parts)}<footer>attractor {html.escape(attractor.__version__)}</footer></main></body></html>')
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
