"""The contract every functional optimizer keeps, and the helpers they share.

An ensemble's parameters are a ``dict[str, Tensor]`` whose tensors carry the member
dimension first, ``[members, *shape]``. Hyperparameters are per-member tensors, so one
step updates every member with its own lr, momentum and weight decay.

Bitwise member independence: each member's result depends only on its own slice, and is
identical whatever the number of members in the tensor (members are trained in chunks of
different sizes). So every op here is elementwise, with per-member coefficients viewed as
``[members, 1, 1, ...]``; per-member scalars are computed in float64 and rounded once to the
parameter dtype, exactly as ``torch.optim`` rounds its Python-float hyperparameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

# Elements per block of a per-member reduction (see member_sum).
_BLOCK = 4096

Params = dict[str, Tensor]
"""Parameter name -> ``[members, *shape]`` tensor."""
State = dict[str, dict[str, Tensor]]
"""Parameter name -> state name -> ``[members, *shape]`` tensor."""


@dataclass(frozen=True, eq=False)
class Hyper:
    """Per-member hyperparameters of one optimizer step.

    Attributes:
        lr: ``[members]`` learning rate, schedule factor already multiplied in.
        momentum: ``[members]`` SGD momentum; beta1 for Adam / AdamW.
        weight_decay: ``[members]`` L2 coefficient (SGD, Adam) or decoupled decay (AdamW).
        nesterov: Nesterov momentum (SGD), shared by all members.
        beta2: second-moment decay (Adam / AdamW), shared by all members.
        eps: denominator term (Adam / AdamW), shared by all members.
        cone_angle: cone half-angle alpha in radians (cone descent), shared by all members;
            with ``cone_random`` the largest angle, each step drawing alpha in ``[0, cone_angle]``.
        cone_random: cone descent draws a fresh angle per member and step from ``seed``.
        cone_per_tensor: cone descent takes one cone per parameter tensor instead of one
            over all parameters jointly.
        seed: ``[members]`` int64 per-member seeds of the optimizer's own randomness (the
            random cone angle); ``None`` when the optimizer needs none.
    """

    lr: Tensor
    momentum: Tensor
    weight_decay: Tensor
    nesterov: bool = False
    beta2: float = 0.999
    eps: float = 1e-8
    cone_angle: float = 0.0
    cone_random: bool = False
    cone_per_tensor: bool = False
    seed: Tensor | None = None

    def __post_init__(self) -> None:
        columns = (self.lr, self.momentum, self.weight_decay) + (
            () if self.seed is None else (self.seed,)
        )
        shapes = {t.shape for t in columns}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(
                f"lr, momentum, weight_decay (and seed) must all be [members]; got {shapes}"
            )

    @classmethod
    def uniform(
        cls,
        members: int,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        nesterov: bool = False,
        beta2: float = 0.999,
        eps: float = 1e-8,
        cone_angle: float = 0.0,
        cone_random: bool = False,
        cone_per_tensor: bool = False,
        seed: int | None = None,
    ) -> Hyper:
        """The same hyperparameters (and optimizer seed) for every one of ``members`` members."""

        def full(value: float) -> Tensor:
            return torch.full((members,), value, dtype=torch.float32)

        seeds = None if seed is None else torch.full((members,), seed, dtype=torch.int64)
        return cls(
            full(lr),
            full(momentum),
            full(weight_decay),
            nesterov,
            beta2,
            eps,
            cone_angle,
            cone_random,
            cone_per_tensor,
            seeds,
        )

    @property
    def members(self) -> int:
        """Number of members these hyperparameters describe."""
        return int(self.lr.shape[0])

    def take(self, index: Tensor | slice) -> Hyper:
        """The hyperparameters of a subset of members (a chunk), in ``index`` order."""
        return replace(
            self,
            lr=self.lr[index],
            momentum=self.momentum[index],
            weight_decay=self.weight_decay[index],
            seed=None if self.seed is None else self.seed[index],
        )

    def scale_lr(self, factor: float) -> Hyper:
        """These hyperparameters with every member's lr multiplied by a schedule factor."""
        return replace(self, lr=self.lr * factor)


class Optimizer(Protocol):
    """A functional optimizer for vectorized ensembles.

    ``update`` is the optimizer's one step, pure: it returns new parameters and state and
    leaves its inputs alone, with no in-place op and no data-dependent branch, so the
    tangent replay can push ``torch.func.jvp`` / ``vjp`` through the very step the engine
    takes. ``step`` is that update written back in place under ``torch.no_grad()``, as the
    engine uses it; ``step`` counts from 1. Members where ``active`` (bool ``[members]``)
    is False are left exactly unchanged, parameters and state alike; the others are
    bitwise what they would be with no mask.
    """

    name: str

    def init(self, params: Mapping[str, Tensor]) -> State: ...

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
    ) -> tuple[Params, State]: ...

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None: ...


def per_member(values: Tensor, like: Tensor) -> Tensor:
    """``[members]`` float64 coefficients rounded to ``like``'s dtype, viewed ``[members, 1,
    ...]``.
    """
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def safe_sqrt(v: Tensor) -> Tensor:
    """``sqrt(v)`` bit for bit (NaN and ``-0.0`` included), with derivative 0 at ``v == 0``.

    Adam's second moment is exactly 0 where every gradient so far was 0 (an input pixel
    that is always 0); its tangent is 0 there too, and sqrt's ``inf`` slope would turn
    ``0 * inf`` into NaN in every tangent and hypergradient.
    """
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), v * 0)


def write_back(
    params: Mapping[str, Tensor],
    state: State,
    new_params: Mapping[str, Tensor],
    new_state: State,
    active: Tensor | None,
) -> None:
    """Copy an update's results into ``params`` and ``state``, leaving inactive members untouched.

    With a mask the results are merged with ``torch.where``: an active member's values are
    the very same numbers as without a mask. A slot the update returned as is (cone
    descent's ``x0``) is not copied.
    """
    with torch.no_grad():
        for name, param in params.items():
            pairs = [(param, new_params[name])]
            pairs += [(old, new_state[name][slot]) for slot, old in state[name].items()]
            for old, new in pairs:
                if new is old:
                    continue
                if active is not None:
                    mask = active.to(old.device).view(-1, *([1] * (old.dim() - 1)))
                    new = torch.where(mask, new, old)
                old.copy_(new)


@contextmanager
def inactive_kept(tensors: Sequence[Tensor], active: Tensor | None) -> Iterator[None]:
    """Around an in-place update of every member: members where ``active`` is False get
    their values in ``tensors`` back afterwards, bit for bit.

    The in-place optimizer steps update all members (an update is elementwise per member,
    so an active member's numbers do not depend on the others) and then put the frozen
    members' slices back, instead of merging a whole out-of-place result with
    ``torch.where`` as :func:`write_back` does: the cost is a copy of the frozen members only.
    """
    if active is None:
        yield
        return
    with torch.no_grad():
        frozen = torch.nonzero(~active).flatten()
        saved = [t.index_select(0, frozen.to(t.device)) for t in tensors]
        yield
        for t, old in zip(tensors, saved, strict=True):
            t.index_copy_(0, frozen.to(t.device), old)


def member_sum(x: Tensor) -> Tensor:
    """``[members, *shape]`` -> ``[members]`` float64 sums in an order fixed per member.

    A plain ``sum(dim=1)`` of one long row is split across threads while many rows are
    not, so one member alone would get different bits than inside an ensemble. Summing
    blocks of ``_BLOCK`` elements, level by level, keeps every reduction short and serial.
    """
    x = x.double().reshape(x.shape[0], -1)
    while x.shape[1] > _BLOCK:
        if x.shape[1] % _BLOCK:
            x = torch.nn.functional.pad(x, (0, (-x.shape[1]) % _BLOCK))
        x = x.reshape(x.shape[0], -1, _BLOCK).sum(2)
    return x.sum(1)


def check_members(params: Mapping[str, Tensor], hyper: Hyper, active: Tensor | None) -> None:
    """Raise ``ValueError`` when the member dimensions of params, hyper and mask disagree."""
    members = hyper.members
    for name, param in params.items():
        if param.dim() == 0 or param.shape[0] != members:
            raise ValueError(
                f"param {name!r} has shape {tuple(param.shape)}; expected [{members}, ...]"
            )
    if active is not None and (active.dtype != torch.bool or active.shape != (members,)):
        raise ValueError(
            f"active must be a bool [{members}] tensor; got {active.dtype} {tuple(active.shape)}"
        )
