"""Functional optimizers for vectorized ensembles: one file each plus one registry line.

Every optimizer keeps the contract of :class:`attractor.optim.base.Optimizer` and passes the
conformance suite in ``tests/unit/test_optim.py`` by being added to ``OPTIMIZERS``.
"""

from __future__ import annotations

from attractor.errors import UserError
from attractor.optim.adam import Adam
from attractor.optim.base import Hyper, Optimizer, Params, State
from attractor.optim.cone import ConeDescent
from attractor.optim.cone_optim import ConeDescentOptim
from attractor.optim.schedules import SCHEDULES, lr_factor
from attractor.optim.sgd import SGD

OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": SGD(),
    "adam": Adam(decoupled=False),
    "adamw": Adam(decoupled=True),
    "cone": ConeDescent(),
}


def get_optimizer(name: str) -> Optimizer:
    """The registered optimizer called ``name``.

    Raises:
        UserError: unknown name; the message lists the known ones.
    """
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise UserError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}") from None


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConeDescent",
    "ConeDescentOptim",
    "Hyper",
    "Optimizer",
    "Params",
    "State",
    "get_optimizer",
    "lr_factor",
]
