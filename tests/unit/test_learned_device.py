"""The learned evaluator's levels compute where they are told to.

No GPU here, so the device paths are checked on ``meta``: a meta tensor meeting a CPU one in
an op (a concatenation, a sum) is refused, so a computation that finishes on ``meta`` kept
every tensor it made on the device it was given (the bug a CPU-only test never sees: a
timestep embedding, a prompt or training data left on the CPU). Values are the CPU tests' business
(``test_learned_reward_model.py``, ``test_learned_finetune.py``); here, the device of every
result and the CPU path bitwise the default.
"""

from __future__ import annotations

import pytest
import torch

from attractor.stack.learned.examples import ExampleRow, digits_examples, perturbed_sets
from attractor.stack.learned.finetune import sample_images
from attractor.stack.learned.reward_model import (
    EvaluatorDesign,
    disagreement,
    train_evaluators,
)
from attractor.tasks.denoise_digits import PIXELS, DenoiseDigitsOptions, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")


def _sets(members: int):
    examples = digits_examples([3], 20, seed=0, positives=0.5)
    rows = [
        ExampleRow(resample=r, subsample=1.0, label_noise=0.1, augment=0.0, seed=r)
        for r in range(members)
    ]
    return perturbed_sets(examples, rows)


@pytest.mark.parametrize("hidden", [0, 8])
def test_evaluators_train_and_score_on_their_device(hidden: int) -> None:
    design = EvaluatorDesign(hidden=hidden, steps=3)
    evaluators = train_evaluators(_sets(3), design, [0, 1, 2], META)
    assert evaluators.device == META
    for name, shape in design.shapes().items():
        assert evaluators.params[name].device == META
        assert evaluators.params[name].shape == (3, *shape)
    items = torch.zeros(5, PIXELS, device=META)
    assert evaluators.logits(items).shape == (3, 5) and evaluators.logits(items).is_meta
    found = disagreement(evaluators, items)
    assert all(v.is_meta and v.shape == (5,) for v in found.values())


def test_evaluators_on_the_cpu_device_are_the_default_bitwise() -> None:
    design = EvaluatorDesign(hidden=8, steps=20)
    sets = _sets(2)
    default = train_evaluators(sets, design, [4, 5])
    on_cpu = train_evaluators(sets, design, [4, 5], torch.device("cpu"))
    assert default.device == on_cpu.device == torch.device("cpu")
    for name, value in default.params.items():
        assert torch.equal(value, on_cpu.params[name])


class _Wrapped(torch.nn.Module):
    """The denoiser behind one more module: batched by vmap, which runs on ``meta`` (the
    stacked-MLP fast path asks autocast about the device, and autocast knows no ``meta``).
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_the_sampler_runs_where_the_states_are() -> None:
    """Fine-tuning's DDIM sampler runs where the noise is (the denoise-digits world moves its
    timestep embedding to the states' device; the images come back there).
    """
    options = DenoiseDigitsOptions(hidden=[16])
    template = _Wrapped(
        build_model(PIXELS + 2 * options.frequencies, options.hidden, options.activation)
    )
    params = {k: v.detach().to(META).expand(2, *v.shape) for k, v in template.named_parameters()}
    noise = torch.zeros(2, 3, PIXELS, device=META)
    task = {"name": "denoise-digits", "hidden": [16]}
    images = sample_images(template, params, {}, task, noise, sampler_steps=4)
    assert images.is_meta and images.shape == (2, 3, PIXELS)


def test_text_sampling_runs_where_the_noise_is() -> None:
    """The prompt follows the Gumbel noise to its device; the tokens come back there."""
    pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    from attractor.stack.learned.text_finetune import _prompt_ids, sample_tokens
    from attractor.tasks.tiny_lm import VOCAB, TinyLMOptions, make

    task = make(TinyLMOptions(layers=1, width=16, heads=2, context=16, windows_per_document=1))
    template = task.make_model()
    params = {k: v.detach().to(META).expand(2, *v.shape) for k, v in template.named_parameters()}
    noise = torch.zeros(2, 5, 3, VOCAB, device=META)  # [m, length, n, V]
    tokens = sample_tokens(template, params, {}, _prompt_ids("\n\n", 5, 16), noise)
    assert tokens.is_meta and tokens.shape == (2, 3, 5)
