"""``attractor report RUN_A RUN_B``: two runs of one task compared, in a directory of its own.

Two trainers, two optimizers, a trainer before and after ``stabilize``: each trained as an
ensemble on the same task, so both are scored on the same examples. Every measure is
compared with the paired multi-bootstrap of :mod:`attractor.measure.bootstrap` (each draw
resamples the examples once for both runs and each run's members independently: members
of two runs are not matched, their seeds are unrelated draws), giving A, B and A - B with
95 % intervals: mean accuracy and loss (how good), the sd of the members' accuracies, their
mean pairwise Jensen-Shannon divergence and disagreement (how stable).

The comparison gets a directory of its own, ``runs/compare-<hash of the settings>`` (the
two runs' absolute paths, split and bootstrap) unless ``--out`` is given, holding
``compare.json``, ``compare.parquet`` and ``report.html``. It never writes into either
run's directory (a run directory belongs to its run), and ``--out`` inside, equal to or
around either run is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from attractor.errors import UserError
from attractor.experiments import Experiment, default_out, run_experiment
from attractor.experiments.two_runs_result import MEASURES, RunComparison, config_diff, reading
from attractor.measure.bootstrap import (
    PairedEstimate,
    paired_multibootstrap,
    paired_pairwise_multibootstrap,
)
from attractor.measure.function import (
    pairwise_disagreement,
    pairwise_js,
    per_example_loss_accuracy,
    probabilities,
)
from attractor.runs.ensemble import Ensemble
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore

__all__ = ["EXPERIMENT", "CompareSettings", "RunComparison", "run_compare"]

#: Coverage of every interval on the page (the issue asks for 95 % intervals).
LEVEL = 0.95


class CompareSettings(BaseModel):
    """Which two runs are compared and how (its identity: the default directory's hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str = Field(description="Run directory A (an absolute path, so the hash names the run).")
    b: str = Field(description="Run directory B, a run of the same task.")
    split: Literal["test", "train"] = Field("test", description="Evaluation split scored.")
    draws: int = Field(500, ge=1, description="Paired multi-bootstrap draws.")
    seed: int = Field(0, description="Seed of the bootstrap's resampling.")
    device: str = Field(
        "cpu",
        description="Where the members' outputs are computed (placement: not part of the "
        "directory's identity).",
    )

    @field_validator("a", "b")
    @classmethod
    def _absolute(cls, path: str) -> str:
        # One spelling per run (``runs/x``, ``./runs/x``, from another cwd): one directory hash.
        return str(Path(path).expanduser().resolve())

    @model_validator(mode="after")
    def _distinct(self) -> CompareSettings:
        if Path(self.a).resolve() == Path(self.b).resolve():
            raise UserError(f"RUN_A and RUN_B are the same directory '{self.a}'; give two runs")
        return self


def _run_manifest(path: str, label: str) -> dict[str, Any]:
    """Run ``label``'s manifest, or one line saying why ``path`` is no run directory."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run {label} '{root}' does not exist (or is not a directory)")
    manifest = RunStore(root).manifest()  # no manifest: "not an attractor run directory"
    if manifest.get("experiment"):
        raise UserError(
            f"run {label} '{root}' holds a {manifest['experiment']} experiment, not a run; "
            "compare two run directories (written by `attractor run`)"
        )
    if not isinstance(manifest.get("config"), dict):
        raise UserError(f"run {label} '{root}' has no config in its manifest; re-run it")
    return manifest


def check(settings: CompareSettings) -> None:
    """Refuse, before a directory is made: a missing path, a non-run, runs of different tasks."""
    manifest_a = _run_manifest(settings.a, "A")
    manifest_b = _run_manifest(settings.b, "B")
    task_a, task_b = manifest_a["config"].get("task"), manifest_b["config"].get("task")
    if task_a != task_b:
        raise UserError(
            f"'{settings.a}' and '{settings.b}' were made from different [task] sections "
            f"({_task_name(task_a)} vs {_task_name(task_b)}); compare runs of the same task, "
            "so both are scored on the same examples"
        )


def _task_name(task: Any) -> str:
    return str(task.get("name")) if isinstance(task, dict) else "?"


def check_out(settings: CompareSettings, out: str | Path) -> None:
    """Refuse an output directory that is, holds or lies inside either run's directory."""
    target = Path(out).resolve()
    for label, run in (("A", settings.a), ("B", settings.b)):
        root = Path(run).resolve()
        if target == root or root in target.parents or target in root.parents:
            raise UserError(
                f"--out '{out}' is, holds or lies inside run {label} '{run}'; the comparison "
                "gets a directory of its own (a run directory belongs to its run)"
            )


def _facts(ens: Ensemble) -> dict[str, Any]:
    """What the page's header shows of one run."""
    counts = ens.plan["status"].value_counts().to_dict()
    steps = ens.steps()
    return {
        "path": str(ens.store.root),
        "name": ens.store.root.name,
        "task": ens.config.task.name,
        "members": len(ens),
        "done": int(counts.get("done", 0)),
        "diverged": int(counts.get("diverged", 0)),
        "steps": int(steps[-1]),
        "snapshots": len(steps),
        "config_hash": ens.manifest.get("config_hash"),
        "plan_hash": ens.manifest.get("plan_hash"),
        "created": ens.manifest.get("created"),
    }


def _scores(ens: Ensemble, label: str, split: str) -> dict[str, np.ndarray]:
    """Per-example scores of every finished member: correct/loss ``[m, n]``, pairs ``[m, m, n]``."""
    if len(ens.members) < 2:
        raise UserError(
            f"run {label} '{ens.store.root}' has {len(ens.members)} finished member(s); "
            "a stability comparison needs at least 2 in each run"
        )
    if ens.task.num_classes is None:
        raise UserError(
            f"run {label} '{ens.store.root}' has task '{ens.config.task.name}' without classes; "
            "the comparison scores classifiers (for language models use `attractor lm compare`)"
        )
    x, y = ens.eval_set(split)
    logits: Tensor = ens.predict(x)
    loss, correct = per_example_loss_accuracy(logits, y)
    return {
        "correct": correct.numpy(),
        "loss": loss.numpy(),
        "js": pairwise_js(probabilities(logits), per_example=True).numpy(),
        "disagreement": pairwise_disagreement(logits.argmax(-1), per_example=True).numpy(),
    }


def paired_table(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], draws: int, seed: int
) -> pd.DataFrame:
    """One row per measure of :data:`MEASURES`: both runs, A - B, intervals and the reading."""
    kw = {"draws": draws, "seed": seed, "level": LEVEL}
    try:
        estimates: dict[str, PairedEstimate] = {
            "accuracy": paired_multibootstrap(a["correct"], b["correct"], **kw),
            "loss": paired_multibootstrap(a["loss"], b["loss"], **kw),
            "accuracy_sd": paired_multibootstrap(a["correct"], b["correct"], np.std, **kw),
            "pairwise_js": paired_pairwise_multibootstrap(a["js"], b["js"], **kw),
            "disagreement": paired_pairwise_multibootstrap(
                a["disagreement"], b["disagreement"], **kw
            ),
        }
    except ValueError as exc:  # non-finite losses, or the runs scored on different examples
        raise UserError(f"the runs cannot be compared: {exc}") from None
    rows = []
    for measure, e in estimates.items():
        _, better, spread = MEASURES[measure]
        rows.append(
            {
                "measure": measure,
                "better": better,
                "spread": spread,
                **e.to_dict(),
                "reading": reading(measure, e.difference, e.low, e.high, e.level),
            }
        )
    columns = ["measure", "better", "spread", "a", "a_low", "a_high", "b", "b_low", "b_high"]
    columns += ["difference", "low", "high", "p", "draws", "level", "reading"]
    return pd.DataFrame(rows)[columns]


def _final(runs: dict[str, Ensemble]) -> pd.DataFrame:
    """Both runs' finished members at their last snapshot, labelled by run."""
    frames = []
    for label, ens in runs.items():
        final = ens.final_metrics()
        if final.empty:
            continue
        final = final[final["member"].isin(ens.members)]
        frames.append(final.assign(run=label))
    if not frames:
        return pd.DataFrame({"run": [], "member": [], "step": []})
    final = pd.concat(frames, ignore_index=True)
    return final[["run", "member", *[c for c in final.columns if c not in ("run", "member")]]]


def run(settings: CompareSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Score both runs' members on the same examples and compare them; nothing is trained.

    ``progress``: a line on stderr as each run is scored and as the bootstrap begins.
    """
    del store  # the runs are read where they are; only the result goes into the directory
    s = settings
    with Stages("compare", 3, progress) as stages:
        runs = {"A": Ensemble.load(s.a, device=s.device), "B": Ensemble.load(s.b, device=s.device)}
        scores = {}
        for label, ens in runs.items():
            stages.begin(f"scoring run {label}'s {len(ens.members)} members on the {s.split} split")
            scores[label] = _scores(ens, label, s.split)
        if scores["A"]["correct"].shape[1] != scores["B"]["correct"].shape[1]:
            raise UserError(
                f"'{s.a}' and '{s.b}' have {s.split} splits of different sizes; "
                "compare runs of the same task"
            )
        stages.begin(f"paired multi-bootstrap, {s.draws} draws")
        table = paired_table(scores["A"], scores["B"], s.draws, s.seed)
    return [
        RunComparison(
            runs={label: _facts(ens) for label, ens in runs.items()},
            config_diff=config_diff(runs["A"].manifest["config"], runs["B"].manifest["config"]),
            table=table,
            final=_final(runs),
            split=s.split,
            draws=s.draws,
            seed=s.seed,
            level=LEVEL,
        )
    ]


def run_compare(
    settings: CompareSettings,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> tuple[RunStore, RunComparison]:
    """Run the ``compare`` experiment in ``out``; its store and result.

    The default directory is ``runs/compare-<hash of the settings>``, one per pair of runs.
    """
    out = default_out("compare", settings) if out is None else out
    check(settings)  # before check_out: a missing run is named as such, not as a bad --out
    check_out(settings, out)
    store, results = run_experiment("compare", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, RunComparison)
    return store, result


EXPERIMENT = Experiment(
    name="compare",
    settings=CompareSettings,
    run=run,
    summary="two runs of one task side by side: paired intervals of accuracy and spread",
    check=check,
)
