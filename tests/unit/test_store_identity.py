"""What must match for a run directory to resume: everything but where and how it runs."""

from __future__ import annotations

from attractor.runs.store import identity
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
