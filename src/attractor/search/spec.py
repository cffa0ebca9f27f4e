"""Model spec text parsed into a :class:`ModelSpec`: a source, then ``@`` perturbations.

A spec is a source, then any number of ``@`` perturbations applied in order::

    RUN_DIR:MEMBER[:STEP]        member MEMBER of a run at snapshot STEP (default: its last)
    RUN_DIR:mean[:STEP]          the ensemble mean of the run's finished members: the log of
                                 the mean probabilities, used as logits
    FILE.safetensors             weights for a task's architecture; the task comes from the
                                 ``task`` argument (a run directory, a config TOML or a task
                                 name with default options) or, for a run's own snapshot
                                 files (RUN/members/M/step-S.safetensors), from that run

    @dropout=P      drop each hidden unit with probability P (one fixed mask, rescaled 1/(1-P))
    @dropconnect=P  zero each weight-matrix entry with probability P (fixed mask, rescaled)
    @noise=S        add Gaussian noise of S x RMS(tensor) to every parameter tensor
    @prune=P        zero the share P of smallest-magnitude entries of every weight matrix
    @fp16 / @bf16   round every parameter to half precision / bfloat16 (compute stays float32)
    @int8 / @bits=B symmetric per-tensor rounding of every parameter to 8 / B bits
    @seed=N         seed of the random masks and noises of this spec (default 0)

e.g. ``runs/digits:3@dropout=0.1`` or ``runs/digits:mean:120@noise=1e-3@seed=2``. A mean's
perturbation draws each member's mask from its own generator. The perturbations themselves
are in :mod:`attractor.search.perturb`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attractor.errors import UserError
from attractor.search.perturb import PERTURBATIONS

_GRAMMAR = (
    "RUN_DIR:MEMBER[:STEP], RUN_DIR:mean[:STEP] or FILE.safetensors, then @PERTURBATION=LEVEL..."
)

__all__ = ["ModelSpec", "parse_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``source`` (run directory or weights file), ``member`` (an id,
    ``"mean"``, or ``None`` for a file), ``step``, ``perturbations`` in order, ``seed``."""

    text: str
    source: str
    member: int | str | None
    step: int | None
    perturbations: tuple[tuple[str, float], ...]
    seed: int = 0


def parse_spec(text: str) -> ModelSpec:
    """Parse ``text`` (grammar in the module docstring); a bad spec raises a one-line
    :class:`UserError`.
    """
    source, *mods = text.strip().split("@")
    if not source:
        raise UserError(f"model spec {text!r} names no model; write {_GRAMMAR}")
    perturbations, seed = [], 0
    for mod in mods:
        name, has_level, raw = mod.partition("=")
        if name == "seed":
            seed = _seed(text, raw)
        else:
            perturbations.append(_perturbation(text, mod, name, bool(has_level), raw))
    if source.endswith(".safetensors"):
        return ModelSpec(text, source, None, None, tuple(perturbations), seed)
    run, member, step = _run_source(text, source)
    return ModelSpec(text, run, member, step, tuple(perturbations), seed)


def _seed(text: str, raw: str) -> int:
    """The level of ``@seed=``: a whole number >= 0."""
    if not raw.isdigit():
        raise UserError(f"model spec {text!r}: '@seed=' takes a whole number >= 0, got {raw!r}")
    return int(raw)


def _perturbation(text: str, mod: str, name: str, has_level: bool, raw: str) -> tuple[str, float]:
    """``(name, level)`` of one ``@name[=level]``, checked against its valid levels."""
    if name not in PERTURBATIONS:
        raise UserError(
            f"model spec {text!r}: unknown perturbation '@{mod}'; choose one of: "
            f"{', '.join('@' + k for k in PERTURBATIONS)}, @seed"
        )
    check = PERTURBATIONS[name][1]
    if check is None:
        if has_level:
            raise UserError(f"model spec {text!r}: '@{name}' takes no level; write '@{name}'")
        return name, 0.0
    try:
        level = float(raw)
    except ValueError:
        raise UserError(
            f"model spec {text!r}: '@{name}' needs a level, {check[1]}, e.g. '@{name}=0.1'"
        ) from None
    if not (math.isfinite(level) and check[0](level)):
        raise UserError(
            f"model spec {text!r}: level {raw} of '@{name}' is out of range; it must be {check[1]}"
        )
    return name, level


def _run_source(text: str, source: str) -> tuple[str, int | str, int | None]:
    """``(run directory, member id or "mean", step)`` of ``RUN_DIR:MEMBER[:STEP]``."""
    parts = source.split(":")
    # Read from the right, so a run directory may itself contain ':'.
    if len(parts) >= 3 and parts[-1].isdigit() and (parts[-2].isdigit() or parts[-2] == "mean"):
        run, member, step = ":".join(parts[:-2]), parts[-2], int(parts[-1])
    elif len(parts) >= 2 and (parts[-1].isdigit() or parts[-1] == "mean"):
        run, member, step = ":".join(parts[:-1]), parts[-1], None
    else:
        raise UserError(
            f"model spec {text!r} names no member; write {_GRAMMAR} (e.g. 'runs/digits:0' or "
            "'runs/digits:mean')"
        )
    if not run:
        raise UserError(f"model spec {text!r} names no run directory before ':{member}'")
    return run, member if member == "mean" else int(member), step
