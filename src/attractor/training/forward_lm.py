"""Many GPT-2 members at once: ``params [N, ...]``, ``ids [N, ..., T]`` -> ``[N, ..., T, V]``.

The Hugging Face GPT-2 of ``tiny-lm`` (:func:`attractor.tasks.tiny_lm.build_gpt2`) written out
as batched matmuls over ``[members, tokens, width]``, the way ``_StackedMLP`` in
:mod:`attractor.training.forward` runs an MLP: every ``Conv1D`` is one ``baddbmm`` over the
members, the members' embedding tables are one table (member ``n``'s token ``t`` is row
``n * V + t``), attention is one causal ``scaled_dot_product_attention`` over ``members x
batch`` sequences, and the MLP's ``gelu_new`` is PyTorch's fused tanh GELU (the same
formula in one pass instead of eight).

``torch.func.vmap`` of the module computes the same function (the loop strategy's
``functional_call`` of the module is the specification; the tests hold both within 1e-5),
but pays Hugging Face's Python per call and the eager attention's and ``gelu_new``'s
separate elementwise passes: on the CPU it measured 1.0-1.5x the loop per training step and
0.6-0.9x end to end (its evaluations are slower than the loop's), this path 1.2-1.9x and
1.2-1.8x (``benchmarks/lm_speed.py``, 4-16 members, 1 and 2 threads).

Attention on the CPU is the fused kernel (:class:`_CausalAttention`: its own forward and
backward for first-order training, no graph for evaluation) and the same attention in plain
differentiable operations wherever a higher derivative may be taken (``torch.func``
transforms, forward mode, a backward with ``create_graph``), so the tangent replay's
``jvp`` and Hessian-vector products go through it as through the module. On other devices
it is always the plain operations: the engine runs CUDA with deterministic algorithms, and
the fused kernels' backward passes there are not all deterministic (not measured on a GPU).

References:
    Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]

#: The Hugging Face class this path reproduces, by module and name (transformers is an extra:
#: never imported here, only recognized when a model of it already exists).
_GPT2 = ("transformers.models.gpt2.modeling_gpt2", "GPT2LMHeadModel")
#: Buffers an older GPT-2 keeps (its constant causal mask); nothing else may be there.
_MASK_BUFFERS = ("attn.bias", "attn.masked_bias")
#: Sequences per member in one pass without autograd (evaluation): 0.76 s instead of 1.02 s
#: for 8 members on tiny-lm's 252 training windows. Fixed, not a function of the member
#: count, so a member's evaluation is cut into the same pieces in any chunk.
_EVAL_SEQUENCES = 32


@dataclass(frozen=True)
class GPT2Shape:
    """What the batched forward needs to know of one GPT-2 (read off its config).

    Attributes:
        prefix: name of the ``GPT2LMHeadModel`` inside the template (``"model."`` for
            ``tiny-lm``'s ``CausalLM``), prepended to every parameter name.
        layers: transformer blocks.
        heads: attention heads.
        eps: the layer norms' epsilon.
        scales: each block's attention scale (``head_dim ** -0.5``, divided by ``layer + 1``
            where the config scales by the inverse layer index).
        tied: the output layer is the token embedding (no ``lm_head.weight`` parameter).
    """

    prefix: str
    layers: int
    heads: int
    eps: float
    scales: tuple[float, ...]
    tied: bool


def gpt2_shape(model: nn.Module) -> GPT2Shape | None:
    """The :class:`GPT2Shape` of ``model`` if it is a GPT-2 this path computes exactly, else None.

    ``model`` is a ``GPT2LMHeadModel`` or a module whose only child is one and whose forward
    returns its logits (``tiny-lm``'s ``CausalLM``). Refused (None): dropout (vmap and the
    loop draw it; this path cannot), cross-attention, an activation other than ``gelu_new``,
    the reordered fp16 attention, and any parameter or buffer beyond GPT-2's own.
    """
    module = sys.modules.get(_GPT2[0])
    if module is None:
        return None
    hf_class = getattr(module, _GPT2[1])
    children = list(model.named_children())
    if type(model) is hf_class:
        prefix, inner = "", model
    elif len(children) == 1 and type(children[0][1]) is hf_class and _is_causal_lm(model):
        prefix, inner = children[0][0] + ".", children[0][1]
    else:
        return None
    config = inner.config
    head_dim = config.n_embd // config.n_head
    supported = (
        config.activation_function == "gelu_new"
        and config.n_head * head_dim == config.n_embd
        and not config.add_cross_attention
        and not config.reorder_and_upcast_attn
        and config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
        and getattr(config, "_attn_implementation", "eager") in ("eager", "sdpa")
    )
    if not supported:
        return None
    shape = GPT2Shape(
        prefix=prefix,
        layers=config.n_layer,
        heads=config.n_head,
        eps=float(config.layer_norm_epsilon),
        scales=tuple(
            (head_dim**-0.5 if config.scale_attn_weights else 1.0)
            / (float(i + 1) if config.scale_attn_by_inverse_layer_idx else 1.0)
            for i in range(config.n_layer)
        ),
        tied="lm_head.weight" not in dict(inner.named_parameters(remove_duplicate=True)),
    )
    expected = set(_names(shape))
    if {k for k, _ in model.named_parameters()} != expected:
        return None
    if any(not k.endswith(_MASK_BUFFERS) for k, _ in model.named_buffers()):
        return None
    return shape


def _is_causal_lm(model: nn.Module) -> bool:
    """``tiny-lm``'s wrapper (forward = the inner model's logits), recognized by its class."""
    from attractor.tasks.tiny_lm import CausalLM

    return type(model) is CausalLM


def _names(shape: GPT2Shape) -> list[str]:
    """Every parameter name of a GPT-2 of ``shape``, in the module's order."""
    t = f"{shape.prefix}transformer."
    names = [f"{t}wte.weight", f"{t}wpe.weight"]
    for i in range(shape.layers):
        block = f"{t}h.{i}."
        names += [
            block + part
            for part in (
                "ln_1.weight",
                "ln_1.bias",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            )
        ]
    names += [f"{t}ln_f.weight", f"{t}ln_f.bias"]
    if not shape.tied:
        names.append(f"{shape.prefix}lm_head.weight")
    return names


class StackedGPT2:
    """Batched forward of a GPT-2 (see the module docstring): ``x [N, ..., T]`` token ids."""

    def __init__(self, shape: GPT2Shape) -> None:
        self.shape = shape

    def __call__(self, params: Params, buffers: Params, x: Tensor) -> Tensor:
        n, lead, steps = x.shape[0], x.shape[1:-1], x.shape[-1]
        ids = x.reshape(n, -1, steps)  # [n, b, T]
        if torch.is_grad_enabled() or ids.shape[1] <= _EVAL_SEQUENCES:
            logits = self._logits(params, ids)
        else:  # evaluation: a few sequences at a time keep the activations in cache
            pieces = ids.split(_EVAL_SEQUENCES, 1)
            logits = torch.cat([self._logits(params, piece) for piece in pieces], 1)
        return logits.view(n, *lead, steps, logits.shape[-1])

    def _logits(self, params: Params, ids: Tensor) -> Tensor:
        """``ids [n, b, T]`` -> ``logits [n, b, T, V]``."""
        s = self.shape
        t = f"{s.prefix}transformer."
        n, b, steps = ids.shape
        wte = params[f"{t}wte.weight"]  # [n, V, d]
        vocab, width = wte.shape[1:]
        # One table of all members' embeddings: member i's token t is row i * V + t.
        offset = torch.arange(n, device=ids.device).mul_(vocab).view(n, 1, 1)
        h = F.embedding(ids + offset, wte.reshape(n * vocab, width))
        h = (h + params[f"{t}wpe.weight"][:, :steps].unsqueeze(1)).view(n, b * steps, width)
        for i in range(s.layers):
            block = f"{t}h.{i}."
            a = _layer_norm(h, params, block + "ln_1", s.eps)
            qkv = _conv1d(a, params, block + "attn.c_attn")
            h = h + _conv1d(
                _attention(qkv, n * b, steps, s.heads, s.scales[i]), params, block + "attn.c_proj"
            )
            a = _layer_norm(h, params, block + "ln_2", s.eps)
            m = F.gelu(_conv1d(a, params, block + "mlp.c_fc"), approximate="tanh")
            h = h + _conv1d(m, params, block + "mlp.c_proj")
        h = _layer_norm(h, params, f"{t}ln_f", s.eps)
        head = wte if s.tied else params[f"{s.prefix}lm_head.weight"]  # [n, V, d]
        return torch.bmm(h, head.transpose(1, 2)).view(n, b, steps, vocab)


def _layer_norm(h: Tensor, params: Params, name: str, eps: float) -> Tensor:
    """Layer norm with each member's own affine: ``h [n, M, d]``."""
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    normed = F.layer_norm(h, h.shape[-1:], eps=eps)
    return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1))


def _conv1d(h: Tensor, params: Params, name: str) -> Tensor:
    """GPT-2's ``Conv1D`` (``x @ W + b``, ``W [in, out]``) of every member: ``h [n, M, in]``."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"])


def _attention(qkv: Tensor, sequences: int, steps: int, heads: int, scale: float) -> Tensor:
    """Causal self-attention of ``qkv [n, sequences * T, 3 d]`` -> ``[n, sequences * T, d]``."""
    n, tokens, three_d = qkv.shape
    width = three_d // 3
    q, k, v = (
        part.reshape(sequences, steps, heads, width // heads).transpose(1, 2)
        for part in qkv.split(width, -1)
    )
    if qkv.device.type != "cpu" or _higher_order(qkv):
        out = _math_attention(q, k, v, scale)
    elif torch.is_grad_enabled() and qkv.requires_grad:
        out = _CausalAttention.apply(q, k, v, scale)
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return out.transpose(1, 2).reshape(n, tokens, width)


def _higher_order(x: Tensor) -> bool:
    """Whether ``x`` is inside a ``torch.func`` transform or carries a forward-mode tangent:
    there a derivative of the attention's backward may be taken, which the fused kernel lacks.
    """
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    if active is None or active():
        return True
    return torch.autograd.forward_ad.unpack_dual(x).tangent is not None


def _math_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal attention in plain differentiable operations (any order, forward mode, vmap)."""
    steps = q.shape[-2]
    future = torch.ones(steps, steps, dtype=torch.bool, device=q.device).triu(1)
    weights = (torch.matmul(q, k.transpose(-1, -2)) * scale).masked_fill(future, float("-inf"))
    return torch.matmul(weights.softmax(-1).to(v.dtype), v)


class _CausalAttention(torch.autograd.Function):
    """The fused causal attention kernel, whose backward is the kernel's own (first order) or
    :func:`_math_attention`'s (under ``create_graph``), so it is differentiable to any order.
    """

    @staticmethod
    # type: ignore[override]
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        # The kernel's own graph, kept for a first-order backward (no second forward pass).
        with torch.enable_grad():
            inner = tuple(t.detach().requires_grad_(True) for t in (q, k, v))
            out = F.scaled_dot_product_attention(*inner, is_causal=True, scale=scale)
        ctx.inner, ctx.out = inner, out
        return out.detach()

    @staticmethod
    # type: ignore[override]
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        higher = torch.is_grad_enabled()  # backward with create_graph
        if ctx.out is not None and not higher:  # first order: the fused kernel's backward
            out, inner = ctx.out, ctx.inner
            ctx.out = ctx.inner = None  # its buffers go now, as autograd's own would
            grads = torch.autograd.grad(out, inner, grad)
        else:  # the same attention in differentiable operations
            q, k, v = ctx.saved_tensors
            with torch.enable_grad():
                out = _math_attention(q, k, v, ctx.scale)
                grads = torch.autograd.grad(out, (q, k, v), grad, create_graph=higher)
        return (*grads, None)


def is_hugging_face(model: nn.Module) -> bool:
    """Whether ``model`` is or holds a module of Hugging Face ``transformers``."""
    return any(type(m).__module__.startswith("transformers.") for m in model.modules())


def stacked_gpt2(model: nn.Module) -> StackedGPT2 | None:
    """The batched GPT-2 forward of ``model``, or None where :func:`gpt2_shape` refuses it."""
    shape = gpt2_shape(model)
    return None if shape is None else StackedGPT2(shape)
