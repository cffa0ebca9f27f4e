"""Repairing the statistics of interpolated networks before measuring linear mode connectivity.

The midpoint ``(a + b) / 2`` of two aligned networks has the right weights but the wrong
activation statistics: averaging two sets of weights whose units are only partly
correlated shrinks the variance of every unit's output, layer after layer ("variance
collapse"), and a BatchNorm layer that still normalizes with the interpolated running
statistics of ``a`` and ``b`` does not undo it. Much of the barrier then measures that
artefact rather than the loss landscape. Two remedies:

* ``"reset"``: recompute every BatchNorm layer's running mean and variance of the
  interpolated network on training data (Ainsworth et al.'s "reset BN statistics"). A
  network without BatchNorm (an MLP, LeNet) is returned unchanged: a no-op.
* ``"repair"`` (REPAIR): after the reset, rescale each corrected unit (every BatchNorm
  output, and every hidden ``Linear``/``Conv2d`` output not read by a BatchNorm) so that
  its mean and standard deviation over the data are the interpolation of the two ends'
  ``(1 - alpha) * stat_a + alpha * stat_b``; folded into that layer's weight and bias.
  Units are corrected one at a time in forward order, each measured after the ones
  before it were fixed.

The data are a fixed, seeded choice of training inputs, the same for every point of a
path (no augmentation), so the curve stays deterministic.

References:
    Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo Permutation
    Symmetries", ICLR (resetting BatchNorm statistics); Jordan, Sedghi, Saukh, Entezari &
    Neyshabur (2022), "REPAIR: REnormalizing Permuted Activations for Interpolation
    Repair", ICLR 2023.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.errors import UserError

__all__ = [
    "REPAIRS",
    "RepairData",
    "batchnorm_layers",
    "repair_path",
    "repair_points",
    "repair_state",
    "reset_batchnorm",
    "unit_statistics",
]

State = dict[str, Tensor]

#: What :func:`repair_path` can do to the interpolated networks.
REPAIRS = ("none", "reset", "repair")

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
# A standard deviation below this is a dead unit: leave its scale alone.
_EPS = 1e-8


@dataclass(frozen=True)
class RepairData:
    """The fixed training inputs that statistics are recomputed on.

    Attributes:
        x: ``[n, ...]`` training inputs in the order they are used.
        batch_size: examples per forward pass (the reset averages per-batch statistics,
            as BatchNorm does in training).
    """

    x: Tensor
    batch_size: int = 128

    @classmethod
    def sample(
        cls, x_train: Tensor, batches: int = 10, batch_size: int = 128, seed: int = 0
    ) -> RepairData:
        """``batches`` batches of ``batch_size`` training inputs, drawn without replacement
        by ``seed`` (all of them when there are fewer).
        """
        if batches < 1 or batch_size < 2:
            raise UserError(
                f"repair needs at least 1 batch of at least 2 examples; got {batches} of "
                f"{batch_size}"
            )
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x_train), generator=gen)[: batches * batch_size]
        return cls(x_train[order.to(x_train.device)], batch_size)

    def batches(self) -> Iterator[Tensor]:
        """Batches of :attr:`x`; a last batch of one example is dropped (BatchNorm in
        training mode cannot normalize one example of a ``Linear`` layer)."""
        for begin in range(0, len(self.x), self.batch_size):
            batch = self.x[begin : begin + self.batch_size]
            if len(batch) > 1 or begin == 0:
                yield batch


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s ``BatchNorm1d``/``BatchNorm2d`` layers that track statistics."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _BATCHNORM) and m.track_running_stats
    ]


def _loaded(template: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``template`` holding ``state`` (on the state's device), in eval mode."""
    model = copy.deepcopy(template)
    model.load_state_dict(dict(state))
    device = next(iter(state.values())).device
    return model.to(device).eval()


@torch.no_grad()
def reset_batchnorm(template: nn.Module, state: Mapping[str, Tensor], data: RepairData) -> State:
    """``state`` with every BatchNorm layer's running statistics recomputed on ``data``.

    Each BatchNorm layer is put in training mode with ``momentum=None`` (a cumulative
    average) after its statistics are reset, and the network runs forward over every
    batch of ``data``; every other layer stays in eval mode (no dropout). The running
    mean is then the mean of the batch means, the running variance the mean of the
    (unbiased) batch variances, as in training. A network without BatchNorm comes back
    as the same tensors (a no-op).

    Args:
        template: a module of the architecture (its own weights are not used).
        state: parameters and buffers of one network.
        data: the training inputs (:meth:`RepairData.sample`).

    References:
        Ainsworth et al. (2023), "Git Re-Basin", ICLR (resetting BatchNorm statistics
        of interpolated networks); Jordan et al. (2022), "REPAIR", ICLR 2023 ("RESET").
    """
    names = batchnorm_layers(template)
    if not names:
        return dict(state)
    model = _loaded(template, state)
    modules = dict(model.named_modules())
    for name in names:
        layer = modules[name]
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    device = next(iter(state.values())).device
    for batch in data.batches():
        model(batch.to(device))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def repair_points(model: nn.Module) -> list[str]:
    """Layers whose outputs REPAIR corrects, in module order (the forward order of chains
    and of attractor's ResNet): every BatchNorm layer, and every ``Linear``/``Conv2d`` but
    the last whose next module is not a BatchNorm (the BatchNorm after it is corrected
    instead).
    """
    named = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (*_BATCHNORM, nn.Linear, nn.Conv2d))
    ]
    points = []
    for index, (name, module) in enumerate(named):
        if isinstance(module, _BATCHNORM):
            points.append(name)
        elif index + 1 < len(named) and not isinstance(named[index + 1][1], _BATCHNORM):
            points.append(name)
    return points


@torch.no_grad()
def unit_statistics(
    model: nn.Module, layers: list[str], data: RepairData
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-unit mean and standard deviation of each layer's output over all of ``data``.

    Args:
        model: the network, in the mode to measure it in.
        layers: module names; outputs ``[n, units]`` or ``[n, units, h, w]``.
        data: the inputs.

    Returns:
        ``{layer: (mean [units], std [units])}`` in float64, over examples (and positions).
    """
    sums: dict[str, list[Tensor]] = {}
    modules = dict(model.named_modules())

    def hook(name: str):
        def record(_module: nn.Module, _inputs: object, out: Tensor) -> None:
            flat = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)
            acc = (flat.shape[1], flat.sum(1), (flat * flat).sum(1))
            sums[name] = (
                [a + b for a, b in zip(sums[name], acc, strict=True)] if name in sums else list(acc)
            )

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        device = next(model.parameters()).device
        for batch in data.batches():
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name in layers:
        count, total, squares = sums[name]
        mean = total / count
        out[name] = (mean, (squares / count - mean * mean).clamp_min(0).sqrt())
    return out


@torch.no_grad()
def repair_state(
    template: nn.Module,
    state: Mapping[str, Tensor],
    goal: Mapping[str, tuple[Tensor, Tensor]],
    data: RepairData,
) -> State:
    """REPAIR one network: reset its BatchNorm statistics, then move each corrected unit's
    mean and standard deviation to ``goal``, layer by layer in forward order.

    Args:
        template: a module of the architecture.
        state: the interpolated network's parameters and buffers.
        goal: ``{layer: (mean [units], std [units])}`` for every layer of
            :func:`repair_points`, usually ``(1 - alpha)`` times the first end's
            :func:`unit_statistics` plus ``alpha`` times the second's.
        data: the training inputs.

    Returns:
        The repaired state: BatchNorm statistics reset, the corrected layers' weights and
        biases rescaled so that ``out -> (out - mean) * goal_std / std + goal_mean``, with
        ``mean`` and ``std`` measured in one forward pass over all of ``data.x`` (eval
        mode), each layer after the ones before it were corrected.

    Raises:
        UserError: a corrected ``Linear``/``Conv2d`` has no bias to shift its mean with.

    References:
        Jordan et al. (2022), "REPAIR: REnormalizing Permuted Activations for Interpolation
        Repair", ICLR 2023.
    """
    model = _loaded(template, reset_batchnorm(template, state, data))
    modules = dict(model.named_modules())
    points = repair_points(template)
    for name in points:
        if modules[name].bias is None:
            raise UserError(
                f"REPAIR shifts each unit's mean by the bias of the layer before it; layer "
                f"'{name}' has none (use repair 'reset')"
            )

    def correct(name: str):
        def hook(module: nn.Module, _inputs: object, out: Tensor) -> Tensor:
            # All of the data in one batch: this layer's statistics already see the
            # corrections of every layer before it, as a layer-by-layer repair would.
            flat = out.double().transpose(0, 1).reshape(out.shape[1], -1)
            mean, std = flat.mean(1), flat.var(1, unbiased=False).sqrt()
            goal_mean, goal_std = (g.double().to(mean.device) for g in goal[name])
            scale = torch.where(std > _EPS, goal_std / std.clamp_min(_EPS), torch.ones_like(std))
            module.weight.copy_(
                module.weight.double() * scale.view(-1, *[1] * (module.weight.dim() - 1))
            )
            module.bias.copy_((module.bias.double() - mean) * scale + goal_mean)
            view = (1, -1, *[1] * (out.dim() - 2))
            fixed = (out.double() - mean.view(view)) * scale.view(view) + goal_mean.view(view)
            return fixed.to(out.dtype)

        return hook

    handles = [modules[name].register_forward_hook(correct(name)) for name in points]
    try:
        model(data.x.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def repair_path(
    mode: str,
    template: nn.Module,
    states: list[State],
    alphas: Tensor,
    ends: tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    data: RepairData | None,
) -> list[State]:
    """Apply ``mode`` to every network of a path (both ends included, so every point is
    measured the same way).

    Args:
        mode: ``"none"``, ``"reset"`` (:func:`reset_batchnorm`) or ``"repair"``
            (:func:`repair_state`, goals interpolated from the ends at each alpha).
        template: a module of the architecture.
        states: ``[k]`` networks along the path; alphas: their ``[k]`` mixing weights.
        ends: the two end networks the goals of ``"repair"`` come from.
        data: the training inputs (needed unless ``mode`` is ``"none"``).

    Raises:
        UserError: an unknown ``mode``.
    """
    if mode not in REPAIRS:
        raise UserError(f"unknown repair '{mode}'; known: {', '.join(REPAIRS)}")
    if mode == "none" or (mode == "reset" and not batchnorm_layers(template)):
        return states
    if data is None:
        raise ValueError(f"repair '{mode}' needs data")
    if mode == "reset":
        return [reset_batchnorm(template, s, data) for s in states]
    points = repair_points(template)
    stats = [unit_statistics(_loaded(template, end), points, data) for end in ends]
    out = []
    for state, alpha in zip(states, alphas.tolist(), strict=True):
        goal = {
            p: tuple(
                (1 - alpha) * sa + alpha * sb
                for sa, sb in zip(stats[0][p], stats[1][p], strict=True)
            )
            for p in points
        }
        out.append(repair_state(template, state, goal, data))
    return out
