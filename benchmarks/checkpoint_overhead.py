"""What checkpoints cost: the same run with and without members' resume checkpoints, same run.

Workload: ``examples/digits.toml`` (16 digits-mlp members, MLP 64-128-128-10, SGD with
momentum, 10 epochs, 8 snapshots), local backend, a fresh run directory each time.
*With*: as attractor trains (a checkpoint of every member's weights, momentum and data
position at every snapshot step and every ``CHECKPOINT_SECONDS``). *Without*: the engine
given no checkpoints (what a killed run resumed from before: finished chunks only).
Best of ``--repeats`` wall times each, interleaved; the ratio is printed.

    python benchmarks/checkpoint_overhead.py [--repeats 3] [--config examples/digits.toml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from timing import finish  # benchmarks/timing.py: scripts run from this folder

from attractor.config import load_config
from attractor.runs import launch


def _timed(config: object, out: Path, checkpoints: bool) -> float:
    shutil.rmtree(out, ignore_errors=True)
    real = launch.Checkpoints
    if not checkpoints:
        launch.Checkpoints = lambda save, due: None  # type: ignore[assignment,misc]
    try:
        start = time.perf_counter()
        launch.train(config, out)  # type: ignore[arg-type]
        return time.perf_counter() - start
    finally:
        launch.Checkpoints = real  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--config", default=str(Path(__file__).parent.parent / "examples/digits.toml")
    )
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    config = load_config(args.config)
    best = {True: float("inf"), False: float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for checkpoints in (False, True):
                took = _timed(config, Path(tmp) / "run", checkpoints)
                best[checkpoints] = min(best[checkpoints], took)
                print(f"  {'with' if checkpoints else 'without'}: {took:.2f} s", flush=True)
    print(f"config {args.config}, best of {args.repeats}")
    print(f"without checkpoints  {best[False]:7.2f} s")
    print(f"with checkpoints     {best[True]:7.2f} s")
    print(f"ratio with / without {best[True] / best[False]:7.3f}")
    finish(started, load_before)


if __name__ == "__main__":
    main()
