"""Cost of training with tangents attached, against plain training and against finite differences.

    python benchmarks/tangent.py              # digits-mlp [128, 128], 220 steps, 1 thread
    python benchmarks/tangent.py --quick      # 44 steps

One member of digits-mlp (SGD, momentum 0.9). Timings: every case set up once, then all
cases run in turn ``--repeats`` times in one process and the best time of each is kept
(load from other work on a shared machine hits every case alike). Peak memory: each case
in a fresh process, ``ru_maxrss`` growth of a full run over a 2-step run of the same case.

* ``plain``: the engine's loop strategy for that member (float32); ``replay``: the
  unrolled primal replay (:func:`attractor.tangent.unroll.final_params`, float32), which
  is also what the finite-difference runs use (in float64: the engine trains float32 only);
* ``tangent-k``: training with ``k`` random tangent directions (QR every 10 steps), float32
  and float64, by Hessian-vector products and ``jvp`` of the optimizer's own update
  (:mod:`attractor.tangent.linearized`); ``tangent-16-jvp``: the same by ``vmap(jvp)``
  through the functional step;
* ``fd-serial-k``: the finite-difference alternative, ``k + 1`` float64 runs one after
  another; ``fd-vector-k``: the same ``k + 1`` runs as one vectorized ensemble;
* ``tangent-4-half``: ``k = 4`` over half the steps, to show memory does not grow with steps;
* ``power-1``: one power-iteration round (forward jvp + checkpointed reverse pass).

Goals (issue 11): k = 16 tangents <= 0.8x the vectorized 17-run float64 FD ensemble and
<= 0.5x the runs one after another; memory independent of steps. Every ratio is printed,
goals met or not.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def _setup(steps: int, dtype: torch.dtype, members: int = 1):
    from attractor.config import parse_config
    from attractor.plan import PlanRow
    from attractor.tangent.unroll import unroll
    from attractor.tasks import build_task

    config = parse_config(
        {
            "task": {"name": "digits-mlp"},
            "trainer": {"steps": steps, "batch_size": 64},
            "run": {"snapshots": 1},
        }
    )
    task = build_task(config.task)
    row = PlanRow(member=0, init_seed=1, data_seed=2, lr=0.05, momentum=0.9, batch_size=64)
    return config, task, row, unroll(task, config, [row] * members, dtype)


def build(name: str, steps: int) -> Callable[[], object]:
    """The work of case ``name`` over ``steps`` steps, set up and ready to run."""
    from attractor.tangent.lyapunov import propagate, random_directions
    from attractor.tangent.power import top_growth
    from attractor.tangent.unroll import final_params
    from attractor.training.engine import train_chunk

    kind, _, arg = name.partition("-")
    dtype = torch.float64 if name.endswith("f64") or kind == "fd" else torch.float32
    if kind == "fd":
        mode, k = arg.split("-")[0], int(arg.split("-")[1])
        config, task, row, run = _setup(steps, dtype, k + 1 if mode == "vector" else 1)
        if mode == "vector":
            return lambda: final_params(run)
        return lambda: [final_params(run) for _ in range(k + 1)]
    config, task, row, run = _setup(steps // 2 if name.endswith("half") else steps, dtype)
    if kind == "tangent":
        k = int(arg.split("-")[0])
        dirs = random_directions(run, k)
        dhyper = {h: torch.zeros(1, k, dtype=torch.float64) for h in run.hyper}
        method = "jvp" if name.endswith("jvp") else "linearized"
        return lambda: propagate(run, dirs, dhyper, k, (), reorth_every=10, method=method)
    if kind == "plain":
        return lambda: train_chunk(task, config, [row], False, lambda *a: None)
    if kind == "replay":
        return lambda: final_params(run)
    if kind == "power":
        return lambda: top_growth(run, iterations=1)
    raise ValueError(name)


def peak_memory(name: str, steps: int) -> float:
    """Peak resident-memory growth (MiB) of one run of ``name`` over a 2-step run of it."""
    build(name, 2)()  # warm up: whatever a 2-step run needs is not counted
    work = build(name, steps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    work()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def timings(names: list[str], steps: int, repeats: int) -> dict[str, float]:
    """Best time per case, the cases taken in turn each round so that load on a shared machine
    hits all alike.
    """
    works = {name: build(name, steps) for name in names}
    for work in works.values():
        work()  # warm-up
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        for name, work in works.items():
            start = time.perf_counter()
            work()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="44 steps instead of 220")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated subset of the cases (ratios need plain, tangent-16, fd-*-16)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings per case; the best is kept")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (44 if args.quick else 220)
    if args.one:
        print(json.dumps({"peak_mib": peak_memory(args.one, steps)}))
        return
    names = [
        "plain",
        "replay",
        "tangent-1",
        "tangent-4",
        "tangent-16",
        "tangent-16-f64",
        "tangent-16-jvp",
        "fd-serial-16",
        "fd-vector-16",
        "fd-serial-4",
        "fd-vector-4",
        "power-1",
    ]
    if args.cases:
        names = [n for n in names if n in args.cases.split(",")]
    seconds = timings(names, steps, args.repeats)
    results = {name: {"seconds": value} for name, value in seconds.items()}
    # Memory in a fresh process per case, so that each peak is that case's own.
    for name in [
        n
        for n in ("tangent-4", "tangent-4-half", "tangent-16", "fd-vector-16")
        if not args.cases or n in args.cases.split(",")
    ]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--steps",
            str(steps),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.setdefault(name, {})["peak_mib"] = json.loads(done.stdout.strip().splitlines()[-1])[
            "peak_mib"
        ]
    pairs = [
        ("tangent-1", "plain", ""),
        ("tangent-4", "plain", ""),
        ("tangent-16", "plain", ""),
        ("tangent-16-f64", "plain", ""),
        ("fd-serial-16", "plain", " (17 runs f64)"),
        ("fd-vector-16", "plain", " (17 runs f64)"),
        ("tangent-16", "fd-vector-16", " (goal <= 0.8)"),
        ("tangent-16", "fd-serial-16", " (goal <= 0.5)"),
        ("tangent-16-f64", "fd-vector-16", ""),
        ("tangent-16-jvp", "tangent-16", " (vmap(jvp) vs linearized)"),
        ("tangent-4", "fd-vector-4", ""),
        ("replay", "plain", ""),
        ("power-1", "plain", " (one round)"),
    ]
    ratios = {
        f"{a} / {b}{note}": seconds[a] / seconds[b]
        for a, b, note in pairs
        if a in seconds and b in seconds
    }
    if args.json:
        print(
            json.dumps(
                {"steps": steps, "threads": args.threads, "cases": results, "ratios": ratios},
                indent=2,
            )
        )
        return
    print(
        f"digits-mlp [128, 128], one member, {steps} steps, {args.threads} thread(s), best of "
        f"{args.repeats}"
    )
    for name, r in results.items():
        timing = f"{r['seconds']:8.3f} s" if "seconds" in r else " " * 10
        memory = f"   peak +{r['peak_mib']:7.1f} MiB" if "peak_mib" in r else ""
        print(f"  {name:16s} {timing}{memory}")
    for name, value in ratios.items():
        print(f"  {name:42s} {value:6.2f}x")
    if "tangent-4-half" in results and "tangent-4" in results:
        half, full = results["tangent-4-half"]["peak_mib"], results["tangent-4"]["peak_mib"]
        print(
            f"  memory growth over a 2-step run, k = 4: {steps // 2} steps +{half:.1f} MiB, "
            f"{steps} steps +{full:.1f} MiB"
        )


if __name__ == "__main__":
    main()
