"""Runs survive being killed: SIGKILL mid-training, resume, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config, write_toml


def _snapshots(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        str(p.relative_to(run_dir)): load_file(p)
        for p in sorted(run_dir.glob("members/*/*.safetensors"))
    }


def _done(run_dir: Path) -> int:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(m["status"] == "done" for m in manifest["members"].values())


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    config = tiny_config(
        trainer={"steps": 150},
        plan={"members": 8, "vary": ["init_seed", "data_seed", "bootstrap"]},
        run={"chunk_size": 2, "snapshots": 4},
    )
    config_path = write_toml(tmp_path / "config.toml", config)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attractor.cli",
            "run",
            str(config_path),
            "--out",
            str(killed),
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while _done(killed) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = _done(killed)
    assert 2 <= finished_before < 8
    status = json.loads((killed / "manifest.json").read_text())["members"]
    kept = {
        p: p.stat().st_mtime_ns
        for m, s in status.items()
        if s["status"] == "done"
        for p in (killed / "members" / m).iterdir()
        # A checkpoint left by a kill between "done" and its deletion is dropped on resume.
        if p.name != "resume.safetensors"
    }

    resumed = train(config, killed)
    uninterrupted = train(config, tmp_path / "clean")

    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), (
        "a finished member was trained again"
    )
    assert not list(killed.rglob("*.tmp")), "temporary files of the killed run were left behind"
    a, b = _snapshots(killed), _snapshots(tmp_path / "clean")
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    assert (
        resumed.metrics.sort_values(["member", "step"])
        .reset_index(drop=True)
        .equals(uninterrupted.metrics.sort_values(["member", "step"]).reset_index(drop=True))
    )


def test_rerun_of_finished_run_trains_nothing(tmp_path: Path) -> None:
    config = tiny_config()
    train(config, tmp_path / "run")
    stamps = {
        p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "members").rglob("*.safetensors")
    }
    ens = train(config, tmp_path / "run")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert ens.members == [0, 1, 2, 3]


def test_ensemble_loads_predicts_and_gives_snapshots(tmp_path: Path) -> None:
    config = tiny_config(plan={"members": 3})
    train(config, tmp_path / "run")
    ens = Ensemble.load(tmp_path / "run")
    x = ens.task.x_test[:17]
    logits = ens.predict(x)
    assert logits.shape == (3, 17, 10)
    steps = ens.steps()
    assert steps[0] == 0 and steps[-1] == 12
    for member in ens.members:
        own = ens.module(member)(x)
        torch.testing.assert_close(logits[member], own, rtol=0, atol=1e-5)
    first = ens.params(1, step=0)
    assert not torch.equal(first["0.weight"], ens.params(1)["0.weight"])
    metrics = ens.metrics
    assert set(metrics["member"]) == {0, 1, 2} and set(metrics["step"]) == set(steps)
    assert {"test_loss", "test_accuracy", "train_loss", "train_accuracy"} <= set(metrics.columns)
    assert (ens.plan["status"] == "done").all()


def test_reloaded_config_keeps_the_factor_order_that_made_the_plan(tmp_path: Path) -> None:
    """``[plan.ranges]`` order sets which SALib column is which factor; the manifest must keep
    it.
    """
    from attractor.plan import build_plan

    config = tiny_config(
        trainer={"steps": 2},
        plan={
            "design": "sobol",
            "members": 8,
            "vary": [],
            "ranges": {"momentum": [0.0, 0.9], "lr": [0.01, 0.1]},
        },
    )
    ens = train(config, tmp_path / "run")
    assert list(ens.config.plan.ranges) == ["momentum", "lr"]
    rebuilt = build_plan(ens.config.plan, ens.config.trainer, ens.task.group_ids).table
    pd.testing.assert_frame_equal(
        rebuilt[["lr", "momentum"]], ens.plan[["lr", "momentum"]], check_dtype=False
    )


def test_a_checkpoint_left_beside_a_finished_member_is_dropped_on_resume(tmp_path: Path) -> None:
    """A kill between marking a member done and deleting its checkpoint leaves the file; the
    next run of the directory removes it (nothing would ever read it) and trains nothing.
    """
    run = tmp_path / "run"
    train(tiny_config(), run)
    stale = run / "members" / "0" / "resume.safetensors"
    stale.write_bytes(b"left by a kill")
    before = {p: p.stat().st_mtime_ns for p in run.glob("members/*/*.safetensors")}
    train(tiny_config(), run)
    assert not stale.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != stale)
