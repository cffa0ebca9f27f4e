"""Level 3 of the learned evaluator, text: evaluators fine-tune a small trained tiny-lm.

One base ``tiny-lm`` is trained per module (2 layers, width 64, context 64, 400 Adam steps:
~15 s on one thread); every test fine-tunes copies of it. The rule is ``code`` (a line
indented by 4+ spaces or a ``>>>``): 0.227 of the base's 32-byte continuations of a
paragraph break satisfy it on the fixed evaluation noise (0.38 of 48-byte ones).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from attractor.errors import UserError
from attractor.stack.learned.text import RULES
from attractor.stack.learned.text_finetune import (
    TextFinetuned,
    TextFinetuneDesign,
    _weights,
    check_text_design,
    eval_noise,
    rule_preference,
    sample_texts,
    sample_tokens,
    text_finetune,
)
from tests.text_base import train_text_base

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXT = 64
SEEDS = [0, 1, 2]
EVAL = 128
#: The module's defaults but 32 bytes per sample (the base's context is 64).
DESIGN = TextFinetuneDesign(length=32)
BASE_RATE = 29 / 128  # measured: the base's share on the evaluation noise


@dataclasses.dataclass(frozen=True)
class Base:
    template: torch.nn.Module
    params: dict[str, Tensor]

    def copies(self, m: int) -> dict[str, Tensor]:
        return {k: v.expand(m, *v.shape[1:]).clone() for k, v in self.params.items()}

    def run(self, design: TextFinetuneDesign, seeds: list[int], reward=None, **kw) -> TextFinetuned:
        true = rule_preference("code")
        reward = true if reward is None else reward
        return text_finetune(
            self.template,
            self.copies(len(seeds)),
            {},
            reward,
            true,
            design,
            seeds,
            EVAL,
            CONTEXT,
            **kw,
        )


@pytest.fixture(scope="module")
def base() -> Base:
    """A small tiny-lm member (tests/text_base.py)."""
    model = train_text_base(CONTEXT)
    params = {k: v.detach().unsqueeze(0).clone() for k, v in model.named_parameters()}
    return Base(model, params)


@pytest.fixture(scope="module")
def perfect(base: Base) -> tuple[TextFinetuned, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    result = base.run(DESIGN, SEEDS, progress=lambda r, n: calls.append((r, n)))
    return result, calls


def _random_reward(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return lambda texts: torch.rand(len(texts), len(texts[0]), generator=generator)


def _distance(a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
    """Per member ``[m]``: the Euclidean distance between two stacked parameter sets."""
    return sum((a[k] - b[k]).pow(2).flatten(1).sum(1) for k in a).sqrt()


# --- sampling ---------------------------------------------------------------------------------


def test_sampling_is_gumbel_max_of_each_member_alone(base: Base) -> None:
    """The stacked sampler against the plain loop: one module, one position at a time."""
    params = base.copies(2)
    params = {k: v.clone() for k, v in params.items()}
    params["model.lm_head.weight"][1] *= 1.5  # a second member that samples differently
    prompt = torch.tensor(list(b"\n\n"))
    noise = torch.stack([eval_noise(4, 6), eval_noise(4, 6).flip(1)])  # [m, length, n, V]
    tokens = sample_tokens(base.template, params, {}, prompt, noise)
    assert tokens.shape == (2, 4, 6) and tokens.dtype == torch.int64
    for i in range(2):
        member = {k: v[i] for k, v in params.items()}
        for j in range(4):
            ids = prompt.clone()
            for p in range(6):
                with torch.no_grad():
                    logits = functional_call(base.template, member, (ids[None],))[0, -1]
                ids = torch.cat([ids, (logits.log_softmax(-1) + noise[i, p, j]).argmax()[None]])
            assert ids[2:].tolist() == tokens[i, j].tolist()
    assert not torch.equal(tokens[0], tokens[1])


def test_the_base_samples_look_like_the_corpus(base: Base) -> None:
    texts = sample_texts(base.template, base.params, {}, "\n\n", 32, EVAL, CONTEXT)
    assert len(texts) == 1 and len(texts[0]) == EVAL
    assert texts == sample_texts(base.template, base.params, {}, "\n\n", 32, EVAL, CONTEXT)
    joined = "".join(texts[0])
    printable = sum(c.isprintable() or c == "\n" for c in joined) / len(joined)
    words = re.findall(r"\b(?:the|of|is|and|to|a)\b", joined)
    assert printable > 0.95 and len(words) > 50, (printable, len(words))
    # The rule's base rate: 29 of 128 (0.227) here; between 5% and 50%, so it can move.
    share = sum(map(RULES["code"], texts[0])) / EVAL
    assert share == pytest.approx(BASE_RATE)
    own = sample_texts(base.template, base.copies(2), {}, "\n\n", 32, 8, CONTEXT, seeds=[4, 5])
    assert own[0] != own[1]  # member seeds: each member its own noise


# --- fine-tuning ------------------------------------------------------------------------------


def test_a_perfect_evaluator_raises_the_true_preference(perfect) -> None:
    result, calls = perfect
    mean = result.true.mean(0)
    print("perfect", result.true)
    # Measured (seeds 0, 1, 2): per-round means 0.227 0.680 0.831 0.792; members end at
    # 0.750 0.734 0.891.
    assert result.true.shape == result.proxy.shape == (3, DESIGN.rounds + 1)
    assert result.true.dtype == torch.float64
    assert torch.allclose(result.true[:, 0], torch.tensor(BASE_RATE, dtype=torch.float64))
    assert mean[-1] > mean[0] + 0.4, mean
    assert (result.true[:, -1] > result.true[:, 0] + 0.3).all(), result.true
    assert torch.allclose(result.proxy, result.true)  # a perfect evaluator: proxy = truth
    assert [len(t) for t in result.texts] == [EVAL] * 3
    assert result.true[:, -1].tolist() == [
        sum(map(RULES["code"], texts)) / EVAL for texts in result.texts
    ]
    assert calls == [(r, DESIGN.rounds) for r in range(1, DESIGN.rounds + 1)]


def test_a_random_evaluator_does_not_raise_it(base: Base, perfect) -> None:
    result = base.run(DESIGN, SEEDS, reward=_random_reward(0))
    mean = result.true.mean(0)
    print("random", result.true)
    # Measured per-round means, random seeds 0 / 1 / 2: 0.227 0.362 0.409 0.318 / 0.227 0.380
    # 0.339 0.185 / 0.227 0.289 0.289 0.292 (seeds 0..3 for four members: final 0.260 and
    # 0.182). Not flat: refitting a model to a few of its own samples sharpens it (its samples
    # often open with an indent) and single members wander (0.08 .. 0.65), but the mean stays
    # within 0.19 of the base while the perfect evaluator's ends 0.56 above it.
    assert ((mean - mean[0]).abs() < 0.25).all(), mean
    assert abs(mean[-1] - mean[0]) < 0.15, mean
    assert mean[-1] < perfect[0].true.mean(0)[-1] - 0.3


def test_a_member_alone_is_the_member_in_a_batch(base: Base, perfect) -> None:
    alone = base.run(DESIGN, [SEEDS[1]])
    batch = perfect[0]
    for k, v in alone.params.items():
        assert torch.allclose(v[0], batch.params[k][1], atol=1e-5), k
    assert torch.equal(alone.true[0], batch.true[1]) and alone.texts[0] == batch.texts[1]


def _kl_to_base(base: Base, params: dict[str, Tensor]) -> float:
    """Mean token-level ``KL(p_theta || p_base)`` over the base's 64 evaluation continuations
    (the positions that predict their 32 generated bytes).
    """
    prompt = torch.tensor(list(b"\n\n"))
    tokens = sample_tokens(base.template, base.params, {}, prompt, eval_noise(64, 32))[0]
    inputs = torch.cat([prompt.expand(64, 2), tokens], -1)[:, :-1]
    with torch.no_grad():
        anchor = base.template(inputs)[:, 1:].log_softmax(-1)
        member = {k: v[0] for k, v in params.items()}
        tuned = functional_call(base.template, member, (inputs,))[:, 1:].log_softmax(-1)
    return (tuned.exp() * (tuned - anchor)).sum(-1).mean().item()


def test_the_kl_penalty_keeps_the_model_closer_to_the_base(base: Base) -> None:
    short = dataclasses.replace(DESIGN, rounds=1)
    tuned = {kl: base.run(dataclasses.replace(short, kl=kl), [0]).params for kl in (0.0, 1.0)}
    kl = {k: _kl_to_base(base, p) for k, p in tuned.items()}
    distance = {k: _distance(p, base.params).item() for k, p in tuned.items()}
    print("kl", kl, "distance", distance)
    # Measured after one round (the samples and batches are the same, only the loss
    # differs): KL to the base 0.314 nats per byte without the penalty, 0.290 with kl = 0.1,
    # 0.160 with kl = 1 (after three rounds 0.839 / 0.746 / 0.250); parameter distance 1.78 /
    # 1.76 / 1.57 (Adam moves every weight by about lr a step whatever its gradient, so the
    # distance says less).
    assert kl[1.0] < 0.7 * kl[0.0], kl
    assert distance[1.0] < distance[0.0], distance


def test_the_round_weights_are_best_of_n_or_a_softmax() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]])
    best = _weights(scores, TextFinetuneDesign(samples=4, keep=2))
    assert torch.equal(
        best, torch.tensor([[0, 0.5, 0, 0.5], [0.5, 0, 0.5, 0]], dtype=torch.float64)
    )
    soft = _weights(scores, TextFinetuneDesign(method="reward-weighted", temperature=0.5))
    expected = torch.exp(scores.double() / 0.5)
    assert torch.allclose(soft, expected / expected.sum(-1, keepdim=True))


def test_reward_weighted_fine_tuning_runs_and_moves_toward_the_rule(base: Base) -> None:
    design = dataclasses.replace(DESIGN, method="reward-weighted", temperature=0.1, rounds=1)
    result = base.run(design, [0])
    print("reward-weighted", result.true)
    # Measured: 0.227 -> 0.625 in one round (temperature 0.1 on a 0/1 reward: the weights
    # are nearly uniform on the hits, e^-10 of that on the misses).
    assert result.true[0, 1] > result.true[0, 0] + 0.2, result.true


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"method": "ppo"}, "unknown method 'ppo'; known: best-of-n, reward-weighted"),
        ({"rounds": 0}, "rounds must be an integer >= 1"),
        ({"samples": 2.5}, "samples must be an integer >= 1"),
        ({"keep": True}, "keep must be an integer >= 1"),
        ({"keep": 65}, "keep (65) must not exceed samples (64)"),
        ({"steps": -1}, "steps must be"),
        ({"batch": 0}, "batch must be"),
        ({"length": 0}, "length must be"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"kl": -0.1}, "kl must be >= 0"),
        ({"kl": float("nan")}, "kl must be >= 0"),
        ({"prompt": ""}, "prompt is empty"),
    ],
)
def test_bad_designs_are_one_line(changes: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        check_text_design(dataclasses.replace(TextFinetuneDesign(), **changes))
    assert "\n" not in str(info.value)


def test_bad_calls_are_one_line(base: Base) -> None:
    true = rule_preference("code")
    params = base.copies(1)
    calls = {
        "2 seeds for 1 members": lambda: text_finetune(
            base.template, params, {}, true, true, DESIGN, [0, 1], EVAL, CONTEXT
        ),
        "exceeds the model's context (64)": lambda: text_finetune(
            base.template,
            params,
            {},
            true,
            true,
            TextFinetuneDesign(length=64),
            [0],
            EVAL,
            CONTEXT,
        ),
        "eval_samples must be an integer >= 1": lambda: text_finetune(
            base.template, params, {}, true, true, DESIGN, [0], 0, CONTEXT
        ),
        "keep (65) must not exceed": lambda: text_finetune(
            base.template, params, {}, true, true, TextFinetuneDesign(keep=65), [0], EVAL, CONTEXT
        ),
        "sample_texts: 3 seeds for 1 members": lambda: sample_texts(
            base.template, params, {}, "\n\n", 8, 2, CONTEXT, seeds=[0, 1, 2]
        ),
        "unknown text rule 'poem'; known: code": lambda: rule_preference("poem"),
    }
    for fragment, call in calls.items():
        with pytest.raises(UserError, match=re.escape(fragment)) as info:
            call()
        assert "\n" not in str(info.value)


def test_rule_preference_scores_each_members_texts() -> None:
    preference = rule_preference("code")
    scores = preference([["x", "    y = 1", ">>> z"], ["plain", "   three", "a\n    b"]])
    assert scores.shape == (2, 3)
    assert scores.tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
