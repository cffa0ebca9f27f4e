"""Forward passes of many members at once: ``params [N, ...]``, ``x [N, B, ...]`` -> ``[N, B,
...]``.

Three implementations of one contract:

* ``_StackedMLP``: a flat ``nn.Sequential`` of ``nn.Linear`` and elementwise activations
  runs as batched matmuls with a hand-written backward that picks, per layer, the matmul
  orientation CPU BLAS is fastest at (a 10-wide output layer is ~4x faster computed as
  ``W @ x^T`` than as ``x @ W^T``: measured in ``benchmarks/ensemble_speed.py``).
* :class:`~attractor.training.forward_lm.StackedGPT2`: a Hugging Face GPT-2 (``tiny-lm``'s
  model) as batched matmuls and one fused causal attention over the members (vmap of the
  module trains no faster than the loop on the CPU: ``benchmarks/lm_speed.py``).
* :class:`~attractor.training.forward_conv.StackedConvNet`: a network of convolutions,
  BatchNorm, pooling, linear layers and residual additions (the ResNets, VGG, LeNet of
  :mod:`attractor.tasks.conv_models`), traced with ``torch.fx``: one convolution and one
  BatchNorm per member (the loop's kernels; ``vmap``'s grouped convolution takes other
  kernels at other member counts, so it is refused for convolutions), everything else
  once for all members.
* ``_VmappedModule``: any other module ``torch.func`` can batch, via
  ``vmap(functional_call)``.

All leave backward to autograd over the *sum* of member losses: members share no
parameters, so each member's gradient is exactly its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from attractor.training.forward_conv import (
    SMALL_ACTIVATION_BYTES,
    StackedConvNet,
    stacked_conv_net,
)
from attractor.training.forward_lm import is_hugging_face, stacked_gpt2

Params = dict[str, Tensor]
BatchedForward = Callable[[Params, Params, Tensor], Tensor]

#: Activations that act elementwise, so a member dimension passes through them unchanged.
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity)
# Below this many output features the transposed product W @ x^T is the faster BLAS call.
_NARROW = 32


class _BatchedLinear(torch.autograd.Function):
    """``y[n] = x[n] @ W[n]^T + b[n]`` for every member n, with a BLAS-friendly backward."""

    @staticmethod
    # type: ignore[override]
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        # baddbmm adds the bias inside the matmul instead of in a second pass over y.
        if weight.shape[1] < _NARROW:
            x_t = x.transpose(1, 2)
            if bias is None:
                return torch.bmm(weight, x_t).transpose(1, 2)
            return torch.baddbmm(bias.unsqueeze(2), weight, x_t).transpose(1, 2)
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    # type: ignore[override]
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, Tensor, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad_y, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad_y.transpose(1, 2), x)
        grad_b = grad_y.sum(1) if ctx.has_bias else None
        return grad_x, grad_w, grad_b


def batched_linear(params: Params, name: str, h: Tensor) -> Tensor:
    """Linear layer ``name`` of every member at once: ``h [n, B, in] -> [n, B, out]``.

    Differentiable to any order (its backward is made of differentiable ops), so the
    tangent step can take Hessian-vector products through it.
    """
    weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
    device = h.device.type
    # (A device autocast does not know, such as meta in the shape tests, is never autocast.)
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # A custom Function is not autocast by itself: cast as autocast would for a matmul
        # (the casts' own backward brings the gradients back to the weights' dtype).
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _BatchedLinear.apply(
                h.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
            )
    return _BatchedLinear.apply(h, weight, bias)


class _StackedMLP:
    """Batched forward for ``nn.Sequential(Linear, act, Linear, ...)`` with 2-D inputs."""

    def __init__(self, model: nn.Sequential) -> None:
        self.layers: list[tuple[str, nn.Module]] = list(model.named_children())

    def __call__(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        h = x.flatten(2) if x.dim() > 3 else x
        for name, layer in self.layers:
            if isinstance(layer, nn.Linear):
                h = batched_linear(params, name, h)
            else:
                h = layer(h)  # elementwise, so the member dimension passes through
        return h


class _VmappedModule:
    """Batched forward for any module ``torch.func`` can vmap (no in-place buffer updates)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        def one(p: Params, b: Params, xi: Tensor) -> Tensor:
            return functional_call(self.model, (p, b), (xi,))

        return vmap(one, in_dims=(0, 0, 0), randomness="error")(params, buffers, x)


def is_stacked_mlp(model: nn.Module) -> bool:
    """``nn.Sequential`` of ``nn.Linear`` (at least one) and :data:`ELEMENTWISE` only, no
    buffers.
    """
    return (
        type(model) is nn.Sequential
        and any(isinstance(m, nn.Linear) for m in model.children())
        and all(isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in model.children())
        and not any(True for _ in model.buffers())
    )


def batched_forward(model: nn.Module) -> BatchedForward:
    """The fastest batched forward for ``model``'s architecture (the module itself is a
    template).
    """
    if is_stacked_mlp(model):
        return _StackedMLP(model)
    gpt2 = stacked_gpt2(model)
    if gpt2 is not None:
        return gpt2
    conv = stacked_conv_net(model)
    return _VmappedModule(model) if conv is None else conv


def vectorizing_pays(
    model: nn.Module, device: torch.device, x_example: Tensor | None = None
) -> bool:
    """Whether :func:`batched_forward` is expected to train ``model`` faster than the loop.

    On the CPU, False for:

    * a Hugging Face model that only ``vmap`` batches (not one
      :func:`~attractor.training.forward_lm.stacked_gpt2` computes): there vmap pays Hugging
      Face's Python and the eager ops per call, and on ``tiny-lm`` at 4-16 members measured
      1.0-1.5x the loop per training step but 0.6-0.9x end to end, its evaluations slower
      than the loop's (``benchmarks/lm_speed.py``);
    * a :class:`~attractor.training.forward_conv.StackedConvNet` whose largest activation
      for one example of ``x_example [B, ...]`` exceeds
      :data:`~attractor.training.forward_conv.SMALL_ACTIVATION_BYTES`: its convolutions
      run per member anyway, so only the small layers' calls are saved, and above that size
      the loop measured as fast or faster (``benchmarks/conv_speed.py``). The two strategies
      give the same bits for these nets, so this choice is speed only.

    True for everything else (MLPs, the stacked GPT-2, small conv nets, any model on a GPU).
    """
    if device.type != "cpu":
        return True
    forward = batched_forward(model)
    if isinstance(forward, StackedConvNet):
        return x_example is None or forward.peak_bytes_per_example(x_example) <= (
            SMALL_ACTIVATION_BYTES
        )
    return not (is_hugging_face(model) and isinstance(forward, _VmappedModule))


def single_forward(model: nn.Module) -> BatchedForward:
    """Forward of one member at a time (the loop strategy): plain ``functional_call``, any
    module.
    """

    def forward(params: Params, buffers: Params, x: Tensor) -> Tensor:
        outs = [
            functional_call(
                model,
                ({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in buffers.items()}),
                (x[i],),
            )
            for i in range(x.shape[0])
        ]
        return torch.stack(outs)

    return forward


def can_vectorize(
    model: nn.Module, x_example: Tensor, loss: Callable[[Tensor, Tensor], Tensor], y_example: Tensor
) -> str | None:
    """``None`` if two copies of ``model`` train through :func:`batched_forward`, else the reason
    why not.

    A convolution that only ``vmap`` would batch is refused: ``vmap`` runs it as one
    grouped convolution over the members, whose kernel (and its threads' split) oneDNN
    picks by the number of groups, so a member's bits would depend on its chunk
    (:mod:`~attractor.training.forward_conv`).
    """
    forward = batched_forward(model)
    if isinstance(forward, _VmappedModule) and any(
        isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()
    ):
        return (
            "vmap runs its convolutions as one grouped convolution whose kernel depends on the "
            "number of members (a member would not train bitwise alike alone and in a chunk)"
        )
    params = {
        k: torch.stack([v.detach()] * 2).requires_grad_(True) for k, v in model.named_parameters()
    }
    buffers = {k: torch.stack([v] * 2) for k, v in model.named_buffers()}
    x = torch.stack([x_example] * 2)
    try:
        model.train()
        out = forward(params, buffers, x)
        torch.autograd.grad(loss(out, torch.stack([y_example] * 2)).sum(), list(params.values()))
    except Exception as exc:  # any failure to batch means: use the loop strategy
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None
