"""What must match for a directory to be reopened: its config or settings less placement.

Placement says where and how work executes or is recorded (device, backend, workers,
tracking), never what it computes: a member depends only on its plan row, so a run may
resume on another device and an experiment's directory does not change with ``--device``.
"""

from __future__ import annotations

from typing import Any

#: Settings that say where and how a run executes or is recorded, never what it computes
#: (a member depends only on its plan row): a run may resume with other values of these.
PLACEMENT: dict[str, tuple[str, ...] | None] = {
    # device: results agree across devices to float tolerance, not bitwise (README).
    "run": ("backend", "workers", "num_cpus", "ray_address", "max_retries", "device"),
    "track": None,  # the whole section
}


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without its placement settings: what must match to resume a run."""
    kept = {k: dict(v) if isinstance(v, dict) else v for k, v in resolved.items()}
    for section, keys in PLACEMENT.items():
        if keys is None:
            kept.pop(section, None)
        elif isinstance(kept.get(section), dict):
            for key in keys:
                kept[section].pop(key, None)
    return kept


def experiment_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """An experiment's settings (JSON) without what says only where it computes: its own
    ``device``, and the placement keys of every ``run`` / ``track`` table it holds (whole
    configs, or a world's partial ``train`` overrides). The directory's hash and the check
    on reopening use this, so ``--device`` never changes which directory an experiment is.
    """
    run_keys = PLACEMENT["run"] or ()

    def strip(value: Any) -> Any:
        if isinstance(value, list):
            return [strip(v) for v in value]
        if not isinstance(value, dict):
            return value
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key == "track":
                continue
            if key == "run" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if k not in run_keys}
            kept[key] = strip(item)
        return kept

    return {k: strip(v) for k, v in settings.items() if k != "device"}
