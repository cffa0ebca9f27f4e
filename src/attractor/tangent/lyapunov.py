"""Tangents carried along training: finite-time Lyapunov exponents and forward-mode hypergradients.

The training of a member is a map ``z_t = F_t(z_{t-1}, h)`` on ``z = (params, optimizer
state)`` with hyperparameters ``h``. Forward mode pushes tangent columns ``dz`` along
it, all columns of all members at once, either by ``torch.func.jvp`` through the
functional step (:func:`jvp_step`, the reference) or by Hessian-vector products and the
optimizer's own update under ``jvp`` (:mod:`attractor.tangent.linearized`, the default, same
numbers to round-off and several times faster):

* ``k`` *direction* columns start at random orthonormal directions of the initial
  parameters (optimizer-state tangent 0, hyper tangent 0). Every ``reorth_every`` steps and
  at every snapshot their parameter parts are re-orthonormalized, ``P = QR`` (Benettin et
  al. 1980); the optimizer-state parts get the same change of basis ``R^{-1}`` so the
  columns still span the image of the initial directions exactly. With
  ``L_i(t) = sum log|R_ii|`` the finite-time Lyapunov exponents are ``L_i(t) / t`` (nats
  per step) and ``exp(L_1(t)) = |J_t v_1|``, the growth of the first (random) direction:
  QR never changes the direction of the first column.
* ``len(hypers)`` *hyper* columns carry ``d z / d h`` (tangent 1 on ``h``; for
  ``init_scale`` the initial parameters' tangent is the unscaled weights): forward-mode
  hypergradients (Baydin et al. 2018), exact for SGD (momentum, Nesterov, weight decay)
  and Adam(W), with memory independent of the number of steps (unlike the reverse mode
  of Maclaurin et al. 2015).

At every snapshot the outcomes on the eval set (test split) are differentiated too:
mean loss, an accuracy surrogate (mean softmax probability of the true class) and the
logits. Growth is measured in the Euclidean norm of all parameters; function-space growth
is the root mean square over eval examples of the logit tangent's norm.

References:
    Benettin, Galgani, Giorgilli, Strelcyn, "Lyapunov characteristic exponents for smooth
    dynamical systems ... Part 1/2", Meccanica 15, 1980.
    Baydin, Cornish, Rubio, Schmidt, Wood, "Online learning rate adaptation with
    hypergradient descent", ICLR 2018.
    Maclaurin, Duvenaud, Adams, "Gradient-based hyperparameter optimization through
    reversible learning", ICML 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import functional_call, jvp, vmap

from attractor.seeds import torch_generator
from attractor.tangent.linearized import linearized_step
from attractor.tangent.types import Hypers, Params, Record, State, Tangents
from attractor.tangent.unroll import Unrolled


def flat(tree: Params, lead: int) -> Tensor:
    """``{name: [*lead_dims, *shape]}`` -> ``[*lead_dims, D]`` in name order."""
    return torch.cat([v.reshape(*v.shape[:lead], -1) for v in tree.values()], dim=-1)


def unflat(vector: Tensor, like: Params, lead: int) -> Params:
    """Inverse of :func:`flat` with the shapes of ``like`` (which has ``lead`` leading dims)."""
    out, start = {}, 0
    for k, v in like.items():
        shape = v.shape[lead:]
        size = math.prod(shape)
        out[k] = vector[..., start : start + size].reshape(*vector.shape[:-1], *shape)
        start += size
    return out


def random_directions(run: Unrolled, k: int, seed: int = 0) -> Params:
    """``k`` orthonormal random directions of the initial parameters per member, ``[members, k,
    *shape]``.

    Drawn from each member's own row seeds and ``seed``, so a member's directions do not
    depend on its chunk; drawn (and orthonormalized) on the CPU, then moved to the run's
    device, so they are the same numbers on every device.
    """
    d = sum(v[0].numel() for v in run.params0.values())
    if k > d:
        raise ValueError(f"{k} directions exceed the {d} parameters")
    draws = []
    for row in run.rows:
        gen = torch_generator(
            "tangent-directions", row.init_seed, row.data_seed, row.noise_seed, seed
        )
        g = torch.randn(d, k, generator=gen, dtype=torch.float64)
        draws.append(torch.linalg.qr(g).Q.T)  # [k, D] orthonormal rows
    return unflat(torch.stack(draws).to(run.dtype).to(run.device), run.params0, 1)


def jvp_step(run: Unrolled) -> Callable[..., Tangents]:
    """One training step of every member with all its tangent columns.

    ``vmap`` over columns outside, ``jvp`` of the member-vmapped step inside: the primal
    is computed once for all columns (vmap leaves it unbatched), and each member's columns
    see only that member's numbers.
    """
    vstep = run.vstep()

    def step(
        z: Tangents, hyper: dict[str, Tensor], x: Tensor, y: Tensor, t: int, factor: float
    ) -> Tangents:
        def column(dp: Params, ds: State, dh: dict[str, Tensor]):
            return jvp(
                lambda p, s, h: vstep(p, s, h, x, y, t, factor),
                (z.params, z.state, hyper),
                (dp, ds, dh),
            )

        (p, s), (dp, ds) = vmap(column, in_dims=1, out_dims=((None, None), (1, 1)))(
            z.dparams, z.dstate, z.dhyper
        )
        return Tangents(p, s, dp, ds, z.dhyper)

    return step


def outcome_fn(
    run: Unrolled, x: Tensor, y: Tensor
) -> Callable[[Params], tuple[Tensor, Tensor, Tensor]]:
    """``params -> (mean loss, accuracy surrogate, logits [E, C])`` of one member on the eval
    set.
    """
    classes = run.task.num_classes is not None

    def outcomes(params: Params) -> tuple[Tensor, Tensor, Tensor]:
        logits = functional_call(run.module, params, (x,))
        loss = run.task.loss(logits, y).mean()
        # The accuracy itself is piecewise constant (zero derivative): its smooth stand-in is
        # the mean probability given to the true class.
        surrogate = (
            logits.softmax(-1).gather(-1, y.unsqueeze(-1)).mean()
            if classes
            else torch.full_like(loss, float("nan"))
        )
        return loss, surrogate, logits

    return outcomes


def outcome_tangents(
    run: Unrolled, x: Tensor, y: Tensor, params: Params, dparams: Params
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Outcomes ``[members]`` / ``[members, E, C]`` and their tangents ``[members, K, ...]``."""
    members = vmap(outcome_fn(run, x, y))
    return vmap(lambda d: jvp(members, (params,), (d,)), in_dims=1, out_dims=(None, 1))(dparams)


class Orthonormalizer:
    """Benettin's QR bookkeeping for the first ``k`` columns of every member (on ``device``,
    beside the columns).
    """

    def __init__(self, members: int, k: int, device: torch.device | str = "cpu") -> None:
        self.k = k
        self.log_r = torch.zeros(members, k, dtype=torch.float64, device=device)  # L_i(t)
        self.r_cum = (
            torch.eye(k, dtype=torch.float64, device=device).expand(members, k, k).clone()
        )  # J_t V_0 = Q_t r_cum

    def __call__(self, z: Tangents, healthy: Tensor) -> Tangents:
        k = self.k
        head = {n: v[:, :k] for n, v in z.dparams.items()}
        p = flat(head, 2).transpose(1, 2)  # [members, D, k]
        # A diverged member's NaNs must not reach LAPACK; its numbers are reported as NaN.
        eye = torch.eye(p.shape[1], k, dtype=p.dtype, device=p.device).expand_as(p)
        p = torch.where(healthy.view(-1, 1, 1), p, eye)
        q, r = torch.linalg.qr(p)
        self.log_r += r.diagonal(dim1=1, dim2=2).abs().double().log()
        self.r_cum = r.double() @ self.r_cum
        new_head = unflat(q.transpose(1, 2), head, 2)
        dparams = {n: torch.cat([new_head[n], v[:, k:]], 1) for n, v in z.dparams.items()}
        r_t = r.transpose(1, 2)

        def rebase(v: Tensor) -> Tensor:  # columns times R^{-1}: rows R^{-T} X
            rows = v[:, :k].reshape(v.shape[0], k, -1)
            solved = torch.linalg.solve_triangular(r_t, rows, upper=False).reshape(v[:, :k].shape)
            return torch.cat([solved, v[:, k:]], 1)

        dstate = {n: {s: rebase(v) for s, v in slots.items()} for n, slots in z.dstate.items()}
        return Tangents(z.params, z.state, dparams, dstate, z.dhyper)


def snapshot_record(
    run: Unrolled,
    z: Tangents,
    ortho: Orthonormalizer,
    hypers: tuple[str, ...],
    step: int,
    healthy: Tensor,
    x: Tensor,
    y: Tensor,
) -> list[Record]:
    """Per member: exponents, top-direction growth, function-space growth and hypergradients at
    ``step``.

    The outcomes are computed on the run's device and read on the CPU: one copy each instead
    of a device round trip per number (on the CPU ``.cpu()`` is the tensor itself).
    """
    (loss, surrogate, _), tangents = outcome_tangents(run, x, y, z.params, z.dparams)
    loss, surrogate = loss.cpu(), surrogate.cpu()
    dloss, dsur, dlogits = (t.cpu() for t in tangents)
    log_r, r_cum, healthy = ortho.log_r.cpu(), ortho.r_cum.cpu(), healthy.cpu()
    k, examples = ortho.k, x.shape[0]
    records = []
    for i in range(run.members):
        rec: Record = {
            "member": run.rows[i].member,
            "step": step,
            "test_loss": float(loss[i]),
            "true_class_prob": float(surrogate[i]),
        }
        ok = bool(healthy[i])
        if k:
            out = dlogits[i, :k].reshape(k, -1).double()  # J_f Q_t, one row per column
            rec["log_growth_top"] = float(log_r[i, 0]) if ok else math.nan
            rec["function_growth_top"] = (
                float(out[0].norm() * log_r[i, 0].exp() / math.sqrt(examples)) if ok else math.nan
            )
            sv = (
                torch.linalg.svdvals(r_cum[i].T @ out) / math.sqrt(examples)
                if ok
                else torch.full((k,), math.nan)
            )
            for j in range(k):
                rec[f"exponent_{j}"] = float(log_r[i, j]) / step if ok and step else math.nan
                rec[f"function_sv_{j}"] = float(sv[j])
        for j, h in enumerate(hypers):
            c = k + j
            rec[f"d_test_loss_d_{h}"] = float(dloss[i, c]) if ok else math.nan
            rec[f"d_true_class_prob_d_{h}"] = float(dsur[i, c]) if ok else math.nan
            rec[f"d_logits_rms_d_{h}"] = (
                float(dlogits[i, c].double().pow(2).sum(-1).mean().sqrt()) if ok else math.nan
            )
        records.append(rec)
    return records


def _start(run: Unrolled, dparams0: Params, dhyper: Hypers) -> Tangents:
    """The initial weights and optimizer state, with the given columns (state tangents 0)."""
    params = dict(run.params0)
    state = run.init_state(params)
    dstate = {n: {s: torch.zeros_like(dparams0[n]) for s in slots} for n, slots in state.items()}
    return Tangents(params, state, dparams0, dstate, dhyper)


def _tangent_step(run: Unrolled, method: str) -> Callable[..., Tangents]:
    if method == "linearized":
        return linearized_step(run)
    if method == "jvp":
        return jvp_step(run)
    raise ValueError(f"unknown method {method!r}; known: linearized, jvp")


def propagate(
    run: Unrolled,
    dparams0: Params,
    dhyper: dict[str, Tensor],
    k: int,
    hypers: tuple[str, ...],
    reorth_every: int = 10,
    eval_set: tuple[Tensor, Tensor] | None = None,
    method: str = "linearized",
) -> tuple[list[Record], Tangents, Tensor]:
    """Train every member with ``K`` tangent columns; the first ``k`` are directions (re-
    orthonormalized).

    Args:
        dparams0: ``[members, K, *shape]`` initial parameter tangents.
        dhyper: ``{"lr" | "momentum" | "weight_decay": [members, K]}`` float64 hyper tangents.
        hypers: names of the columns ``k .. K-1`` (for the records).
        reorth_every: QR every this many steps (and at every snapshot).
        eval_set: ``(x, y)`` for the outcomes (moved to the run's device); default the task's
            test split.
        method: ``"linearized"`` (Hessian-vector products and ``jvp`` of the optimizer's
            update, :mod:`attractor.tangent.linearized`) or ``"jvp"`` (``torch.func.jvp``
            through the functional step; slower, the reference the other is tested against).

    Returns:
        one record per (snapshot, member), the final :class:`Tangents` (on the run's device),
        and ``[members]`` the step each member diverged at (0: never; a CPU tensor).
    """
    x_eval, y_eval = eval_set if eval_set is not None else (run.task.x_test, run.task.y_test)
    x_eval, y_eval = x_eval.to(run.device), y_eval.to(run.device)
    x_eval = x_eval.to(run.dtype) if x_eval.is_floating_point() else x_eval
    ortho = Orthonormalizer(run.members, k, run.device)
    z = _start(run, dparams0, dhyper)
    step = _tangent_step(run, method)
    batches = run.batches()
    diverged = torch.zeros(run.members, dtype=torch.long, device=run.device)
    records: list[Record] = []
    snaps = set(run.snapshots)
    if 0 in snaps:
        records += snapshot_record(run, z, ortho, hypers, 0, diverged == 0, x_eval, y_eval)
    for t in range(1, run.steps + 1):
        x, y = batches.next()
        z = step(z, run.hyper, x, y, t, run.factor(t))
        finite = torch.stack([v.flatten(1).isfinite().all(1) for v in z.params.values()]).all(0)
        diverged = torch.where((diverged == 0) & ~finite, torch.full_like(diverged, t), diverged)
        if k and (t % reorth_every == 0 or t in snaps):
            z = ortho(z, diverged == 0)
        if t in snaps:
            records += snapshot_record(run, z, ortho, hypers, t, diverged == 0, x_eval, y_eval)
    return records, z, diverged.cpu()
