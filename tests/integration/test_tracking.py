"""`attractor run --track mlflow`: one MLflow run per attractor run, read back with MlflowClient."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_config, write_toml

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory):
    """A tiny run logged to the default store (sqlite beside the run directory), then re-logged."""
    from attractor.config import TrackConfig
    from attractor.runs.launch import train
    from attractor.tracking import log_run

    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(tiny_config(), root / "run")
        first = log_run(root / "run")
        # `attractor report` writes report.html later: logging again adds it and replaces the first
        # run.
        (root / "run" / "report.html").write_text("<html>report</html>")
        second = log_run(root / "run", TrackConfig(mlflow=True))
    return root, first, second


def test_run_config_members_and_artifacts_read_back(tracked) -> None:
    from mlflow.tracking import MlflowClient

    root, first, second = tracked
    assert (root / "mlflow.db").is_file(), "the default store is sqlite beside the run directory"
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    assert first and second and client.get_run(first).info.lifecycle_stage == "deleted"

    parent = client.get_run(second)
    assert parent.data.params["trainer.lr"] == "0.05" and parent.data.params["plan.members"] == "4"
    assert parent.data.params["task.hidden"] == "[32]"
    assert 0.0 <= parent.data.metrics["test_accuracy.mean"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(second)}
    assert {
        "summary.json",
        "manifest.json",
        "plan.parquet",
        "metrics.parquet",
        "report.html",
    } <= artifacts

    experiment = parent.info.experiment_id
    children = client.search_runs(
        [experiment], filter_string=f"tags.`mlflow.parentRunId` = '{second}'"
    )
    assert sorted(int(c.data.tags["attractor.member"]) for c in children) == [0, 1, 2, 3]
    history = client.get_metric_history(children[0].info.run_id, "test_accuracy")
    steps = json.loads((root / "run" / "manifest.json").read_text())["snapshot_steps"]["32"]
    assert sorted(m.step for m in history) == steps  # one point per snapshot step
    assert "init_seed" in children[0].data.params


def test_cli_track_uses_the_environment_uri(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'lab.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = write_toml(tmp_path / "config.toml", tiny_config(plan={"members": 2}))
    result = cli("run", config, "--out", tmp_path / "run", "--track", "mlflow", "--json")
    assert result.code == 0, result.err
    run_id = json.loads(result.out)["mlflow_run_id"]
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.tags["attractor.run_dir"] == str(
        (tmp_path / "run").resolve()
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracker_warns_and_the_run_is_kept(tmp_path: Path, cli) -> None:
    config = write_toml(tmp_path / "config.toml", tiny_config(plan={"members": 2}))
    result = cli(
        "run",
        config,
        "--out",
        tmp_path / "run",
        "--track",
        "mlflow",
        "--track-uri",
        "http://127.0.0.1:1",
        "--json",
    )
    assert result.code == 0, result.err
    assert "warning: MLflow tracking at 'http://127.0.0.1:1' failed" in result.err
    assert (tmp_path / "run" / "metrics.parquet").is_file()


def test_missing_mlflow_names_the_extra(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = write_toml(tmp_path / "config.toml", tiny_config())
    result = cli("run", config, "--out", tmp_path / "run", "--track", "mlflow")
    assert result.code == 2 and "pip install 'attractor[mlflow]'" in result.err
    assert not (tmp_path / "run").exists()
