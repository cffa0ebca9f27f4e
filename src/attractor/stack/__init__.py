"""Trainer2: a hyperparameter search run from many initial conditions, judged by the models it returns.

    from attractor.stack import load_trainer2, trainer2_study
    config, settings = load_trainer2("examples/trainer2.toml")
    result = trainer2_study(config, settings, "runs/trainer2")
    result.spread, result.n_basins, result.dominant
"""

from __future__ import annotations

from attractor.stack.settings import SearchSpace, Trainer2Settings, load_trainer2, parse_trainer2
from attractor.stack.trainer2 import Trainer2Result, summary_lines, trainer2_study, write_trainer2

__all__ = ["SearchSpace", "Trainer2Result", "Trainer2Settings", "load_trainer2", "parse_trainer2", "summary_lines",
           "trainer2_study", "write_trainer2"]
