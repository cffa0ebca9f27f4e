"""The tangent replay on ``run.device``: on the CPU nothing changes; every tensor a replay
touches follows :attr:`Unrolled.device` (driven on the ``meta`` device, where a tensor left
on the CPU makes an op raise); CPU vs GPU agreement is ``gpu``-marked (skipped without one).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from attractor.config import Config
from attractor.experiments.tangent_replay import tangent_analysis
from attractor.plan import PlanRow
from attractor.runs.launch import train
from attractor.tangent import basin, power
from attractor.tangent.hypergrad import finite_step, hyper_columns, shifted
from attractor.tangent.lyapunov import Orthonormalizer, _start, jvp_step, random_directions
from attractor.tangent.store import TangentResult
from attractor.tangent.unroll import Unrolled, unroll
from attractor.tasks import build_task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
META = torch.device("meta")
_FRAMES = ("curves", "members", "hypergrads", "basin", "sensitivity")


def _config(**run: object) -> Config:
    return tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 6, "batch_size": 16, "weight_decay": 1e-3},
        plan={
            "members": 2,
            "design": "random",
            "vary": ["init_seed", "data_seed", "lr", "label_noise"],
            "ranges": {"lr": [0.03, 0.08], "label_noise": [0.0, 0.2]},
        },
        run={"snapshots": 2, **run},
    )


def _analyse(config: Config, out: Path, **options: object) -> TangentResult:
    return tangent_analysis(
        config,
        out,
        directions=2,
        hypers=("lr", "momentum", "weight_decay", "init_scale"),
        power_iterations=1,
        **options,  # type: ignore[arg-type]
    )


def test_an_explicit_cpu_device_gives_the_default_tables_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default (auto) is the CPU on a machine without CUDA; made so on every machine here.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    results = {}
    for name, config in {"default": _config(), "cpu": _config(device="cpu")}.items():
        train(config, tmp_path / name)  # so the engine gap is compared too
        results[name] = _analyse(config, tmp_path / name)
    a, b = results["default"], results["cpu"]
    for frame in _FRAMES:
        assert not getattr(a, frame).empty
        pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame), check_exact=True)
    assert a.summary == b.summary
    assert (a.members["engine_max_abs_diff"] == 0).all()  # the replay is the engine's run


def _meta_run(dtype: torch.dtype = torch.float64) -> tuple[Unrolled, Unrolled]:
    """The same two members (label noise, so their targets differ) on the CPU and on meta."""
    config = _config()
    rows = [
        PlanRow(member=i, init_seed=i, data_seed=i, lr=0.05, label_noise=0.1 * i, batch_size=16)
        for i in range(2)
    ]
    task = build_task(config.task)
    return unroll(task, config, rows, dtype), unroll(task, config, rows, dtype, META)


def _on_meta(*trees: object) -> bool:
    """Every tensor in ``trees`` (tensors, dicts of them, nested) is on the meta device."""
    found = []

    def walk(x: object) -> None:
        if isinstance(x, torch.Tensor):
            found.append(x.is_meta)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, tuple | list):
            for v in x:
                walk(v)

    walk(trees)
    return bool(found) and all(found)


def test_an_unrolled_run_and_its_batches_live_on_its_device() -> None:
    cpu, run = _meta_run()
    assert run.device == META and cpu.device == torch.device("cpu")
    task = run.task
    assert _on_meta(run.params0, run.scale_tangent, run.targets, run.hyper)
    assert _on_meta(task.x_train, task.y_train, task.x_test, task.y_test, dict(task.probes))
    assert _on_meta(dict(run.module.named_parameters()))
    assert run.params0["0.weight"].dtype == torch.float64
    assert not _on_meta(cpu.params0) and not _on_meta(cpu.targets)
    x, y = run.batches().next()  # CPU stream indices gathered from meta data and targets
    assert _on_meta(x, y) and x.shape == cpu.batches().next()[0].shape


def test_tangent_columns_steps_and_qr_follow_the_run_device() -> None:
    cpu, run = _meta_run()
    dirs = random_directions(run, 2, seed=1)  # drawn on the CPU, then moved
    assert _on_meta(dirs) and dirs.keys() == random_directions(cpu, 2, seed=1).keys()
    dparams_h, dhyper_h = hyper_columns(run, ("lr", "init_scale"))
    assert _on_meta(dparams_h, dhyper_h)
    dparams = {n: torch.cat([dirs[n], dparams_h[n]], 1) for n in dirs}
    zeros = torch.zeros(run.members, 2, dtype=torch.float64, device=run.device)
    dhyper = {h: torch.cat([zeros, v], 1) for h, v in dhyper_h.items()}
    x, y = run.batches().next()
    z = jvp_step(run)(_start(run, dparams, dhyper), run.hyper, x, y, 1, run.factor(1))
    ortho = Orthonormalizer(run.members, 2, run.device)
    z = ortho(z, torch.ones(run.members, dtype=torch.bool, device=run.device))
    assert _on_meta(z.params, z.state, z.dparams, z.dstate, ortho.log_r, ortho.r_cum)


def test_perturbed_replays_follow_the_run_device() -> None:
    _, run = _meta_run()
    for hyper in ("lr", "init_scale"):
        step = finite_step(run, hyper, 0.1)
        assert step.device.type == "cpu"  # a result: read with float()
        moved = shifted(run, hyper, step)
        assert _on_meta(moved.params0, moved.hyper)
    v = {k: d[:, 0] for k, d in random_directions(run, 1).items()}
    copies, start = basin._copies(run, torch.tensor([1e-3, 1.0], dtype=torch.float64), v)
    empty = basin._empty(copies, start, None)
    assert _on_meta(start, copies.targets, copies.hyper, empty.dparams, empty.dhyper)
    # Power iteration's forward and reverse passes through the unrolled run.
    u, checkpoints = power.forward(run, v, every=2)
    assert _on_meta(u, power.backward(run, u, checkpoints))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_replay_on_a_gpu_agrees_with_the_cpu(tmp_path: Path) -> None:
    # float64, so the comparison sees the device, not float32 round-off amplified by training;
    # the tolerance is a guess that no GPU has checked yet.
    results = {
        name: _analyse(_config(device=name), tmp_path / name, dtype=torch.float64)
        for name in ("cuda", "cpu")
    }
    for frame in _FRAMES:
        a, b = getattr(results["cuda"], frame), getattr(results["cpu"], frame)
        counts = [c for c in a.columns if c.startswith("flips")]  # integers: may differ by a flip
        pd.testing.assert_frame_equal(
            a.drop(columns=counts), b.drop(columns=counts), check_exact=False, rtol=1e-6, atol=1e-9
        )
