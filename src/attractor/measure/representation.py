"""Representation space: linear CKA between members' activations at named layers.

    acts = collect_activations(ens, ens.task.x_test, "1")   # {"1": [members, n, d]}
    pairwise_cka(acts["1"])                                  # [members, members]

Two estimators of the same population quantity (HSIC with linear kernels, normalized):

* ``debiased=False``: the biased HSIC estimator ``tr(K H L H) / (n - 1)^2`` of Gretton et
  al. (2005), as in Kornblith et al. (2019). Always in ``[0, 1]``; 1 for identical
  representations; biased upwards for finite ``n`` (two independent random
  representations score well above 0 when ``d`` is not small against ``n``).
* ``debiased=True``: the unbiased HSIC estimator of Song et al. (2012), as in the
  ``debiased`` option of Kornblith et al.'s reference code and in Nguyen et al. (2021).
  Unbiased for HSIC (the ratio is still only consistent); can fall slightly below 0.

The two differ by a few thousandths on digits-mlp members (the issue's planning run saw
~0.005; 6 members with hidden [128, 128] after 5 epochs, on the 360 test examples, gave
0.9683 biased vs 0.9675 debiased at the first hidden layer), so always say which one a
number is.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.fx
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble

# Modules whose output is "a representation" when the model is a plain stack of layers.
_ACTIVATIONS = (
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.PReLU,
)
# Functional activations that torch.fx sees as call_function / call_method targets.
_FUNCTIONAL = {
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    nn.functional.relu,
    nn.functional.gelu,
    nn.functional.silu,
    nn.functional.tanh,
    nn.functional.sigmoid,
    nn.functional.leaky_relu,
    nn.functional.elu,
    nn.functional.softplus,
    nn.functional.mish,
}
_METHODS = {"relu", "tanh", "sigmoid"}


# ---- estimators ----------------------------------------------------------------------
def _hsic(cross: Tensor, rows_x: Tensor, rows_y: Tensor, n: int, debiased: bool) -> Tensor:
    """HSIC up to a factor that cancels in CKA, from centered features.

    Args:
        cross: ``||X^T Y||_F^2 = <K, L>_F`` for centered ``X``, ``Y``: ``[...]``.
        rows_x: diagonal of ``K = X X^T``: ``[..., n]`` (so ``rows_x.sum(-1) = tr K``).
        rows_y: diagonal of ``L``: ``[..., n]``.
    """
    if not debiased:
        return cross
    # Song et al.'s estimator with the diagonals of K, L zeroed; centered features make
    # K 1 = 0, which collapses its three terms into this form (Kornblith et al.'s code).
    dot = (rows_x * rows_y).sum(-1)
    return cross - n / (n - 2) * dot + rows_x.sum(-1) * rows_y.sum(-1) / ((n - 1) * (n - 2))


def _check_n(n: int, debiased: bool) -> None:
    need = 4 if debiased else 2
    if n < need:
        raise ValueError(
            f"{'debiased' if debiased else 'biased'} CKA needs at least {need} examples, got {n}"
        )


def linear_cka(x: Tensor, y: Tensor, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same ``n`` examples.

    Args:
        x: ``[n, d1]`` (trailing dims are flattened).
        y: ``[n, d2]``.
        debiased: use Song et al.'s unbiased HSIC instead of the biased one (module docstring).

    Returns:
        CKA in float64 arithmetic; NaN when either representation is constant over examples.

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited";
        Song et al. (2012), "Feature Selection via Dependence Maximization";
        Nguyen et al. (2021), "Do Wide and Deep Networks Learn the Same Things?".
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same examples, got {x.shape[0]} and {y.shape[0]} rows"
        )
    n = x.shape[0]
    _check_n(n, debiased)
    x, y = (t.reshape(n, -1).double() for t in (x, y))
    x, y = x - x.mean(0), y - y.mean(0)
    rows_x, rows_y = (x * x).sum(1), (y * y).sum(1)

    def cross(a: Tensor, b: Tensor) -> Tensor:
        # <a a^T, b b^T> = ||a^T b||^2: the cheaper side of the product.
        if n < a.shape[1] * b.shape[1] / (a.shape[1] + b.shape[1]):
            return ((a @ a.T) * (b @ b.T)).sum()
        return (a.T @ b).square().sum()

    xy = _hsic(cross(x, y), rows_x, rows_y, n, debiased)
    xx = _hsic(cross(x, x), rows_x, rows_x, n, debiased)
    yy = _hsic(cross(y, y), rows_y, rows_y, n, debiased)
    return float(xy / (xx * yy).sqrt())


def pairwise_cka(acts: Tensor, debiased: bool = False) -> Tensor:
    """Linear CKA between every pair of members' representations at one layer.

    Args:
        acts: ``[members, n, d]`` (trailing dims are flattened).
        debiased: use Song et al.'s unbiased HSIC (module docstring).

    Returns:
        ``[members, members]`` float64, symmetric; NaN rows for constant representations.
        Memory ``O(members * n * min(n, d))``.

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited".
    """
    m, n = acts.shape[:2]
    _check_n(n, debiased)
    x = acts.reshape(m, n, -1).double()
    x = x - x.mean(1, keepdim=True)
    d = x.shape[2]
    if n <= d:  # through Gram matrices: <K_i, K_j> for all pairs in one matmul
        grams = (x @ x.transpose(1, 2)).reshape(m, n * n)
        cross = grams @ grams.T
    else:  # through feature cross-covariances, one member against all later ones
        cross = torch.empty(m, m, dtype=torch.float64)
        for i in range(m):
            row = (x[i].T.unsqueeze(0) @ x[i:]).square().sum((1, 2))
            cross[i, i:] = row
            cross[i:, i] = row
    rows = (x * x).sum(2)  # [m, n]
    hsic = _hsic(cross, rows.unsqueeze(1), rows.unsqueeze(0), n, debiased)
    self_hsic = hsic.diagonal()
    return hsic / (self_hsic.unsqueeze(0) * self_hsic.unsqueeze(1)).sqrt()


# ---- which layers --------------------------------------------------------------------
def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: list[str] | str) -> list[str]:
    """Module names of ``model`` selected by exact names or fnmatch patterns, in model order.

    Raises:
        UserError: a name or pattern matches no module (the message lists the available ones).
    """
    names = _names(model)
    chosen: set[str] = set()
    for pattern in [layers] if isinstance(layers, str) else layers:
        found = [pattern] if pattern in names else fnmatch.filter(names, pattern)
        if not found:
            raise UserError(
                f"no layer matches '{pattern}'; available layers: {', '.join(names) or '(none)'}"
            )
        chosen.update(found)
    return [name for name in names if name in chosen]


def default_layers(model: nn.Module) -> list[str]:
    """The layers CKA is measured at when none are named.

    The activation modules (``nn.ReLU``, ``nn.Tanh``, ...) when the model has any: for an
    ``nn.Sequential`` MLP these are the hidden representations after their nonlinearity.
    Otherwise the modules whose output feeds a functional activation (``torch.relu(...)``)
    found by tracing ``forward`` with ``torch.fx``: there the pre-activation output, since
    a hook sees only module outputs.

    Raises:
        UserError: neither kind is found (or the model cannot be traced); name layers instead.
    """
    acts = [name for name, mod in model.named_modules() if name and isinstance(mod, _ACTIVATIONS)]
    if acts:
        return acts
    available = ", ".join(_names(model)) or "(none)"
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # tracing is best effort: any failure means "name the layers"
        raise UserError(
            f"cannot find default layers of {type(model).__name__} ({type(exc).__name__}); "
            f"name them, available layers: {available}"
        ) from None
    feeding: list[str] = []
    for node in graph.nodes:
        is_act = (node.op == "call_function" and node.target in _FUNCTIONAL) or (
            node.op == "call_method" and node.target in _METHODS
        )
        if (
            is_act
            and node.args
            and isinstance(node.args[0], torch.fx.Node)
            and node.args[0].op == "call_module"
        ):
            feeding.append(str(node.args[0].target))
    if not feeding:
        raise UserError(
            f"{type(model).__name__} has no activation layers to default to; name them, "
            f"available layers: {available}"
        )
    return [name for name in _names(model) if name in feeding]


# ---- activations of members ----------------------------------------------------------
@torch.no_grad()
def _activations(
    model: nn.Module, x: Tensor, names: list[str], batch_size: int
) -> dict[str, Tensor]:
    """Outputs of ``names`` on ``x [n, ...]`` for one model: ``{name: [n, d]}``."""
    modules = dict(model.named_modules())
    seen: dict[str, list[Tensor]] = {name: [] for name in names}

    def hook(name: str):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            # Some modules (attention) return (output, extras): the first is the representation.
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(out, Tensor):
                raise UserError(
                    f"layer '{name}' outputs {type(output).__name__}, not a tensor; choose another "
                    "layer"
                )
            seen[name].append(out.detach().reshape(out.shape[0], -1).cpu())

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


def collect_activations(
    ens: Ensemble,
    x: Tensor,
    layers: list[str] | str | None = None,
    members: list[int] | None = None,
    step: int | None = None,
    batch_size: int = 1024,
) -> dict[str, Tensor]:
    """Every member's activations at ``layers`` on inputs ``x [n, ...]``, by forward hooks.

    Args:
        ens: the ensemble.
        x: inputs, ``[n, ...]`` (batch dimension first).
        layers: module names from ``named_modules()`` or fnmatch patterns (``"*"`` is every
            module); ``None`` uses :func:`default_layers`.
        members: default ``ens.members``.
        step: snapshot step (default each member's last).
        batch_size: examples per forward pass.

    Returns:
        ``{layer: [members, n, d]}`` with trailing dims flattened (``d`` = product), float32.

    Raises:
        UserError: unknown layer name or pattern, or no members.
    """
    members = ens.members if members is None else members
    if not members:
        raise UserError(f"'{ens.store.root}' has no finished members to take activations from")
    template = ens.task.make_model()
    names = default_layers(template) if layers is None else resolve_layers(template, layers)
    per_member = [_activations(ens.module(m, step), x, names, batch_size) for m in members]
    return {name: torch.stack([acts[name] for acts in per_member]) for name in names}


def member_cka(
    ens: Ensemble,
    x: Tensor | None = None,
    layers: list[str] | str | None = None,
    members: list[int] | None = None,
    step: int | None = None,
    debiased: bool = False,
) -> dict[str, Tensor]:
    """Pairwise CKA matrices ``{layer: [members, members]}`` on ``x`` (default the test split).

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited".
    """
    x = ens.task.x_test if x is None else x
    acts = collect_activations(ens, x, layers, members, step)
    return {name: pairwise_cka(a, debiased) for name, a in acts.items()}
