"""Certified bounds on how far a small trained CNN and its float16 copy disagree: CROWN on the
two nets composed vs the differential bound, through convolutions, BatchNorm, pooling and
residual blocks.

Two models are trained on the digits split as ``[n, 1, 8, 8]`` images with a plain torch loop
(Adam, batch 64): ``resnet``, digits-cnn's ResNet-8 (width 8: conv + BatchNorm stem, three
residual blocks, two with strided 1x1 shortcuts, global average pooling), and ``lenet``, a
LeNet-like chain (conv 3x3 -> ReLU -> max pool 2 -> conv 3x3 -> ReLU -> max pool 2 ->
linear). Each is compared with its float16 copy (every parameter and BatchNorm statistic
rounded to half and back). Regions: L-infinity balls of radius eps (standardized units)
around test points, not clipped.

Per model and eps: the bound on ``max_j |f_b - f_a|_j`` and the mean width of the certified
interval of ``f_b - f_a`` per output, by ``interval`` (IBP on each net), ``linear`` (CROWN on
the two nets composed) and ``differential``, against what uniform samples and a sign-gradient
PGD attain inside the balls (a lower bound); the ratio CROWN / differential.

    python benchmarks/certify_conv.py [--points 10] [--steps 300] [--eps 0.001,0.01,0.05]
                                      [--models resnet,lenet] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from timing import finish, machine, write_report  # benchmarks/timing.py
from torch import Tensor, nn

from attractor.certify import ball, bound_difference, to_network
from attractor.certify.network import Network
from attractor.tasks.conv_models import ResNet
from attractor.tasks.digits_mlp import split_tensors

METHODS = ("interval", "linear", "differential")


def build(name: str) -> nn.Module:
    if name == "resnet":
        return ResNet(depth=8, width=8, in_channels=1, num_classes=10, stages=3)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int, seed: int) -> nn.Module:
    """Adam (lr 1e-2, then 1e-3 for the last third), batch 64: plain torch; eval mode after."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        if step == 2 * steps // 3:
            optimizer.param_groups[0]["lr"] = 1e-3
        batch = torch.randint(0, x.shape[0], (64,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model.eval()


def float16_copy(model: nn.Module) -> nn.Module:
    """Every floating parameter and buffer rounded to half and back."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in list(other.parameters()) + list(other.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().to(tensor.dtype))
    return other


def attained(
    a: Network, b: Network, lower: Tensor, upper: Tensor, seed: int
) -> tuple[Tensor, Tensor]:
    """Lowest and highest ``b - a`` ``[n, out]`` seen at uniform samples and the ends of a
    sign-gradient PGD per output and sign (float64 networks, flat boxes ``[n, d]``).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = lower + torch.rand(256, *lower.shape, generator=gen, dtype=torch.float64) * (
            upper - lower
        )
        diffs = (b(x.reshape(-1, x.shape[-1])) - a(x.reshape(-1, x.shape[-1]))).reshape(
            256, lower.shape[0], -1
        )
    low, high = diffs.amin(0), diffs.amax(0)
    step = (upper - lower) / 10
    for j in range(low.shape[1]):
        for sign in (1.0, -1.0):
            for _ in range(2):  # restarts
                x = lower + torch.rand(lower.shape, generator=gen, dtype=torch.float64) * (
                    upper - lower
                )
                for _ in range(30):
                    x.requires_grad_(True)
                    (grad,) = torch.autograd.grad(sign * (b(x) - a(x))[:, j].sum(), x)
                    x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lower), upper)
                with torch.no_grad():
                    d = b(x) - a(x)
                low, high = torch.minimum(low, d), torch.maximum(high, d)
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--eps", default="0.001,0.01,0.05", help="comma-separated radii")
    parser.add_argument("--models", default="resnet,lenet", help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 points, 100 steps, eps 0.01")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.points, args.steps, args.eps = 3, 100, "0.01"
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    x_train, y_train, x_test, y_test = split_tensors()
    x_train, x_test = x_train.view(-1, 1, 8, 8), x_test.view(-1, 1, 8, 8)
    centres = x_test[: args.points].to(torch.float64)
    report: dict[str, object] = {"points": args.points, "steps": args.steps, "results": {}}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        model = train(build(name), x_train, y_train, args.steps, args.seed)
        with torch.no_grad():
            accuracy = (model(x_test).argmax(-1) == y_test).double().mean().item()
        a, b = to_network(model, (1, 8, 8)), to_network(float16_copy(model), (1, 8, 8))
        print(
            f"\n{name}: {sum(p.numel() for p in model.parameters())} parameters, test accuracy "
            f"{accuracy:.1%} after {args.steps} steps; {len(a.layers)} layers of widths "
            f"{[layer.weight.shape[0] for layer in a.layers]}; vs its float16 copy, "
            f"{args.points} test points"
        )
        for eps in (float(e) for e in args.eps.split(",")):
            lower, upper = ball(centres, eps)
            flat_lower, flat_upper = lower.reshape(args.points, -1), upper.reshape(args.points, -1)
            att_low, att_high = attained(a, b, flat_lower, flat_upper, args.seed)
            attained_max = torch.maximum(att_high, -att_low).amax(-1)
            row: dict[str, object] = {
                "attained_max_abs": attained_max.mean().item(),
                "attained_width": (att_high - att_low).mean().item(),
            }
            print(
                f"  eps {eps}: attained max|diff| mean {attained_max.mean():.3e}, attained width "
                f"mean {(att_high - att_low).mean():.3e}"
            )
            for method in METHODS:
                t0 = time.perf_counter()
                low, high = bound_difference(a, b, lower, upper, method)
                seconds = (time.perf_counter() - t0) / args.points
                bound = torch.maximum(high, -low).amax(-1)
                width = (high - low).mean(-1)
                assert (high >= att_high - 1e-9).all() and (low <= att_low + 1e-9).all()
                row[method] = {
                    "max_abs": bound.mean().item(),
                    "width": width.mean().item(),
                    "ratio_to_attained_median": (bound / attained_max).median().item(),
                    "seconds_per_point": seconds,
                }
                print(
                    f"    {method:<12} max|diff| bound {bound.mean():.3e} "
                    f"(x{(bound / attained_max).median():8.2f} attained), width "
                    f"{width.mean():.3e}, {seconds * 1e3:8.1f} ms/pt"
                )
            linear, differential = row["linear"], row["differential"]
            tighter = linear["max_abs"] / differential["max_abs"]  # type: ignore[index]
            row["crown_over_differential"] = tighter
            print(f"    CROWN / differential (mean max|diff| bounds): {tighter:.1f}x")
            report["results"][f"{name}/eps{eps}"] = row  # type: ignore[index]
    report["machine"] = machine(load_before, finish(started, load_before))
    if args.json is not None:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
