"""When to save a member: log-spaced steps (early training changes fastest) or an explicit list."""

from __future__ import annotations

import numpy as np

from attractor.errors import UserError


def snapshot_steps(spec: int | list[int], total_steps: int) -> list[int]:
    """Sorted snapshot steps in ``[0, total_steps]``; step 0 (init) and the last step are always in.

    ``spec = k`` gives ``k`` log-spaced steps from 1 to ``total_steps`` (fewer when
    rounding makes some coincide; ``k = 1`` is the last step alone) plus step 0.
    """
    if isinstance(spec, list):
        beyond = [s for s in spec if s > total_steps]
        if beyond:
            raise UserError(
                f"run.snapshots asks for step {beyond[0]} but training has {total_steps} steps; "
                "drop it or train longer"
            )
        return sorted(set(spec) | {0, total_steps})
    if spec == 1:
        return [0, total_steps]
    spaced = np.unique(np.round(np.logspace(0, np.log10(total_steps), num=spec)).astype(int))
    return sorted({0, total_steps, *(int(s) for s in spaced)})
