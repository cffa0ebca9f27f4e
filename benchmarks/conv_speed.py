"""Convolutional ensemble training: the loop, vmap, one grouped convolution and ours, same run.

Two workloads, N members differing in init seed and data order, SGD lr 0.05 momentum 0.9:

* **digits-cnn**: the bundled task (ResNet-8 width 8 with BatchNorm on 8x8 digits, 1437 / 360
  examples), batch 64 as ``examples/digits-cnn.toml``; N = 8, 32.
* **resnet20**: ResNet-20 (width 16, 0.27 M parameters) on generated 32x32x3 images (CIFAR-10's
  shapes; 256 / 64 examples so the evaluations stay short), batch 32; N = 2, 4.

Four ways to train the same members, timed in this process, interleaved, best of
``--repeats``:

* **loop**: the engine's loop strategy as ``run.strategy = "loop"`` runs it: every member its
  own chunk, ``functional_call`` of the module (the specification);
* **vmap**: one chunk through ``torch.func.vmap`` of the module (what the engine did before
  :mod:`attractor.training.forward_conv`; vmap runs a convolution as one grouped
  convolution over the members);
* **grouped**: one chunk through the stacked forward with every convolution written as one
  ``groups=N`` convolution over the members folded into the channels;
* **stacked**: one chunk through :class:`~attractor.training.forward_conv.StackedConvNet`:
  one convolution and BatchNorm per member, the rest once for all (what ``vectorized``
  uses now).

Member-steps per second, training only ``N*(S-1) / t(steps 2..S)`` and end to end ``N*S / t``
(``train_chunk`` whole: setup, S steps, the evaluations at step 0 and S), as ``lm_speed.py``.
Per path also: member 0 alone (a chunk of one; padded to 2 for vmap and grouped) vs in
the chunk of N, bitwise (the member invariant), and the largest parameter / buffer
difference from the loop. Also printed: the strategy ``auto`` picks for each workload, and
the memory estimate of a ResNet-20 member (``training.memory``) against the bytes autograd
really saves for its backward.

    python benchmarks/conv_speed.py [--steps S] [--repeats R] [--threads T] [--device cpu|cuda]
                                    [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from timing import finish, machine, sync, write_report  # benchmarks/timing.py
from torch import Tensor, fx, nn
from torch.nn.modules.conv import _ConvNd

import attractor.training.chunk as chunk_module
from attractor.config import Config, parse_config
from attractor.plan import PlanRow
from attractor.runs.launch import resolve_strategy
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.tasks.conv_models import ResNet
from attractor.training.device import resolve_device
from attractor.training.engine import train_chunk
from attractor.training.forward import Params, _VmappedModule
from attractor.training.forward_conv import StackedConvNet
from attractor.training.memory import estimate_chunk
from attractor.training.runtime import keep_freed_memory

PATHS = ("loop", "vmap", "grouped", "stacked")
CHECK_TOL = 1e-5


class GroupedConvNet(StackedConvNet):
    """The stacked forward with each convolution as one ``groups=N`` convolution over the
    members folded into the channels (``x [N, B, C, H, W]`` -> ``[B, N*C, H, W]``).
    """

    def _conv(self, name: str, conv: _ConvNd, h: Tensor, params: Params) -> Tensor:
        weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
        members, batch = h.shape[:2]
        folded = h.transpose(0, 1).reshape(batch, members * h.shape[2], *h.shape[3:])
        out = F.conv2d(
            folded,
            weight.flatten(0, 1),
            None if bias is None else bias.flatten(),
            conv.stride,
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,
            conv.groups * members,
        )
        return out.view(batch, members, -1, *out.shape[2:]).transpose(0, 1)


FORWARDS: dict[str, Callable[[nn.Module], Any]] = {
    "vmap": _VmappedModule,
    "grouped": lambda model: GroupedConvNet(model, fx.symbolic_trace(model), None),
}


@contextlib.contextmanager
def forward_of(path: str) -> Iterator[None]:
    """The engine's batched forward for ``path`` (``loop`` and ``stacked``: the default)."""
    if path not in FORWARDS:
        yield
        return
    chosen = chunk_module.batched_forward
    chunk_module.batched_forward = FORWARDS[path]  # type: ignore[assignment]
    try:
        yield
    finally:
        chunk_module.batched_forward = chosen


def workloads(quick: bool) -> dict[str, dict[str, Any]]:
    """Per workload: its task, trainer, member counts and steps."""
    generator = torch.Generator().manual_seed(0)
    images = Task(
        "resnet20-shapes",
        torch.randn(256, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (256,), generator=generator),
        torch.randn(64, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (64,), generator=generator),
        lambda: ResNet(20, 16, 3, 10),
        num_classes=10,
    )
    digits = {"name": "digits-cnn", "depth": 8, "width": 8}
    return {
        "digits-cnn": {
            "task": build_task(parse_config({"task": digits}).task),
            "task_config": digits,
            "batch_size": 64,
            "members": [2, 4] if quick else [8, 32],
            "steps": 3 if quick else 8,
        },
        "resnet20": {
            "task": images,
            "task_config": digits,  # the config's [task] is not read: the Task is given
            "batch_size": 8 if quick else 32,
            "members": [2] if quick else [2, 4],
            "steps": 2 if quick else 4,
        },
    }


def config(work: dict[str, Any], steps: int, device: str) -> Config:
    return parse_config(
        {
            "task": work["task_config"],
            "trainer": {
                "steps": steps,
                "batch_size": work["batch_size"],
                "lr": 0.05,
                "momentum": 0.9,
            },
            "run": {"snapshots": [steps], "device": device},
        }
    )


def rows(n: int, batch_size: int) -> list[PlanRow]:
    return [
        PlanRow(member=i, init_seed=i, data_seed=100 + i, lr=0.05, batch_size=batch_size)
        for i in range(n)
    ]


def train_path(
    task: Task, cfg: Config, members: list[PlanRow], path: str
) -> tuple[dict[int, dict[str, Tensor]], float]:
    """Train ``members`` along ``path``: every member's final weights and buffers, and the
    seconds its steps 2..S took (summed over chunks).
    """
    device = resolve_device(cfg.run.device)
    final: dict[int, dict[str, Tensor]] = {}
    marks: list[float] = []
    stepping = 0.0

    def sink(row: PlanRow, step: int, state: dict, metrics: dict) -> None:
        final[row.member] = state

    def on_step(_members: int) -> None:
        sync(device)
        marks.append(time.perf_counter())

    chunks = [[row] for row in members] if path == "loop" else [members]
    with forward_of(path):
        for chunk in chunks:
            marks.clear()
            train_chunk(task, cfg, chunk, path != "loop", sink, on_step)
            stepping += marks[-1] - marks[0]
    return final, stepping


def measure(task: Task, cfg: Config, n: int, repeats: int) -> dict[str, dict[str, float]]:
    """Training-only and end-to-end member-steps/s of every path, interleaved, best kept."""
    steps = cfg.trainer.steps
    assert steps is not None
    members = rows(n, cfg.trainer.batch_size)
    best = {p: {"total": float("inf"), "stepping": float("inf")} for p in PATHS}
    device = resolve_device(cfg.run.device)
    for _ in range(repeats):
        for path in PATHS:
            sync(device)
            start = time.perf_counter()
            _, stepping = train_path(task, cfg, members, path)
            sync(device)
            total = time.perf_counter() - start
            best[path]["total"] = min(best[path]["total"], total)
            best[path]["stepping"] = min(best[path]["stepping"], stepping)
    return {
        path: {
            "train_only": n * (steps - 1) / t["stepping"],
            "end_to_end": n * steps / t["total"],
        }
        for path, t in best.items()
    }


def invariant(task: Task, cfg: Config, n: int) -> dict[str, dict[str, Any]]:
    """Per vectorized path: member 0 alone vs in a chunk of ``n``, bitwise, and the
    largest difference from the loop over every member's parameters and buffers.
    """
    members = rows(n, cfg.trainer.batch_size)
    loop = train_path(task, cfg, members, "loop")[0]
    found = {}
    for path in PATHS[1:]:
        together = train_path(task, cfg, members, path)[0]
        alone = train_path(task, cfg, members[:1], path)[0]
        differ = sorted(k for k in alone[0] if not torch.equal(alone[0][k], together[0][k]))
        found[path] = {
            "alone_equals_chunk": not differ,
            "first_differing_tensor": differ[0] if differ else None,
            "max_diff_from_loop": max(
                float((together[m][k].double().cpu() - loop[m][k].double().cpu()).abs().max())
                for m in loop
                for k in loop[m]
            ),
        }
    return found


def memory_check(task: Task, batch_size: int) -> dict[str, float]:
    """A ResNet-20 member's activation bytes: the estimate's share against what autograd
    saves for the backward of one batch (measured), and the whole per-member estimate.
    """
    cfg = parse_config(
        {"task": {"name": "digits-cnn"}, "trainer": {"batch_size": batch_size}, "plan": {}}
    )
    estimate = estimate_chunk(cfg, task)
    assert estimate is not None
    model = task.make_model().train()
    saved: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(task.x_train[:batch_size])
    weights = 4 * estimate.parameters * 4  # weights, grads, initial copy, momentum (float32)
    return {
        "batch_size": batch_size,
        "estimate_bytes_per_member": estimate.bytes_per_member,
        "estimate_activation_bytes": estimate.bytes_per_member - weights,
        "measured_saved_bytes": sum(saved.values()),
        "auto_chunk_members": estimate.members,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="steps per member (min 2)")
    parser.add_argument("--repeats", type=int, default=None, help="best of R (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small N and steps")
    parser.add_argument("--json", type=os.path.abspath, default=None, help="also write here")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        parser.error("--steps must be at least 2 (training only is steps 2..S)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 2)
    keep_freed_memory()
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(
        f"conv_speed: machine {platform.machine()}, nproc {os.cpu_count()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load "
        f"average {load_before[0]:.2f} at start; best of {repeats}, paths interleaved\n"
    )
    results, checks, auto = [], {}, {}
    for name, work in workloads(args.quick).items():
        steps = args.steps or work["steps"]
        cfg = config(work, steps, args.device)
        task = work["task"]
        train_path(task, config(work, 2, args.device), rows(2, work["batch_size"]), "loop")
        for n in work["members"]:
            print(f"  timing {name} N={n} ...", file=sys.stderr, flush=True)
            rates = measure(task, cfg, n, repeats)
            results.append(
                {
                    "workload": name,
                    "members": n,
                    "batch_size": work["batch_size"],
                    "steps": steps,
                    **{
                        f"{p}_{k}": rates[p][k] for p in PATHS for k in ("train_only", "end_to_end")
                    },
                    **{
                        f"ratio_{p}_{k}": rates[p][k] / rates["loop"][k]
                        for p in PATHS[1:]
                        for k in ("train_only", "end_to_end")
                    },
                }
            )
        checks[name] = invariant(task, config(work, 2, args.device), max(3, min(work["members"])))
        auto_cfg = parse_config(
            {**config(work, 2, args.device).resolved(), "run": {"strategy": "auto"}}
        )
        auto[name] = resolve_strategy(auto_cfg, task)
    memory = memory_check(workloads(True)["resnet20"]["task"], 128)

    print("member-steps/s (higher is better); x = / loop")
    head = (
        " ".join(f"{p:>8}" for p in PATHS) + " " + " ".join(f"{p[:5] + ' x':>8}" for p in PATHS[1:])
    )
    print(f"{'':>16} | {'training only':^62} | {'end to end (setup, 2 evaluations)':^62}")
    print(f"{'workload':>10} {'N':>5} | {head} | {head}")
    for r in results:
        cells = [
            " ".join(f"{r[f'{p}_{k}']:8.1f}" for p in PATHS)
            + " "
            + " ".join(f"{r[f'ratio_{p}_{k}']:7.2f}x" for p in PATHS[1:])
            for k in ("train_only", "end_to_end")
        ]
        print(f"{r['workload']:>10} {r['members']:>5} | {cells[0]} | {cells[1]}")
    print("\nthe member invariant (member 0 alone vs in a chunk; 2 steps):")
    for name, found in checks.items():
        for path, check in found.items():
            same = (
                "bitwise equal"
                if check["alone_equals_chunk"]
                else (f"DIFFER (first: {check['first_differing_tensor']})")
            )
            print(
                f"  {name:>10} {path:>8}: {same}; max |difference from the loop| = "
                f"{check['max_diff_from_loop']:.3g}"
            )
    print("strategy auto picks: " + ", ".join(f"{k} {v}" for k, v in auto.items()))
    estimate, activations = (
        memory["estimate_bytes_per_member"] / 1e6,
        memory["estimate_activation_bytes"] / 1e6,
    )
    print(
        f"memory of a ResNet-20 member at batch {memory['batch_size']}: estimate "
        f"{estimate:.0f} MB ({activations:.0f} MB activations) vs "
        f"{memory['measured_saved_bytes'] / 1e6:.0f} MB saved for the "
        f"backward (measured); an automatic chunk holds {memory['auto_chunk_members']} members"
    )
    load_after = finish(started, load_before[0])
    report: dict[str, Any] = {
        **machine(load_before[0], load_after),
        "device": args.device,
        "repeats": repeats,
        "results": results,
        "invariant": checks,
        "auto_strategy": auto,
        "memory": memory,
        "seconds": time.perf_counter() - started,
    }
    if args.json is not None:
        from pathlib import Path

        write_report(Path(args.json), report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
