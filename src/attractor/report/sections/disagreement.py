"""The ``diff`` section: search vs sampling, the certificate per point and per output, and "dreams".

A dream is an input the search found where the two models part ways, drawn next to the
test point it started from and their difference (as 8x8 images for the digits tasks, as
bars of the input change otherwise).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from attractor.report import plots
from attractor.report.page import figure, fmt, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: Tasks whose first 64 input features are 8x8 pixels.
_PIXEL_TASKS = ("digits-mlp", "spurious-digits")


def _image_side(task: str, width: int) -> int | None:
    if task in _PIXEL_TASKS and width >= 64:
        return 8
    side = int(math.isqrt(width))
    return side if side * side == width and side >= 4 else None


def dreams_figure(data: Mapping[str, Any]) -> str | None:
    """Each dream (the best input found at a point) beside its test point and the change; None
    without dreams.
    """
    dreams = data.get("dreams") or []
    if not dreams:
        return None
    inputs = np.asarray([d["input"] for d in dreams], dtype=float).reshape(len(dreams), -1)
    starts = (
        None
        if dreams[0].get("center") is None
        else np.asarray([d["center"] for d in dreams], dtype=float).reshape(len(dreams), -1)
    )
    side = _image_side(str(data["task"]), inputs.shape[1])
    columns = 3 if starts is not None else 1
    with plots.styled(1.9 * columns + 0.6, 1.7 * len(dreams) + 0.4) as fig:
        axes = fig.subplots(len(dreams), columns, squeeze=False)
        for i, dream in enumerate(dreams):
            panels = (
                [("found", inputs[i])]
                if starts is None
                else [
                    ("test point", starts[i]),
                    ("found", inputs[i]),
                    ("change", inputs[i] - starts[i]),
                ]
            )
            for ax, (name, vector) in zip(axes[i], panels, strict=True):
                if side is not None:
                    image = vector[: side * side].reshape(side, side)
                    limit = max(float(np.abs(image).max()), 1e-12) if name == "change" else None
                    ax.imshow(
                        image,
                        cmap="RdBu_r" if name == "change" else "gray_r",
                        vmin=-limit if limit else None,
                        vmax=limit,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.grid(False)
                else:
                    ax.bar(
                        np.arange(len(vector)),
                        vector,
                        color=plots.color(0 if name != "change" else 1),
                        width=1.0,
                    )
                label = (
                    f"point {dream['point']}"
                    if name != "found"
                    else f"found · {data['search']['objective']} {dream['score']:.3g}"
                )
                ax.set_title(label if name != "change" else "change", fontsize=8)
        fig.suptitle("dreams: where the two models part ways (best input per point)")
        return plots.figure_uri(fig)


def disagreement_section(data: Mapping[str, Any]) -> str:
    """Section ``disagreement`` from
    :meth:`~attractor.experiments.disagreement.Disagreement.to_json`.
    """
    summary, search, baseline = data["summary"], data["search"], data["baseline"]
    where = (
        f"L∞ balls of radius {data['eps']:g} around {data['settings']['points']} test points"
        if data["region"] == "ball"
        else "the training data's box"
    )
    facts = pd.DataFrame(
        [
            {
                "": f"search (PGD, {search['settings'].get('restarts')} restarts × "
                f"{search['settings'].get('steps')} steps)",
                "best": search["best"],
                "mean of per-point best": search["best_per_point_mean"],
                "evaluations": search["evaluations"],
            },
            {
                "": "random sampling, same evaluations",
                "best": baseline["best"],
                "mean of per-point best": baseline["best_per_point_mean"],
                "evaluations": baseline["evaluations"],
            },
        ]
    )
    body = [
        f"<p><b>{html.escape(str(data['a']))}</b> vs <b>{html.escape(str(data['b']))}</b> on "
        f"{html.escape(where)}; "
        f"search objective {html.escape(str(summary['objective']))}.</p>",
        table(facts),
    ]
    dream = dreams_figure(data)
    if dream:
        body.append(figure(dream, "dreams"))
    body += _certificate(data)
    if data.get("per_output"):
        body.append(table(pd.DataFrame(data["per_output"])))
    lead = (
        "Search gives a lower bound on how far the models can disagree (an input that shows it); "
        "the certificate an upper bound "
        "no input can exceed. Per output: the certified interval of f_B − f_A against the range "
        "the inputs seen attain."
    )
    return section("disagreement", "Where the two models disagree", lead, "".join(body))


def _certificate(data: Mapping[str, Any]) -> list[str]:
    """The certificate's bounds and verdicts with a table per point, or why there is none."""
    cert = data.get("certificate")
    if cert is None:
        return [
            "<p>No certificate: "
            f"{html.escape(str(data.get('certify_note') or 'not computed'))}.</p>"
        ]
    delta = cert.get("delta")
    summary = data["summary"]
    verdicts = summary.get("verdicts", {})
    body = []
    body.append(
        "<p>Certificate on max<sub>j</sub> |f<sub>B</sub>(x)<sub>j</sub> − "
        f"f<sub>A</sub>(x)<sub>j</sub>| ({html.escape(str(cert['method']))} bounds, "
        f"branch and bound): largest certified upper bound {fmt(summary['certified_upper_max'])}, "
        "largest attained "
        f"{fmt(summary['attained_lower_max'])}; "
        + (
            f"δ = {delta:g}: {verdicts.get('verified', 0)} verified, "
            f"{verdicts.get('falsified', 0)} falsified, {verdicts.get('unknown', 0)} unknown."
            if delta is not None
            else "no δ given."
        )
        + "</p>"
    )
    points = pd.DataFrame(
        {
            "point": range(len(cert["upper"])),
            "certified upper": cert["upper"],
            "attained lower": cert["lower"],
            "gap": cert["gap"],
            "verdict": cert["verdicts"],
            "boxes": cert["boxes"],
            "seconds": cert["seconds"],
        }
    )
    body.append(table(points))
    return body


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``diff`` result of the directory, from its JSON (which holds the dreams' inputs)."""
    del context  # everything shown is in the result itself
    return "".join(disagreement_section(r.data) for r in results)


SECTION = Section(kind="diff", order=80, render=render)
