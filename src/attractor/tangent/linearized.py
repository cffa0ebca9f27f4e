"""The tangent step written out by hand: Hessian-vector products plus the optimizer's linearization.

Same numbers as :func:`attractor.tangent.lyapunov.jvp_step` (tested to float64 round-off),
several times faster: ``vmap(jvp)`` pays functorch's dispatch on every small elementwise
op of the optimizer for every column, while here one double-backward gives every column's
``dg = H dp`` at once (``is_grads_batched``) and the optimizer's tangent is a handful of
batched elementwise ops. The loss does not depend on lr, momentum or weight decay, so
``H dp`` is the gradient's whole tangent; the hyperparameters enter through the update:

SGD (``g = grad + wd p``, ``b = mu b + g``, ``p -= lr b``; Nesterov ``p -= lr (g + mu b)``)::

    dg = H dp + wd dp + dwd p      db' = mu db + dmu b + dg      dp' = dp - lr db' - dlr b'

Adam(W) (``m = lerp(m, g, 1 - beta1)``, ``v = beta2 v + (1 - beta2) g^2``,
``p -= s m / (sqrt(v) / c2 + eps)`` with ``s = lr / (1 - beta1^t)``, ``c2 = sqrt(1 - beta2^t)``)::

    dm' = dm + (1 - beta1)(dg - dm) - dbeta1 (g - m)      dv' = beta2 dv + 2 (1 - beta2) g dg
    d denom = dv' / (2 sqrt(v') c2)  (0 where v' = 0)
    ds = dlr / (1 - beta1^t) + lr t beta1^(t-1) dbeta1 / (1 - beta1^t)^2
    dp' = dp - (ds m' + s dm') / denom + s m' d denom / denom^2

References:
    Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6, 1994.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from attractor.tangent.lyapunov import Tangents
from attractor.tangent.unroll import Params, Unrolled, _safe_sqrt

#: Activations that act elementwise, so a member dimension passes through them unchanged.
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity)


def batched_linear(params: Params, name: str, h: Tensor) -> Tensor:
    """Linear layer ``name`` of every member at once: ``h [n, B, in] -> [n, B, out]``."""
    weight = params[f"{name}.weight"].transpose(1, 2)
    bias = params.get(f"{name}.bias")
    return torch.bmm(h, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, weight)


def flat_mlp(module: nn.Module) -> bool:
    """``nn.Sequential`` of ``nn.Linear`` and known elementwise activations only."""
    children = [m for _, m in module.named_children()]
    return type(module) is nn.Sequential and all(isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in children)


def member_forward(module: nn.Module) -> Callable[[Params, Tensor], Tensor]:
    """``(params [n, ...], x [n, B, ...]) -> [n, B, ...]``: batched matmuls for a flat MLP, else vmap."""
    children = list(module.named_children())
    if flat_mlp(module):
        def mlp(params: Params, x: Tensor) -> Tensor:
            h = x.flatten(2)
            for name, layer in children:
                if isinstance(layer, nn.Linear):
                    h = batched_linear(params, name, h)
                else:
                    h = layer(h)
            return h

        return mlp
    return vmap(lambda p, xb: functional_call(module, p, (xb,)))


def _col(coefficient: Tensor, like: Tensor) -> Tensor:
    """``[n]`` or ``[n, K]`` coefficients viewed to broadcast against ``like`` ([n, ...] or [n, K, ...])."""
    return coefficient.to(like.dtype).view(*coefficient.shape, *([1] * (like.dim() - coefficient.dim())))


def linearized_step(run: Unrolled) -> Callable[..., Tangents]:
    """A drop-in for :func:`~attractor.tangent.lyapunov.jvp_step` (SGD and Adam(W)).

    Gradient and ``H dp`` come from autograd's double backward with batched grad outputs.
    (A hand-written batched R-operator for flat MLPs gave the same numbers but was 1.4x
    slower: at k = 16 the step is bound by its matmul flops, six per layer and column.)
    """
    forward = member_forward(run.module)
    trainer = run.config.trainer
    penalty = trainer.logit_penalty

    def logits_losses(logits: Tensor, y: Tensor) -> Tensor:
        """``[n, B, C]`` -> ``[n]`` each member's training loss, as the engine's."""
        per_example = run.task.loss(logits, y)
        if penalty:
            per_example = per_example + 0.5 * penalty * logits.pow(2).sum(-1)
        return per_example.reshape(logits.shape[0], -1).mean(1)

    def step(z: Tangents, hyper: dict[str, Tensor], x: Tensor, y: Tensor, t: int, factor: float) -> Tangents:
        names = list(z.params)
        columns = z.dparams[names[0]].shape[1]
        leaves = [z.params[k].detach().requires_grad_(True) for k in names]
        with torch.enable_grad():
            loss = logits_losses(forward(dict(zip(names, leaves, strict=True)), x), y).sum()
            grads = torch.autograd.grad(loss, leaves, create_graph=columns > 0)
            hv = [torch.zeros_like(z.dparams[k]) for k in names]
            if columns:
                # Members share nothing, so the summed loss's Hessian is block diagonal by member.
                outs = [z.dparams[k].transpose(0, 1) for k in names]
                found = torch.autograd.grad(grads, leaves, grad_outputs=outs, is_grads_batched=True, allow_unused=True)
                hv = [h if f is None else f.transpose(0, 1) for h, f in zip(hv, found, strict=True)]
        lr, mom, wd = hyper["lr"] * factor, hyper["momentum"], hyper["weight_decay"]
        dlr, dmom, dwd = z.dhyper["lr"] * factor, z.dhyper["momentum"], z.dhyper["weight_decay"]
        update = _sgd if run.optimizer == "sgd" else _adam
        params, state, dparams, dstate = {}, {}, {}, {}
        for k, g, dg in zip(names, grads, hv, strict=True):
            params[k], state[k], dparams[k], dstate[k] = update(
                z.params[k], g.detach(), z.state[k], z.dparams[k], dg.detach(), z.dstate[k], lr, mom, wd, dlr, dmom, dwd, t, trainer, run.optimizer)
        return Tangents(params, state, dparams, dstate, z.dhyper)

    return step


def _sgd(p, g, slots, dp, dg, dslots, lr, mom, wd, dlr, dmom, dwd, t, trainer, name):  # noqa: ANN001, ANN202 - see module docstring
    pe = p.unsqueeze(1)  # primal viewed against the column dimension
    g = g + p * _col(wd, p)
    dg = dg + dp * _col(wd, dp) + pe * _col(dwd, dp)
    buf = slots["momentum_buffer"] * _col(mom, p) + g
    dbuf = dslots["momentum_buffer"] * _col(mom, dp) + slots["momentum_buffer"].unsqueeze(1) * _col(dmom, dp) + dg
    if trainer.nesterov:
        direction = g + buf * _col(mom, p)
        ddirection = dg + buf.unsqueeze(1) * _col(dmom, dp) + dbuf * _col(mom, dp)
    else:
        direction, ddirection = buf, dbuf
    new_p = p + direction * _col(-lr, p)
    new_dp = dp - ddirection * _col(lr, dp) - direction.unsqueeze(1) * _col(dlr, dp)
    return new_p, {"momentum_buffer": buf}, new_dp, {"momentum_buffer": dbuf}


def _adam(p, g, slots, dp, dg, dslots, lr, beta1, wd, dlr, dbeta1, dwd, t, trainer, name):  # noqa: ANN001, ANN202 - see module docstring
    beta2, eps = trainer.beta2, trainer.eps
    pe = p.unsqueeze(1)
    if name == "adamw":
        decay = 1 - lr * wd
        p, dp = p * _col(decay, p), dp * _col(decay, dp) - pe * _col(dlr * wd.unsqueeze(1) + lr.unsqueeze(1) * dwd, dp)
    else:
        g, dg = g + p * _col(wd, p), dg + dp * _col(wd, dp) + pe * _col(dwd, dp)
    m, v, dm, dv = slots["exp_avg"], slots["exp_avg_sq"], dslots["exp_avg"], dslots["exp_avg_sq"]
    new_m = torch.lerp(m, g, _col(1 - beta1, p))
    new_dm = dm + (dg - dm) * _col(1 - beta1, dm) - (g - m).unsqueeze(1) * _col(dbeta1, dm)
    new_v = v * beta2 + g * g * (1 - beta2)
    new_dv = dv * beta2 + g.unsqueeze(1) * dg * (2 * (1 - beta2))
    c2 = (1 - beta2**t) ** 0.5
    root = _safe_sqrt(new_v)
    denom = root / c2 + eps
    droot = torch.where(new_v.unsqueeze(1) > 0, new_dv / (2 * root.unsqueeze(1)).clamp_min(torch.finfo(root.dtype).tiny), torch.zeros_like(new_dv))
    ddenom = droot / c2
    bias1 = 1 - beta1**t
    size = lr / bias1
    dsize = dlr / bias1.unsqueeze(1) + (lr * t * beta1 ** (t - 1) / bias1**2).unsqueeze(1) * dbeta1
    new_p = p + (new_m * _col(-size, p)) / denom
    de = denom.unsqueeze(1)
    me = new_m.unsqueeze(1)
    new_dp = dp - (me * _col(dsize, dp) + new_dm * _col(size, dp)) / de + me * _col(size, dp) * ddenom / de**2
    return new_p, {"exp_avg": new_m, "exp_avg_sq": new_v}, new_dp, {"exp_avg": new_dm, "exp_avg_sq": new_dv}


def replay(run: Unrolled, params: Params | None = None, hyper: dict[str, Tensor] | None = None) -> Params:
    """The primal run alone (no columns) with :func:`linearized_step`: final ``{name: [members, *shape]}``."""
    params = dict(run.params0 if params is None else params)
    hyper = run.hyper if hyper is None else hyper
    empty = {k: v.new_zeros(v.shape[0], 0, *v.shape[1:]) for k, v in params.items()}
    state = run.init_state(params)
    z = Tangents(params, state, empty, {k: {s: empty[k] for s in slots} for k, slots in state.items()},
                 {h: torch.zeros(run.members, 0, dtype=torch.float64) for h in hyper})
    step, batches = linearized_step(run), run.batches()
    for t in range(1, run.steps + 1):
        x, y = batches.next()
        z = step(z, hyper, x, y, t, run.factor(t))
    return z.params
