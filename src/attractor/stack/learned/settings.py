"""Settings of the learned-evaluator experiment (``attractor evaluator CONFIG``).

One ``[evaluator]`` table; its sub-tables configure each level::

    [evaluator]
    setting = "digits"     # or "text"
    preferred = [3]        # digits: the human prefers these classes (the known rule)
    rule = "code"          # text: the human prefers pydoc windows with code in them
    examples = 40          # the human's examples, drawn by the rule
    resamples = 6          # factor 1: bootstrap resamples of the human's examples
    evaluator_seeds = 2    # factor 2: the evaluator's own seed
    trainer_seeds = 2      # factor 3: the trainer's seed (its samples and batches)
    [evaluator.reward_model]   # the evaluator's design (hidden, weight_decay, steps, lr)
    [evaluator.trainer]        # the fine-tuning (method, rounds, samples, keep, kl, ...)
    [evaluator.structural]     # levels of the design to perturb: hidden, weight_decay,
                               # label_noise, kl
    device = "auto"        # where evaluators and generators compute (``--device``)

Members form a full factorial of the three factors, so the spread of the final models
splits into the share each factor adds (variance components, as ``attractor sensitivity``).
A trainer option left out takes the setting's own default (they differ: an image and a
text trainer are tuned apart, see :class:`~attractor.stack.learned.finetune.FinetuneDesign`
and :class:`~attractor.stack.learned.text_finetune.TextFinetuneDesign`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from attractor.config import read_toml
from attractor.errors import UserError
from attractor.stack.learned.reward_model import EvaluatorDesign

# The level's own design holds the defaults; the settings only validate and document them.
_EVALUATOR = EvaluatorDesign()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardModelSettings(_Strict):
    """``[evaluator.reward_model]``: the evaluator, an MLP on the items' features."""

    hidden: int = Field(
        _EVALUATOR.hidden, ge=0, le=4096, description="Hidden width (0: logistic regression)."
    )
    weight_decay: float = Field(_EVALUATOR.weight_decay, ge=0, description="L2 penalty.")
    steps: int = Field(_EVALUATOR.steps, ge=1, le=100_000, description="Full-batch Adam steps.")
    lr: float = Field(_EVALUATOR.lr, gt=0, description="Adam learning rate.")


class TrainerSettings(_Strict):
    """``[evaluator.trainer]``: the trainer each evaluator drives; None = the setting's
    default (digits: :class:`FinetuneDesign`, text: :class:`TextFinetuneDesign`).
    """

    method: Literal["best-of-n", "reward-weighted"] | None = None
    rounds: int | None = Field(None, ge=1, le=100)
    samples: int | None = Field(None, ge=2, description="Samples per model per round.")
    keep: int | None = Field(None, ge=1, description="Best-of-n: samples kept per round.")
    temperature: float | None = Field(None, gt=0, description="Reward-weighted temperature.")
    steps: int | None = Field(None, ge=1, description="Fine-tuning steps per round.")
    lr: float | None = Field(None, gt=0)
    batch: int | None = Field(None, ge=1, description="Training items per step per model.")
    kl: float | None = Field(None, ge=0, description="Weight of the KL penalty to the base.")
    sampler_steps: int | None = Field(None, ge=1, description="Digits: DDIM updates.")
    length: int | None = Field(None, ge=1, description="Text: bytes generated per sample.")
    prompt: str | None = Field(None, min_length=1, description="Text: the lead-in sampled from.")


class StructuralSettings(_Strict):
    """``[evaluator.structural]``: the evaluator's design perturbed, level by level."""

    hidden: list[int] = Field(default_factory=list, description="Evaluator widths.")
    weight_decay: list[float] = Field(default_factory=list)
    label_noise: list[float] = Field(default_factory=list, description="Shares of flipped labels.")
    kl: list[float] = Field(default_factory=list, description="KL penalties of the trainer.")
    resamples: int = Field(4, ge=2, le=64, description="Models (resamples) per level.")

    def levels(self) -> list[tuple[str, float]]:
        """Every (parameter, level) to run, in the order given."""
        return [
            (name, float(level))
            for name in ("hidden", "weight_decay", "label_noise", "kl")
            for level in getattr(self, name)
        ]


class EvaluatorSettings(_Strict):
    """Everything a learned-evaluator experiment depends on (its directory's identity)."""

    setting: Literal["digits", "text"] = Field(
        "digits",
        description="digits: a denoise-digits generator, 8x8 digit examples; text: a tiny-lm "
        "base model, pydoc windows.",
    )
    preferred: list[int] = Field(
        default_factory=lambda: [3], min_length=1, description="Digits: classes preferred."
    )
    rule: str = Field("code", description="Text: the human's preference (a known rule).")
    length: int = Field(
        64, ge=8, le=4096, description="Text: characters per example window (<= the context)."
    )
    examples: int = Field(40, ge=2, description="Examples the human labels.")
    positives: float | None = Field(
        0.5, gt=0, lt=1, description="Share of preferred examples in the draw (None: uniform)."
    )
    examples_file: str | None = Field(
        None, description="Digits: CSV of the human's own examples (label, p0..p63)."
    )
    seed: int = Field(0, ge=0, description="Seed of the human's draw and of the evaluation.")
    model: str | None = Field(
        None, description="RUN:MEMBER of the base generator; None: trains one in OUT/base."
    )
    base_steps: int | None = Field(
        None, ge=1, description="Training steps of the base trained when no model is given."
    )
    resamples: int = Field(6, ge=2, le=256, description="Bootstrap resamples of the examples.")
    evaluator_seeds: int = Field(2, ge=1, le=64)
    trainer_seeds: int = Field(2, ge=1, le=64)
    subsample: float = Field(1.0, gt=0, le=1, description="Share of examples each member keeps.")
    label_noise: float = Field(0.0, ge=0, lt=0.5, description="Share of labels flipped.")
    augment: float = Field(
        0.0, ge=0, le=1, description="Augmentation strength (image shifts and noise; paraphrase)."
    )
    eval_samples: int = Field(
        128, ge=8, le=100_000, description="Samples every model is judged on (fixed noises)."
    )
    part_tolerance: float = Field(
        0.02, ge=0, description="A drop of the true preference that counts as parting."
    )
    suggest: int = Field(8, ge=0, le=1000, description="Examples to suggest labelling next.")
    draws: int = Field(1000, ge=50, description="Bootstrap draws for every interval.")
    # Placement, not identity: experiment_identity drops it from the directory's hash, and
    # run_experiment resolves it (one line for a GPU this machine lacks) before OUT exists.
    device: str = Field(
        "auto",
        description="Where the evaluators train and score and the generators fine-tune and "
        "sample: auto (CUDA when available), cpu, cuda or cuda:N; measures stay on the CPU.",
    )
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

    @property
    def preference(self) -> list[int] | str:
        """The known rule, as recorded: the preferred classes or the text rule's name."""
        return self.preferred if self.setting == "digits" else self.rule

    def check(self) -> None:
        """One line for settings that cannot run together (before anything is trained)."""
        t = self.trainer
        if t.keep is not None and t.samples is not None and t.keep > t.samples:
            raise UserError(
                f"[evaluator.trainer] keep ({t.keep}) is more than samples ({t.samples}); keep "
                "at most the samples drawn"
            )
        only = {"digits": ("sampler_steps",), "text": ("length", "prompt")}
        for setting, names in only.items():
            given = [n for n in names if getattr(t, n) is not None]
            if given and self.setting != setting:
                raise UserError(
                    f"[evaluator.trainer] {given[0]} is not an option of the {self.setting} "
                    f"setting (it is the {setting} setting's)"
                )
        if self.setting == "text":
            from attractor.stack.learned.text import rule_of

            rule_of(self.rule)  # an unknown rule, named with the known ones
            if self.examples_file is not None:
                raise UserError("examples_file is for the digits setting; the text setting draws")
        elif self.examples_file is not None:
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
