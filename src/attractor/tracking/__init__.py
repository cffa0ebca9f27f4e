"""Record runs in an experiment tracker (MLflow). The run directory stays the record of truth."""

from attractor.tracking.mlflow_log import log_run, tracking_uri

__all__ = ["log_run", "tracking_uri"]
