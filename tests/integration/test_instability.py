"""Spawning children from a parent's full training state, and the instability analysis on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from attractor.config import Config, parse_config
from attractor.errors import UserError
from attractor.experiments.instability import (
    BARRIERS,
    InstabilitySettings,
    instability_analysis,
    onset,
    run_instability,
)
from attractor.optim.schedules import trainer_lr_factor
from attractor.plan import PlanRow
from attractor.runs.store import RunStore
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.data import BatchStream, member_pool
from attractor.training.engine import Start, train_chunk
from attractor.training.init import initial_module
from tests.conftest import tiny_config, tiny_mapping

Final = dict[int, dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(tiny_config().task)


def run(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    vectorized: bool,
    start: list[Start] | None = None,
) -> tuple[Final, dict[int, list[int]], dict[int, Start]]:
    """Train a chunk: last snapshot per member, its snapshot steps, and its states at each."""
    last: Final = {}
    seen: dict[int, list[int]] = {}
    states: dict[int, Start] = {}

    def sink(
        row: PlanRow, step: int, tensors: dict[str, torch.Tensor], _metrics: dict[str, float]
    ) -> None:
        last[row.member] = tensors
        seen.setdefault(row.member, []).append(step)

    def capture(row: PlanRow, step: int, state: Start) -> None:
        if row.member == rows[0].member:
            states[step] = state

    train_chunk(task, config, rows, vectorized, sink, start=start, on_state=capture)
    return last, seen, states


def hand_run(
    task: Task, config: Config, row: PlanRow, start: Start, optimizer: str
) -> dict[str, torch.Tensor]:
    """The specification: nn.Module + torch.optim from ``start``, the schedule going on from its
    step.
    """
    model = initial_module(task, row)
    model.load_state_dict({**start.params, **start.buffers})
    steps, trainer = config.trainer.steps, config.trainer
    params = dict(model.named_parameters())
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params.values(), lr=row.lr, momentum=row.momentum
        )
        for name, p in params.items():
            opt.state[p] = {
                "momentum_buffer": start.optimizer_state[name]["momentum_buffer"].clone()
            }
    else:
        opt = torch.optim.Adam(params.values(), lr=row.lr, betas=(row.momentum, trainer.beta2))
        for name, p in params.items():
            slots = start.optimizer_state[name]
            opt.state[p] = {
                "step": torch.tensor(float(start.step)),
                "exp_avg": slots["exp_avg"].clone(),
                "exp_avg_sq": slots["exp_avg_sq"].clone(),
            }
    stream = BatchStream(member_pool(task, row), row.batch_size, row.data_seed)
    for step in range(start.step + 1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = row.lr * trainer_lr_factor(trainer, step, steps)
        index = stream.next()
        loss = nn.functional.cross_entropy(model(task.x_train[index]), task.y_train[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("vectorized", [True, False])
def test_spawn_at_step_zero_equals_a_fresh_member(digits: Task, vectorized: bool) -> None:
    config = tiny_config(trainer={"steps": 15}, run={"snapshots": [0, 6]})
    parent = PlanRow(member=0, init_seed=3, data_seed=4)
    _, _, states = run(digits, config, [parent], vectorized)
    assert sorted(states) == [0, 6, 15]
    # Children with another init seed: only the start state may set their weights.
    children = [
        PlanRow(member=1, init_seed=99, data_seed=7),
        PlanRow(member=2, init_seed=98, data_seed=8),
    ]
    spawned, seen, _ = run(digits, config, children, vectorized, start=[states[0]] * 2)
    fresh, _, _ = run(
        digits,
        config,
        [PlanRow(member=1, init_seed=3, data_seed=7), PlanRow(member=2, init_seed=3, data_seed=8)],
        vectorized,
    )
    assert seen == {1: [0, 6, 15], 2: [0, 6, 15]}
    for member in (1, 2):
        assert all(torch.equal(spawned[member][k], fresh[member][k]) for k in fresh[member])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_spawned_child_continues_the_parents_optimizer_and_schedule(
    digits: Task, optimizer: str
) -> None:
    """The child's first step uses the parent's momentum / Adam moments and step count."""
    lr = 0.05 if optimizer == "sgd" else 0.01
    config = tiny_config(
        trainer={"steps": 14, "optimizer": optimizer, "lr": lr, "schedule": "cosine"},
        run={"snapshots": [5]},
    )
    parent = PlanRow(member=0, init_seed=1, data_seed=2, lr=lr, optimizer=optimizer)
    _, _, states = run(digits, config, [parent], vectorized=False)
    start = states[5]
    assert start.step == 5 and set(start.optimizer_state) == set(start.params)
    child = PlanRow(member=1, init_seed=1, data_seed=11, lr=lr, optimizer=optimizer)
    spawned, seen, _ = run(digits, config, [child], vectorized=False, start=[start])
    assert seen[1] == [5, 14]  # no snapshot before the child existed
    expected = hand_run(digits, config, child, start, optimizer)
    for name, value in expected.items():
        torch.testing.assert_close(spawned[1][name], value, rtol=0, atol=1e-6)
    # The carried state matters: forgetting it gives another result.
    blank = {
        name: {slot: torch.zeros_like(v) for slot, v in slots.items()}
        for name, slots in start.optimizer_state.items()
    }
    forgetful = hand_run(
        digits, config, child, Start(start.step, start.params, start.buffers, blank), optimizer
    )
    assert max((forgetful[k] - expected[k]).abs().max().item() for k in expected) > 1e-3


def test_start_must_match_the_rows(digits: Task) -> None:
    config = tiny_config()
    _, _, states = run(digits, config, [PlanRow(member=0)], vectorized=True)
    rows = [PlanRow(member=1), PlanRow(member=2)]
    with pytest.raises(ValueError, match="one state per row"):
        train_chunk(digits, config, rows, True, lambda *_: None, start=[states[0]])
    with pytest.raises(ValueError, match="all at one step"):
        train_chunk(digits, config, rows, True, lambda *_: None, start=[states[0], states[12]])
    with pytest.raises(ValueError, match="outside training"):
        train_chunk(digits, config, rows, True, lambda *_: None, start=[states[12], states[12]])


@pytest.mark.parametrize(
    ("spawn", "message"),
    [
        (
            [5, 30],
            r"spawn step 30 is at or past the end of training \(30 steps\); choose steps below 30",
        ),
        ([400], r"spawn step 400 is at or past the end of training"),
        ([0, -1], r"spawn step -1 is not a non-negative integer"),
        ([3, 3], r"spawn step 3 is given twice"),
        ([], r"no spawn steps given"),
    ],
)
def test_bad_spawn_steps_are_refused(spawn: list[int], message: str) -> None:
    with pytest.raises(UserError, match=message):
        instability_analysis(tiny_config(trainer={"steps": 30}), spawn, pairs=2)


def test_bad_pairs_and_threshold_are_refused() -> None:
    with pytest.raises(UserError, match="pairs must be at least 2"):
        instability_analysis(tiny_config(), [0], pairs=1)
    with pytest.raises(UserError, match="threshold is an error rate"):
        instability_analysis(tiny_config(), [0], pairs=2, threshold=2.0)


def test_tiny_instability_analysis(tmp_path: Path) -> None:
    config = tiny_config(trainer={"steps": 30})
    settings = InstabilitySettings(config=config, spawn_steps=[10, 0], pairs=2, points=9)
    result = run_instability(settings, tmp_path / "out")
    assert result.spawn_steps == [0, 10] and result.total_steps == 30
    table = result.table
    assert len(table) == 4 and table[["spawn_step", "pair"]].values.tolist() == [
        [0, 0],
        [0, 1],
        [10, 0],
        [10, 1],
    ]
    assert not table["diverged"].any()
    # Both forms are >= 0 by construction: the ends lie on the path (see connectivity).
    assert (table[list(BARRIERS)] >= 0).all().all()
    assert list(result.summary["spawn_step"]) == [0, 10] and (result.summary["pairs"] == 2).all()
    row = result.summary.iloc[0]
    assert row.barrier_error_ci_low <= row.barrier_error_mean <= row.barrier_error_ci_high
    assert len(result.curves) == 4 * 9
    shown = result.for_report()
    assert list(shown["curve"].columns) == ["spawn_step", "pairs", "barrier_mean", "low", "high"]
    assert shown["curve"]["barrier_mean"].tolist() == result.summary["barrier_error_mean"].tolist()
    again = instability_analysis(config, [0, 10], pairs=2, points=9)
    assert table.equals(again.table)
    saved = json.loads((tmp_path / "out" / "instability.json").read_text())
    assert saved["onset"] == result.onset and len(saved["table"]) == 4
    assert (tmp_path / "out" / "instability.parquet").exists() and (
        tmp_path / "out" / "instability.curves.parquet"
    ).exists()
    assert [r.kind for r in RunStore(tmp_path / "out").results()] == ["instability"]


def test_cli_writes_its_own_directory(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out the analysis gets runs/instability-<hash>; bad steps are refused, nothing
    left.
    """
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 20}))
    bad = cli(
        "instability", config, "--spawn-steps", "0,25", "--pairs", "2", "--out", tmp_path / "bad"
    )
    assert bad.code == 2 and "past the end" in bad.err and not (tmp_path / "bad").exists()
    monkeypatch.chdir(tmp_path)
    result = cli("instability", config, "--spawn-steps", "0,10", "--pairs", "2", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["spawn_steps"] == [0, 10]
    (out,) = (tmp_path / "runs").glob("instability-*")
    assert data["files"]["json"] == str(Path("runs") / out.name / "instability.json")
    assert (out / "instability.json").is_file() and (out / "report.html").is_file()


def test_onset_is_where_the_barrier_stays_below_threshold() -> None:
    import pandas as pd

    summary = pd.DataFrame({"spawn_step": [0, 5, 20, 100], "m": [0.08, 0.01, 0.05, 0.004]})
    assert onset(summary, "m", 0.02) == 100  # the dip at 5 is not stability
    assert onset(summary.assign(m=[0.01] * 4), "m", 0.02) == 0
    assert onset(summary.assign(m=[0.3] * 4), "m", 0.02) is None


@pytest.mark.slow
def test_example_shows_stability_setting_in_later() -> None:
    """The known answer of examples/instability.toml: unstable at spawn step 0, stable from 100."""
    from attractor.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "instability.toml")
    result = instability_analysis(config, [0, 100], pairs=8)
    early, late = result.summary.iloc[0], result.summary.iloc[1]
    assert early.barrier_error_ci_low > result.threshold  # clearly unstable at initialization
    assert late.barrier_error_mean < result.threshold
    assert result.onset == 100


def test_batchnorm_paths_can_be_reset_and_an_mlp_records_no_repair() -> None:
    """A reset changes a BatchNorm net's barriers (the interpolated statistics are replaced)
    and is recorded; for an MLP it is a no-op, recorded as none, with the same table."""
    mlp = tiny_config(trainer={"steps": 20})
    plain = instability_analysis(mlp, [0], pairs=2, points=5)
    reset = instability_analysis(mlp, [0], pairs=2, points=5, repair="reset")
    assert (plain.repair, reset.repair) == ("none", "none")
    assert plain.table.equals(reset.table)
    data = tiny_mapping(trainer={"steps": 20})
    data["task"] = {"name": "digits-cnn", "width": 4}
    cnn = parse_config(data)
    kept = instability_analysis(cnn, [0], pairs=2, points=5)
    fixed = instability_analysis(cnn, [0], pairs=2, points=5, repair="reset")
    assert (kept.repair, fixed.repair) == ("none", "reset")
    assert not kept.curves["loss"].equals(fixed.curves["loss"])
