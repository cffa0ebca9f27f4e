"""Killed at any step, a run resumes every member from its checkpoint, bitwise equal to an
uninterrupted run (issue 16, case 9): the engine's resume, then whole runs killed at
random points, gracefully (a signal: checkpoint, then stop) or hard (nothing more written).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from attractor.config import Config
from attractor.plan import PlanRow, build_plan
from attractor.runs import launch
from attractor.runs.launch import train
from attractor.runs.resume import RESUME
from attractor.runs.store import RunStore
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training import interrupt
from attractor.training.chunk import Start
from attractor.training.engine import Checkpoints, StopRequested, train_chunk
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 24
#: Random kill points tried per session (the README's reliability section counts them).
KILL_EXAMPLES = 30
Snapshots = dict[tuple[int, int], dict[str, torch.Tensor]]


class _Killed(Exception):
    """A hard kill: the process is gone before anything more is written."""


def _rows(n: int) -> list[PlanRow]:
    return [
        PlanRow(member=i, init_seed=i, data_seed=50 + i, bootstrap=i if i % 2 else None)
        for i in range(n)
    ]


def _dropout_task(digits: Task) -> Task:
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 10))

    return Task(
        "custom",
        digits.x_train,
        digits.y_train,
        digits.x_test,
        digits.y_test,
        model,
        num_classes=10,
    )


ENGINE_CASES = {
    # (trainer, vectorized, dropout model): optimizer state of every kind, tracked paths,
    # and the loop strategy's forward random stream (dropout).
    "adam-vectorized": ({"optimizer": "adam", "lr": 0.01}, True, False),
    "cone-vectorized": ({"optimizer": "cone", "cone_angle": 0.5, "cone_random": True}, True, False),
    "sgd-dropout-loop": ({"optimizer": "sgd", "momentum": 0.9}, False, True),
    # Weight averages are state too: a resumed member goes on averaging where it was.
    "ema-vectorized": ({"optimizer": "adam", "lr": 0.01, "ema_decay": 0.8}, True, False),
    "swa-vectorized": ({"optimizer": "sgd", "swa_start": 0.4}, True, False),
}


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(tiny_config().task)


def _engine_run(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    vectorized: bool,
    stop_before: int | None = None,
    start: list[Start] | None = None,
) -> tuple[Snapshots, list[Start]]:
    """Snapshots of a chunk trained (from ``start``, resumed) up to the end or to a stop
    before step ``stop_before``; the states of the checkpoint taken at the stop.
    """
    snaps: Snapshots = {}
    kept: list[Start] = []

    def sink(row: PlanRow, step: int, tensors: dict, metrics: dict[str, float]) -> None:
        snaps[row.member, step] = {**tensors, **{k: torch.tensor(v) for k, v in metrics.items()}}

    def save(step: int, states: list[tuple[PlanRow, Start]]) -> None:
        kept[:] = [state for _, state in states]

    steps_asked = itertools.count(1 if start is None else start[0].step + 1)

    def should_stop() -> bool:
        return stop_before is not None and next(steps_asked) >= stop_before

    try:
        train_chunk(
            task,
            config,
            rows,
            vectorized,
            sink,
            start=start,
            resume=start is not None,
            checkpoints=Checkpoints(save),
            should_stop=should_stop,
        )
    except StopRequested:
        pass
    return snaps, kept


@pytest.mark.parametrize("case", ENGINE_CASES)
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stop=st.integers(1, STEPS))
def test_engine_resumes_a_chunk_exactly_from_any_step(digits: Task, case: str, stop: int) -> None:
    trainer, vectorized, dropout = ENGINE_CASES[case]
    task = _dropout_task(digits) if dropout else digits
    config = tiny_config(
        trainer={"steps": STEPS, **trainer}, run={"snapshots": 5, "track_path": True}
    )
    rows = _rows(3 if vectorized else 1)
    whole, _ = _engine_run(task, config, rows, vectorized)
    before, states = _engine_run(task, config, rows, vectorized, stop_before=stop)
    assert states and states[0].step == stop - 1
    after, _ = _engine_run(task, config, rows, vectorized, start=states)
    assert before.keys().isdisjoint(after.keys())  # nothing snapshotted twice
    assert {**before, **after}.keys() == whole.keys()
    for key, tensors in {**before, **after}.items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, whole[key][name]), (case, stop, key, name)


# ---- whole runs ---------------------------------------------------------------------


def _config(strategy: str) -> Config:
    return tiny_config(
        trainer={"steps": STEPS, "optimizer": "adam", "lr": 0.01},
        plan={"members": 5, "vary": ["init_seed", "data_seed", "bootstrap"]},
        run={"chunk_size": 2, "snapshots": 4, "track_path": True, "strategy": strategy},
    )


def _files(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every snapshot's tensors (safetensors writes its metadata in hash-map order, so equal
    snapshots need not be equal bytes).
    """
    return {str(p.relative_to(run)): load_file(p) for p in run.glob("members/*/step-*")}


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a
    )


def _metrics(run: Path) -> pd.DataFrame:
    table = pd.read_parquet(run / "metrics.parquet")
    return table.sort_values(["member", "step"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for strategy in ("vectorized", "loop"):
        runs[strategy] = tmp_path_factory.mktemp(strategy) / "run"
        train(_config(strategy), runs[strategy])
    return runs


def _kill_at(monkeypatch: pytest.MonkeyPatch, at: int, graceful: bool) -> None:
    """Stop the next training before its ``at``-th step over all chunks: gracefully (as a
    signal does: checkpoint, then stop) or hard (as SIGKILL: nothing more written).
    """
    asked = itertools.count(1)

    def requested() -> int | None:
        if next(asked) < at:
            return None
        if graceful:
            return 2
        raise _Killed

    monkeypatch.setattr(interrupt, "requested", requested)


@settings(
    max_examples=KILL_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    strategy=st.sampled_from(["vectorized", "loop"]),
    kills=st.lists(st.tuples(st.integers(1, 3 * STEPS), st.booleans()), min_size=1, max_size=2),
    often=st.booleans(),
)
def test_run_killed_anywhere_resumes_to_the_uninterrupted_result(
    uninterrupted: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    strategy: str,
    kills: list[tuple[int, bool]],
    often: bool,
) -> None:
    run = tmp_path_factory.mktemp("killed") / "run"
    config = _config(strategy)
    with pytest.MonkeyPatch.context() as patch:
        # Checkpoints at every step, or only at snapshot steps (and signals).
        patch.setattr(launch, "CHECKPOINT_SECONDS", 0.0 if often else float("inf"))
        for at, graceful in kills:
            _kill_at(patch, at, graceful)
            try:
                train(config, run)
            except (_Killed, StopRequested, interrupt.Interrupted):
                pass
        patch.undo()
        train(config, run)
    clean = uninterrupted[strategy]
    assert _same(_files(run), _files(clean))
    pd.testing.assert_frame_equal(_metrics(run), _metrics(clean))
    assert not list(run.glob(f"members/*/{RESUME}")), "finished members keep no checkpoint"


def test_a_damaged_checkpoint_is_ignored_and_the_member_retrained(
    uninterrupted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, config = tmp_path / "run", _config("vectorized")
    _kill_at(monkeypatch, STEPS + 7, graceful=False)
    with pytest.raises(_Killed):
        train(config, run)
    checkpoints = sorted(run.glob(f"members/*/{RESUME}"))
    assert checkpoints
    data = bytearray(checkpoints[0].read_bytes())
    data[-9] ^= 0xFF  # one tensor byte
    checkpoints[0].write_bytes(bytes(data))
    monkeypatch.undo()
    train(config, run)
    assert _same(_files(run), _files(uninterrupted["vectorized"]))


def test_a_hard_kill_loses_only_the_steps_since_the_last_checkpoint(
    uninterrupted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, config = tmp_path / "run", _config("vectorized")
    monkeypatch.setattr(launch, "CHECKPOINT_SECONDS", float("inf"))  # snapshot steps only
    _kill_at(monkeypatch, 20, graceful=False)  # in the first chunk (members 0 and 1)
    with pytest.raises(_Killed):
        train(config, run)
    store = RunStore(run)
    last_snapshot = max(s for s in store.manifest()["snapshot_steps"]["32"] if s < 20)
    rows = build_plan(config.plan, config.trainer).rows()
    assert launch.resume_points(store, rows) == {0: last_snapshot, 1: last_snapshot}
    monkeypatch.undo()
    trained = []
    record = launch.record_chunk
    monkeypatch.setattr(
        launch, "record_chunk", lambda s, r: (trained.append(r["trained"]), record(s, r))
    )
    train(config, run)
    assert sum(trained) == 5 * STEPS - 2 * last_snapshot
    assert _same(_files(run), _files(uninterrupted["vectorized"]))
