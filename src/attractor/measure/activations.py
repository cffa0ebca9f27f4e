"""Members' activations at named layers, by forward hooks, and which layers to read by default.

    acts = collect_activations(ens, ens.task.x_test, "1")   # {"1": [members, n, d]}

Layers are module names from ``named_modules()`` (``"stages.0"``, a ResNet's first block) or
fnmatch patterns (:func:`resolve_layers`); without names, the activation modules or the
modules feeding a functional activation, and for conv nets the outputs of residual blocks
and the globally pooled features (:func:`default_layers`). A conv layer's feature maps
``[n, C, H, W]`` are flattened to ``[n, C * H * W]`` per example.
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
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Global pooling: its output is the feature vector a conv net's classifier head reads.
_GLOBAL_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


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


def _blocks(model: nn.Module) -> list[str]:
    """Outermost composite blocks: modules with their own ``forward`` and submodules that are
    items of an ``nn.Sequential`` / ``nn.ModuleList`` (a ResNet's ``stages.0``, ``stages.1``,
    ...; torchvision's ``layer1.0``), not nested in another block.
    """
    found: list[str] = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, _CONTAINERS):
            continue
        for child_name, child in parent.named_children():
            if isinstance(child, _CONTAINERS) or not any(True for _ in child.children()):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not any(name.startswith(f"{block}.") for block in found):
                found.append(name)
    return found


def _conv_layers(model: nn.Module) -> list[str]:
    """A conv net's default layers: the outputs of its residual (composite) blocks, its
    activation modules outside those blocks, and its global pooling, in model order.

    Inside a block only the block's output is read: the sum after the shortcut is the
    representation the next block sees (an activation inside a block is often a functional
    call no hook sees, or one ``nn.ReLU`` run twice per forward, as in torchvision's
    ``BasicBlock``). The pooled features ``[n, C]`` are what the linear head reads.
    """
    blocks = _blocks(model)

    def outside(name: str) -> bool:
        return not any(name == b or name.startswith(f"{b}.") for b in blocks)

    chosen = set(blocks) | {
        name
        for name, mod in model.named_modules()
        if name and isinstance(mod, (*_ACTIVATIONS, *_GLOBAL_POOLS)) and outside(name)
    }
    return [name for name in _names(model) if name in chosen]


def default_layers(model: nn.Module) -> list[str]:
    """The layers CKA is measured at when none are named.

    A model with convolutions (``nn.Conv1d/2d/3d``): the output of each residual block
    (each item of an ``nn.Sequential`` / ``nn.ModuleList`` that is itself a module with
    submodules, ``stages.0``, ``stages.1``, ... of
    :class:`~attractor.tasks.conv_models.ResNet`), the activation modules outside such
    blocks (the stem's ReLU; every ReLU of a LeNet or a VGG) and the global pooling (the
    features the head reads). Otherwise the activation modules (``nn.ReLU``, ``nn.Tanh``,
    ...) when the model has any: for an ``nn.Sequential`` MLP these are the hidden
    representations after their nonlinearity. Failing both, the modules whose output feeds
    a functional activation (``torch.relu(...)``) found by tracing ``forward`` with
    ``torch.fx``: there the pre-activation output, since a hook sees only module outputs.

    Raises:
        UserError: no kind is found (or the model cannot be traced); name layers instead.
    """
    if any(isinstance(mod, _CONVS) for mod in model.modules()):
        conv = _conv_layers(model)
        if conv:
            return conv
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
    calls = dict.fromkeys(names, 0)

    def hook(name: str):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            # Some modules (attention) return (output, extras): the first is the representation.
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(out, Tensor):
                raise UserError(
                    f"layer '{name}' outputs {type(output).__name__}, not a tensor; choose another "
                    "layer"
                )
            # Conv feature maps [b, C, H, W] become [b, C * H * W]: every (channel, position)
            # is a feature, as Kornblith et al. (2019) compare conv layers. Linear CKA is
            # invariant to orthogonal maps of the features, so a permutation of channels
            # (hence of the flattened features) leaves it unchanged; averaging over positions
            # first would measure a different, coarser representation.
            seen[name].append(out.detach().reshape(out.shape[0], -1).cpu())
            calls[name] += 1

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
            _check_calls(model, calls, start // batch_size + 1)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


def _check_calls(model: nn.Module, calls: dict[str, int], forwards: int) -> None:
    """Each hooked module ran once per forward pass; a module run twice (one ``nn.ReLU``
    reused inside a block) or never would give rows that are not one per example."""
    for name, count in calls.items():
        if count != forwards:
            # Checked after every forward, so the earlier passes ran it once each.
            this_pass = count - (forwards - 1)
            times = "never runs" if this_pass == 0 else f"runs {this_pass} times"
            raise UserError(
                f"layer '{name}' of {type(model).__name__} {times} per forward pass, so its "
                "output is not one representation per example; choose another layer"
            )


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
