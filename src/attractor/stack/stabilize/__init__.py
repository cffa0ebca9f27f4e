"""``attractor stabilize``: from measuring stability to choosing the trainer that has it.

A multi-objective search over trainers (settings and stability interventions) whose every
trial is a whole ensemble, the most stable trainer within a tolerance of the best error,
and its confirmation on seeds the search never saw (:mod:`.experiment` has the loop).
"""

from attractor.stack.stabilize.experiment import StabilizeRun, run_stabilize, stabilize
from attractor.stack.stabilize.result import StabilizeResult, summary_lines
from attractor.stack.stabilize.settings import (
    StabilizeSettings,
    StabilizeSpace,
    load_stabilize,
    parse_stabilize,
)

__all__ = [
    "StabilizeResult",
    "StabilizeRun",
    "StabilizeSettings",
    "StabilizeSpace",
    "load_stabilize",
    "parse_stabilize",
    "run_stabilize",
    "stabilize",
    "summary_lines",
]
