"""Many convolutional members at once: ``params [N, ...]``, ``x [N, B, C, H, W]`` -> ``[N, B,
...]``.

The model is traced once with ``torch.fx`` and its graph is run with every value kept
member-first, ``[N, B, ...]``:

* every layer with weights (convolution, BatchNorm, linear) runs once per member, with that
  member's weights and running statistics (``conv._conv_forward(x[n], w[n], b[n])``, the
  call ``nn.Conv2d.forward`` makes): the very kernels the loop strategy runs, so a member's
  numbers do not depend on the other members of its chunk, and equal the loop's bitwise;
* elementwise activations, residual additions, pooling and flattening run once for all
  members (exact or per-plane kernels: the same bits as one member at a time).

Why not ``vmap`` of the module or one convolution with ``groups=N``: ``vmap`` of a
convolution *is* a grouped convolution over the members, and oneDNN picks its algorithm
(and its threads' split of the weight gradient) by the number of groups. Measured on this
project's CPU: ResNet-20's 3-channel stem gives other bits at ``groups=2`` than at
``groups>=3``, and with two threads a width-8 8x8 convolution's weight gradient differs at
2, 4 and 20 groups from 5 -- a member alone (padded to 2) and the same member in a chunk
would train apart (``tests/unit/test_engine_conv.py``, ``benchmarks/conv_speed.py``).

BatchNorm follows ``nn.BatchNorm2d.forward`` line by line: in training mode it counts
``num_batches_tracked``, updates the running statistics in place (the member's slice of the
stacked buffer) with ``momentum`` or, for ``momentum=None``, the cumulative average
``1 / num_batches_tracked``; in eval mode it normalizes with the running statistics.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from attractor.training.forward_lm import Params

#: Modules that act on each example alone and have no weights: they run on ``[N * B, ...]``.
_PER_EXAMPLE = (
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
#: Functions and methods that act elementwise on tensors of one layout (``[N, B, ...]``).
_ELEMENTWISE_CALLS: set[object] = {
    operator.add,
    operator.mul,
    operator.sub,
    torch.add,
    torch.mul,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    F.relu,
    F.gelu,
    F.silu,
    "relu",
    "tanh",
    "sigmoid",
    "add",
    "mul",
}
_FLATTEN_CALLS: set[object] = {torch.flatten, "flatten"}
#: Functional pooling: per example and weightless, so the members are more examples.
_POOL_CALLS: set[object] = {
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
}
#: A group of members' largest activation at most this many bytes (a core's L2 cache here is
#: 1 MiB): ResNet-20 at batch 32 (2 MB per member) then runs member by member, which trained
#: 0.9-1.0x the loop where all 4 members at once trained 0.75-0.85x; see
#: :meth:`StackedConvNet.__call__`.
GROUP_BYTES = 1 << 20
#: On the CPU, vectorizing pays for a net whose largest activation per example is at most
#: this many bytes (``digits-cnn``: 2 KiB, 1.2-1.3x the loop per training step; ResNet-8 on
#: 16x16x3 at width 8: 8 KiB, 0.95-1.0x; ResNet-20 on CIFAR: 64 KiB, 0.85-0.95x).
SMALL_ACTIVATION_BYTES = 4 << 10


def _supported_module(module: nn.Module) -> bool:
    if isinstance(module, _ConvNd):
        return not module.transposed
    if isinstance(module, _BatchNorm):
        return type(module) in (nn.BatchNorm1d, nn.BatchNorm2d)
    return isinstance(module, (nn.Linear, nn.Flatten, *_PER_EXAMPLE))


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow, unsupported Python: not this path
        return None


def stacked_conv_net(model: nn.Module) -> StackedConvNet | None:
    """The stacked forward of ``model`` if it is a network this module runs, else ``None``.

    That is: a model with at least one convolution or BatchNorm whose ``torch.fx`` graph
    calls only convolutions (not transposed), ``BatchNorm1d/2d``, linear layers, flatten,
    pooling and elementwise activations, and adds or multiplies their outputs (residual
    connections); no parameter read outside a module, no dropout.
    """
    if not any(isinstance(m, (_ConvNd, _BatchNorm)) for m in model.modules()):
        return None
    traced = _trace(model)
    if traced is None:
        return None
    modules = dict(traced.named_modules())
    for node in traced.graph.nodes:
        if node.op == "call_module" and not _supported_module(modules[node.target]):
            return None
        if node.op in ("call_function", "call_method"):
            if node.target not in _ELEMENTWISE_CALLS | _FLATTEN_CALLS | _POOL_CALLS:
                return None
            # flatten from dim 0 folds the batch into the features: no per-member meaning
            if node.target in _FLATTEN_CALLS and _flatten_dims(node.args, node.kwargs)[0] == 0:
                return None
        if node.op == "get_attr":
            return None
    return StackedConvNet(model, traced)


class StackedConvNet:
    """Batched forward of a traced convolutional network; see the module docstring.

    The template's submodules give the layers' settings (stride, padding, eps, momentum,
    train or eval mode); ``params`` and ``buffers`` give every member's tensors.
    """

    def __init__(
        self, model: nn.Module, traced: fx.GraphModule, group_bytes: int | None = GROUP_BYTES
    ) -> None:
        self.model = model
        self.nodes = list(traced.graph.nodes)
        # The template's own submodules (not the traced copy's): train()/eval() reach them.
        self.modules = dict(model.named_modules())
        self.group_bytes = group_bytes
        self.peaks: dict[tuple[int, ...], int] = {}  # example shape -> peak bytes per example

    def __call__(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        """``x [N, B, ...]`` -> ``[N, B, ...]``; BatchNorm in training mode updates ``buffers``.

        Members run in groups whose largest activation stays within ``group_bytes``
        (measured once per example shape, on the meta device), so a big network's layers do not
        stream every member's activations through the cache between two layers. A member's
        numbers do not depend on its group: its layers with weights run alone anyway.
        """
        members = x.shape[0]
        if self.group_bytes is None or members == 1:
            return self._run(params, buffers, x)[0]
        peak = self._peak_per_example(params, buffers, x) * x.shape[1]
        size = max(1, self.group_bytes // max(1, peak))
        sizes = [size] * (members // size) + ([members % size] if members % size else [])
        if len(sizes) == 1:
            return self._run(params, buffers, x)[0]
        # Split once: torch.split's backward gathers the groups' gradients in one cat, where a
        # slice per group would build one zero-filled [N, ...] gradient per group.
        groups = zip(
            _split(params, sizes), _split(buffers, sizes), torch.split(x, sizes), strict=True
        )
        return torch.cat([self._run(p, b, xg)[0] for p, b, xg in groups])

    def peak_bytes_per_example(self, x: Tensor) -> int:
        """The largest activation's bytes for one example of ``x [B, ...]`` (the template's
        own weights, on the meta device).
        """
        params = {k: v.detach().unsqueeze(0) for k, v in self.model.named_parameters()}
        buffers = {k: v.unsqueeze(0) for k, v in self.model.named_buffers()}
        return self._peak_per_example(params, buffers, x.unsqueeze(0))

    def _peak_per_example(self, params: Params, buffers: Params, x: Tensor) -> int:
        """The largest value's bytes per member and example, from one run on the meta device
        (shapes only, no arithmetic), once per example shape.
        """
        shape = tuple(x.shape[2:])
        if shape not in self.peaks:
            # Two examples: BatchNorm in training mode refuses one value per channel.
            # The counts stay real (a copy): momentum=None divides by one.
            meta_params = {k: v[:1].to("meta") for k, v in params.items()}
            meta_buffers = {
                k: v[:1].to("meta") if v.is_floating_point() else v[:1].clone()
                for k, v in buffers.items()
            }
            example = x[:1, :1].to("meta").expand(1, 2, *shape)
            with torch.no_grad():
                self.peaks[shape] = self._run(meta_params, meta_buffers, example)[1] // 2
        return self.peaks[shape]

    def _run(self, params: Params, buffers: Params, x: Tensor) -> tuple[Tensor, int]:
        """The graph on ``x [n, B, ...]``: the output and the largest value's bytes per member."""
        values: dict[fx.Node, object] = {}
        peak = 0

        def arg(a: object) -> object:
            return values[a] if isinstance(a, fx.Node) else a

        for node in self.nodes:
            if node.op == "placeholder":
                values[node] = x
            elif node.op == "call_module":
                module = self.modules[node.target]
                values[node] = self._module(node.target, module, arg(node.args[0]), params, buffers)
            elif node.op in ("call_function", "call_method"):
                args = [arg(a) for a in node.args]
                kwargs = {k: arg(v) for k, v in node.kwargs.items()}
                values[node] = _call(node.op, node.target, args, kwargs)
            elif node.op == "output":
                out = arg(node.args[0])
                assert isinstance(out, Tensor)
                return out, peak
            value = values[node]
            if isinstance(value, Tensor):
                peak = max(peak, value.numel() * value.element_size() // x.shape[0])
        raise AssertionError("a traced graph ends in an output node")

    def _module(
        self, name: str, module: nn.Module, h: object, params: Params, buffers: Params
    ) -> Tensor:
        assert isinstance(h, Tensor)
        if isinstance(module, _ConvNd):
            return self._conv(name, module, h, params)
        if isinstance(module, _BatchNorm):
            return _batch_norm(name, module, h, params, buffers)
        if isinstance(module, nn.Linear):
            return _per_member(
                F.linear, h, params.get(f"{name}.weight"), params.get(f"{name}.bias")
            )
        if isinstance(module, nn.Flatten):
            return _flatten(h, module.start_dim, module.end_dim)
        # Per example and weightless: the members are more examples.
        return module(h.flatten(0, 1)).unflatten(0, h.shape[:2])

    def _conv(self, name: str, conv: _ConvNd, h: Tensor, params: Params) -> Tensor:
        """One convolution per member (not one grouped convolution: see the module docstring)."""
        forward: Callable[[Tensor, Tensor, Tensor | None], Tensor] = conv._conv_forward  # type: ignore[assignment]
        return _per_member(forward, h, params[f"{name}.weight"], params.get(f"{name}.bias"))


def _per_member(
    layer: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    h: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
) -> Tensor:
    """``layer(h[n], weight[n], bias[n])`` for every member, stacked: ``[N, B, ...]``."""
    assert weight is not None
    # unbind, not h[n]: the backward of N selects would build N zero-filled [N, ...] grads.
    biases = [None] * h.shape[0] if bias is None else bias.unbind(0)
    return torch.stack(
        [layer(*args) for args in zip(h.unbind(0), weight.unbind(0), biases, strict=True)]
    )


def _batch_norm(name: str, bn: _BatchNorm, h: Tensor, params: Params, buffers: Params) -> Tensor:
    """``nn.BatchNorm*d.forward`` of every member, each with its own slice of the buffers."""
    weight, bias = params.get(f"{name}.weight"), params.get(f"{name}.bias")
    mean, var = buffers.get(f"{name}.running_mean"), buffers.get(f"{name}.running_var")
    tracked = buffers.get(f"{name}.num_batches_tracked")
    factor: list[float] = [0.0 if bn.momentum is None else bn.momentum] * h.shape[0]
    if bn.training and bn.track_running_stats and tracked is not None:
        tracked.add_(1)  # every member's count at once: an exact integer add
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm
            factor = [1.0 / float(t) for t in tracked]
    use_batch = bn.training or (mean is None and var is None)
    keep = not bn.training or bn.track_running_stats
    members = h.shape[0]

    def each(t: Tensor | None) -> list[Tensor | None]:
        # unbind, not t[n]: the backward of N selects would build N zero-filled [N, ...] grads.
        return [None] * members if t is None else list(t.unbind(0))

    # The running statistics' slices are views: batch_norm's in-place update reaches buffers.
    means, variances = each(mean if keep else None), each(var if keep else None)
    weights, biases = each(weight), each(bias)
    return torch.stack(
        [
            F.batch_norm(
                hn, means[n], variances[n], weights[n], biases[n], use_batch, factor[n], bn.eps
            )
            for n, hn in enumerate(h.unbind(0))
        ]
    )


def _split(tensors: Params, sizes: list[int]) -> list[Params]:
    """``tensors`` cut along the members into groups of ``sizes`` (views)."""
    cut = {k: torch.split(v, sizes) for k, v in tensors.items()}
    return [{k: parts[i] for k, parts in cut.items()} for i in range(len(sizes))]


def _flatten(h: Tensor, start: int, end: int) -> Tensor:
    """``torch.flatten`` of every member's ``[B, ...]``: dimensions shift by the member axis."""
    return h.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def _flatten_dims(args: Sequence[object], kwargs: Mapping[str, object]) -> tuple[int, int]:
    """``(start_dim, end_dim)`` of a ``torch.flatten(x, ...)`` / ``x.flatten(...)`` call."""
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    return int(start), int(end)  # type: ignore[call-overload]


def _call(op: str, target: object, args: list[object], kwargs: dict[str, object]) -> object:
    if target in _POOL_CALLS:
        h = args[0]
        assert isinstance(h, Tensor) and callable(target)
        return target(h.flatten(0, 1), *args[1:], **kwargs).unflatten(0, h.shape[:2])
    if target in _FLATTEN_CALLS:
        h = args[0]
        assert isinstance(h, Tensor)
        return _flatten(h, *_flatten_dims(args, kwargs))
    if op == "call_method":
        self, *rest = args
        return getattr(self, str(target))(*rest, **kwargs)
    assert callable(target)
    return target(*args, **kwargs)
