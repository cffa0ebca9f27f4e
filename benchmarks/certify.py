"""Certified bounds on how far a digits MLP and a changed copy disagree, against what search
attains.

A 64-100-100-10 ReLU MLP is trained on the digits split (Adam, a few seconds), then compared
with (a) its float16-rounded copy, (b) a copy with relative weight noise 1e-3 (std = 1e-3 x
each tensor's RMS), (c) a copy fine-tuned for one more epoch. Regions: L-infinity balls of
radius eps in {0.01, 0.05, 0.1} (standardized units) around test points, not clipped.

* **bounds, no branching**: ``interval`` (IBP on each net, the naive baseline), ``linear``
  (CROWN on the two nets stacked), ``optimized`` (alpha-CROWN, full run only) and
  ``differential`` (ours), each as the bound on ``max_j |f_b - f_a|_j`` and as the mean
  width of the certified interval of ``f_b - f_a`` per output.
* **attained**: the best of uniform samples and a PGD written here (sign steps, restarts,
  each output and sign its own objective) gives the lower bound on ``max |diff|`` and the
  attained range of ``f_b - f_a`` per output.
* **branch and bound** (differential, PGD attack on each new box): time per point until the
  bound is within the goal's ratio of the lower bound, within ``--budget`` seconds.

Ratios printed: CROWN / differential on the max-|diff| bound (goals: (a) >= 30x at eps 0.01,
>= 300x at 0.05; (b) >= 8x at 0.01), differential / attained (goal <= 1.2x at 0.01), and the
share of points where BaB reaches 1.2x (eps 0.05) / 1.5x (eps 0.1) (goal >= 80 %, <= 60 s).
Share verified at ``--delta`` (default 0.05 logits on max |diff|).

    python benchmarks/certify.py [--points 20] [--budget 60] [--quick] [--json PATH] [--threads 1]
                                 [--variants float16,noise1e-3,finetune1] [--eps 0.01,0.05,0.1]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from timing import (  # benchmarks/timing.py: scripts run from this folder
    finish,
    machine,
    write_report,
)
from torch import Tensor, nn

from attractor.certify import ball, bound_difference, certify_difference, to_network
from attractor.certify.bab import ObjectiveFn
from attractor.certify.network import Network
from attractor.tasks.digits_mlp import build_mlp, split_tensors

BAB_TARGET = {0.05: 1.2, 0.1: 1.5}


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> nn.Module:
    """Adam, batch 64, lr 1e-3: plain torch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(x.shape[0], generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model


def variants(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> dict[str, nn.Module]:
    """(a) float16-rounded, (b) relative weight noise 1e-3, (c) fine-tuned one epoch."""
    rounded, noisy = copy.deepcopy(model), copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
        for p in noisy.parameters():
            p.add_(1e-3 * p.pow(2).mean().sqrt() * torch.randn(p.shape, generator=generator))
    tuned = train(copy.deepcopy(model), x, y, epochs=1, seed=seed + 2)
    return {"float16": rounded, "noise1e-3": noisy, "finetune1": tuned}


def search(
    a: Network,
    b: Network,
    lower: Tensor,
    upper: Tensor,
    samples: int,
    restarts: int,
    steps: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Attained ``(min, max) [n, out]`` of ``f_b - f_a``: uniform samples, then PGD per output
    and sign.
    """
    generator = torch.Generator().manual_seed(seed)
    n, d = lower.shape
    with torch.no_grad():
        u = torch.rand(samples, n, d, generator=generator, dtype=torch.float64)
        x = torch.cat([((lower + upper) / 2).unsqueeze(0), lower + u * (upper - lower)])
        diff = (b(x.reshape(-1, d)) - a(x.reshape(-1, d))).reshape(x.shape[0], n, -1)
    low, high = diff.amin(0), diff.amax(0)
    out = a.out_dim
    sign = torch.cat([torch.ones(out), -torch.ones(out)]).to(torch.float64)  # [2 out] objectives
    which = torch.arange(2 * out) % out
    starts = torch.rand(restarts, n, 2 * out, d, generator=generator, dtype=torch.float64)
    starts[0] = 0.5  # one restart from the centre
    lo, hi = lower[None, :, None], upper[None, :, None]
    x = (lo + starts * (hi - lo)).requires_grad_(True)
    for step in range(steps):
        size = 0.25 * (hi - lo) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / steps)))
        diff = (b(x.reshape(-1, d)) - a(x.reshape(-1, d))).reshape(restarts, n, 2 * out, out)
        value = sign * diff.gather(-1, which.expand(restarts, n, -1).unsqueeze(-1)).squeeze(-1)
        (grad,) = torch.autograd.grad(value.sum(), x)
        x = (
            torch.minimum(torch.maximum(x + size * grad.sign(), lo), hi)
            .detach()
            .requires_grad_(True)
        )
    with torch.no_grad():
        diff = (b(x.reshape(-1, d)) - a(x.reshape(-1, d))).reshape(restarts * n * 2 * out, out)
        diff = (
            diff.reshape(restarts, n, 2 * out, out)
            .flatten(1, 2)
            .transpose(0, 1)
            .reshape(n, -1, out)
        )
    return torch.minimum(low, diff.amin(1)), torch.maximum(high, diff.amax(1))


def pgd_attack(steps: int = 8):
    """BaB attack: a few sign-gradient steps on the objective from each box's centre."""

    def attack(lo: Tensor, hi: Tensor, objective: ObjectiveFn) -> tuple[Tensor, Tensor]:
        x = ((lo + hi) / 2).requires_grad_(True)
        for step in range(steps):
            (grad,) = torch.autograd.grad(objective(x).sum(), x)
            x = torch.minimum(
                torch.maximum(x + 0.5 ** (step + 1) * (hi - lo) * grad.sign(), lo), hi
            )
            x = x.detach().requires_grad_(True)
        with torch.no_grad():
            return objective(x), x.detach()

    return attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--budget", type=float, default=60.0, help="BaB seconds per point")
    parser.add_argument(
        "--delta", type=float, default=0.05, help="threshold on max |f_b - f_a| for 'verified'"
    )
    parser.add_argument(
        "--quick", action="store_true", help="4 points, 3 s BaB budget, no alpha-CROWN (< 2 min)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: small matmuls, shared CPUs)"
    )
    parser.add_argument(
        "--variants", default="float16,noise1e-3,finetune1", help="comma-separated subset"
    )
    parser.add_argument("--eps", default="0.01,0.05,0.1", help="comma-separated radii")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.points, args.budget = 4, 3.0
    torch.set_num_threads(args.threads)
    chosen, radii = args.variants.split(","), [float(e) for e in args.eps.split(",")]
    started, load_before = time.perf_counter(), os.getloadavg()[0]

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, _ = split_tensors()
    model = train(
        build_mlp(64, [100, 100], 10, "relu"), x_train, y_train, epochs=20, seed=args.seed
    )
    base = to_network(model)
    centres = x_test[: args.points].to(torch.float64)
    methods = ("interval", "linear", "differential") + (() if args.quick else ("optimized",))
    report: dict[str, object] = {
        "delta": args.delta,
        "points": args.points,
        "budget_s": args.budget,
        "results": {},
    }
    print(
        f"digits MLP 64-100-100-10, {args.points} test points, delta {args.delta}, torch "
        f"{torch.get_num_threads()} threads"
    )
    for name, other in variants(model, x_train, y_train, args.seed).items():
        if name not in chosen:
            continue
        net = to_network(other)
        for eps in radii:
            lower, upper = ball(centres, eps)
            att_low, att_high = search(
                base, net, lower, upper, samples=200, restarts=4, steps=40, seed=args.seed
            )
            attained = torch.maximum(att_high, -att_low).amax(-1)  # [n] lower bound on max |diff|
            att_width = (att_high - att_low).mean(-1)
            row: dict[str, object] = {
                "attained_max_abs": attained.mean().item(),
                "attained_width": att_width.mean().item(),
            }
            print(
                f"\n({name}) eps {eps}: attained max|diff| mean {attained.mean():.3e}, attained "
                f"width mean {att_width.mean():.3e}"
            )
            for method in methods:
                t0 = time.perf_counter()
                low, high = bound_difference(base, net, lower, upper, method)
                seconds = (time.perf_counter() - t0) / args.points
                bound = torch.maximum(high, -low).amax(-1)
                width = (high - low).mean(-1)
                ratio = (bound / attained).median().item()
                row[method] = {
                    "max_abs": bound.mean().item(),
                    "ratio_to_attained_median": ratio,
                    "width": width.mean().item(),
                    "width_ratio_median": (width / att_width).median().item(),
                    "seconds_per_point": seconds,
                    "verified_share": (bound <= args.delta).double().mean().item(),
                    "within_1.2x_share": (bound <= 1.2 * attained).double().mean().item(),
                }
                print(
                    f"  {method:<12} max|diff| bound {bound.mean():.3e} (x{ratio:7.2f} attained), "
                    f"width {width.mean():.3e} "
                    f"(x{row[method]['width_ratio_median']:7.2f}), {seconds * 1e3:7.1f} ms/pt, "
                    f"verified {row[method]['verified_share']:.0%}, within 1.2x "
                    f"{row[method]['within_1.2x_share']:.0%}"
                )
            # type: ignore[index]
            tighter = row["linear"]["max_abs"] / row["differential"]["max_abs"]
            row["crown_over_differential"] = tighter
            print(f"  CROWN / differential (mean max|diff| bounds): {tighter:.1f}x")
            if eps in BAB_TARGET:
                target = BAB_TARGET[eps]
                result = certify_difference(
                    base,
                    net,
                    lower,
                    upper,
                    method="differential",
                    budget_s=args.budget,
                    attack=pgd_attack(),
                    rtol=0.5 * (target - 1),
                )
                best_lower = torch.maximum(result.lower, attained)
                ratio = result.upper / best_lower
                reached = ratio <= target
                row["bab"] = {
                    "target": target,
                    "reached_share": reached.double().mean().item(),
                    "ratio_median": ratio.median().item(),
                    "upper_mean": result.upper.mean().item(),
                    "seconds_mean": result.seconds.mean().item(),
                    "boxes_mean": result.boxes.double().mean().item(),
                    "verified_share": (result.upper <= args.delta).double().mean().item(),
                }
                print(
                    f"  BaB (differential, {args.budget:.0f} s/pt): reached {target}x on "
                    f"{reached.double().mean():.0%} "
                    f"(median x{ratio.median():.3f}), {result.seconds.mean():.1f} s/pt, "
                    f"{result.boxes.double().mean():.0f} boxes/pt"
                )
            report["results"][f"{name}/eps{eps}"] = row  # type: ignore[index]
    load_after = finish(started, load_before)
    report["machine"] = machine(load_before, load_after)
    if args.json is not None:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
