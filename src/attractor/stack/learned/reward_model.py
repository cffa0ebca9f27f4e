"""Level 2 of the learned trainer2: evaluators (reward models) learned from the human's examples.

Member ``i`` of an evaluator ensemble is a small classifier ``inputs -> hidden -> 1`` (SiLU;
a logistic regression when ``hidden = 0``) on a fixed feature map of an item (``inputs`` = 64
pixels for images, a base language model's pooled hidden state for text; the shapes below
say 64 for the pixels) trained on member ``i``'s perturbed copy of the
examples (:func:`attractor.stack.learned.examples.perturbed_sets`) from its own seeded
initialisation. Its output ``sigmoid(logit)`` is its probability that the human prefers an
item: the reward a trainer at level 3 maximises.

:func:`train_evaluator_loop` is the specification: one member, an ``nn.Module`` and
``torch.optim.Adam``. :func:`train_evaluators` trains all members at once on stacked
``[m, ...]`` parameters: one batched forward/backward per step (the members' losses are
summed; they share no parameter, so each gets exactly its own gradient) and Adam written
out on the stacked tensors. The tests hold it to the loop.

Devices: an ensemble computes where its parameters live (``train_evaluators(..., device)``);
their initial values are drawn on the CPU from each member's seed and then moved, so a
member starts from the same numbers on every device, and scores come back on the device
of the items asked about (CPU items, CPU scores).

Where the members disagree the examples did not settle the preference;
:func:`disagreement` measures it per item and :func:`to_label_next` picks the items whose
labels would shrink it most (BALD's mutual information).

References:
    Christiano et al., "Deep Reinforcement Learning from Human Preferences", NeurIPS 2017.
    Houlsby, Huszar, Ghahramani and Lengyel, "Bayesian Active Learning for Classification
    and Preference Learning", arXiv:1112.5745, 2011 (BALD).
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.stack.learned.examples import PIXELS, ExampleSets

#: torch.optim.Adam's defaults, so that the stacked update is the loop's update.
_BETAS = (0.9, 0.999)
_EPS = 1e-8


@dataclass(frozen=True)
class EvaluatorDesign:
    """How every evaluator member is built and trained.

    Attributes:
        hidden: width of the one hidden layer (SiLU); 0 = a linear (logistic) model.
        weight_decay: L2 penalty ``weight_decay * sum of squared weights`` added to the loss
            (weight matrices only: a penalised bias would pull an evaluator towards
            ``p = 0.5`` whenever the preferred items are rare).
        steps: full-batch Adam steps.
        lr: Adam's learning rate.
    """

    hidden: int = 32
    weight_decay: float = 1e-3
    steps: int = 300
    lr: float = 1e-2
    inputs: int = PIXELS  # the feature width: 64 pixels, or a language model's hidden size

    def __post_init__(self) -> None:
        if self.inputs < 1:
            raise UserError(f"evaluator inputs = {self.inputs}: give the feature width (>= 1)")
        if self.hidden < 0 or self.steps < 0:
            raise UserError(
                f"evaluator hidden = {self.hidden}, steps = {self.steps}: give numbers >= 0"
            )
        if self.weight_decay < 0 or not self.lr > 0:
            raise UserError(
                f"evaluator weight_decay = {self.weight_decay}, lr = {self.lr}: give "
                "weight_decay >= 0 and lr > 0"
            )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """One member's parameter shapes by name (``nn.Linear`` layout: weight ``[out, in]``)."""
        if self.hidden == 0:
            return {"out.weight": (1, self.inputs), "out.bias": (1,)}
        h = self.hidden
        return {
            "hidden.weight": (h, self.inputs),
            "hidden.bias": (h,),
            "out.weight": (1, h),
            "out.bias": (1,),
        }


def init_params(design: EvaluatorDesign, seed: int) -> dict[str, Tensor]:
    """One member's initial parameters from ``torch.Generator().manual_seed(seed)``.

    ``nn.Linear``'s default distribution, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weight
    and bias, drawn in :meth:`EvaluatorDesign.shapes` order from the member's own generator
    (``nn.Linear`` itself would draw from the global one).
    """
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in design.shapes().items():
        first = name.startswith("hidden") or design.hidden == 0
        fan_in = design.inputs if first else design.hidden
        bound = 1.0 / math.sqrt(fan_in)
        params[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return params


def _logits(params: dict[str, Tensor], x: Tensor) -> Tensor:
    """Stacked forward: ``x [m, b, 64]`` -> logits ``[m, b]``."""
    if "hidden.weight" in params:
        x = F.silu(
            torch.einsum("mbi,mhi->mbh", x, params["hidden.weight"])
            + params["hidden.bias"].unsqueeze(1)
        )
    return torch.einsum("mbh,moh->mbo", x, params["out.weight"]).squeeze(-1) + params["out.bias"]


def _loss(
    logits: Tensor, labels: Tensor, weights: Tensor, params: dict[str, Tensor], decay: float
) -> Tensor:
    """Per member ``[m]``: weighted mean BCE-with-logits + ``decay`` x sum of squared weights."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    fit = (weights * bce).sum(-1) / weights.sum(-1)
    penalty = sum(p.square().flatten(1).sum(-1) for k, p in params.items() if k.endswith("weight"))
    return fit + decay * penalty


@dataclass(frozen=True)
class Evaluators:
    """A trained evaluator ensemble.

    Attributes:
        params: each member's parameters stacked, ``[m, ...]`` (names as
            :meth:`EvaluatorDesign.shapes`).
        design: how they were built.
    """

    params: dict[str, Tensor]
    design: EvaluatorDesign

    @property
    def members(self) -> int:
        return int(self.params["out.bias"].shape[0])

    @property
    def device(self) -> torch.device:
        """Where the members compute (their parameters' device)."""
        return self.params["out.bias"].device

    def logits(self, x: Tensor) -> Tensor:
        """``x [b, 64]`` (every member scores the same items) or ``[m, b, 64]`` (member ``i``
        scores row ``i``) of any float dtype -> float32 logits ``[m, b]``, without grad,
        computed on :attr:`device` and returned on ``x``'s device.
        """
        m, d = self.members, self.design.inputs
        if x.dim() == 2 and x.shape[-1] == d:
            x = x.unsqueeze(0).expand(m, -1, -1)
        elif not (x.dim() == 3 and x.shape[0] == m and x.shape[-1] == d):
            raise ValueError(f"items of shape {tuple(x.shape)}: give [b, {d}] or [{m}, b, {d}]")
        with torch.no_grad():
            return _logits(self.params, x.to(self.device, torch.float32)).to(x.device)

    def probabilities(self, x: Tensor) -> Tensor:
        """Each member's probability that the human prefers the item, ``[m, b]``."""
        return torch.sigmoid(self.logits(x))


def train_evaluators(
    sets: ExampleSets,
    design: EvaluatorDesign,
    seeds: Sequence[int],
    device: torch.device | None = None,
) -> Evaluators:
    """Member ``i`` trained on ``sets`` row ``i`` from :func:`init_params` (``seeds[i]``).

    Full-batch Adam on the stacked parameters, one batched computation per step for all
    members; ``sets.weights`` are normalised per member by the weighted mean.

    Args:
        sets: ``items [m, n, 64]``, ``labels [m, n]``, ``weights [m, n]``.
        seeds: ``m`` initialisation seeds.
        device: where the members train and stay (None: the CPU); the initial values are
            drawn on the CPU and moved there.
    """
    device = torch.device("cpu") if device is None else device
    m = sets.members
    if len(seeds) != m:
        raise UserError(f"{len(seeds)} evaluator seeds for {m} example sets; give one per set")
    if bool((sets.weights.sum(-1) <= 0).any()):
        raise UserError("an example set has no weight (every example dropped); keep some")
    inits = [init_params(design, int(seed)) for seed in seeds]
    params = {k: torch.stack([p[k] for p in inits]).to(device).requires_grad_() for k in inits[0]}
    first = {k: torch.zeros_like(p) for k, p in params.items()}
    second = {k: torch.zeros_like(p) for k, p in params.items()}
    x, y, w = (t.to(device, torch.float32) for t in (sets.items, sets.labels, sets.weights))
    b1, b2 = _BETAS
    for step in range(1, design.steps + 1):
        # Members share no parameter, so the gradient of the summed loss with respect to
        # member i's parameters is member i's own gradient.
        loss = _loss(_logits(params, x), y, w, params, design.weight_decay).sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            # torch.optim.Adam's update, term for term (bias corrections included).
            correction1, correction2 = 1 - b1**step, 1 - b2**step
            for (name, p), g in zip(params.items(), grads, strict=True):
                first[name].mul_(b1).add_(g, alpha=1 - b1)
                second[name].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (second[name].sqrt() / math.sqrt(correction2)).add_(_EPS)
                p.addcdiv_(first[name], denom, value=-design.lr / correction1)
    return Evaluators({k: p.detach() for k, p in params.items()}, design)


class _Evaluator(nn.Module):
    """One member as a module: the loop's specification of the stacked forward."""

    def __init__(self, design: EvaluatorDesign) -> None:
        super().__init__()
        width = design.hidden or design.inputs
        self.hidden = nn.Linear(design.inputs, design.hidden) if design.hidden else None
        self.out = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.hidden is not None:
            x = F.silu(self.hidden(x))
        return self.out(x).squeeze(-1)


def train_evaluator_loop(
    items: Tensor, labels: Tensor, weights: Tensor, design: EvaluatorDesign, seed: int
) -> dict[str, Tensor]:
    """One member, the plain way: ``items [n, 64]``, ``labels [n]``, ``weights [n]`` ->
    parameters (names and shapes of :meth:`EvaluatorDesign.shapes`).
    """
    model = _Evaluator(design)
    model.load_state_dict(init_params(design, seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=design.lr, betas=_BETAS, eps=_EPS)
    x, y, w = (t.to(torch.float32) for t in (items, labels, weights))
    for _ in range(design.steps):
        optimizer.zero_grad()
        bce = F.binary_cross_entropy_with_logits(model(x), y, reduction="none")
        penalty = sum(p.square().sum() for k, p in model.named_parameters() if "weight" in k)
        loss = (w * bce).sum() / w.sum() + design.weight_decay * penalty
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _entropy(p: Tensor) -> Tensor:
    """Binary entropy in nats, 0 at ``p`` in ``{0, 1}``."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def disagreement(evaluators: Evaluators, items: Tensor) -> dict[str, Tensor]:
    """How much the members disagree about each item of ``items [b, 64]``.

    Returns:
        float32 ``[b]`` each: ``sd``, the standard deviation over members of the
        probabilities (population form, so one member gives 0); ``split``, 1 where the
        members do not all give the same label (``p > 0.5``), else 0;
        ``mutual_information``, ``H(mean_m p_m) - mean_m H(p_m)`` in nats (BALD: the
        information a label of the item would give about which member is right; 0 when
        all agree, at most ``log 2``).
    """
    # On the evaluators' device, back on the items' one.
    p = evaluators.probabilities(items.to(evaluators.device)).to(torch.float64)  # MI: a difference
    says = p > 0.5
    mi = _entropy(p.mean(0)) - _entropy(p).mean(0)
    found = {
        "sd": p.std(0, correction=0),
        "split": says.any(0) & ~says.all(0),
        "mutual_information": mi.clamp(min=0.0),
    }
    return {k: v.to(items.device, torch.float32) for k, v in found.items()}


def to_label_next(evaluators: Evaluators, pool: Tensor, k: int) -> Tensor:
    """int64 ``[k]``: indices into ``pool [b, 64]`` of the ``k`` items with the largest
    mutual information (ties: the lower index first), the items a human should label next.
    """
    if not 1 <= k <= pool.shape[0]:
        raise UserError(f"k = {k} items to label: give 1 to {pool.shape[0]} (the pool's size)")
    mi = disagreement(evaluators, pool)["mutual_information"]
    return torch.sort(mi, descending=True, stable=True).indices[:k]


__all__ = [
    "EvaluatorDesign",
    "Evaluators",
    "disagreement",
    "init_params",
    "to_label_next",
    "train_evaluator_loop",
    "train_evaluators",
]
