"""A member's initial model: built from its ``init_seed``, then scaled and jittered as its row
says.
"""

from __future__ import annotations

import torch
from torch import nn

from attractor.plan import PlanRow
from attractor.seeds import derive_seed, torch_generator
from attractor.tasks.base import Task


def initial_module(task: Task, row: PlanRow) -> nn.Module:
    """The task's model for member ``row``, its weights drawn from the row's seeds alone.

    ``init_scale`` multiplies every parameter; ``init_noise`` adds Gaussian noise of that
    standard deviation (drawn from ``noise_seed``), the usual way to start "nearby" runs.
    """
    # fork_rng keeps the caller's global RNG untouched: building member 3 must not
    # change what member 4 draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", row.init_seed))
        model = task.make_model()
    model = model.float()
    if row.init_scale != 1.0 or row.init_noise != 0.0:
        gen = torch_generator("init-noise", row.noise_seed)
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(row.init_scale)
                if row.init_noise:
                    param.add_(torch.randn(param.shape, generator=gen), alpha=row.init_noise)
    return model
