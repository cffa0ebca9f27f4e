"""The learned-evaluator experiment: ``attractor evaluator CONFIG --out DIR``.

The loop (the specification; :mod:`attractor.stack.learned` has the three levels)::

    base = the denoise-digits generator (a run's member, or trained in DIR/base)
    examples = the human's labelled digits (a seeded draw, or the user's CSV)
    for r in resamples, e in evaluator seeds:            # R x E evaluators, one batch
        evaluator[r, e] = reward model on perturbed(examples, bootstrap r, seed e)
    for r, e, t in the factorial:                          # R x E x T members, one batch
        model[r, e, t] = finetune(base, reward = evaluator[r, e], trainer seed t)
    measure: the models' true preference and its spread, which factor drives it,
             proxy vs true along the rounds, the evaluators' own disagreement;
    structural: the same for each level of the evaluator's design (width, weight decay,
             label noise, KL penalty), R' resamples each;
    suggestions: the unlabelled digits the evaluators disagree on most.

Reopening the directory with the same settings reuses the trained base (a run inside
``DIR/base``, resumable like every run); the evaluator and fine-tuning stages are
deterministic and run again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.experiments import Experiment
from attractor.measure.bootstrap import multibootstrap
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.stack.learned import measures
from attractor.stack.learned.examples import (
    ExampleRow,
    HumanExamples,
    digits_examples,
    held_out_digits,
    perturbed_sets,
    read_examples,
)
from attractor.stack.learned.finetune import (
    FinetuneDesign,
    finetune,
    true_preference_of,
)
from attractor.stack.learned.result import EvaluatorResult
from attractor.stack.learned.reward_model import (
    EvaluatorDesign,
    Evaluators,
    disagreement,
    to_label_next,
    train_evaluators,
)
from attractor.stack.learned.settings import EvaluatorSettings

#: Images of each of the first members kept for the report.
_SAMPLES_PER_MEMBER = 8
_SAMPLED_MEMBERS = 8


@dataclass(frozen=True)
class _Base:
    """The generator every member starts from."""

    template: nn.Module
    params: dict[str, Tensor]  # [1, ...]
    buffers: dict[str, Tensor]
    task: dict[str, Any]  # the denoise-digits task options it was trained with
    source: dict[str, Any]


def _base(settings: EvaluatorSettings, store: RunStore, progress: bool) -> _Base:
    from attractor.runs.ensemble import Ensemble

    if settings.model is not None:
        run, _, member = settings.model.rpartition(":")
        if not run or not member.isdigit():
            raise UserError(f"model {settings.model!r} is not RUN:MEMBER (a member is a number)")
        ensemble = Ensemble.load(run)
        index = int(member)
    else:
        ensemble, index = _train_base(settings.base_steps, store, progress), 0
    if ensemble.config.task.name != "denoise-digits":
        raise UserError(
            f"run '{ensemble.store.root}' trained {ensemble.config.task.name!r}; the digits "
            "setting fine-tunes a denoise-digits generator"
        )
    if index not in ensemble.members:
        raise UserError(
            f"run '{ensemble.store.root}' has no finished member {index} "
            f"(finished: {ensemble.members})"
        )
    params, buffers = ensemble.stacked([index])
    return _Base(
        template=ensemble.module(index),
        params=params,
        buffers=buffers,
        task={"name": "denoise-digits", **ensemble.config.task.options},
        source={"run": str(ensemble.store.root), "member": index},
    )


def _train_base(steps: int, store: RunStore, progress: bool) -> Any:
    from attractor.config import parse_config
    from attractor.runs.launch import train
    from attractor.world.denoise_digits import TRAINER

    config = parse_config(
        {
            "task": {"name": "denoise-digits"},
            "trainer": {**TRAINER, "steps": steps},
            "plan": {"members": 1, "vary": ["init_seed"]},
        },
        source="the evaluator's base generator",
    )
    return train(config, store.root / "base", progress=progress)


def _examples(settings: EvaluatorSettings) -> HumanExamples:
    if settings.examples_file is not None:
        return read_examples(settings.examples_file)
    return digits_examples(settings.preferred, settings.examples, settings.seed, settings.positives)


@dataclass(frozen=True)
class _Outcome:
    """What one factorial of members produced."""

    evaluators: Evaluators  # R x E
    proxy: Tensor  # [m, rounds + 1]
    true: Tensor  # [m, rounds + 1]
    images: Tensor  # [m, e, 64]
    true_final: Tensor  # [m, e]
    classes: Tensor  # int64 [m, e]


def _evaluator_rows(settings: EvaluatorSettings, label_noise: float) -> list[ExampleRow]:
    """One row per (resample, evaluator seed), resample slowest."""
    return [
        ExampleRow(
            resample=settings.seed * 1_000_003 + r,
            subsample=settings.subsample,
            label_noise=label_noise,
            augment=settings.augment,
            seed=settings.seed * 1_000_003 + e,
        )
        for r in range(settings.resamples)
        for e in range(settings.evaluator_seeds)
    ]


def _factorial(
    settings: EvaluatorSettings,
    base: _Base,
    examples: HumanExamples,
    eval_noise: Tensor,
    design: EvaluatorDesign,
    trainer: FinetuneDesign,
    label_noise: float,
) -> _Outcome:
    """Train the R x E evaluators and the R x E x T fine-tuned models of ``settings``."""
    from attractor.world.denoise_digits import reference_classifier

    rows = _evaluator_rows(settings, label_noise)
    evaluators = train_evaluators(perturbed_sets(examples, rows), design, [r.seed for r in rows])
    t = settings.trainer_seeds
    # Member (r, e, t) is driven by evaluator (r, e): index r * E + e.
    which = torch.arange(len(rows)).repeat_interleave(t)
    per_member = Evaluators(
        params={k: v[which] for k, v in evaluators.params.items()}, design=evaluators.design
    )
    m = len(which)
    params = {k: v.expand(m, *v.shape[1:]).clone() for k, v in base.params.items()}
    buffers = {k: v.expand(m, *v.shape[1:]).clone() for k, v in base.buffers.items()}
    # Trainer seed level t is shared across cells: the same level, the same random numbers.
    seeds = [settings.seed * 1_000_003 + 7919 + (i % t) for i in range(m)]
    done = finetune(
        base.template,
        params,
        buffers,
        base.task,
        per_member.logits,  # finetune shows it the images clipped to [-1, 1]
        true_preference_of(settings.preferred),
        trainer,
        seeds,
        eval_noise,
    )
    true_final = true_preference_of(settings.preferred)(done.images).double()
    classes = reference_classifier().probabilities(done.images).argmax(-1)
    return _Outcome(evaluators, done.proxy, done.true, done.images, true_final, classes)


def _evaluator_table(evaluators: Evaluators, preferred: list[int], draws: int, seed: int) -> Any:
    """The evaluators' own spread on the held-out digits (a yardstick): disagreement and
    accuracy against the rule.
    """
    items, truth = held_out_digits(preferred)
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
    }


def _members_table(settings: EvaluatorSettings, outcome: _Outcome, parting: Tensor) -> pd.DataFrame:
    design = measures.design_frame(
        settings.resamples, settings.evaluator_seeds, settings.trainer_seeds
    )
    dists = measures.class_distributions(outcome.classes)
    return design.assign(
        true=outcome.true_final.mean(1).numpy(),
        true_base=outcome.true[:, 0].double().numpy(),
        proxy=outcome.proxy[:, -1].double().numpy(),
        basin=dists.argmax(-1).numpy(),
        parting_round=parting.numpy(),
    )


def _rounds_long(outcome: _Outcome) -> pd.DataFrame:
    m, k = outcome.proxy.shape
    return pd.DataFrame(
        {
            "member": np.repeat(np.arange(m), k),
            "round": np.tile(np.arange(k), m),
            "proxy": outcome.proxy.double().reshape(-1).numpy(),
            "true": outcome.true.double().reshape(-1).numpy(),
        }
    )


def _image_rows(images: Tensor, labels: list[Any], column: str) -> pd.DataFrame:
    """Images ``[k, 64]`` in [-1, 1] as rows (``column`` = label, ``pixels`` in [0, 1])."""
    ink = ((images.clamp(-1, 1) + 1) / 2).double()
    return pd.DataFrame(
        {column: labels, "pixels": [row.tolist() for row in ink.reshape(len(images), -1)]}
    )


def _structural(
    settings: EvaluatorSettings,
    base: _Base,
    examples: HumanExamples,
    eval_noise: Tensor,
    stages: Stages,
) -> pd.DataFrame:
    """True preference (mean and sd over resamples) at each level of the evaluator design."""
    frames = []
    small = settings.model_copy(
        update={
            "resamples": settings.structural.resamples,
            "evaluator_seeds": 1,
            "trainer_seeds": 1,
        }
    )
    for name, level in settings.structural.levels():
        design = _design(settings)
        trainer = _trainer(settings)
        noise = settings.label_noise
        if name == "hidden":
            design = replace(design, hidden=int(level))
        elif name == "weight_decay":
            design = replace(design, weight_decay=level)
        elif name == "label_noise":
            noise = level
        else:
            trainer = replace(trainer, kl=level)
        stages.begin(f"structural: {name} = {level:g}")
        out = _factorial(small, base, examples, eval_noise, design, trainer, noise)
        values = out.true_final.numpy()
        mean = multibootstrap(values, np.mean, settings.draws, settings.seed)
        sd = multibootstrap(values, np.std, settings.draws, settings.seed)
        judged = _evaluator_table(out.evaluators, settings.preferred, settings.draws, settings.seed)
        frames.append(
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
    return pd.DataFrame(frames)


def _design(settings: EvaluatorSettings) -> EvaluatorDesign:
    return EvaluatorDesign(**settings.reward_model.model_dump())


def _trainer(settings: EvaluatorSettings) -> FinetuneDesign:
    return FinetuneDesign(**settings.trainer.model_dump())


def _suggestions(
    evaluators: Evaluators, examples: HumanExamples, settings: EvaluatorSettings
) -> pd.DataFrame:
    """The unlabelled training digits the evaluators disagree on most (BALD), to label next."""
    from attractor.tasks.denoise_digits import load_images

    x_train, y_train, _, _ = (torch.tensor(a) for a in load_images())
    labelled = (x_train[:, None, :] == examples.items[None, :, :]).all(-1).any(-1)
    pool = torch.nonzero(~labelled).flatten()
    if settings.suggest == 0 or len(pool) == 0:
        return pd.DataFrame()
    chosen = pool[to_label_next(evaluators, x_train[pool], min(settings.suggest, len(pool)))]
    found = disagreement(evaluators, x_train[chosen])
    probs = evaluators.probabilities(x_train[chosen]).double()
    preferred = torch.tensor(settings.preferred)
    frame = _image_rows(x_train[chosen], chosen.tolist(), "index")
    return frame.assign(
        mutual_information=found["mutual_information"].double().numpy(),
        mean_probability=probs.mean(0).numpy(),
        rule=torch.isin(y_train[chosen], preferred).long().numpy(),
    )


def run_evaluator(
    settings: EvaluatorSettings, store: RunStore, progress: bool = False
) -> list[Result]:
    """Run the experiment (see the module docstring) in ``store``'s directory."""
    settings.check()
    examples = _examples(settings)
    levels = len(settings.structural.levels())
    with Stages("evaluator", 4 + levels, progress) as stages:
        stages.begin("the base generator: " + ("loading" if settings.model else "training"))
        base = _base(settings, store, progress)
        generator = torch.Generator().manual_seed(settings.seed)
        eval_noise = torch.randn(settings.eval_noises, 64, generator=generator)
        stages.begin(
            f"{settings.resamples * settings.evaluator_seeds} evaluators and "
            f"{settings.members} fine-tuned generators ({settings.trainer.rounds} rounds)"
        )
        outcome = _factorial(
            settings,
            base,
            examples,
            eval_noise,
            _design(settings),
            _trainer(settings),
            settings.label_noise,
        )
        stages.begin("spread, its sources, proxy vs true")
        tables, summary = _measure(settings, outcome)
        structural = (
            _structural(settings, base, examples, eval_noise, stages) if levels else pd.DataFrame()
        )
        stages.begin("suggestions: the examples to label next")
        tables["suggestions"] = _suggestions(outcome.evaluators, examples, settings)
    if not structural.empty:
        tables["structural"] = structural
    tables["examples"] = _image_rows(examples.items, examples.labels.tolist(), "label")
    shown = outcome.images[:_SAMPLED_MEMBERS, :_SAMPLES_PER_MEMBER]
    members = torch.arange(len(shown)).repeat_interleave(shown.shape[1])
    tables["samples"] = _image_rows(shown.reshape(-1, 64), members.tolist(), "member")
    return [
        EvaluatorResult(
            setting=settings.setting,
            preferred=settings.preferred,
            examples=examples.source,
            model=base.source,
            settings=settings.model_dump(mode="json"),
            summary=summary,
            tables={k: v for k, v in tables.items() if not v.empty},
        )
    ]


def _measure(
    settings: EvaluatorSettings, outcome: _Outcome
) -> tuple[dict[str, Any], dict[str, Any]]:
    draws, seed = settings.draws, settings.seed
    spread, basins = measures.outcome_spread(
        outcome.true_final, outcome.classes, draws, seed, outcome.images
    )
    design = measures.design_frame(
        settings.resamples, settings.evaluator_seeds, settings.trainer_seeds
    )
    sources = measures.sources(design, outcome.true_final.mean(1), draws, seed)
    by_round = measures.rounds(outcome.proxy, outcome.true, draws, seed)
    parting = measures.parting(outcome.proxy, outcome.true, settings.part_tolerance, draws, seed)
    rounds_found = measures.parting_rounds(outcome.proxy, outcome.true, settings.part_tolerance)
    judged = _evaluator_table(outcome.evaluators, settings.preferred, draws, seed)
    main = sources[sources["effect"].isin(measures.FACTORS)]
    summary: dict[str, Any] = {
        "members": settings.members,
        "true_base": _first_last(by_round, 0),
        # Over members and evaluation noises jointly (the spread table's interval), not the
        # per-round table's members-only one: the noises are a sample too.
        "true_final": {
            **_first_last(by_round, -1),
            **{
                k: float(v)
                for k, v in zip(
                    ("true", "true_low", "true_high"),
                    spread.set_index("measure").loc[
                        "true preference (mean)", ["value", "low", "high"]
                    ],
                    strict=True,
                )
            },
        },
        "spread": spread.set_index("measure")[["value", "low", "high"]].to_dict("index"),
        "sources": main.set_index("effect")[["share", "share_low", "share_high"]].to_dict("index"),
        "evaluators": judged,
        "parting": parting,
        "basins": basins,
    }
    if main["share"].notna().any():  # all NaN when the models do not differ at all
        top = main.loc[main["share"].idxmax()]
        summary["dominant"] = {"factor": str(top["effect"]), "share": float(top["share"])}
    tables = {
        "spread": spread,
        "sources": sources,
        "rounds": by_round,
        "trajectories": _rounds_long(outcome),
        "members": _members_table(settings, outcome, rounds_found),
    }
    return tables, summary


def _first_last(by_round: pd.DataFrame, row: int) -> dict[str, float]:
    picked = by_round.iloc[row]
    return {k: float(picked[k]) for k in ("true", "true_low", "true_high", "proxy")}


EXPERIMENT = Experiment(
    name="evaluator",
    settings=EvaluatorSettings,
    run=run_evaluator,
    summary="trainer2 as a learned evaluator: the human's examples -> evaluators -> models",
)

__all__ = ["EXPERIMENT", "run_evaluator"]
