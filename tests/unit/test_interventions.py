"""Stability interventions of the trainer against their references: label smoothing against
torch's, gradient clipping against ``clip_grad_norm_``, SAM's step against its two-pass
definition, each for every member of a vectorized chunk (the member invariant itself is in
tests/unit/test_engine.py); and members with different interventions in one chunk, each
bitwise the member it is alone.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.tasks import build_task
from attractor.training.chunk import Chunk
from attractor.training.loss import per_example_loss
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@settings(max_examples=25, deadline=None)
@given(
    smoothing=st.floats(0.0, 0.9),
    seed=st.integers(0, 1000),
    classes=st.integers(2, 12),
)
def test_label_smoothing_is_torchs(smoothing: float, seed: int, classes: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, classes, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (3, 7), generator=generator)
    task = build_task(tiny_config().task)
    trainer = tiny_config(trainer={"label_smoothing": smoothing}).trainer
    ours = per_example_loss(task, trainer, logits, y)
    reference = F.cross_entropy(
        logits.reshape(-1, classes), y.reshape(-1), reduction="none", label_smoothing=smoothing
    ).reshape(3, 7)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def _member_grads(chunk: Chunk, i: int, x: torch.Tensor, y: torch.Tensor, sam: float = 0.0):
    """Member ``i``'s gradient the plain way: its module, autograd, and SAM's two passes."""
    module = copy.deepcopy(chunk.template).double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(chunk.params[name][i].double())
    trainer = chunk.config.trainer

    def grad_at(shift: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        moved = copy.deepcopy(module)
        if shift is not None:
            with torch.no_grad():
                for name, p in moved.named_parameters():
                    p.add_(shift[name])
        loss = per_example_loss(chunk.task, trainer, moved(x[i].double()), y[i]).mean()
        loss.backward()
        return {k: p.grad.detach().clone() for k, p in moved.named_parameters()}

    g = grad_at(None)
    if sam:
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        g = grad_at({k: sam * v / (norm + 1e-12) for k, v in g.items()})
    return module, g


def _chunk(**trainer: object) -> tuple[Chunk, torch.Tensor, torch.Tensor]:
    config = tiny_config(trainer=trainer)
    task = build_task(config.task)
    rows = [PlanRow(member=i, init_seed=i, data_seed=10 + i) for i in range(3)]
    chunk = Chunk(task, config, rows, vectorized=True, start=None)
    for name in chunk.params:  # float64, so the comparison is about the method, not rounding
        chunk.params[name] = chunk.params[name].detach().double().requires_grad_(True)
    x, y = chunk.next_batch()
    return chunk, x.double(), y


@pytest.mark.parametrize("clip", [0.05, 1e6])
def test_clipping_is_clip_grad_norm_per_member(clip: float) -> None:
    chunk, x, y = _chunk(clip_norm=clip)
    _, grads = chunk.gradients(x, y)
    for i in range(3):
        module, g = _member_grads(chunk, i, x, y)
        for name, p in module.named_parameters():
            p.grad = g[name]
        norm = torch.nn.utils.clip_grad_norm_(list(module.parameters()), clip)
        assert (norm > clip) == (clip == 0.05)  # the small norm clips, the large one does not
        for name, p in module.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-10, atol=1e-12)


def test_sam_is_the_gradient_at_the_ascended_weights() -> None:
    rho = 0.05
    chunk, x, y = _chunk(sam_rho=rho)
    loss, grads = chunk.gradients(x, y)
    plain, _, _ = _chunk()
    plain_loss, plain_grads = plain.gradients(x, y)
    torch.testing.assert_close(loss, plain_loss)  # the loss reported is at w itself
    for i in range(3):
        _, g = _member_grads(chunk, i, x, y, sam=rho)
        for name in g:
            torch.testing.assert_close(grads[name][i], g[name], rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(grads[k], plain_grads[k]) for k in grads)


def test_label_smoothing_needs_a_cross_entropy_task(tmp_path) -> None:
    from attractor.config import parse_config
    from attractor.runs.launch import train

    config = parse_config(
        {
            "task": {"name": "denoise-digits", "hidden": [8], "draws": 1},
            "trainer": {"steps": 2, "label_smoothing": 0.1},
            "plan": {"members": 1},
        }
    )
    with pytest.raises(UserError, match="label_smoothing needs a cross-entropy task") as info:
        train(config, tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_tangent_refuses_steps_it_does_not_replay() -> None:
    from attractor.tangent.unroll import unroll

    config = tiny_config(trainer={"sam_rho": 0.05})
    task = build_task(config.task)
    with pytest.raises(UserError, match="sam_rho"):
        unroll(task, config, [PlanRow(member=0)])


def _every_step(trainer: dict[str, object], steps: int = 8) -> dict[int, dict[str, torch.Tensor]]:
    """Member 1's snapshot after every step of a 3-member vectorized chunk (float64)."""
    from attractor.training.engine import train_chunk

    config = tiny_config(
        trainer={"steps": steps, **trainer}, run={"snapshots": list(range(steps + 1))}
    )
    task = build_task(config.task)
    rows = [PlanRow(member=i, init_seed=i, data_seed=10 + i) for i in range(3)]
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def sink(row: PlanRow, step: int, tensors: dict, metrics: dict) -> None:
        if row.member == 1:
            seen[step] = {k: v.double() for k, v in tensors.items()}

    train_chunk(task, config, rows, True, sink)
    return seen


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ema_is_the_hand_computed_average_of_the_weights(optimizer: str) -> None:
    decay = 0.7
    raw = _every_step({"optimizer": optimizer, "lr": 0.02})
    averaged = _every_step({"optimizer": optimizer, "lr": 0.02, "ema_decay": decay})
    expected = dict(raw[0])
    for step in range(1, 9):
        expected = {k: decay * expected[k] + (1 - decay) * raw[step][k] for k in expected}
        for name, value in expected.items():
            torch.testing.assert_close(averaged[step][name], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(averaged[8]["0.weight"], raw[8]["0.weight"])


def test_swa_is_the_mean_of_the_weights_from_its_start() -> None:
    raw = _every_step({"optimizer": "sgd", "lr": 0.05})
    averaged = _every_step({"optimizer": "sgd", "lr": 0.05, "swa_start": 0.5})
    for step in range(0, 4):  # before ceil(0.5 * 8) = 4 the model is the weights themselves
        for name, value in raw[step].items():
            torch.testing.assert_close(averaged[step][name], value)
    for step in range(4, 9):
        for name in raw[step]:
            mean = torch.stack([raw[t][name] for t in range(4, step + 1)]).mean(0)
            torch.testing.assert_close(averaged[step][name], mean, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_keeps_the_average(tmp_path) -> None:
    from attractor.runs.resume import Checkpoint, load_checkpoint, save_checkpoint
    from attractor.training.chunk import Start

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    state = Start(3, weights, {}, {}, average={"w": weights["w"] / 2}, averaged=2)
    save_checkpoint(tmp_path, 0, Checkpoint(state, [], {}))
    loaded = load_checkpoint(tmp_path, 0)
    assert loaded is not None and loaded.state.averaged == 2
    assert loaded.state.average is not None
    torch.testing.assert_close(loaded.state.average["w"], weights["w"] / 2)


def test_one_weight_average_at_a_time() -> None:
    with pytest.raises(UserError, match="ema_decay or swa_start, not both") as info:
        tiny_config(trainer={"ema_decay": 0.9, "swa_start": 0.5})
    assert "\n" not in str(info.value)


# Member by member: trials with their own interventions share one chunk (attractor stabilize).
MIXED = [
    {},  # every option off: the same numbers as a chunk that skips every option's path
    {"label_smoothing": 0.1, "clip_norm": 1.0, "sam_rho": 0.05, "ema_decay": 0.9},
    {"label_smoothing": 0.1, "swa_start": 0.5},
    {"clip_norm": 1.0, "sam_rho": 0.05},
]


def _trained(config, rows, trainers=None):
    """Every snapshot's tensors and full state of each member of one vectorized chunk."""
    from attractor.training.engine import train_chunk

    seen: dict[tuple[int, int], tuple[dict, object]] = {}

    def sink(row: PlanRow, step: int, tensors: dict, metrics: dict) -> None:
        seen[row.member, step] = (tensors, None)

    def on_state(row: PlanRow, step: int, state) -> None:
        seen[row.member, step] = (seen[row.member, step][0], state)

    task = build_task(config.task)
    train_chunk(task, config, rows, True, sink, on_state=on_state, trainers=trainers)
    return seen


def test_a_member_is_bitwise_the_same_in_a_chunk_of_other_interventions() -> None:
    configs = [tiny_config(trainer=t, run={"snapshots": list(range(13))}) for t in MIXED]
    rows = [PlanRow(member=i, init_seed=i, data_seed=10 + i) for i in range(len(MIXED))]
    together = _trained(configs[0], rows, [c.trainer for c in configs])
    for row, config in zip(rows, configs, strict=True):
        alone = _trained(config, [row])  # a chunk of one, padded, its trainer the config's
        steps = sorted(step for member, step in alone if member == row.member)
        assert len(steps) == 13  # after every step
        for step in steps:
            (tensors, state), (own, own_state) = together[row.member, step], alone[row.member, step]
            for name, value in own.items():
                assert torch.equal(tensors[name], value), (row.member, step, name)
            assert state.averaged == own_state.averaged
            assert (state.average is None) == (own_state.average is None), (row.member, step)
            for name, value in (own_state.average or {}).items():
                assert torch.equal(state.average[name], value)
    # The options did act: member 1's model is not what it is with every option off.
    plain = _trained(configs[0], rows[1:2])
    last = max(step for _, step in plain)
    assert not torch.equal(plain[1, last][0]["0.weight"], together[1, last][0]["0.weight"])
    assert together[2, last][1].averaged == 7  # SWA: steps ceil(0.5 * 12) = 6 .. 12


def test_a_chunk_refuses_trainers_that_differ_outside_the_memberwise_options() -> None:
    config = tiny_config()
    task = build_task(config.task)
    rows = [PlanRow(member=i, init_seed=i) for i in range(2)]
    other = tiny_config(trainer={"lr": 0.01, "sam_rho": 0.05}).trainer
    with pytest.raises(ValueError, match=r"only in .*differs in \['lr'\]"):
        Chunk(task, config, rows, True, None, trainers=[config.trainer, other])
    with pytest.raises(ValueError, match="one trainer per row"):
        Chunk(task, config, rows, True, None, trainers=[config.trainer])


def test_label_smoothing_of_any_member_needs_a_cross_entropy_task() -> None:
    from attractor.config import parse_config

    config = parse_config(
        {
            "task": {"name": "denoise-digits", "hidden": [8], "draws": 1},
            "trainer": {"steps": 2},
            "plan": {"members": 1},
        }
    )
    smoothing = config.trainer.model_copy(update={"label_smoothing": 0.1})
    rows = [PlanRow(member=i, init_seed=i) for i in range(2)]
    with pytest.raises(UserError, match="label_smoothing needs a cross-entropy task"):
        Chunk(
            build_task(config.task), config, rows, True, None, trainers=[config.trainer, smoothing]
        )


def test_train_predict_trains_each_row_and_trainer_once() -> None:
    from attractor.stack.fit import train_predict

    config = tiny_config()
    task = build_task(config.task)
    off, on = (tiny_config(trainer=t).trainer for t in MIXED[:2])
    row, other = PlanRow(member=0, init_seed=1), PlanRow(member=5, init_seed=2)
    rows, trainers = [row, row, other, row], [off, on, on, on]
    outputs, diverged = train_predict(task, config, rows, "vectorized", task.x_test, trainers)
    assert outputs.shape[0] == 4 and not diverged.any()
    assert not torch.equal(outputs[0], outputs[1])  # same row, other trainer: another member
    assert torch.equal(outputs[1], outputs[3])  # same row and trainer: the same member
    alone, _ = train_predict(task, config, [row], "vectorized", task.x_test, [on])
    assert torch.equal(alone[0], outputs[1])
