"""Trainer2: a hyperparameter search run from many initial conditions, judged by the models
it returns::

    from attractor.stack import load_trainer2, run_trainer2
    config, settings = load_trainer2("examples/trainer2.toml")
    result = run_trainer2(config, settings, "runs/trainer2")   # the trainer2 experiment
    result.spread, result.n_basins, result.dominant
"""

from __future__ import annotations

from attractor.stack.result import Trainer2Result, summary_lines
from attractor.stack.settings import SearchSpace, Trainer2Settings, load_trainer2, parse_trainer2
from attractor.stack.trainer2 import Trainer2Run, run_trainer2, trainer2_study

__all__ = [
    "SearchSpace",
    "Trainer2Result",
    "Trainer2Run",
    "Trainer2Settings",
    "load_trainer2",
    "parse_trainer2",
    "run_trainer2",
    "summary_lines",
    "trainer2_study",
]
