"""Which stability interventions shrink the seed-to-seed spread of an ensemble, and at what cost?

Trains the ensemble of a config (default ``examples/digits.toml``: 16 digits-mlp members
whose init seed, data order and bootstrap resample differ) once per trainer option, with
the same plan rows, and prints for each: accuracy on the training split and on the test
split (mean over members), the mean top-class probability on test (how sure the members
are; JS moves with it), the spread (mean pairwise Jensen-Shannon divergence between
members' test predictions, and the share of test inputs two members answer differently),
and the change in both spreads against the plain trainer with a *paired* multi-bootstrap
interval (the same member rows and test examples are resampled for both, so seed luck
cancels)::

    python examples/interventions_spread.py [--config examples/digits.toml] [--draws 500]
    python examples/interventions_spread.py --config examples/modular-small.toml

The options tried depend on the task (:data:`VARIANTS`): on modular addition (AdamW,
weight decay 1.0) weight decay is tried at 0.3 and 3.0 instead of digits' 5e-4, and
clipping at norm 0.2 instead of 1, which would never bind there: the plain members'
gradient norms are about 0.5 at the start, 0.8 at most (near step 100), 0.36 at step 200,
0.22 at step 400 and 0.15 at the end, so 0.2 binds in the first ~460 of the 800 steps. A
task with no entry gets the digits options.

How it trains: in memory, every option's members of one config as one ensemble
(:func:`attractor.stack.fit.train_predict` with one trainer per row). The member-wise
options (label smoothing, clipping, SAM, EMA, SWA) differ per member inside a chunk and
weight decay per plan row; a member is bitwise the member it would be trained alone in its
own run directory (``attractor run`` with that trainer), so the numbers mean what one run
per option would give. SAM's members train as a separate ensemble: its second gradient
would otherwise be computed for every member of their chunk. Nothing is written to disk;
a member whose loss diverges is scored at its initial weights and counted in the table.

Run it to see the table; the README quotes one run per config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attractor.config import Config, load_config
from attractor.measure.bootstrap import multibootstrap, pairwise_multibootstrap
from attractor.measure.function import pairwise_js
from attractor.plan import COLUMNS, PlanRow, build_plan
from attractor.runs.launch import resolve_strategy
from attractor.stack.fit import train_predict
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.chunk import MEMBERWISE

ROOT = Path(__file__).resolve().parent
#: Per task name: option label -> changes to ``[trainer]``; the first is the plain trainer.
VARIANTS: dict[str, dict[str, dict[str, object]]] = {
    "digits-mlp": {
        "plain (sgd, momentum 0.9)": {},
        "label_smoothing 0.1": {"label_smoothing": 0.1},
        "clip_norm 1": {"clip_norm": 1.0},
        "sam_rho 0.05": {"sam_rho": 0.05},
        "ema_decay 0.99": {"ema_decay": 0.99},
        "swa_start 0.75": {"swa_start": 0.75},
        "weight_decay 5e-4": {"weight_decay": 5e-4},
    },
    "modular-addition": {
        "plain (adamw, wd 1.0)": {},
        "label_smoothing 0.1": {"label_smoothing": 0.1},
        "clip_norm 0.2": {"clip_norm": 0.2},
        "sam_rho 0.05": {"sam_rho": 0.05},
        "ema_decay 0.99": {"ema_decay": 0.99},
        "swa_start 0.75": {"swa_start": 0.75},
        "weight_decay 0.3": {"weight_decay": 0.3},
        "weight_decay 3.0": {"weight_decay": 3.0},
    },
}


def _train(
    config: Config, task: Task, rows: list[PlanRow], variants: dict[str, dict[str, object]]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each option's ``(logits [members, n_train + n_test, classes], diverged [members])`` on
    the training split then the test split, its members trained on ``rows`` with the
    option's trainer; options that can share an ensemble do.
    """
    strategy = resolve_strategy(config, task)
    x_eval = torch.cat([task.x_train, task.x_test])
    groups: dict[tuple[object, ...], list[str]] = {}
    for name, changes in variants.items():
        shared = {k: v for k, v in changes.items() if k not in MEMBERWISE and k not in COLUMNS}
        sam = bool(changes.get("sam_rho", config.trainer.sam_rho))
        groups.setdefault((repr(sorted(shared.items())), sam), []).append(name)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for names in groups.values():
        first = variants[names[0]]
        shared = {k: v for k, v in first.items() if k not in MEMBERWISE and k not in COLUMNS}
        base = config.trainer.model_copy(update=shared)
        group_config = config.model_copy(update={"trainer": base})
        all_rows, trainers = [], []
        for name in names:
            changes = variants[name]
            on_row = {k: v for k, v in changes.items() if k in COLUMNS}
            own = {k: v for k, v in changes.items() if k in MEMBERWISE}
            all_rows += [dataclasses.replace(r, **on_row) for r in rows]
            trainers += [base.model_copy(update=own)] * len(rows)
        logits, diverged = train_predict(
            task, group_config, all_rows, strategy, x_eval, trainers=trainers
        )
        for name, part, lost in zip(
            names, logits.split(len(rows)), diverged.split(len(rows)), strict=True
        ):
            out[name] = (part, lost)
    return {name: out[name] for name in variants}


def _paired_change(
    a: np.ndarray, b: np.ndarray, draws: int, seed: int
) -> tuple[float, float, float]:
    """Mean over member pairs of ``a`` minus that of ``b`` (``[m, m, n]`` per-example pair
    values each, same rows and examples), with a paired bootstrap over members and examples.
    """
    rng = np.random.default_rng(seed)
    m, _, n = a.shape
    off = ~np.eye(m, dtype=bool)

    def stat(members: np.ndarray, examples: np.ndarray) -> float:
        pa = a[np.ix_(members, members, examples)].mean(-1)
        pb = b[np.ix_(members, members, examples)].mean(-1)
        keep = members[:, None] != members[None, :]  # a member against its own copy: no pair
        return float(pa[keep].mean() - pb[keep].mean())

    value = float(a.mean(-1)[off].mean() - b.mean(-1)[off].mean())
    stats = [stat(rng.integers(0, m, m), rng.integers(0, n, n)) for _ in range(draws)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return value, float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "digits.toml")
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    config = load_config(args.config)
    task = build_task(config.task)
    variants = VARIANTS.get(config.task.name)
    if variants is None:
        print(f"no options for task {config.task.name!r}: trying digits-mlp's", file=sys.stderr)
        variants = VARIANTS["digits-mlp"]
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    started = time.perf_counter()
    trained = _train(config, task, rows, variants)
    seconds = time.perf_counter() - started
    y, n_train = task.y_test, task.n_train
    plain_js = plain_votes = None
    print(
        f"{'trainer':<26}{'train':>7}{'accuracy':>22}{'max p':>7}{'pairwise JS':>26}"
        f"{'disagree':>10}{'JS vs plain':>30}{'disagree vs plain':>30}"
    )
    for name, (logits, diverged) in trained.items():
        fit = (logits[:, :n_train].argmax(-1) == task.y_train).double().mean()
        probs = logits[:, n_train:].double().softmax(-1)
        confidence = probs.max(-1).values.mean()
        votes = probs.argmax(-1)
        correct = (votes == y).double().numpy()
        accuracy = multibootstrap(correct, np.mean, args.draws)
        js = pairwise_js(probs, per_example=True).numpy()
        spread = pairwise_multibootstrap(js, args.draws)
        differ = (votes[:, None, :] != votes[None, :, :]).double().numpy()
        m = len(votes)
        disagreement = float(differ.mean(-1).sum() / (m * (m - 1)))
        if plain_js is None:
            plain_js, plain_votes = js, differ
            changes = ("", "")
        else:
            changes = tuple(
                "{:+.4f} [{:+.4f}, {:+.4f}]".format(*_paired_change(a, b, args.draws, 0))
                for a, b in ((js, plain_js), (differ, plain_votes))
            )
        lost = int(diverged.sum())
        label = name if not lost else f"{name} ({lost} diverged)"
        print(
            f"{label:<26}{fit:>7.4f}"
            f"{accuracy.value:>8.4f} [{accuracy.low:.4f}, {accuracy.high:.4f}]{confidence:>7.3f}"
            f"{spread.value:>10.4f} [{spread.low:.4f}, {spread.high:.4f}]"
            f"{disagreement:>10.4f}{changes[0]:>30}{changes[1]:>30}"
        )
    members = len(rows) * len(variants)
    print(f"{members} members ({len(rows)} per option) trained in {seconds:.0f} s")


if __name__ == "__main__":
    main()
