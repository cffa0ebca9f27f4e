"""The lm-continuation world: exact continuations of hand-built LMs, a tiny-lm ensemble, options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.world import get_world, rollout
from attractor.world import lm_continuation as lc
from attractor.world.rollout import initial_batch

pytestmark = pytest.mark.usefixtures("one_thread")

V = 256


def shift_lm(inputs: Tensor) -> Tensor:
    """Next token = (last token + 1) mod V, as near one-hot logits at every position."""
    return 30.0 * torch.nn.functional.one_hot((inputs + 1) % V, V).double()


def saturating_lm(inputs: Tensor) -> Tensor:
    """Next token = min(last + 1, 60): continuations climb to '<' (60) and stay there."""
    return 30.0 * torch.nn.functional.one_hot((inputs + 1).clamp(max=60), V).double()


def _world(**options):
    return get_world("lm-continuation", {"prompt": "abc0", "lead_in": "\n" * 4, **options})


def _run(world, policy, x0: Tensor, members: int = 2):
    final = rollout(world, policy, initial_batch(x0, members)).final
    return final, world.features(final, world.constants)


def test_shift_lm_continues_exactly() -> None:
    world = _world(steps=6)
    x0 = world.initial(3, 0.0, torch.Generator().manual_seed(0))
    assert x0.shape == (3, 8, len(lc.CHANNELS))  # lead-in + prompt, nothing perturbed at scale 0
    final, features = _run(world, shift_lm, x0)
    assert final.shape == (2, 3, 14, len(lc.CHANNELS))
    assert lc.continuations(final[0]) == ["123456"] * 3  # '0' + 1, + 2, ...
    assert lc.continuations(final[0], reference=True) == ["123456"] * 3
    assert (features["same_text"] == 1).all() and (features["converges"] == 1).all()
    assert lc.divergence_by_position(final).shape == (2, 3, 6)
    assert lc.divergence_by_position(final).abs().max() < 1e-12


def test_earlier_perturbations_never_change_the_continuation() -> None:
    world = _world(steps=6, perturb=["substitution", "prefix"], window=8)
    x0 = world.initial(1, 0.0, torch.Generator().manual_seed(0)).repeat(3, 1, 1)
    x0[0, 4, lc.TOKEN] = ord("z")  # the prompt's first token
    x0[1, 6, lc.TOKEN] = ord("Q")  # its second-to-last
    x0[2, :4, lc.TOKEN] = torch.tensor([ord(c) for c in "#%&!"]).double()  # prefix noise
    prefixed = world.initial(20, 3.0, torch.Generator().manual_seed(1))
    prefixed = prefixed[(prefixed[:, -1, lc.TOKEN] == ord("0"))]  # the last token untouched
    assert len(prefixed) > 0
    for states in (x0, prefixed):
        final, features = _run(world, shift_lm, states)
        assert lc.continuations(final[1]) == ["123456"] * len(states)
        assert lc.divergence_by_position(final).max() < 1e-12
        assert (features["same_text"] == 1).all() and (features["converges"] == 1).all()
        assert features["js_first"].abs().max() < 1e-12 and features["js_last"].abs().max() < 1e-12


def test_a_last_token_substitution_shifts_the_whole_continuation() -> None:
    world = _world(steps=8, perturb=["substitution"], window=1)
    x0 = world.initial(5, 1.0, torch.Generator().manual_seed(2))
    last = x0[:, -1, lc.TOKEN].long()
    assert (last != ord("0")).all() and (x0[:, :-1, lc.TOKEN] == x0[0, :-1, lc.REFERENCE]).all()
    final, features = _run(world, shift_lm, x0)
    expected = [bytes((t + k) % V for k in range(1, 9)).decode("utf-8", "replace") for t in last]
    assert lc.continuations(final[0]) == expected
    d = lc.divergence_by_position(final)
    assert torch.allclose(d, torch.full_like(d, math.log(2)), atol=1e-9)  # disjoint, everywhere
    assert (features["same_text"] == 0).all() and (features["converges"] == 0).all()


def test_converging_continuations_and_the_recomputed_divergence() -> None:
    world = _world(steps=16, perturb=["substitution"], window=1)
    x0 = world.initial(1, 0.0, torch.Generator().manual_seed(0)).repeat(2, 1, 1)
    x0[0, -1, lc.TOKEN] = ord("5")  # climbs to '<' five steps sooner than the reference
    x0[1, -1, lc.TOKEN] = ord("9")  # already at 57: '<' after three steps
    final, features = _run(world, saturating_lm, x0)
    d = lc.divergence_by_position(final)
    assert d[..., :3].min() > 0.69 and d[..., -4:].max() < 1e-12  # apart, then together
    assert (features["converges"] == 1).all() and (features["same_text"] == 0).all()
    assert (features["js_first"] > features["js_last"]).all()
    again = lc.recompute_divergence(saturating_lm, final, context=128)
    assert torch.allclose(again, d, atol=1e-12)
    assert torch.allclose(
        lc.recompute_divergence(saturating_lm, final, context=6), d, atol=1e-12
    )  # sliding windows: the saturating LM only looks at the last token


def test_initial_perturbations_and_their_scale() -> None:
    world = _world(prompt="Assignment statements", window=8, steps=4)
    assert set(world.factors) == {"substitution", "prefix"} and not world.differentiable
    ref = world.initial(1, 0.0, torch.Generator().manual_seed(0))[0, :, lc.REFERENCE]
    x = world.initial(200, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(x, world.initial(200, 1.0, torch.Generator().manual_seed(3)))
    changed = x[..., lc.TOKEN] != ref
    assert (changed[:, 4:].sum(1) == 1).all()  # exactly one substitution at scale 1 ...
    assert not changed[:, 4:-8].any()  # ... among the prompt's last 8 tokens
    assert (changed[:, :4].sum(1) == 4).all()  # four prefix tokens, overwriting the lead-in
    new = x[..., lc.TOKEN][changed]
    assert ((new >= 32) & (new < 127)).all()  # printable ASCII
    half = world.initial(2000, 0.5, torch.Generator().manual_seed(4))
    substitutions = (half[..., 4:, lc.TOKEN] != ref[4:]).sum(1).double()
    assert substitutions.mean().item() == pytest.approx(0.5, abs=0.05)  # stochastic rounding
    assert (half[:, 0, lc.SEED] == 0).all()  # greedy: no seed factor


def test_sampling_seeds_are_a_factor_and_deterministic() -> None:
    world = _world(steps=12, temperature=1.0, perturb=["seed"])
    assert set(world.factors) == {"seed"} and world.constants == {"temperature": 1.0}

    def flat(inputs: Tensor) -> Tensor:  # uniform over 'a'..'z'
        logits = torch.full((*inputs.shape, V), -30.0, dtype=torch.float64)
        logits[..., 97:123] = 0.0
        return logits

    nominal = world.initial(2, 0.0, torch.Generator().manual_seed(0))
    final, features = _run(world, flat, nominal)
    assert (features["same_text"] == 1).all()  # the reference's seed: the same draws
    x0 = world.initial(6, 1.0, torch.Generator().manual_seed(5))
    assert (x0[:, 0, lc.SEED] != 0).all()
    final, features = _run(world, flat, x0)
    again, _ = _run(world, flat, x0)
    assert torch.equal(final, again)  # seeded: the same rollout twice
    assert (features["same_text"] == 0).all()  # 26^12 texts: another seed, another text
    assert all(set(t) <= set("abcdefghijklmnopqrstuvwxyz") for t in lc.continuations(final[0]))
    assert lc.divergence_by_position(final).max() < 1e-12  # same model: same distributions


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "café", "vocab": 128}, "outside the vocabulary"),
        ({"prompt": "bad \ud800"}, "cannot encode"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"perturb": ["seed"]}, "temperature > 0"),
        ({"perturb": ["typo"]}, "unknown factor"),
        ({"prompt": "x" * 200}, "context"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_options_are_one_line(options: dict, says: str) -> None:
    with pytest.raises(UserError, match=says) as info:
        get_world("lm-continuation", options)
    assert "\n" not in str(info.value)


def test_a_policy_of_the_wrong_vocabulary_is_refused() -> None:
    world = _world(steps=2, vocab=128)
    x0 = initial_batch(world.initial(2, 1.0, torch.Generator().manual_seed(0)), 1)
    with pytest.raises(ValueError, match="logits"):
        rollout(world, shift_lm, x0)


def test_tiny_lm_ensemble_rolls_out(tmp_path: Path) -> None:
    """Two tiny-lm members trained a few steps from the world's own [task] section."""
    pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    from attractor.config import parse_config
    from attractor.runs.launch import train
    from attractor.world import EnsemblePolicy

    world = get_world(
        "lm-continuation",
        {
            "prompt": "Assignment statements",
            "lead_in": "\n\n",
            "steps": 12,  # 23 + 12 tokens > context 32: the last steps slide
            "context": 32,
            "task_options": {"layers": 1, "width": 32, "heads": 4, "windows_per_document": 2},
        },
    )
    config = parse_config(
        {
            "task": world.task,
            "trainer": {"steps": 6, "batch_size": 8, "optimizer": "adam", "lr": 3e-3},
            "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
            "run": {"snapshots": 2},
        }
    )
    ensemble = train(config, tmp_path / "run")
    params, buffers = ensemble.stacked()
    policy = EnsemblePolicy(ensemble.module(ensemble.members[0]), params, buffers)
    x0 = world.initial(6, 2.0, torch.Generator().manual_seed(0))
    final, features = _run(world, policy, x0)
    assert final.shape == (2, 6, 23 + 12, len(lc.CHANNELS))
    for name in ("js_first", "js_last", "js_mean"):
        value = features[name]
        assert value.shape == (2, 6) and torch.isfinite(value).all()
        assert ((value >= 0) & (value <= math.log(2))).all()
    assert features["same_text"].dtype == torch.int64 and features["converges"].dtype == torch.int64
    d = lc.divergence_by_position(final)
    assert ((d >= 0) & (d <= math.log(2))).all()
    assert torch.allclose(lc.recompute_divergence(policy, final, context=32), d, atol=1e-6)
    # Members continue their own reference: the reference channel may differ between them.
    assert (final[:, :, :23, lc.REFERENCE] == final[0, 0, :23, lc.REFERENCE]).all()


def test_at_sets_counts_and_is_the_same_on_every_call() -> None:
    world = _world(prompt="Assignment statements", window=8, steps=4)
    values = {
        "substitution": torch.tensor([0.0, 1.0, -3.0, 2.4]),
        "prefix": torch.tensor([0.0, 2.0, 0.0, 9.0]),
    }
    assert world.at is not None
    x = world.at(values)
    ref = x[0, :, lc.REFERENCE]
    assert torch.equal(x[0, :, lc.TOKEN], ref)  # both counts 0: the nominal prompt
    changed = x[..., lc.TOKEN] != ref
    assert changed[:, 4:].sum(1).tolist() == [0, 1, 3, 2]  # round(|v|) substitutions
    assert changed[:, :4].sum(1).tolist() == [0, 2, 0, 4]  # prefix capped at the lead-in
    assert torch.equal(x, world.at(values))
    with pytest.raises(UserError, match="factor 'seed' is not perturbed"):
        world.at({"seed": torch.tensor([1.0])})


def test_a_basin_map_over_substitutions_of_the_last_token() -> None:
    from attractor.world.basins import basin_map

    world = _world(steps=4, perturb=["substitution"], window=1)
    frame = basin_map(world, shift_lm, "substitution", [-1.0, 0.0, 0.4, 1.0], members=2)
    # No substitution (|v| < 0.5): the reference's text; one: every token shifted.
    assert frame["label"].tolist() == [0, 1, 1, 0] and (frame["share"] == 1).all()


def test_describe_shows_the_prompt_tail_and_the_continuation() -> None:
    world = _world(steps=6, window=3)
    x0 = world.initial(2, 0.0, torch.Generator().manual_seed(0))
    final, _ = _run(world, shift_lm, x0)
    assert world.describe is not None
    assert world.describe(final[0]) == ["…bc0 ⟶ 123456"] * 2


class _Module(torch.nn.Module):
    """``shift_lm`` as a module over ``[b, T]`` (what a loaded causal LM is), counting calls."""

    def __init__(self, offset: int = 1) -> None:
        super().__init__()
        self.offset, self.calls = offset, 0

    def forward(self, ids: Tensor) -> Tensor:
        self.calls += 1
        return 30.0 * torch.nn.functional.one_hot((ids + self.offset) % V, V).double()


def test_language_policy_is_each_module_on_its_row_in_chunks() -> None:
    modules = [_Module(1), _Module(2)]
    inputs = torch.randint(0, V, (2, 5, 7))
    policy = lc.LanguagePolicy(modules, vocab=V, budget=2 * 7 * V)  # two rows per call
    out = policy(inputs)
    assert out.shape == (2, 5, V) and [m.calls for m in modules] == [3, 3]
    for i, module in enumerate(modules):
        assert torch.equal(out[i], module(inputs[i])[:, -1, :])
    with pytest.raises(ValueError, match="member rows"):
        policy(inputs[:1])


def test_a_model_with_its_own_tokenizer_gets_its_own_world() -> None:
    pytest.importorskip("transformers", reason="Hugging Face tokenizers need attractor[lm]")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from attractor.tasks.lm_models import HFTokenizer, LanguageModel

    words = Tokenizer(
        models.WordLevel({f"w{i}": i for i in range(255)} | {"[UNK]": 255}, unk_token="[UNK]")
    )
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = HFTokenizer(PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]"))
    lms = [LanguageModel(_Module(1), tokenizer, V, 64, f"m{i}") for i in range(2)]
    world = get_world(
        "lm-continuation", {"prompt": "w1 w2 w3", "lead_in": "w0 w0", "steps": 4, "window": 2}
    )
    assert world.for_model is not None
    made, policy = world.for_model(lms)
    assert made.options["tokenizer"] == tokenizer.fingerprint and made.options["context"] == 64
    x0 = made.initial(1, 0.0, torch.Generator().manual_seed(0))
    assert x0[0, :, lc.TOKEN].long().tolist() == [0, 0, 1, 2, 3]  # lead-in + prompt, by words
    final = rollout(made, policy, initial_batch(x0, 2)).final
    assert made.describe is not None
    assert made.describe(final[0]) == ["…w2 w3 ⟶ w4 w5 w6 w7"]
    perturbed = made.initial(50, 1.0, torch.Generator().manual_seed(1))[..., lc.TOKEN].long()
    assert (perturbed < 255).all()  # substitutes and prefix noise: words, never [UNK]
    with pytest.raises(UserError, match="vocab is 128"):
        get_world("lm-continuation", {"prompt": "w1", "vocab": 128}).for_model(lms)  # type: ignore[misc]
