"""stabilize: a search whose rounds train as one ensemble vs the same trials member by member.

The issue's workload: a study of 32 trials x 8 members on ``digits-mlp`` (MLP 64-128-128-10),
SGD momentum 0.9, batch 32, 250 steps, searching ``lr``, ``label_smoothing``, ``clip_norm``,
``sam_rho`` and ``ema_decay`` (every one member-wise or a row setting, so the 8 trials of a
round share one chunk of 64 members). Both sides run in this process, one after the other:

* **ours**: :func:`attractor.stack.stabilize.stabilize` end to end, in memory (``out=None``):
  4 rounds of 8 trials (NSGA-II asks 8 trainers, their 64 members train as one vectorized
  ensemble on the fit part of the training split, each trial is scored on the validation
  part, error and mean pairwise JS with 200-draw bootstrap intervals, and told), the choice,
  the confirmation (chosen and starting trainer on 16 fresh seeds each, whole training
  split, test split, paired bootstrap) and the fANOVA importances.
* **baseline**: the *same* trials (the applied settings of our trials table, trial by trial,
  and the same plan rows: init and data seeds of the search block) the way a user writes it:
  one Optuna trial at a time in memory (``ask``, the same ``suggest_*`` calls, ``tell``),
  and for every member an ``nn.Module`` from ``task.make_model()``, ``torch.optim.SGD``, per
  step a random minibatch (a fresh permutation per pass), ``F.cross_entropy(...,
  label_smoothing=)``, SAM as its two-pass definition, ``clip_grad_norm_``, an EMA copy
  (``AveragedModel`` with ``get_ema_multi_avg_fn``); then the members on the validation
  split, error and mean pairwise JS (point values, no intervals). Its confirmation trains
  our chosen and starting trainers on the confirmation rows the same way and scores them
  on the test split. Equal work, not bit-equality (its seeds draw other numbers).

Printed: both wall times (search and end to end), member-steps/s, the ratios, and where
our time goes (training, the engine's evaluations, scoring and intervals, Optuna and the
rest: timers wrapped around those functions for the run). Goal from the issue: >= 3x end
to end (reported, never asserted). Each side runs ``--repeats`` times (default 1: a full
run takes minutes), interleaved, the best kept; the load average is printed before each.

    python benchmarks/stabilize.py [--threads T] [--repeats R] [--steps S] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from stabilize_baseline import SPACE, run_baseline  # benchmarks/stabilize_baseline.py
from timing import finish, machine, write_report  # benchmarks/timing.py

import attractor.stack.fit as fit_module
import attractor.stack.stabilize.choice as choice_module
import attractor.stack.stabilize.experiment as experiment_module
import attractor.stack.stabilize.objectives as objectives_module
import attractor.stack.stabilize.study as study_module
import attractor.training.chunk as chunk_module
from attractor.config import Config, parse_config
from attractor.stack.stabilize import StabilizeResult, StabilizeSettings, stabilize
from attractor.tasks import build_task

GOAL = 3.0
#: The issue's workload, and the smoke run's (``--quick``).
FULL = {"steps": 250, "trials": 32, "parallel": 8, "members": 8, "confirm_members": 16}
QUICK = {"steps": 10, "trials": 4, "parallel": 2, "members": 2, "confirm_members": 2}


def setup(args: argparse.Namespace) -> tuple[Config, StabilizeSettings]:
    """The starting config (its plan holds the search rows, then the confirmation rows)."""
    config = parse_config(
        {
            "task": {"name": "digits-mlp", "hidden": [128, 128]},
            "trainer": {
                "optimizer": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "batch_size": args.batch,
                "steps": args.steps,
            },
            "plan": {
                "members": args.members + args.confirm_members,
                "design": "random",
                "seed": 0,
                "vary": ["init_seed", "data_seed"],
            },
            "run": {"strategy": "vectorized"},
        }
    )
    settings = StabilizeSettings.model_validate(
        {
            "trials": args.trials,
            "parallel": args.parallel,
            "members": args.members,
            "confirm_members": args.confirm_members,
            "sampler": args.sampler,
            "search": SPACE,
        }
    )
    return config, settings


# ---------------------------------------------------------------------------- ours


class Breakdown:
    """Seconds spent inside some of our functions during a run, by phase (search, confirm).

    Wrappers are patched over module attributes for the run and removed after; a name the
    code no longer has is skipped (its line then reads 0).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.phase = "search"
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str, phase: str | None = None) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = self.phase
            self.phase = phase or outer
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[f"{self.phase}: {label}"] += time.perf_counter() - started
                self.phase = outer

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    @contextmanager
    def patched(self) -> Iterator[Breakdown]:
        self.wrap(experiment_module, "confirm", "all", phase="confirm")
        self.wrap(study_module, "train_trials", "training (train_trials)")
        self.wrap(fit_module, "train_chunk", "engine (train_chunk)")
        self.wrap(chunk_module.Chunk, "snapshot", "evaluation at snapshots")
        for name in ("scores", "error", "spread", "paired"):
            self.wrap(objectives_module, name, "scoring and intervals")
        self.wrap(choice_module, "importance", "all", phase="importance")
        try:
            yield self
        finally:
            for owner, name, original in reversed(self._undo):
                setattr(owner, name, original)
            self._undo.clear()


def run_ours(config: Config, settings: StabilizeSettings) -> tuple[StabilizeResult, float, dict]:
    """``stabilize`` end to end (in memory); its result, wall seconds and time breakdown."""
    breakdown = Breakdown()
    with breakdown.patched():
        started = time.perf_counter()
        result = stabilize(config, settings)
        seconds = time.perf_counter() - started
    return result, seconds, dict(breakdown.seconds)


# ---------------------------------------------------------------------------- report


def compare(
    args: argparse.Namespace,
    settings: StabilizeSettings,
    result: StabilizeResult,
    ours_s: float,
    base: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """Print and return both sides' seconds, member-steps/s and ratio, search and end to end."""
    steps = args.steps
    search_steps = settings.trials * settings.members * steps
    sides = {
        "search": (
            result.timings["search_s"],
            search_steps,
            base["search_s"],
            len(result.trials) * settings.members * steps,
        ),
        "end to end": (
            ours_s,
            search_steps + 2 * settings.confirm_members * steps,
            base["total_s"],
            base["members"] * steps,
        ),
    }
    print(
        f"{'':<12} {'ours s':>8} {'baseline s':>11} {'ratio':>7} {'ours m-steps/s':>15} "
        f"{'baseline m-steps/s':>19}"
    )
    figures = {}
    for name, (ours_t, ours_n, base_t, base_n) in sides.items():
        ratio = (base_t / base_n) / (ours_t / ours_n)  # per member-step, in case trials failed
        figures[name] = {
            "ours_s": ours_t,
            "baseline_s": base_t,
            "ratio": ratio,
            "ours_member_steps_per_s": ours_n / ours_t,
            "baseline_member_steps_per_s": base_n / base_t,
        }
        print(
            f"{name:<12} {ours_t:>8.1f} {base_t:>11.1f} {ratio:>6.2f}x {ours_n / ours_t:>15.0f} "
            f"{base_n / base_t:>19.0f}"
        )
    return figures


def explain(
    result: StabilizeResult, parts: dict[str, float], base: dict[str, Any]
) -> tuple[float, dict[str, float]]:
    """Print where both sides' time went; the ratio of their search training alone and the
    share of trials using each intervention.
    """
    timings = result.timings
    print("\nwhere ours goes (seconds; nested: engine within training, evaluations within engine):")
    print(
        f"  search {timings['search_s']:.1f}, confirmation {timings['confirm_s']:.1f}, "
        f"importance {timings['importance_s']:.1f}"
    )
    for key in sorted(parts):
        print(f"  {key:<45} {parts[key]:7.2f}")
    rest = (
        timings["search_s"]
        - parts.get("search: training (train_trials)", 0.0)
        - parts.get("search: scoring and intervals", 0.0)
    )
    print(f"  {'search: Optuna, suggest and the rest':<45} {rest:7.2f}")
    print("where the baseline goes (seconds):")
    for key in sorted(base["parts"]):
        print(f"  {key:<45} {base['parts'][key]:7.2f}")
    ratio = base["parts"]["search: training"] / parts.get(
        "search: training (train_trials)", math.nan
    )
    print(f"  search training alone, baseline / ours: {ratio:.2f}x")
    t = result.trials
    using = {
        "sam_rho": float((t["sam_rho"] > 0).mean()),
        "clip_norm": float(t["clip_norm"].notna().mean()),
        "ema_decay": float((t["ema_decay"] > 0).mean()),
        "label_smoothing": float((t["label_smoothing"] > 0).mean()),
    }
    print(
        "  share of our trials using each intervention: "
        + ", ".join(f"{name} {share:.0%}" for name, share in using.items())
        + " (a chunk runs an intervention's path for all its members once one uses it)"
    )
    return ratio, using


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, what in (
        ("steps", "steps per member"),
        ("trials", "trials"),
        ("parallel", "trials per round"),
        ("members", "members per trial"),
        ("confirm_members", "confirmation members per trainer"),
    ):
        flag, default = "--" + name.replace("_", "-"), f"{FULL[name]}; --quick {QUICK[name]}"
        parser.add_argument(flag, type=int, default=None, help=f"{what} ({default})")
    parser.add_argument("--batch", type=int, default=32, help="batch size (32)")
    parser.add_argument("--sampler", default="nsga2", choices=["nsga2", "tpe", "random"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each side, interleaved, best kept (1)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 trials x 2 members")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config, settings = setup(args)
    task = build_task(config.task)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    print(
        f"stabilize: digits-mlp 64-128-128-10, {args.trials} trials x {args.members} members "
        f"({args.parallel} trials a round, {settings.sampler}), confirmation 2 x "
        f"{args.confirm_members} members, SGD momentum 0.9, batch {args.batch}, {args.steps} steps"
    )
    print(f"search space: {SPACE}")
    print(
        f"torch {torch.__version__}, nproc {os.cpu_count()}, {torch.get_num_threads()} threads, "
        f"load average {load_start:.2f} at start\n"
    )

    # Warm-up: imports, kernels and allocator of both sides, untimed.
    tiny = argparse.Namespace(**{**vars(args), **QUICK, "steps": 2})
    warm_config, warm_settings = setup(tiny)
    warm, _, _ = run_ours(warm_config, warm_settings)
    run_baseline(task, warm_config, warm_settings, warm)

    # Interleaved, best of --repeats for each side: a burst of load hits both alike. The
    # trials are the same every time (seeded sampler, seeded members).
    loads: list[float] = []
    best: tuple[StabilizeResult, float, dict[str, float]] | None = None
    base: dict[str, Any] | None = None
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        ours = run_ours(config, settings)
        best = ours if best is None or ours[1] < best[1] else best
        loads.append(os.getloadavg()[0])
        again = run_baseline(task, config, settings, ours[0])
        base = again if base is None or again["total_s"] < base["total_s"] else base
    assert best is not None and base is not None
    result, ours_s, parts = best

    figures = compare(args, settings, result, ours_s, base)
    print(
        f"  best of {args.repeats} each, interleaved; load average before each (ours, baseline, "
        f"...): {', '.join(f'{x:.2f}' for x in loads)}; ratios per member-step (the wall-time "
        "ratio when every trial finished)"
    )
    if len(result.trials) < settings.trials:
        print(
            f"  {settings.trials - len(result.trials)} of our trials failed (not scored); the "
            "baseline trains only the trials in the table"
        )
    train_ratio, using = explain(result, parts, base)

    chosen, confirmation = result.chosen, base["confirmation"]
    print(
        f"\nchosen trial {chosen['trial']}: error {chosen['error']:.3f}, spread "
        f"{chosen['spread']:.4f}; {result.confirmation['verdict']}"
    )
    print(
        f"baseline's confirmation (point values; its seeds draw other numbers), chosen - start: "
        f"error {confirmation['error']:+.3f}, js {confirmation['js']:+.4f}"
    )
    ratio = figures["end to end"]["ratio"]
    print(
        f"\ngoal (from the issue; reported, not asserted): >= {GOAL:g}x end to end: "
        f"{'met' if ratio >= GOAL else 'MISSED'} ({ratio:.2f}x)"
    )
    load_end = finish(started, load_start)

    report: dict[str, Any] = {
        **machine(load_start, load_end),
        "settings": {k: getattr(args, k) for k in (*FULL, "batch", "sampler")},
        "figures": figures,
        "ours_timings": result.timings,
        "ours_parts": parts,
        "baseline_parts": base["parts"],
        "search_training_ratio": train_ratio,
        "trials_finished": len(result.trials),
        "intervention_share": using,
        "repeats": args.repeats,
        "load_averages": loads,
        "goal": {"ratio": GOAL, "value": ratio, "met": ratio >= GOAL},
    }
    if args.json is not None:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
