"""The ``trainer2`` sections: how stable a hyperparameter search is, read off the models it returns.

Rendered from the stored result (``trainer2.json`` and its tables) through :class:`Trainer2View`,
which gives the JSON and the tables the attribute names of
:class:`~attractor.stack.result.Trainer2Result`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from attractor.measure.basins import Basins
from attractor.report import plots
from attractor.report.page import collapsible, facts, figure, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: Distance matrices shown, with their titles.
DISTANCE_TITLES = {
    "js_mean": "JS between the trainers' ensemble means (nats)",
    "js_matched": "JS between seed-matched members (nats)",
    "disagreement": "top-1 disagreement of the ensemble means",
}


@dataclass(frozen=True)
class Trainer2View:
    """A stored trainer2 result with the attribute names the sections read."""

    config: dict[str, Any]
    settings: dict[str, Any]
    validation: dict[str, Any]
    timings: dict[str, float]
    trials: pd.DataFrame
    studies: pd.DataFrame
    trainers: pd.DataFrame
    spread: pd.DataFrame
    variance: pd.DataFrame
    distances: dict[str, np.ndarray]
    basins: Basins
    function_spread: dict[str, Any]
    dominant: dict[str, dict[str, Any]]

    @property
    def n_basins(self) -> int:
        """How many basins the returned trainers' models fall into."""
        return self.basins.n_basins

    @classmethod
    def of(cls, stored: StoredResult) -> Trainer2View:
        """The view of ``stored`` (tables from Parquet, the rest from its JSON)."""
        data = stored.data
        known = {f.name for f in fields(Basins)}
        return cls(
            config=data["config"],
            settings=data["settings"],
            validation=data["validation"],
            timings=data.get("timings", {}),
            trials=stored.table(""),
            studies=stored.table("studies"),
            trainers=stored.table("trainers"),
            spread=stored.table("spread"),
            variance=stored.table("variance"),
            distances={k: np.asarray(v, dtype=float) for k, v in data["distances"].items()},
            basins=Basins(**{k: v for k, v in data["basins"].items() if k in known}),
            function_spread=data.get("function_spread", {}),
            dominant=data.get("dominant", {}),
        )


def _header(result: Any) -> str:
    s, v, t = result.settings, result.validation, result.timings
    rows = {
        "task": result.config["task"]["name"],
        "studies": f"{len(result.studies)} = {s['sampler_seeds']} sampler seeds x "
        f"{max(1, s['validation_bootstraps'])} "
        f"validation resamples x {max(1, len(s['holdout_groups']))} held-out groups",
        "search": f"{s['sampler']}, {s['trials']} trials per study, {s['trial_members']} members "
        f"per trial, objective {s['objective']}",
        "validation "
        "split": f"{v['n_validation']} examples carved from the training split (seed {v['seed']}); "
        f"{v['n_fit']} left to train trials",
        "returned "
        "trainers": f"{len(result.trainers)} distinct, each trained as {s['final_members']} "
        "members on the training split, compared on the test split",
        "basins": f"{result.n_basins} by the {result.basins.method} rule on js_mean; "
        f"{result.function_spread.get('seed_scaled_basins') or '–'} seed-scaled (js_matched cut at "
        "seed_js)",
        "time": ", ".join(f"{k.removesuffix('_s')} {val:.1f} s" for k, val in t.items()),
    }
    return section(
        "trainer2",
        "trainer2 · stability of a hyperparameter search",
        "What was searched, from which initial conditions, and what came back.",
        facts(rows),
    )


def _choices_plot(result: Any) -> str:
    """Every trial (faint) and each study's returned trainer (coloured by basin) over lr and the
    best value.
    """
    trials, studies = result.trials, result.studies
    y = "momentum" if result.settings["search"]["momentum"] is not None else "value"
    with plots.styled(7.4, 3.4) as fig:
        ax = fig.add_subplot()
        ax.scatter(trials["lr"], trials[y], s=10, color="#bbbbbb", label="trial")
        for basin, rows in studies.groupby("basin"):
            ax.scatter(
                rows["lr"],
                rows[y if y != "value" else "best_value"],
                s=46,
                color=plots.color(int(basin)),
                edgecolor="black",
                linewidth=0.5,
                label=f"returned, basin {basin}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(y if y == "momentum" else "validation score")
        ax.set_title("trainers tried and returned")
        fig.legend(loc="outside right upper")
        return plots.figure_uri(fig)


def _traces_plot(result: Any) -> str:
    """Best validation score so far against trial number, one line per study."""
    maximize = result.settings["objective"] == "accuracy"
    with plots.styled(7.4, 3.2) as fig:
        ax = fig.add_subplot()
        for study, rows in result.trials.groupby("study"):
            values = rows.sort_values("trial")["value"].to_numpy(dtype=float)
            best = np.fmax.accumulate(values) if maximize else np.fmin.accumulate(values)
            basin = int(result.studies.set_index("study").loc[study, "basin"])
            ax.plot(
                rows["trial"].sort_values(),
                best,
                color=plots.color(basin),
                linewidth=1.2,
                alpha=0.8,
            )
        ax.set_xlabel("trial")
        ax.set_ylabel(f"best validation {result.settings['objective']} so far")
        ax.set_title("search traces (colour: basin of the returned trainer)")
        return plots.figure_uri(fig)


def _studies(result: Any) -> str:
    columns = [
        "study",
        "sampler_seed",
        "validation_bootstrap",
        "holdout_group",
        "lr",
        "momentum",
        "weight_decay",
        "batch_size",
        "optimizer",
        "best_value",
        "trainer",
        "ensemble_accuracy",
        "member_accuracy",
        "distance_to_center",
        "basin",
        "seed_basin",
    ]
    body = table(result.studies[[c for c in columns if c in result.studies]]) + figure(
        _choices_plot(result), "trainers tried and returned"
    )
    return section(
        "trainer2-studies",
        "Returned trainers",
        "One row per study (initial condition): the trainer it returned, "
        "its validation score, and the test accuracy of a fresh ensemble trained with it.",
        body,
    )


def _spread(result: Any) -> str:
    lead = (
        "Spread of each outcome over the studies: sd with a 95 % bootstrap interval over studies. "
        "log10_lr spread in decades; accuracies as shares; distance_to_center in nats."
    )
    return section("trainer2-spread", "Spread over initial conditions", lead, table(result.spread))


def _spread_rows(spread: dict[str, Any]) -> pd.DataFrame:
    """Mean distances between studies with intervals, against the seed spread."""
    rows = [
        {
            "distance": name,
            "mean over study pairs": (spread.get(name) or {}).get("value"),
            "low": (spread.get(name) or {}).get("low"),
            "high": (spread.get(name) or {}).get("high"),
        }
        for name in ("js_mean", "js_matched")
    ]
    scalars = {
        "seed_js (members of one trainer)": "seed_js",
        "js_matched / seed_js": "matched_over_seed",
        "seed-scaled basins": "seed_scaled_basins",
    }
    for label, key in scalars.items():
        rows.append(
            {"distance": label, "mean over study pairs": spread.get(key), "low": None, "high": None}
        )
    return pd.DataFrame(rows)


def _distances(result: Any) -> str:
    order = result.basins.order
    ids = [result.basins.members[i] for i in order]
    starts = np.cumsum(result.basins.sizes)[:-1].tolist()
    maps = {
        name: plots.heatmap(
            d[np.ix_(order, order)], ids, DISTANCE_TITLES[name], vmin=0.0, boundaries=starts
        )
        for name, d in result.distances.items()
    }
    main = figure(maps["js_mean"], DISTANCE_TITLES["js_mean"])
    others = "".join(
        figure(uri, DISTANCE_TITLES[name]) for name, uri in maps.items() if name != "js_mean"
    )
    basin_table = pd.DataFrame(
        {
            "basin": range(result.n_basins),
            "studies": result.basins.sizes,
            "representative study": result.basins.representatives,
        }
    )
    lead = (
        "Maps: one row and column per study (the axes' 'member' is a study id), ordered by basin "
        f"({result.n_basins}); rows of studies that returned the same trainer are identical "
        "(distance 0). seed_js is the spread a change of seed alone makes: the scale to read the "
        "distances "
        "against (js_matched / seed_js near 1 or below: the search's initial conditions move a "
        "model no more than a seed)."
    )
    body = (
        table(_spread_rows(result.function_spread))
        + f'<div class="grid">{main}<div>{table(basin_table)}{table(result.trainers)}</div></div>'
        + collapsible("other distances", f'<div class="grid">{others}</div>', False)
    )
    return section(
        "trainer2-distances", "Function-space distances between returned trainers", lead, body
    )


def _variance(result: Any) -> str:
    if result.variance.empty:
        return section(
            "trainer2-variance",
            "Which initial condition moves the result",
            "Only one initial-condition factor level was run, so there is nothing to decompose.",
            "",
        )
    dominant = pd.DataFrame([{"outcome": k, **v} for k, v in result.dominant.items()])
    shown = result.variance[
        ["outcome", "effect", "df", "ss_share", "share", "share_low", "share_high", "with_residual"]
    ]
    lead = (
        "Variance components (ANOVA, random effects) of each outcome over the crossed initial "
        "conditions; "
        "share = the part of its variance a fresh draw of that factor adds. With one study per "
        "cell the highest "
        "interaction includes the residual (with_residual)."
    )
    body = table(dominant) + collapsible("all components", table(shown), False)
    return section("trainer2-variance", "Which initial condition moves the result", lead, body)


def trainer2_sections(result: Any) -> list[str]:
    """The sections, in reading order: what was run, then what it found."""
    traces = section(
        "trainer2-traces",
        "Search traces",
        "How each study's best score developed over its trials.",
        figure(_traces_plot(result), "search traces"),
    )
    return [
        _header(result),
        _studies(result),
        _spread(result),
        _distances(result),
        _variance(result),
        traces,
    ]


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``trainer2`` result of the directory (one per experiment)."""
    del context  # everything shown is in the result itself
    return "".join("".join(trainer2_sections(Trainer2View.of(r))) for r in results)


SECTION = Section(kind="trainer2", order=120, render=render)
