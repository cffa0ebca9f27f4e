"""The training loop against its invariants: a member depends only on its plan row."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.runs.launch import resolve_strategy
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.data import BatchStream, member_pool, member_targets
from attractor.training.engine import Outcome, train_chunk
from attractor.training.init import initial_module
from attractor.training.snapshots import snapshot_steps
from tests.conftest import tiny_config

Final = dict[int, dict[str, torch.Tensor]]
SNAPSHOT_STEPS: dict[int, list[int]] = {}
LAST_METRICS: dict[int, dict[str, float]] = {}


def final_params(
    task: Task, config: Config, rows: list[PlanRow], vectorized: bool
) -> tuple[Final, list[Outcome]]:
    """Train ``rows`` as one chunk; the last snapshot of every member (steps in SNAPSHOT_STEPS)."""
    last: Final = {}
    SNAPSHOT_STEPS.clear()
    LAST_METRICS.clear()

    def sink(
        row: PlanRow, step: int, tensors: dict[str, torch.Tensor], metrics: dict[str, float]
    ) -> None:
        last[row.member] = tensors
        LAST_METRICS[row.member] = metrics
        SNAPSHOT_STEPS.setdefault(row.member, []).append(step)

    outcomes = train_chunk(task, config, rows, vectorized, sink)
    return last, outcomes


def rows_for(n: int, **common: object) -> list[PlanRow]:
    return [
        PlanRow(member=i, init_seed=i, data_seed=100 + i, bootstrap=i if i % 2 else None, **common)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(tiny_config().task)


CHUNK_TRAINERS = {
    "sgd": {"optimizer": "sgd"},
    "adam": {"optimizer": "adam", "lr": 0.01},
    # The stochastic, per-tensor cone draws its angles from the row; the penalty and the
    # path tracking add per-member sums that must not see the other members either.
    "cone-random": {
        "optimizer": "cone",
        "cone_angle": 0.6,
        "cone_random": True,
        "cone_per_tensor": True,
        "logit_penalty": 0.1,
    },
    # Stability interventions: SAM's second pass and the clipping norm are per member too.
    "sam-clip-smoothing": {
        "optimizer": "sgd",
        "sam_rho": 0.05,
        "clip_norm": 0.5,
        "label_smoothing": 0.1,
    },
    "ema": {"optimizer": "adam", "lr": 0.01, "ema_decay": 0.9},
    "swa": {"optimizer": "sgd", "swa_start": 0.5},
}


@pytest.mark.parametrize("trainer", CHUNK_TRAINERS)
def test_member_is_bitwise_independent_of_its_chunk(digits: Task, trainer: str) -> None:
    config = tiny_config(trainer=CHUNK_TRAINERS[trainer], run={"track_path": True})
    rows = rows_for(8, optimizer=CHUNK_TRAINERS[trainer]["optimizer"])
    together, _ = final_params(digits, config, rows, vectorized=True)
    paths = dict(LAST_METRICS)
    chunks = [rows[0:1], rows[1:4], rows[4:8]]  # alone (padded), 3, 4
    for chunk in chunks:
        apart, _ = final_params(digits, config, chunk, vectorized=True)
        for row in chunk:
            for name, value in together[row.member].items():
                assert torch.equal(value, apart[row.member][name]), (row.member, name, len(chunk))
            for name in ("path_length", "init_distance"):
                assert paths[row.member][name] == LAST_METRICS[row.member][name]


def test_path_tracking_matches_the_snapshots(digits: Task) -> None:
    """With a snapshot after every step, path length is the sum of the snapshot-to-snapshot
    distances.
    """
    steps = 6
    config = tiny_config(
        trainer={"steps": steps}, run={"track_path": True, "snapshots": list(range(steps + 1))}
    )
    seen: dict[int, tuple[dict[str, torch.Tensor], dict[str, float]]] = {}

    def sink(
        row: PlanRow, step: int, tensors: dict[str, torch.Tensor], metrics: dict[str, float]
    ) -> None:
        if row.member == 1:
            seen[step] = ({k: v.double() for k, v in tensors.items()}, metrics)

    train_chunk(digits, config, rows_for(3), True, sink)

    def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return float(sum((a[k] - b[k]).square().sum() for k in a).sqrt())

    expected = 0.0
    for step in range(1, steps + 1):
        expected += distance(seen[step][0], seen[step - 1][0])
        metrics = seen[step][1]
        assert metrics["path_length"] == pytest.approx(expected, rel=1e-9)
        assert metrics["init_distance"] == pytest.approx(
            distance(seen[step][0], seen[0][0]), rel=1e-9
        )
    assert seen[0][1]["path_length"] == 0 and seen[0][1]["init_distance"] == 0
    assert metrics["path_length"] > metrics["init_distance"]


def test_member_same_inside_64(digits: Task) -> None:
    config = tiny_config(trainer={"steps": 4}, run={"snapshots": [4]})
    rows = rows_for(64)
    big, _ = final_params(digits, config, rows, vectorized=True)
    small, _ = final_params(digits, config, rows[10:14], vectorized=True)
    for member in range(10, 14):
        assert all(torch.equal(big[member][k], small[member][k]) for k in big[member])


def test_vectorized_matches_loop(digits: Task) -> None:
    config = tiny_config(trainer={"steps": 20})
    rows = rows_for(4, label_noise=0.1, noise_seed=3)
    vec, _ = final_params(digits, config, rows, vectorized=True)
    loop: Final = {}
    for row in rows:
        loop.update(final_params(digits, config, [row], vectorized=False)[0])
    worst = max((vec[m][k] - loop[m][k]).abs().max().item() for m in vec for k in vec[m])
    assert worst < 1e-5


@pytest.mark.parametrize("logit_penalty", [0.0, 0.5])
def test_plain_loop_is_the_specification(digits: Task, logit_penalty: float) -> None:
    """The loop strategy equals a hand-written nn.Module + torch.optim.SGD loop on the same batches.

    With ``logit_penalty`` the hand-written loss adds spectral decoupling's ``lambda/2 |logits|^2``.
    """
    config = tiny_config(trainer={"steps": 10, "logit_penalty": logit_penalty})
    row = PlanRow(member=0, init_seed=7, data_seed=8, lr=0.05, momentum=0.9, batch_size=32)
    ours, _ = final_params(digits, config, [row], vectorized=False)
    model = initial_module(digits, row)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    stream = BatchStream(member_pool(digits, row), 32, row.data_seed)
    for _ in range(10):
        index = stream.next()
        logits = model(digits.x_train[index])
        loss = (
            nn.functional.cross_entropy(logits, digits.y_train[index])
            + logit_penalty / 2 * logits.pow(2).sum(1).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ours[0][name], value, rtol=0, atol=1e-6)


def test_diverged_member_is_recorded_and_others_unaffected(digits: Task) -> None:
    config = tiny_config(trainer={"steps": 15})
    rows = rows_for(4)
    exploding = PlanRow(member=9, init_seed=9, data_seed=9, lr=1e6)
    with_bad, outcomes = final_params(digits, config, rows + [exploding], vectorized=True)
    steps_of_exploding = list(SNAPSHOT_STEPS[9])
    alone, _ = final_params(digits, config, rows, vectorized=True)
    by_member = {o.member: o for o in outcomes}
    assert by_member[9].status == "diverged" and 1 <= by_member[9].diverged_step <= 15
    assert max(steps_of_exploding) < by_member[9].diverged_step  # no snapshot after divergence
    for row in rows:
        assert by_member[row.member].status == "done"
        assert all(
            torch.equal(with_bad[row.member][k], alone[row.member][k]) for k in alone[row.member]
        )


def test_data_perturbations(digits: Task) -> None:
    base = PlanRow(member=0)
    assert torch.equal(member_pool(digits, base), torch.arange(digits.n_train))
    boot = member_pool(digits, PlanRow(member=0, bootstrap=5))
    assert len(boot) == digits.n_train and len(torch.unique(boot)) < digits.n_train
    assert torch.equal(
        boot, member_pool(digits, PlanRow(member=1, bootstrap=5))
    )  # depends on the seed only
    held = member_pool(digits, PlanRow(member=0, holdout_group=3))
    assert (digits.y_train[held] != 3).all() and len(held) == int((digits.y_train != 3).sum())
    noisy = member_targets(digits, PlanRow(member=0, label_noise=0.2, noise_seed=1))
    rate = (noisy != digits.y_train).float().mean().item()
    assert 0.15 < rate < 0.25 and noisy.max() < 10


def test_batch_stream_passes_over_the_pool() -> None:
    pool = torch.arange(10, 20)
    stream = BatchStream(pool, 3, data_seed=4)
    first_pass = torch.cat([stream.next() for _ in range(3)])
    assert len(torch.unique(first_pass)) == 9 and set(first_pass.tolist()) <= set(pool.tolist())
    again = BatchStream(pool, 3, data_seed=4)
    assert torch.equal(torch.cat([again.next() for _ in range(3)]), first_pass)


def test_init_perturbations_are_seeded(digits: Task) -> None:
    plain = initial_module(digits, PlanRow(member=0, init_seed=1))
    same = initial_module(digits, PlanRow(member=5, init_seed=1))
    scaled = initial_module(digits, PlanRow(member=0, init_seed=1, init_scale=2.0))
    noisy = initial_module(digits, PlanRow(member=0, init_seed=1, init_noise=0.01, noise_seed=2))
    for a, b, c, d in zip(
        plain.parameters(), same.parameters(), scaled.parameters(), noisy.parameters(), strict=True
    ):
        assert torch.equal(a, b)
        assert torch.equal(c, 2 * a)
        assert 0 < (d - a).abs().max() < 0.1


def test_snapshot_steps() -> None:
    assert snapshot_steps(4, 1000) == [0, 1, 10, 100, 1000]
    assert snapshot_steps([5, 2], 10) == [0, 2, 5, 10]
    assert snapshot_steps(1, 7) == [0, 7]


class _BatchNormNet(nn.Module):
    """BatchNorm keeps running statistics in buffers, updated in place during training."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _dropout_net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def _as_task(digits: Task, make_model: object) -> Task:
    return Task(
        "custom",
        digits.x_train,
        digits.y_train,
        digits.x_test,
        digits.y_test,
        make_model,
        num_classes=10,
    )


def test_buffers_train_alike_in_both_strategies(digits: Task) -> None:
    task = _as_task(digits, _BatchNormNet)
    config = tiny_config()
    vec, _ = final_params(task, config, rows_for(2), vectorized=True)
    loop: Final = {}
    for row in rows_for(2):
        loop.update(final_params(task, config, [row], vectorized=False)[0])
    assert not torch.equal(vec[0]["body.1.running_mean"], torch.zeros(16))  # buffers were trained
    for member in (0, 1):
        for name in vec[member]:
            torch.testing.assert_close(vec[member][name], loop[member][name], rtol=0, atol=1e-5)


def test_random_forward_falls_back_to_loop_and_stays_seeded(digits: Task) -> None:
    task = _as_task(digits, _dropout_net)
    assert resolve_strategy(tiny_config(run={"strategy": "auto"}), task) == "loop"
    with pytest.raises(UserError, match="cannot be trained with strategy 'vectorized'"):
        resolve_strategy(tiny_config(run={"strategy": "vectorized"}), task)
    row = rows_for(1)[0]
    first, outcomes = final_params(task, tiny_config(), [row], vectorized=False)
    second, _ = final_params(task, tiny_config(), [row], vectorized=False)
    assert outcomes[0].status == "done"
    assert all(torch.equal(first[0][k], second[0][k]) for k in first[0])
