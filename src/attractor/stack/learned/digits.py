"""The digits setting: the human prefers some 8x8 digit classes; the generator is a
``denoise-digits`` DDIM sampler; evaluators read the 64 pixels; a fixed reference
classifier scores the true preference of every generated image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from attractor.runs.store import RunStore
from attractor.stack.learned.examples import (
    PIXELS,
    ExampleRow,
    ExampleSets,
    HumanExamples,
    digits_examples,
    held_out_digits,
    perturbed_sets,
    read_examples,
)
from attractor.stack.learned.finetune import FinetuneDesign, finetune, true_preference_of
from attractor.stack.learned.reward_model import Evaluators
from attractor.stack.learned.setting import Trained, base_run, design_options

#: Final images of each of the first models kept for the report.
_SAMPLES_PER_MEMBER = 8
_SAMPLED_MEMBERS = 8
#: Training steps of the base generator when none is given (the world's default trainer).
BASE_STEPS = 1000


def pixel_rows(images: Tensor, labels: list[Any], column: str) -> pd.DataFrame:
    """Images ``[k, 64]`` in [-1, 1] as rows (``column`` = label, ``pixels`` in [0, 1])."""
    ink = ((images.clamp(-1, 1) + 1) / 2).double()
    return pd.DataFrame(
        {column: labels, "pixels": [row.tolist() for row in ink.reshape(len(images), -1)]}
    )


class DigitsSetting:
    """See the module docstring; built by the experiment from its settings."""

    inputs = PIXELS

    def __init__(
        self, settings: Any, store: RunStore, progress: bool, device: torch.device
    ) -> None:
        self.settings = settings
        self.device = device
        self.base = base_run(
            settings.model,
            "denoise-digits",
            lambda root: _train_base(settings.base_steps or BASE_STEPS, root, progress, device),
            store,
        )
        self.task = {"name": "denoise-digits", **self.base.run.config.task.options}
        self.source = self.base.source
        generator = torch.Generator().manual_seed(settings.seed)
        self.eval_noise = torch.randn(settings.eval_samples, PIXELS, generator=generator)

    def examples(self) -> HumanExamples:
        s = self.settings
        if s.examples_file is not None:
            return read_examples(s.examples_file)
        return digits_examples(s.preferred, s.examples, s.seed, s.positives)

    def sets(self, examples: HumanExamples, rows: Sequence[ExampleRow]) -> ExampleSets:
        return perturbed_sets(examples, rows)

    def held_out(self) -> tuple[Tensor, Tensor]:
        return held_out_digits(self.settings.preferred)

    def train(
        self, evaluators: Evaluators, trainer: dict[str, Any], seeds: Sequence[int]
    ) -> Trained:
        from attractor.world.denoise_digits import reference_classifier

        design = FinetuneDesign(**design_options(trainer, FinetuneDesign, "digits"))
        params, buffers = self.base.copies(evaluators.members)
        true_preference = true_preference_of(self.settings.preferred)
        done = finetune(
            self.base.template,
            params,
            buffers,
            self.task,
            evaluators.logits,  # finetune shows it the images clipped to [-1, 1]
            true_preference,
            design,
            seeds,
            self.eval_noise,
            device=self.device,
        )
        flat = done.images.double().permute(1, 0, 2)  # [e, m, 64]
        shown = done.images[:_SAMPLED_MEMBERS, :_SAMPLES_PER_MEMBER]
        members = torch.arange(len(shown)).repeat_interleave(shown.shape[1])
        return Trained(
            proxy=done.proxy,
            true=done.true,
            true_final=true_preference(done.images).double(),
            classes=reference_classifier().probabilities(done.images).argmax(-1),
            distances=torch.cdist(flat, flat).permute(1, 2, 0),
            distance=(
                "images from the same noise (mean pairwise distance)",
                "Euclidean, pixels in [-1, 1] (64 pixels: at most 16)",
            ),
            samples=pixel_rows(shown.reshape(-1, PIXELS), members.tolist(), "member"),
        )

    def shown(self, examples: HumanExamples) -> pd.DataFrame:
        return pixel_rows(examples.items, examples.labels.tolist(), "label")

    def pool(self, examples: HumanExamples) -> tuple[Tensor, pd.DataFrame]:
        """The training digits the human has not labelled."""
        from attractor.tasks.denoise_digits import load_images

        x_train, y_train, _, _ = (torch.tensor(a) for a in load_images())
        labelled = (x_train[:, None, :] == examples.items[None, :, :]).all(-1).any(-1)
        index = torch.nonzero(~labelled).flatten()
        rule = torch.isin(y_train[index], torch.tensor(self.settings.preferred)).long()
        rows = pixel_rows(x_train[index], index.tolist(), "index").assign(rule=rule.numpy())
        return x_train[index], rows


def _train_base(steps: int, root: Any, progress: bool, device: torch.device) -> Any:
    from attractor.config import parse_config
    from attractor.runs.launch import train
    from attractor.world.denoise_digits import TRAINER

    config = parse_config(
        {
            "task": {"name": "denoise-digits"},
            "trainer": {**TRAINER, "steps": steps},
            "plan": {"members": 1, "vary": ["init_seed"]},
            "run": {"device": str(device)},  # placement: the base's directory is the same
        },
        source="the evaluator's base generator",
    )
    return train(config, root, progress=progress)


__all__ = ["BASE_STEPS", "DigitsSetting", "pixel_rows"]
