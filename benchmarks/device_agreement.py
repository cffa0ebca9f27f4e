"""The member invariant on a device, and how far a device's training lands from the CPU's.

For three workloads (the digits MLP, ``digits-cnn``'s ResNet-8, a 1-layer ``tiny-lm``) the
same members are trained through ``attractor.runs.launch.train``, in this process:

* on ``--device`` in one chunk of every member, in chunks of 2, and in chunks of
  ``members - 1`` (so the last member trains alone): the invariant says the weights are
  **bitwise** equal (same device, deterministic kernels);
* on the CPU (fp32): the distance from the device's weights, and from its final test loss
  and accuracy, after ``--steps`` steps: the tolerance the README quotes;
* on ``--device`` with ``[run] precision = "tf32"`` and ``"bf16"``: their distance from the
  device's fp32 weights, and the invariant under each.

On the CPU (``--device cpu``) the device-vs-CPU distances are 0 by construction: that run is
a smoke test of this script. Nothing is asserted; everything is printed and, with
``--json``, written.

    python benchmarks/device_agreement.py [--device cuda] [--steps 100] [--members 4]
                                          [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from timing import finish, machine, write_report  # benchmarks/timing.py

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.runs.launch import train
from attractor.training.device import resolve_device

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits-mlp": {"task": {"name": "digits-mlp"}, "trainer": {"lr": 0.1, "momentum": 0.9}},
    "digits-cnn": {
        "task": {"name": "digits-cnn", "depth": 8, "width": 8},
        "trainer": {"lr": 0.05, "momentum": 0.9},
    },
    "tiny-lm": {
        "task": {"name": "tiny-lm", "width": 32, "context": 32, "layers": 1},
        "trainer": {"optimizer": "adam", "lr": 0.003, "batch_size": 16},
    },
}


def trained(
    workload: dict[str, Any], steps: int, members: int, run: dict[str, Any], root: Path
) -> dict[str, Any]:
    """Every member's final weights (CPU tensors) and final test metrics under ``run``."""
    mapping = {
        "task": workload["task"],
        "trainer": {**workload["trainer"], "steps": steps},
        "plan": {"members": members, "vary": ["init_seed", "data_seed"]},
        "run": {"snapshots": [steps], "strategy": "vectorized", **run},
    }
    ensemble = train(parse_config(mapping), root)
    final = ensemble.final_metrics().set_index("member")
    return {
        m: {
            "params": ensemble.params(m),
            "test_loss": float(final.loc[m, "test_loss"]),
            "test_acc": float(final.loc[m, "test_accuracy"]),
        }
        for m in ensemble.members
    }


def distance(a: dict[int, Any], b: dict[int, Any]) -> dict[str, Any]:
    """Largest absolute and relative weight difference and metric differences of a vs b."""
    absolute = relative = loss = acc = 0.0
    bitwise = True
    for m in a:
        for k, x in a[m]["params"].items():
            y = b[m]["params"][k]
            bitwise &= torch.equal(x, y)
            gap = float((x.double() - y.double()).abs().max())
            absolute = max(absolute, gap)
            relative = max(relative, gap / max(float(y.double().abs().max()), 1e-12))
        loss = max(loss, abs(a[m]["test_loss"] - b[m]["test_loss"]))
        acc = max(acc, abs(a[m]["test_acc"] - b[m]["test_acc"]))
    return {
        "bitwise": bitwise,
        "max_abs_weight": absolute,
        "max_rel_weight": relative,
        "max_test_loss": loss,
        "max_test_acc": acc,
    }


def check(name: str, workload: dict, steps: int, members: int, device: str, tmp: Path) -> dict:
    """One workload's invariant and agreement figures."""
    runs = {
        "chunk": {"device": device, "chunk_size": members},
        "pairs": {"device": device, "chunk_size": 2},
        "alone": {"device": device, "chunk_size": max(2, members - 1)},
        "cpu": {"device": "cpu", "chunk_size": members},
        "tf32": {"device": device, "chunk_size": members, "precision": "tf32"},
        "tf32_pairs": {"device": device, "chunk_size": 2, "precision": "tf32"},
        "bf16": {"device": device, "chunk_size": members, "precision": "bf16"},
        "bf16_pairs": {"device": device, "chunk_size": 2, "precision": "bf16"},
    }
    found, seconds = {}, {}
    for label, run in runs.items():
        print(f"  {name}: {label} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        found[label] = trained(workload, steps, members, run, tmp / f"{name}-{label}")
        seconds[label] = time.perf_counter() - start
    return {
        "alone_vs_chunk": distance(found["alone"], found["chunk"]),
        "pairs_vs_chunk": distance(found["pairs"], found["chunk"]),
        "device_vs_cpu": distance(found["chunk"], found["cpu"]),
        "tf32_vs_fp32": distance(found["tf32"], found["chunk"]),
        "tf32_pairs_vs_chunk": distance(found["tf32_pairs"], found["tf32"]),
        "bf16_vs_fp32": distance(found["bf16"], found["chunk"]),
        "bf16_pairs_vs_chunk": distance(found["bf16_pairs"], found["bf16"]),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=None, help="steps (default 100; 4 quick)")
    parser.add_argument("--members", type=int, default=4, help="members per workload (>= 3)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        raise SystemExit(f"device_agreement: {exc}") from None
    if args.members < 3:
        parser.error("--members must be at least 3 (a chunk of members - 1 leaves one alone)")
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; pick from {sorted(WORKLOADS)}")
    steps = args.steps or (4 if args.quick else 100)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    print(
        f"device_agreement: device {device}{gpu}, torch {torch.__version__}, {steps} steps, "
        f"{args.members} members per workload\n"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-device-agreement-") as tmp:
        for name in names:
            results[name] = check(
                name, WORKLOADS[name], steps, args.members, str(device), Path(tmp)
            )
    header = f"{'workload':<11} {'comparison':<20} {'bitwise':>7} {'max|dw|':>10} "
    header += f"{'rel':>10} {'|dloss|':>10} {'|dacc|':>8}"
    print(header)
    print("-" * len(header))
    for name, found in results.items():
        for label, d in found.items():
            if label == "seconds":
                continue
            print(
                f"{name:<11} {label:<20} {str(d['bitwise']):>7} {d['max_abs_weight']:>10.3g} "
                f"{d['max_rel_weight']:>10.3g} {d['max_test_loss']:>10.3g} "
                f"{d['max_test_acc']:>8.3g}"
            )
    invariant = all(
        found[k]["bitwise"]
        for found in results.values()
        for k in ("alone_vs_chunk", "pairs_vs_chunk", "tf32_pairs_vs_chunk", "bf16_pairs_vs_chunk")
    )
    print(f"\nmember invariant (alone / pairs vs one chunk, bitwise, every precision): {invariant}")
    load_after = finish(started, load_before)
    report = {
        **machine(load_before, load_after),
        "device": str(device) + gpu,
        "steps": steps,
        "members": args.members,
        "results": results,
        "invariant": invariant,
    }
    if args.json is not None:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
