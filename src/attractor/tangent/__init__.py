"""Derivatives through training: finite-time Lyapunov exponents and hypergradients.

Forward mode (``torch.func.jvp``) through the unrolled training of each member (the
engine's exact steps, :mod:`attractor.tangent.unroll`) gives the growth of initial
perturbations (:mod:`~attractor.tangent.lyapunov`, Benettin et al. 1980), forward-mode
hypergradients (:mod:`~attractor.tangent.hypergrad`, Baydin et al. 2018), and with reverse
mode the worst-case growth (:mod:`~attractor.tangent.power`). Perturbed float64 replays
check the tangent and find where the linear picture breaks (the basin around the run,
:mod:`~attractor.tangent.basin`); each hypergradient is put beside the slope across the
plan's members (:mod:`~attractor.tangent.globalsens`). The experiment that runs them is
:mod:`attractor.experiments.tangent`.
"""

from __future__ import annotations

from attractor.tangent.hypergrad import HYPER_NAMES
from attractor.tangent.store import TangentResult, read_result

__all__ = ["HYPER_NAMES", "TangentResult", "read_result"]
