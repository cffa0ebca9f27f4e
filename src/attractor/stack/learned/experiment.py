"""The learned-evaluator experiment: ``attractor evaluator CONFIG --out DIR``.

The loop (the specification; :mod:`attractor.stack.learned` has the three levels and the
settings, :mod:`~attractor.stack.learned.digits` and
:mod:`~attractor.stack.learned.text_setting`)::

    base = the setting's generator (a run's member, or trained in DIR/base)
    examples = the human's labelled items (a seeded draw by a known rule, or the user's file)
    for r in resamples, e in evaluator seeds:            # R x E evaluators, one batch
        evaluator[r, e] = reward model on features of perturbed(examples, resample r, seed e)
    for r, e, t in the factorial:                          # R x E x T members, one batch
        model[r, e, t] = fine-tune(base, reward = evaluator[r, e], trainer seed t)
    measure: the models' true preference and its spread, which factor drives it,
             proxy vs true along the rounds, the evaluators' own disagreement;
    structural: the same for each level of the evaluator's design (width, weight decay,
             label noise, KL penalty), R' resamples each;
    suggestions: the unlabelled items the evaluators disagree on most.

Reopening the directory with the same settings reuses the trained base (a run inside
``DIR/base``, resumable like every run); the evaluator and fine-tuning stages are
deterministic and run again.

``device`` (``--device``) is where the evaluators train and score, the generators sample and
fine-tune and a base is trained (its ``[run] device``); it is placement, so the directory is
the same on every device. Random numbers are drawn on the CPU and moved; the measures
(bootstrap intervals, variance components, tables) take CPU tensors and run there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from attractor.experiments import Experiment
from attractor.measure.bootstrap import multibootstrap
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.stack.learned import measures
from attractor.stack.learned.examples import ExampleRow
from attractor.stack.learned.result import EvaluatorResult
from attractor.stack.learned.reward_model import (
    EvaluatorDesign,
    Evaluators,
    disagreement,
    to_label_next,
    train_evaluators,
)
from attractor.stack.learned.setting import Setting, Trained
from attractor.stack.learned.settings import EvaluatorSettings
from attractor.training.device import resolve_device

# Seeds of a factor's levels: level k of a factor is `seed * _STRIDE + k` (+ an offset per
# factor), so the same settings give the same numbers and levels never collide.
_STRIDE = 1_000_003
_TRAINER_OFFSET = 7919


def _setting(
    settings: EvaluatorSettings, store: RunStore, progress: bool, device: torch.device
) -> Setting:
    if settings.setting == "text":
        from attractor.stack.learned.text_setting import TextSetting

        return TextSetting(settings, store, progress, device)
    from attractor.stack.learned.digits import DigitsSetting

    return DigitsSetting(settings, store, progress, device)


@dataclass(frozen=True)
class _Outcome:
    """What one factorial of members produced."""

    evaluators: Evaluators  # R x E
    trained: Trained  # R x E x T


def _evaluator_rows(settings: EvaluatorSettings, label_noise: float) -> list[ExampleRow]:
    """One row per (resample, evaluator seed), resample slowest."""
    return [
        ExampleRow(
            resample=settings.seed * _STRIDE + r,
            subsample=settings.subsample,
            label_noise=label_noise,
            augment=settings.augment,
            seed=settings.seed * _STRIDE + e,
        )
        for r in range(settings.resamples)
        for e in range(settings.evaluator_seeds)
    ]


def _factorial(
    settings: EvaluatorSettings,
    setting: Setting,
    examples: Any,
    design: EvaluatorDesign,
    trainer: dict[str, Any],
    label_noise: float,
) -> _Outcome:
    """Train the R x E evaluators and the R x E x T fine-tuned models of ``settings``."""
    rows = _evaluator_rows(settings, label_noise)
    evaluators = train_evaluators(
        setting.sets(examples, rows), design, [r.seed for r in rows], setting.device
    )
    t = settings.trainer_seeds
    # Member (r, e, t) is driven by evaluator (r, e): index r * E + e.
    which = torch.arange(len(rows)).repeat_interleave(t).to(evaluators.device)
    per_member = Evaluators(
        params={k: v[which] for k, v in evaluators.params.items()}, design=evaluators.design
    )
    # Trainer seed level t is shared across cells: the same level, the same random numbers.
    seeds = [settings.seed * _STRIDE + _TRAINER_OFFSET + (i % t) for i in range(len(which))]
    return _Outcome(evaluators, setting.train(per_member, trainer, seeds))


def _evaluator_table(
    evaluators: Evaluators, setting: Setting, draws: int, seed: int
) -> dict[str, Any]:
    """The evaluators' own spread on held-out items (a yardstick): disagreement and
    accuracy against the rule.
    """
    items, truth = setting.held_out()
    found = disagreement(evaluators, items)
    correct = (evaluators.probabilities(items) > 0.5).long() == truth[None, :]
    accuracy = multibootstrap(correct.double().numpy(), np.mean, draws, seed)
    split = multibootstrap(found["split"].double().numpy()[None, :], np.mean, draws, seed)
    return {
        "accuracy": accuracy.value,
        "accuracy_low": accuracy.low,
        "accuracy_high": accuracy.high,
        "split": split.value,
        "split_low": split.low,
        "split_high": split.high,
        "sd": float(found["sd"].double().mean()),
        "mutual_information": float(found["mutual_information"].double().mean()),
        "evaluators": evaluators.members,
        "held_out": len(truth),
    }


def _design(settings: EvaluatorSettings, setting: Setting, **changes: Any) -> EvaluatorDesign:
    return EvaluatorDesign(
        **{**settings.reward_model.model_dump(), "inputs": setting.inputs, **changes}
    )


def _trainer(settings: EvaluatorSettings, **changes: Any) -> dict[str, Any]:
    return {**settings.trainer.model_dump(), **changes}


def _structural(
    settings: EvaluatorSettings, setting: Setting, examples: Any, stages: Stages
) -> pd.DataFrame:
    """True preference (mean and sd over resamples) at each level of the evaluator design."""
    small = settings.model_copy(
        update={
            "resamples": settings.structural.resamples,
            "evaluator_seeds": 1,
            "trainer_seeds": 1,
        }
    )
    rows = []
    for name, level in settings.structural.levels():
        stages.begin(f"structural: {name} = {level:g}")
        design = _design(settings, setting)
        trainer, noise = _trainer(settings), settings.label_noise
        if name == "hidden":
            design = _design(settings, setting, hidden=int(level))
        elif name == "weight_decay":
            design = _design(settings, setting, weight_decay=level)
        elif name == "label_noise":
            noise = level
        else:
            trainer = _trainer(settings, kl=level)
        out = _factorial(small, setting, examples, design, trainer, noise)
        values = out.trained.true_final.numpy()
        mean = multibootstrap(values, np.mean, settings.draws, settings.seed)
        sd = multibootstrap(values, np.std, settings.draws, settings.seed)
        judged = _evaluator_table(out.evaluators, setting, settings.draws, settings.seed)
        rows.append(
            {
                "parameter": name,
                "level": level,
                "true": mean.value,
                "true_low": mean.low,
                "true_high": mean.high,
                "sd": sd.value,
                "sd_low": sd.low,
                "sd_high": sd.high,
                "evaluator_accuracy": judged["accuracy"],
            }
        )
    return pd.DataFrame(rows)


def _suggestions(evaluators: Evaluators, setting: Setting, examples: Any, k: int) -> pd.DataFrame:
    """The unlabelled items the evaluators disagree on most (BALD), to label next."""
    features, rows = setting.pool(examples)
    if k == 0 or len(rows) == 0:
        return pd.DataFrame()
    chosen = to_label_next(evaluators, features, min(k, len(rows)))
    found = disagreement(evaluators, features[chosen])
    probs = evaluators.probabilities(features[chosen]).double()
    return (
        rows.iloc[chosen.numpy()]
        .reset_index(drop=True)
        .assign(
            mutual_information=found["mutual_information"].double().numpy(),
            mean_probability=probs.mean(0).numpy(),
        )
    )


def run_evaluator(
    settings: EvaluatorSettings, store: RunStore, progress: bool = False
) -> list[Result]:
    """Run the experiment (see the module docstring) in ``store``'s directory; its settings
    were checked (:meth:`EvaluatorSettings.check`) before the directory was made.
    """
    levels = len(settings.structural.levels())
    with Stages("evaluator", 4 + levels, progress) as stages:
        stages.begin("the base generator: " + ("loading" if settings.model else "training"))
        setting = _setting(settings, store, progress, resolve_device(settings.device))
        examples = setting.examples()
        stages.begin(
            f"{settings.resamples * settings.evaluator_seeds} evaluators and "
            f"{settings.members} fine-tuned generators"
        )
        outcome = _factorial(
            settings,
            setting,
            examples,
            _design(settings, setting),
            _trainer(settings),
            settings.label_noise,
        )
        stages.begin("spread, its sources, proxy vs true")
        tables, summary = _measure(settings, setting, outcome)
        if levels:
            tables["structural"] = _structural(settings, setting, examples, stages)
        stages.begin("suggestions: the examples to label next")
        tables["suggestions"] = _suggestions(
            outcome.evaluators, setting, examples, settings.suggest
        )
    tables["examples"] = setting.shown(examples)
    tables["samples"] = outcome.trained.samples
    return [
        EvaluatorResult(
            setting=settings.setting,
            preferred=settings.preference,
            examples=examples.source,
            model=setting.source,
            settings=settings.model_dump(mode="json"),
            summary=summary,
            tables={k: v for k, v in tables.items() if not v.empty},
        )
    ]


def _measure(
    settings: EvaluatorSettings, setting: Setting, outcome: _Outcome
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    draws, seed, trained = settings.draws, settings.seed, outcome.trained
    spread, basins = measures.outcome_spread(
        trained.true_final, trained.classes, draws, seed, trained.distances, trained.distance
    )
    design = measures.design_frame(
        settings.resamples, settings.evaluator_seeds, settings.trainer_seeds
    )
    sources = measures.sources(design, trained.true_final.mean(1), draws, seed)
    by_round = measures.rounds(trained.proxy, trained.true, draws, seed)
    parting = measures.parting(trained.proxy, trained.true, settings.part_tolerance, draws, seed)
    rounds_found = measures.parting_rounds(trained.proxy, trained.true, settings.part_tolerance)
    main = sources[sources["effect"].isin(measures.FACTORS)]
    # Over models and evaluation samples jointly (the spread table's interval), not the
    # per-round table's members-only one: the evaluation samples are a sample too.
    final = spread.set_index("measure").loc["true preference (mean)"]
    summary: dict[str, Any] = {
        "members": settings.members,
        "true_base": _round(by_round, 0),
        "true_final": {
            **_round(by_round, -1),
            "true": float(final["value"]),
            "true_low": float(final["low"]),
            "true_high": float(final["high"]),
        },
        "spread": spread.set_index("measure")[["value", "low", "high"]].to_dict("index"),
        "sources": main.set_index("effect")[["share", "share_low", "share_high"]].to_dict("index"),
        "evaluators": _evaluator_table(outcome.evaluators, setting, draws, seed),
        "parting": parting,
        "basins": basins,
    }
    if main["share"].notna().any():  # all NaN when the models do not differ at all
        top = main.loc[main["share"].idxmax()]
        summary["dominant"] = {"factor": str(top["effect"]), "share": float(top["share"])}
    members = design.assign(
        true=trained.true_final.mean(1).numpy(),
        true_base=trained.true[:, 0].double().numpy(),
        proxy=trained.proxy[:, -1].double().numpy(),
        parting_round=rounds_found.numpy(),
    )
    if basins.get("basin") is not None:
        members = members.assign(basin=basins["basin"])
    m, k = trained.proxy.shape
    trajectories = pd.DataFrame(
        {
            "member": np.repeat(np.arange(m), k),
            "round": np.tile(np.arange(k), m),
            "proxy": trained.proxy.double().reshape(-1).numpy(),
            "true": trained.true.double().reshape(-1).numpy(),
        }
    )
    tables = {
        "spread": spread,
        "sources": sources,
        "rounds": by_round,
        "trajectories": trajectories,
        "members": members,
    }
    return tables, summary


def _round(by_round: pd.DataFrame, row: int) -> dict[str, float]:
    picked = by_round.iloc[row]
    return {k: float(picked[k]) for k in ("true", "true_low", "true_high", "proxy")}


EXPERIMENT = Experiment(
    name="evaluator",
    settings=EvaluatorSettings,
    run=run_evaluator,
    summary="trainer2 as a learned evaluator: the human's examples -> evaluators -> models",
    check=EvaluatorSettings.check,
)

__all__ = ["EXPERIMENT", "run_evaluator"]
