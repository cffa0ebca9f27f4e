"""Settings of the learned-evaluator experiment (``attractor evaluator CONFIG``).

One ``[evaluator]`` table; its sub-tables configure each level::

    [evaluator]
    preferred = [3]        # the human prefers these digit classes (the known rule)
    examples = 40          # the human's examples, drawn from the digits training split
    resamples = 6          # factor 1: bootstrap resamples of the human's examples
    evaluator_seeds = 2    # factor 2: the evaluator's own seed
    trainer_seeds = 2      # factor 3: the trainer's seed (its samples and batches)
    [evaluator.reward_model]   # the evaluator's design (hidden, weight_decay, steps, lr)
    [evaluator.trainer]        # the fine-tuning (method, rounds, samples, keep, kl, ...)
    [evaluator.structural]     # levels of the design to perturb: hidden, weight_decay,
                               # label_noise, kl

Members form a full factorial of the three factors, so the spread of the final models
splits into the share each factor adds (variance components, as ``attractor sensitivity``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from attractor.config import read_toml
from attractor.errors import UserError
from attractor.stack.learned.finetune import FinetuneDesign
from attractor.stack.learned.reward_model import EvaluatorDesign

# The levels' own designs hold the defaults; the settings only validate and document them.
_EVALUATOR = EvaluatorDesign()
_TRAINER = FinetuneDesign()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardModelSettings(_Strict):
    """``[evaluator.reward_model]``: the evaluator, an MLP on the 64 pixels."""

    hidden: int = Field(
        _EVALUATOR.hidden, ge=0, le=4096, description="Hidden width (0: logistic regression)."
    )
    weight_decay: float = Field(_EVALUATOR.weight_decay, ge=0, description="L2 penalty.")
    steps: int = Field(_EVALUATOR.steps, ge=1, le=100_000, description="Full-batch Adam steps.")
    lr: float = Field(_EVALUATOR.lr, gt=0, description="Adam learning rate.")


class TrainerSettings(_Strict):
    """``[evaluator.trainer]``: the trainer each evaluator drives (fine-tuning the generator)."""

    method: Literal["best-of-n", "reward-weighted"] = _TRAINER.method
    rounds: int = Field(_TRAINER.rounds, ge=1, le=100)
    samples: int = Field(_TRAINER.samples, ge=2, description="Images sampled per member per round.")
    keep: int = Field(_TRAINER.keep, ge=1, description="Best-of-n: images kept per round.")
    temperature: float = Field(
        _TRAINER.temperature, gt=0, description="Reward-weighted: softmax temperature."
    )
    steps: int = Field(_TRAINER.steps, ge=1, description="Fine-tuning steps per round.")
    lr: float = Field(_TRAINER.lr, gt=0)
    batch: int = Field(_TRAINER.batch, ge=1, description="Noisy pairs per step per member.")
    kl: float = Field(_TRAINER.kl, ge=0, description="Weight of the KL penalty to the base model.")
    sampler_steps: int = Field(_TRAINER.sampler_steps, ge=1, description="DDIM updates per sample.")


class StructuralSettings(_Strict):
    """``[evaluator.structural]``: the evaluator's design perturbed, level by level."""

    hidden: list[int] = Field(default_factory=list, description="Evaluator widths.")
    weight_decay: list[float] = Field(default_factory=list)
    label_noise: list[float] = Field(default_factory=list, description="Shares of flipped labels.")
    kl: list[float] = Field(default_factory=list, description="KL penalties of the trainer.")
    resamples: int = Field(4, ge=2, le=64, description="Members (resamples) per level.")

    def levels(self) -> list[tuple[str, float]]:
        """Every (parameter, level) to run, in the order given."""
        return [
            (name, float(level))
            for name in ("hidden", "weight_decay", "label_noise", "kl")
            for level in getattr(self, name)
        ]


class EvaluatorSettings(_Strict):
    """Everything a learned-evaluator experiment depends on (its directory's identity)."""

    setting: Literal["digits"] = Field(
        "digits", description="digits: the denoise-digits generator and 8x8 digit examples."
    )
    preferred: list[int] = Field(
        default_factory=lambda: [3], min_length=1, description="Digit classes the human prefers."
    )
    examples: int = Field(40, ge=2, le=1437, description="Examples the human labels.")
    positives: float | None = Field(
        0.5, gt=0, lt=1, description="Share of preferred examples in the draw (None: uniform)."
    )
    examples_file: str | None = Field(
        None, description="CSV of the human's own examples (label, p0..p63) instead of a draw."
    )
    seed: int = Field(0, ge=0, description="Seed of the human's draw and of the evaluation.")
    model: str | None = Field(
        None, description="RUN:MEMBER of a denoise-digits run; None: trains a base in OUT/base."
    )
    base_steps: int = Field(
        1000, ge=1, description="Training steps of the base generator trained when no model."
    )
    resamples: int = Field(6, ge=2, le=256, description="Bootstrap resamples of the examples.")
    evaluator_seeds: int = Field(2, ge=1, le=64)
    trainer_seeds: int = Field(2, ge=1, le=64)
    subsample: float = Field(1.0, gt=0, le=1, description="Share of examples each member keeps.")
    label_noise: float = Field(0.0, ge=0, lt=0.5, description="Share of labels flipped.")
    augment: float = Field(0.0, ge=0, le=1, description="Image augmentation strength.")
    eval_noises: int = Field(128, ge=8, le=100_000, description="Noises every model is judged on.")
    part_tolerance: float = Field(
        0.02, ge=0, description="A drop of the true preference that counts as parting."
    )
    suggest: int = Field(8, ge=0, le=1000, description="Examples to suggest labelling next.")
    draws: int = Field(1000, ge=50, description="Bootstrap draws for every interval.")
    reward_model: RewardModelSettings = Field(default_factory=RewardModelSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    structural: StructuralSettings = Field(default_factory=StructuralSettings)

    @field_validator("preferred")
    @classmethod
    def _classes(cls, preferred: list[int]) -> list[int]:
        if any(not 0 <= c <= 9 for c in preferred) or len(set(preferred)) == 10:
            raise ValueError("preferred must be some (not all) of the digit classes 0..9")
        return sorted(set(preferred))

    @property
    def members(self) -> int:
        return self.resamples * self.evaluator_seeds * self.trainer_seeds

    def check(self) -> None:
        """One line for settings that cannot run together (before anything is trained)."""
        if self.trainer.method == "best-of-n" and self.trainer.keep > self.trainer.samples:
            raise UserError(
                f"[evaluator.trainer] keep ({self.trainer.keep}) is more than samples "
                f"({self.trainer.samples}); keep at most the images sampled"
            )
        if self.examples_file is not None:
            from attractor.stack.learned.examples import read_examples

            read_examples(self.examples_file)  # its one-line refusals, before anything runs
        bad = [x for x in self.structural.label_noise if not 0 <= x < 0.5]
        if bad:
            raise UserError(f"[evaluator.structural] label_noise {bad[0]} is outside [0, 0.5)")
        if any(h < 0 for h in self.structural.hidden):
            raise UserError("[evaluator.structural] hidden widths must be 0 or more")
        if any(x < 0 for x in self.structural.weight_decay + self.structural.kl):
            raise UserError("[evaluator.structural] weight_decay and kl levels must be >= 0")


def read_evaluator(path: str | Path) -> dict[str, Any]:
    """The ``[evaluator]`` table of the TOML file ``path`` (one line if there is none)."""
    data = read_toml(Path(path), "examples/evaluator-digits.toml")
    table = data.pop("evaluator", None)
    if not isinstance(table, dict):
        raise UserError(f"{path}: no [evaluator] table; see examples/evaluator-digits.toml")
    if data:
        raise UserError(
            f"{path}: unknown table [{sorted(data)[0]}]; everything goes in [evaluator]"
        )
    return table


__all__ = [
    "EvaluatorSettings",
    "RewardModelSettings",
    "StructuralSettings",
    "TrainerSettings",
    "read_evaluator",
]
