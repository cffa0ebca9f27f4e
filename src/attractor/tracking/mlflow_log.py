"""Log a finished run directory to MLflow (extra ``mlflow``: ``mlflow-skinny``).

One MLflow run per attractor run, named after the run directory: the resolved config as
params (``trainer.lr``...), the summary (mean / sd / min / max of each final metric) as
metrics, and ``manifest.json``, ``plan.parquet``, ``metrics.parquet``, ``summary.json``
and, when ``attractor measure`` / ``attractor report`` have written them,
``measures.json`` and ``report.html`` as artifacts. One nested run per member carries
its plan row as params and its metrics at every snapshot step, so MLflow's chart view
overlays the members' curves and its table compares them.

Logging happens after training, from the run directory: it never slows or blocks
training, and a tracker that fails gives one warning line while the run stays intact.
Logging the same run directory again replaces its earlier MLflow run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attractor.config import TrackConfig
from attractor.errors import require

if TYPE_CHECKING:  # mlflow is an optional extra, imported only when logging
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from attractor.runs.ensemble import Ensemble

#: MLflow's own defaults, set unless the user set them: no telemetry, and a tracking
#: server that does not answer costs seconds (not MLflow's minutes of retries).
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: MLflow's limits per ``log_batch`` call.
MAX_PARAMS, MAX_METRICS = 100, 1000
ARTIFACTS = ("manifest.json", "plan.parquet", "metrics.parquet", "measures.json", "report.html")
RUN_DIR_TAG = "attractor.run_dir"


def tracking_uri(track: TrackConfig, run_dir: str | Path) -> str:
    """``track.uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite ``mlflow.db`` beside the run
    directory.
    """
    if track.uri:
        return track.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def log_run(run_dir: str | Path, track: TrackConfig | None = None) -> str | None:
    """Log ``run_dir`` to MLflow; returns the MLflow run id, or None (with one warning line)
    if logging failed.
    """
    require("mlflow", "mlflow")
    for key, value in MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    track = track or TrackConfig(mlflow=True)
    uri = tracking_uri(track, run_dir)
    try:
        return _log(Path(run_dir).resolve(), uri, track.experiment)
    # noqa: BLE001 - a tracker's failure must never lose or fail a finished run
    except Exception as exc:
        line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        print(
            f"warning: MLflow tracking at '{uri}' failed ({line}); the run is complete in "
            f"{run_dir}",
            file=sys.stderr,
        )
        return None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _numbers(data: dict[str, Any]) -> dict[str, float]:
    """The finite numeric leaves of a nested summary (MLflow metrics are floats)."""
    return {
        k: float(v)
        for k, v in _flatten(data).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _log(run_dir: Path, uri: str, experiment: str) -> str:
    """Replace ``run_dir``'s MLflow run by a fresh one (members nested); returns its id."""
    from mlflow.tracking import MlflowClient

    from attractor.runs.ensemble import Ensemble

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, experiment, run_dir, uri)
    for old in client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'"
    ):
        client.delete_run(old.info.run_id)  # one MLflow run per attractor run: a re-log replaces it

    ens = Ensemble.load(run_dir)
    now = int(time.time() * 1000)
    parent = _log_parent(client, experiment_id, run_dir, ens, now)
    values = [c for c in ens.metrics.columns if c not in ("member", "step")]
    for row in ens.plan.to_dict("records"):
        _log_member(client, experiment_id, parent, row, ens.metrics, values, now)
    client.set_terminated(parent)
    return parent


def _experiment(client: MlflowClient, experiment: str, run_dir: Path, uri: str) -> str:
    """The id of MLflow experiment ``experiment``, created if it does not exist yet."""
    found = client.get_experiment_by_name(experiment)
    if found:
        return found.experiment_id
    # A sqlite store would put artifacts in ./mlruns of whatever the cwd is: keep them beside the
    # db.
    artifacts = (run_dir.parent / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(experiment, artifact_location=artifacts)


def _log_parent(
    client: MlflowClient, experiment_id: str, run_dir: Path, ens: Ensemble, now: int
) -> str:
    """The run's own MLflow run: config as params, summary as metrics, files as artifacts."""
    from mlflow.entities import Metric, Param

    from attractor.measure import summarize

    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = summarize(ens)
    parent = client.create_run(
        experiment_id,
        run_name=run_dir.name,
        tags={
            RUN_DIR_TAG: str(run_dir),
            "attractor.config_hash": manifest["config_hash"],
            "attractor.plan_hash": manifest["plan_hash"],
            "attractor.strategy": str(manifest.get("strategy")),
        },
    ).info.run_id
    params = [
        Param(k, json.dumps(v) if not isinstance(v, str) else v)
        for k, v in _flatten(manifest["config"]).items()
    ]
    for batch in _batches(params, MAX_PARAMS):
        client.log_batch(parent, params=batch)
    summary_metrics = [Metric(k, v, now, 0) for k, v in _numbers(summary).items()]
    for batch in _batches(summary_metrics, MAX_METRICS):
        client.log_batch(parent, metrics=batch)
    client.log_dict(parent, summary, "summary.json")
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(parent, str(run_dir / name))
    return parent


def _log_member(
    client: MlflowClient,
    experiment_id: str,
    parent: str,
    row: dict[str, Any],
    metrics: pd.DataFrame,
    values: list[str],
    now: int,
) -> None:
    """One member's nested run: its plan row as params, its metrics at every snapshot step."""
    from mlflow.entities import Metric, Param

    member = int(row["member"])
    child = client.create_run(
        experiment_id,
        run_name=f"member {member}",
        tags={
            "mlflow.parentRunId": parent,
            "attractor.member": str(member),
            "attractor.status": str(row["status"]),
        },
    ).info.run_id
    client.log_batch(
        child, params=[Param(k, str(v)) for k, v in row.items() if k != "status"][:MAX_PARAMS]
    )
    points = [
        Metric(name, float(r[name]), now, int(r["step"]))
        for r in metrics[metrics["member"] == member].to_dict("records")
        for name in values
        if isinstance(r[name], int | float) and math.isfinite(float(r[name]))
    ]
    for batch in _batches(points, MAX_METRICS):
        client.log_batch(child, metrics=batch)
    client.set_terminated(child, "FINISHED" if row["status"] != "pending" else "KILLED")
