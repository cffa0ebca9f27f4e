"""Where two models part ways: a search from below and a certificate from above, one result.

``compare_models("runs/digits:0", "runs/digits:0@noise=1e-3", eps=0.05)``:

1. **Search** (lower bound): PGD with restarts maximizes the chosen objective (JS by
   default) over L-infinity balls of radius ``eps`` around ``points`` test inputs (or over
   the training data's box with ``eps=None``), against random sampling at the same number
   of model evaluations (:mod:`attractor.search`).
2. **Certificate** (upper bound) on ``max_j |f_B(x)_j - f_A(x)_j|``, the largest logit
   difference, over the same boxes: branch and bound (:mod:`attractor.certify`) with a PGD
   attack on that quantity supplying the lower bound, and per point the verdict for a
   threshold ``delta``: ``verified`` (proven <= delta over the whole box), ``falsified``
   (an input with more was found) or ``unknown`` (budget spent, gap reported).
3. **Per output** ``j``: the certified interval of ``f_B - f_A`` over all boxes against
   the range actually attained at the inputs seen (centres, search and attack inputs).

Models the certificate cannot read (anything but Linear / ReLU / LeakyReLU / BatchNorm /
Flatten chains) still get the search; the result says why there is no certificate.

As an experiment (``attractor diff``), every comparison gets a directory of its own,
``runs/diff-<hash of the settings>`` unless ``--out`` is given, holding ``diff.json``
(everything, with the dreams' inputs) and ``diff.parquet`` (the per-output table); it
never writes into the compared runs' directories, nor over another comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.experiments import Experiment, default_out, run_experiment
from attractor.runs.results import Result, strict_json
from attractor.runs.store import RunStore
from attractor.search import (
    Region,
    SearchResult,
    load_members,
    load_pair,
    sample_disagreement,
    sample_ensemble_spread,
    search_disagreement,
    search_ensemble_spread,
    task_region,
)
from attractor.search.continuous import pgd
from attractor.tasks.base import Task

#: Search objective of the certificate's attack: the same quantity the certificate bounds.
CERTIFIED_OBJECTIVE = "max |f_B(x)_j - f_A(x)_j| over outputs j (logits)"


@dataclass(frozen=True, eq=False)
class Disagreement:
    """A search result and, where the models allow it, a certificate over the same region.

    Attributes:
        spec_a, spec_b: what was compared (model specs).
        region: ``"ball"`` (eps around test points) or ``"box"`` (the training data's range).
        eps: the balls' radius (None for the box).
        centers: ``[p, *shape]`` ball centres (None for the box).
        search: PGD on ``objective``; baseline: random sampling at the same evaluations.
        certificate: the branch-and-bound result (:class:`attractor.certify.CertifyResult`) or None.
        certify_note: why there is no certificate (None when there is one).
        per_output: one row per output ``j``: ``certified_low / certified_high`` of ``f_B - f_A``
            over all boxes, ``attained_low / attained_high`` at the inputs seen.

    A result of kind ``diff``: ``diff.json`` (:meth:`to_json`) and ``diff.parquet`` (per output).
    """

    kind: ClassVar[str] = "diff"
    schema: ClassVar[int] = 1

    spec_a: str
    spec_b: str
    task: str
    region: str
    eps: float | None
    centers: Tensor | None
    search: SearchResult
    baseline: SearchResult
    certificate: Any
    certify_note: str | None
    per_output: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline numbers: search vs baseline, and the certificate's bounds and verdicts."""
        out: dict[str, Any] = {
            "objective": self.search.objective, "search_best": self.search.best, "baseline_best": self.baseline.best,
            "search_mean_per_point": float(self.search.best_per_point.mean()),
            "baseline_mean_per_point": float(self.baseline.best_per_point.mean()), "evaluations": self.search.evaluations,
        }
        if self.certificate is not None:
            cert = self.certificate
            verdicts = list(cert.verdicts)
            out.update({"certified_upper_max": float(cert.upper.max()), "attained_lower_max": float(cert.lower.max()),
                        "gap_max": float(cert.gap.max()),
                        "verdicts": {v: verdicts.count(v) for v in ("verified", "falsified", "unknown")}})
        return out

    def dreams(self, k: int = 6) -> list[dict[str, Any]]:
        """The ``k`` points with the highest search score: their best input, and their centre if any."""
        order = torch.argsort(torch.nan_to_num(self.search.best_per_point, nan=-torch.inf), descending=True)[:k]
        return [{"point": int(i), "score": float(self.search.best_per_point[i]), "input": self.search.best_inputs[i].tolist(),
                 "center": None if self.centers is None else self.centers[i].tolist()} for i in order]

    @property
    def name(self) -> str:
        """The file stem: ``diff``."""
        return "diff"

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The per-output table (certified and attained ranges of ``f_B - f_A``)."""
        return {"": self.per_output}

    def to_json(self) -> dict[str, Any]:
        """Everything, with the dreams' inputs; NaN as null."""
        per_output = self.per_output
        return strict_json({"dreams": self.dreams(),
            "a": self.spec_a, "b": self.spec_b, "task": self.task, "region": self.region, "eps": self.eps,
            "settings": self.settings, "summary": self.summary(), "search": self.search.to_dict(),
            "baseline": self.baseline.to_dict(with_inputs=False),
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
            "certify_note": self.certify_note, "per_output": per_output,
        })


def _pgd_attack(restarts: int, steps: int, seed: int):  # noqa: ANN202 - returns certify's Attack
    """An :data:`attractor.certify.bab.Attack` by our PGD: the best of ``restarts`` per box."""
    def attack(lo: Tensor, hi: Tensor, objective: Any) -> tuple[Tensor, Tensor]:
        found = pgd(lambda x: objective(x.double()), Region(lo.float(), hi.float(), center=((lo + hi) / 2).float()),
                    restarts=restarts, steps=steps, seed=seed)
        inputs = found.best_inputs.double()
        with torch.no_grad():
            return objective(inputs), inputs
    return attack


def _per_output(model_a: nn.Module, model_b: nn.Module, seen: Tensor, certificate: Any) -> pd.DataFrame:
    with torch.no_grad():
        diff = (model_b(seen) - model_a(seen)).double()  # [k, out]
    table = pd.DataFrame({"output": range(diff.shape[1]), "attained_low": diff.amin(0).numpy(), "attained_high": diff.amax(0).numpy()})
    if certificate is not None:
        table["certified_low"] = certificate.diff_lower.amin(0).numpy()
        table["certified_high"] = certificate.diff_upper.amax(0).numpy()
    return table


def load_centers(path: str | Path, task: Task) -> Tensor:
    """Ball centres from a ``.npy`` file of shape ``[p, *input_shape]`` (one line on anything else)."""
    import numpy as np

    path = Path(path)
    try:
        x = torch.from_numpy(np.load(path, allow_pickle=False)).float()
    except (OSError, ValueError) as exc:
        raise UserError(f"--centers '{path}' is not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if tuple(x.shape[1:]) != tuple(task.x_test.shape[1:]):
        raise UserError(f"--centers '{path}' has shape {tuple(x.shape)}; the task's inputs are [points, {', '.join(map(str, task.x_test.shape[1:]))}]")
    return x


def _region(task: Task, eps: float | None, points: int, centers: str | Path | None, clip: bool) -> Region:
    if not task.x_test.is_floating_point():
        raise UserError(f"task '{task.name}' takes discrete inputs ({task.x_test.dtype}); attractor diff searches and "
                        "bounds continuous inputs (compare such models with `attractor measure` on their predictions)")
    if points < 1:
        raise UserError(f"--points must be at least 1, got {points}")
    if centers is not None and eps is None:
        raise UserError("--centers needs --eps (the radius of the balls around them)")
    x = None if centers is None else load_centers(centers, task)
    return task_region(task, eps, x=x, clip=clip, limit=points)


def ensemble_spread(run_dir: str | Path, *, eps: float | None = 0.05, points: int = 20, objective: str = "mi",
                    centers: str | Path | None = None, clip: bool = True, restarts: int = 8, steps: int = 50,
                    seed: int = 0) -> Disagreement:
    """The inputs on which a run's members spread most (``mi``: mutual information, or ``pairwise_js``).

    Search and its equal-budget random baseline only: certificates compare two models.
    """
    models, the_task = load_members(run_dir)
    region = _region(the_task, eps, points, centers, clip)
    found = search_ensemble_spread(models, region, objective, restarts, steps, seed=seed)
    baseline = sample_ensemble_spread(models, region, found.evaluations, objective, seed=seed)
    settings = {"points": region.points, "restarts": restarts, "steps": steps, "seed": seed, "members": len(models)}
    return Disagreement(str(run_dir), f"its {len(models)} members' spread", the_task.name, "box" if eps is None else "ball", eps,
                        region.center, found, baseline, None, "certificates compare two models, not an ensemble",
                        pd.DataFrame(columns=["output", "attained_low", "attained_high"]), settings)


def compare_models(spec_a: str, spec_b: str, *, task: Task | str | Path | None = None, eps: float | None = 0.05,
                   points: int = 20, objective: str = "js", delta: float | None = None, budget_s: float = 10.0,
                   method: str = "auto", restarts: int = 8, steps: int = 50, seed: int = 0,
                   centers: str | Path | None = None, clip: bool = True) -> Disagreement:
    """Search for and bound the disagreement of two models (specs as in :func:`attractor.search.load_model`).

    Args:
        eps: radius of the L-infinity balls around the first ``points`` test inputs (clipped
            to the training data's range); ``None``: one box over that range.
        objective: the search's objective (:data:`attractor.search.OBJECTIVES`).
        delta: threshold on the largest logit difference for the certificate's verdicts.
        budget_s: branch-and-bound seconds per point (0: the one-shot bound only).
        method: certificate method: auto, differential, linear, optimized or interval.
        centers: a ``.npy`` file of ball centres instead of the test inputs.
        clip: intersect the balls with the training data's range.
    """
    from attractor.certify import certify_difference, to_network

    if budget_s < 0:
        raise UserError(f"--budget must be >= 0 seconds, got {budget_s}")
    model_a, model_b, the_task = load_pair(spec_a, spec_b, task)
    region = _region(the_task, eps, points, centers, clip)
    found = search_disagreement(model_a, model_b, region, objective, restarts, steps, seed=seed)
    baseline = sample_disagreement(model_a, model_b, region, found.evaluations, objective, seed=seed)
    flat = (region.lower.dim() == 2)
    certificate, note = None, None
    if not flat:
        note = f"inputs of shape {tuple(region.shape)} are not flat vectors; the certificate needs [n, features]"
    else:
        try:
            to_network(model_a), to_network(model_b)
        except UserError as exc:
            note = str(exc)
    if note is None:
        certificate = certify_difference(model_a, model_b, region.lower, region.upper, method=method,  # type: ignore[arg-type]
                                         budget_s=budget_s, max_boxes=1 if budget_s == 0 else 10_000, delta=delta,
                                         attack=_pgd_attack(restarts=4, steps=20, seed=seed), seed=seed)
    seen = [found.inputs, found.best_inputs] + ([] if region.center is None else [region.center])
    if certificate is not None:
        seen.append(certificate.inputs.float())
    per_output = _per_output(model_a, model_b, torch.cat([s.float() for s in seen]), certificate)
    settings = {"points": region.points, "restarts": restarts, "steps": steps, "seed": seed, "delta": delta,
                "budget_s": budget_s, "method": method}
    return Disagreement(spec_a, spec_b, the_task.name, "box" if eps is None else "ball", eps, region.center, found, baseline,
                        certificate, note, per_output, settings)


class DiffSettings(BaseModel):
    """What ``attractor diff`` compares and how (its identity: the default directory's hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str = Field(description="Model spec A, or a run directory whose members' spread is searched (no b).")
    b: str | None = Field(None, description="Model spec B; None: search where A's members spread most.")
    task: str | None = Field(None, description="Task of safetensors files: a run dir, a config TOML or a name.")
    eps: float | None = Field(0.05, description="Radius of the L-infinity balls; None: the data's box.")
    points: int = Field(20, ge=1, description="Test points (ball centres).")
    objective: str = Field("js", description="Search objective (mi for a run's spread when js is given).")
    delta: float | None = Field(None, description="Threshold on the largest logit difference.")
    budget_s: float = Field(10.0, description="Branch-and-bound seconds per point (0: one-shot bound).")
    method: str = Field("auto", description="Certificate bounds: auto, differential, linear, optimized, interval.")
    restarts: int = Field(8, ge=1, description="PGD restarts per point.")
    steps: int = Field(50, ge=0, description="PGD steps per restart.")
    seed: int = Field(0, description="Seed of the random starts and samples.")
    centers: str | None = Field(None, description="A .npy file of ball centres instead of the test inputs.")
    clip: bool = Field(True, description="Intersect the balls with the training data's range.")

    @model_validator(mode="after")
    def _cheap_checks(self) -> DiffSettings:
        # Refused before a directory is made; model specs are checked when the models load.
        if self.eps is not None and not self.eps >= 0:
            raise UserError(f"--eps must be >= 0, got {self.eps}")
        if self.budget_s < 0:
            raise UserError(f"--budget must be >= 0 seconds, got {self.budget_s}")
        if self.centers is not None and self.eps is None:
            raise UserError("--centers needs --eps (the radius of the balls around them)")
        if self.b is None and not (Path(self.a) / "manifest.json").is_file():
            raise UserError(f"with one argument A must be a run directory (to search where its members spread); "
                            f"'{self.a}' is not one")
        return self


def run(settings: DiffSettings, store: RunStore) -> list[Result]:
    """Search (and, for two models, certify) their disagreement; nothing is trained."""
    del store  # the models are read from their own specs; only the result goes into the directory
    s = settings
    if s.b is None:
        objective = "mi" if s.objective == "js" else s.objective
        return [ensemble_spread(s.a, eps=s.eps, points=s.points, objective=objective, centers=s.centers, clip=s.clip,
                                restarts=s.restarts, steps=s.steps, seed=s.seed)]
    return [compare_models(s.a, s.b, task=s.task, eps=s.eps, points=s.points, objective=s.objective, delta=s.delta,
                           budget_s=s.budget_s, method=s.method, restarts=s.restarts, steps=s.steps, seed=s.seed,
                           centers=s.centers, clip=s.clip)]


def run_diff(settings: DiffSettings, out: str | Path | None = None, force: bool = False) -> tuple[RunStore, Disagreement]:
    """Run the ``diff`` experiment in ``out``; its store and result.

    The default directory is ``runs/diff-<hash of the settings>``, one per comparison.
    """
    store, results = run_experiment("diff", settings, default_out("diff", settings) if out is None else out,
                                    force=force)
    result = results[0]
    assert isinstance(result, Disagreement)
    return store, result


EXPERIMENT = Experiment(
    name="diff", settings=DiffSettings, run=run,
    summary="where two models disagree: a search from below and a certificate from above",
)
