"""attractor: measure and improve the stability of training runs.

A small public API; everything else is private::

    from attractor import load_config, train, Ensemble
    ens = train(load_config("examples/digits.toml"), "runs/digits")
    logits = ens.predict(ens.task.x_test)        # [members, batch, classes]
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module; imported on first use so `import attractor` stays cheap and cycle-free.
_PUBLIC = {
    "Task": "attractor.tasks.base",
    "Config": "attractor.config",
    "load_config": "attractor.config",
    "parse_config": "attractor.config",
    "Plan": "attractor.plan",
    "PlanRow": "attractor.plan",
    "build_plan": "attractor.plan",
    "build_task": "attractor.tasks",
    "train": "attractor.runs.launch",
    "Ensemble": "attractor.runs.ensemble",
    "summarize": "attractor.measure.summary",
    "UserError": "attractor.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'attractor' has no attribute {name!r}")
