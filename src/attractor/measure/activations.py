"""Members' activations at named layers, by forward hooks, and which layers to read by default.

    acts = collect_activations(ens, ens.task.x_test, "1")   # {"1": [members, n, d]}

Layers are module names from ``named_modules()`` or fnmatch patterns
(:func:`resolve_layers`); without names, the activation modules or the modules feeding a
functional activation (:func:`default_layers`).
"""

from __future__ import annotations

import fnmatch

import torch
import torch.fx
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble

__all__ = ["collect_activations", "default_layers", "resolve_layers"]

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
