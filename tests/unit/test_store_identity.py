"""What must match for a run directory to resume: everything but where and how it runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attractor.errors import UserError
from attractor.runs.launch import train
from attractor.runs.store import RunStore, identity
from tests.conftest import tiny_config


def test_placement_settings_do_not_change_identity() -> None:
    base = tiny_config().resolved()
    moved = tiny_config(
        run={
            "backend": "ray",
            "workers": 3,
            "num_cpus": 2,
            "ray_address": "10.0.0.1:6379",
            "max_retries": 0,
        },
        track={"mlflow": True, "uri": "sqlite:///x.db"},
    ).resolved()
    assert identity(base) == identity(moved)
    assert moved["run"]["backend"] == "ray"  # identity copies; the config itself is untouched


def test_what_a_member_computes_changes_identity() -> None:
    base = identity(tiny_config().resolved())
    assert identity(tiny_config(trainer={"lr": 0.07}).resolved()) != base
    assert identity(tiny_config(run={"snapshots": 5}).resolved()) != base


def test_a_run_written_before_a_field_existed_resumes(tmp_path: Path) -> None:
    """A manifest without a field added later (its default does what attractor did before)
    is the same run; one whose recorded value differs is still another config."""
    config = tiny_config(trainer={"steps": 3}, plan={"members": 2})
    train(config, tmp_path / "run")
    manifest = tmp_path / "run" / "manifest.json"

    def rewrite(change: Callable[[dict], object]) -> None:
        data = json.loads(manifest.read_text())
        change(data["config"])
        RunStore(tmp_path / "run").write_manifest(data)  # as an older attractor wrote it

    rewrite(lambda c: c["run"].pop("precision"))
    train(config, tmp_path / "run")  # resumes: nothing to train, no refusal
    rewrite(lambda c: c["trainer"].update(lr=0.5))
    with pytest.raises(UserError, match="made from another config"):
        train(config, tmp_path / "run")


def test_an_experiment_written_before_a_setting_existed_reopens(tmp_path: Path) -> None:
    """An experiment directory whose recorded settings lack a setting added since (here
    instability's repair and the trainer's milestones) reopens with the same settings."""
    from attractor.experiments.instability import InstabilitySettings, run_instability

    settings = InstabilitySettings(
        config=tiny_config(trainer={"steps": 6}), spawn_steps=[0], pairs=2, points=3
    )
    out = tmp_path / "instability"
    run_instability(settings, out)
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text())
    data["config"].pop("repair")
    data["config"]["config"]["trainer"].pop("milestones")
    data["config_hash"] = "written-by-an-older-attractor"
    RunStore(out).write_manifest(data)
    run_instability(settings, out)  # reopened, not refused as another config
    changed = settings.model_copy(update={"pairs": 3})
    with pytest.raises(UserError, match="another config"):
        run_instability(changed, out)
