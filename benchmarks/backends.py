"""Backends: the same 256-member plan on local (1 thread, all cores), process and ray, same run.

Task ``digits-mlp`` (MLP 64-128-128-10), batch 64, SGD, ``--steps`` steps per member,
``run.snapshots = 1`` (init and final only), chunks of 64 members (the default). Every
backend trains the whole plan end to end into a fresh run directory with
``attractor.runs.launch.train``; member-steps/s = members x steps / wall time. Then:

* the ratios to local with 1 thread (the issue's goal: process and ray with 2 workers
  at least 1.6x);
* whether every member's final parameters are bitwise identical across backends (they
  must be: a member depends only on its plan row);
* ray's overhead per chunk, estimated as (ray time - process time) / chunks: both run the
  same chunks on 2 one-thread workers, so the difference is Ray's start-up, scheduling and
  object-store transfer. An estimate, labelled as such.

    python benchmarks/backends.py [--members 256] [--steps 50] [--quick] [--no-ray] [--json PATH]
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
from timing import (  # benchmarks/timing.py: scripts run from this folder
    finish,
    machine,
    write_report,
)

from attractor.config import parse_config
from attractor.runs.launch import train


def _config(members: int, steps: int, backend: str, workers: int | None) -> Any:
    return parse_config(
        {
            "task": {"name": "digits-mlp"},
            "trainer": {"lr": 0.05, "momentum": 0.9, "batch_size": 64, "steps": steps},
            "plan": {"members": members, "vary": ["init_seed", "data_seed"]},
            "run": {"snapshots": 1, "backend": backend, "workers": workers, "num_cpus": 1},
        }
    )


def _timed(
    name: str, members: int, steps: int, backend: str, workers: int | None, threads: int, root: Path
) -> tuple[float, Any]:
    print(f"  {name} ...", file=sys.stderr, flush=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        ens = train(_config(members, steps, backend, workers), root / name)
        return time.perf_counter() - start, ens
    finally:
        torch.set_num_threads(previous)


def _identical(a: Any, b: Any) -> bool:
    return all(torch.equal(a.params(m)[k], b.params(m)[k]) for m in a.members for k in a.params(m))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=int, default=None, help="plan members (default 256; 64 with --quick)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per member (default 50; 10 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 members, 10 steps")
    parser.add_argument("--no-ray", action="store_true", help="skip the ray backend")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this path"
    )
    args = parser.parse_args(argv)
    members = args.members or (64 if args.quick else 256)
    steps = args.steps or (10 if args.quick else 50)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    cores = os.cpu_count() or 1
    cases = [
        ("local-1-thread", "local", None, 1),
        (f"local-{cores}-threads", "local", None, cores),
        ("process-2-workers", "process", 2, 1),
    ]
    if not args.no_ray:
        cases.append(("ray-2-workers", "ray", 2, 1))
    results: dict[str, dict[str, float]] = {}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        for name, backend, workers, threads in cases:
            seconds, runs[name] = _timed(name, members, steps, backend, workers, threads, Path(tmp))
            results[name] = {"seconds": seconds, "member_steps_per_s": members * steps / seconds}
        reference = runs["local-1-thread"]
        identical = {
            name: _identical(reference, ens)
            for name, ens in runs.items()
            if name != "local-1-thread"
        }
    base = results["local-1-thread"]["member_steps_per_s"]
    print(
        f"\n{members} members x {steps} steps, digits-mlp, chunks of 64 ({-(-members // 64)} "
        "chunks)\n"
    )
    print(
        f"{'backend':<22} {'seconds':>9} {'member-steps/s':>15} {'x local 1 thread':>17} "
        f"{'identical':>10}"
    )
    for name, row in results.items():
        row["ratio"] = row["member_steps_per_s"] / base
        same = "" if name == "local-1-thread" else ("yes" if identical[name] else "NO")
        print(
            f"{name:<22} {row['seconds']:>9.1f} {row['member_steps_per_s']:>15.0f} "
            f"{row['ratio']:>16.2f}x {same:>10}"
        )
    goals = {
        name: results[name]["ratio"] >= 1.6
        for name in ("process-2-workers", "ray-2-workers")
        if name in results
    }
    for name, met in goals.items():
        print(
            f"goal {name} >= 1.6x local 1 thread: {'met' if met else 'MISSED'} "
            f"({results[name]['ratio']:.2f}x)"
        )
    overhead = None
    if "ray-2-workers" in results:
        chunks = -(-members // 64)
        overhead = (
            results["ray-2-workers"]["seconds"] - results["process-2-workers"]["seconds"]
        ) / chunks
        print(
            "ray overhead per chunk (estimate: (ray - process) / chunks, start-up included): "
            f"{overhead:.2f} s"
        )
    load_after = finish(started, load_before)
    report = {
        "members": members,
        "steps": steps,
        "results": results,
        "identical": identical,
        "goals": goals,
        "ray_overhead_per_chunk_s": overhead,
        "machine": machine(load_before, load_after),
    }
    if args.json:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
