"""The baseline of ``benchmarks/stabilize.py``: its trials and confirmation member by member,
the way a user writes them (one Optuna trial at a time; per member an ``nn.Module``,
``torch.optim.SGD``, ``F.cross_entropy(label_smoothing=)``, two-pass SAM,
``clip_grad_norm_``, an ``AveragedModel`` EMA copy; error and mean pairwise JS as points).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from attractor.config import Config
from attractor.stack.fit import validation_split
from attractor.stack.stabilize import StabilizeResult, StabilizeSettings
from attractor.tasks.base import Task

#: The searched space (every setting member-wise or a row setting: a round is one chunk).
SPACE: dict[str, list[float]] = {
    "lr": [0.01, 0.5],
    "label_smoothing": [0.0, 0.2],
    "clip_norm": [0.5, 5.0],
    "sam_rho": [0.01, 0.1],
    "ema_decay": [0.9, 0.999],
}


def knobs_of(record: dict[str, Any]) -> dict[str, Any]:
    """The applied trainer settings of a trials-table row (or of ``result.chosen["knobs"]``)."""
    clip = record.get("clip_norm")
    return {
        "lr": float(record["lr"]),
        "momentum": float(record["momentum"]),
        "weight_decay": float(record["weight_decay"]),
        "label_smoothing": float(record["label_smoothing"]),
        "clip_norm": None if clip is None or clip != clip else float(clip),  # NaN: off
        "sam_rho": float(record["sam_rho"]),
        "ema_decay": float(record["ema_decay"]),
    }


def train_member(
    task: Task,
    x: Tensor,
    y: Tensor,
    seeds: tuple[int, int],
    knobs: dict[str, Any],
    steps: int,
    batch: int,
) -> nn.Module:
    """One member as a user writes it: its model (the EMA copy with EMA)."""
    init_seed, data_seed = seeds
    torch.manual_seed(init_seed)
    model = task.make_model()
    params = list(model.parameters())
    optimizer = torch.optim.SGD(
        params, lr=knobs["lr"], momentum=knobs["momentum"], weight_decay=knobs["weight_decay"]
    )
    decay, rho, clip, smoothing = (
        knobs["ema_decay"],
        knobs["sam_rho"],
        knobs["clip_norm"],
        knobs["label_smoothing"],
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None
    generator = torch.Generator().manual_seed(data_seed)
    order, cursor = torch.empty(0, dtype=torch.long), 0
    for _ in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(x), generator=generator), 0
        index = order[cursor : cursor + batch]
        cursor += batch
        xb, yb = x[index], y[index]
        loss = F.cross_entropy(model(xb), yb, label_smoothing=smoothing)
        if not math.isfinite(loss.item()):  # diverged: scored at its initial weights
            torch.manual_seed(init_seed)
            return task.make_model()
        optimizer.zero_grad()
        loss.backward()
        if rho:
            # SAM: the gradient at w + rho g / |g|, applied at w.
            with torch.no_grad():
                norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
                shifts = [p.grad * (rho / (norm + 1e-12)) for p in params]
                for p, e in zip(params, shifts, strict=True):
                    p.add_(e)
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb, label_smoothing=smoothing).backward()
            with torch.no_grad():
                for p, e in zip(params, shifts, strict=True):
                    p.sub_(e)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
    return model if ema is None else ema.module


def score(models: list[nn.Module], x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean member error and mean pairwise Jensen-Shannon divergence (nats) on ``x``."""
    with torch.no_grad():
        logits = torch.stack([m.eval()(x) for m in models])
        error = float((logits.argmax(-1) != y).double().mean())
        p, logp = logits.softmax(-1), logits.log_softmax(-1)
        js = []
        for i in range(len(models)):
            for j in range(i + 1, len(models)):
                logm = ((p[i] + p[j]) / 2).log()
                kl_i = (p[i] * (logp[i] - logm)).sum(-1)
                kl_j = (p[j] * (logp[j] - logm)).sum(-1)
                js.append(float((kl_i + kl_j).mean() / 2))
    return error, sum(js) / len(js)


def suggest_like_a_user(trial: Any) -> None:
    """The suggestions our space makes of a trial (so the sampler does the same work)."""
    trial.suggest_float("lr", *SPACE["lr"], log=True)
    trial.suggest_float("label_smoothing", *SPACE["label_smoothing"])
    for name in ("clip_norm", "sam_rho"):
        trial.suggest_categorical(f"use_{name}", [False, True])
        trial.suggest_float(name, *SPACE[name], log=True)
    trial.suggest_categorical("average", ["none", "ema"])
    trial.suggest_float("ema_decay", *SPACE["ema_decay"])


def sampler(settings: StabilizeSettings) -> Any:
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=settings.parallel, seed=settings.seed)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=settings.startup_trials, multivariate=True
        )
    return optuna.samplers.RandomSampler(seed=settings.seed)


def run_baseline(
    task: Task, config: Config, settings: StabilizeSettings, ours: StabilizeResult
) -> dict[str, Any]:
    """Our trials and confirmation again, member by member; seconds by part, members trained."""
    steps, batch = config.trainer.steps, config.trainer.batch_size
    assert steps is not None
    seeds = {
        block: list(zip(group["init_seed"], group["data_seed"], strict=True))
        for block, group in ours.seeds.groupby("block")
    }
    fit, val = validation_split(task.n_train, settings.validation_fraction, settings.split_seed)
    x_fit, y_fit = task.x_train[fit], task.y_train[fit]
    x_val, y_val = task.x_train[val], task.y_train[val]
    seconds: dict[str, float] = defaultdict(float)
    members = 0

    def timed(part: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        seconds[part] += time.perf_counter() - started
        return value

    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler(settings))
    for record in ours.trials.sort_values("trial").to_dict("records"):
        trial = timed("search: Optuna", study.ask)
        timed("search: Optuna", lambda t=trial: suggest_like_a_user(t))
        knobs = knobs_of(record)
        models = timed(
            "search: training",
            lambda k=knobs: [
                train_member(task, x_fit, y_fit, s, k, steps, batch) for s in seeds["search"]
            ],
        )
        members += len(models)
        values = timed("search: scoring", lambda m=models: score(m, x_val, y_val))
        timed("search: Optuna", lambda t=trial, v=values: study.tell(t, list(v)))
    searched = time.perf_counter()

    compared = []
    for knobs in (knobs_of(ours.chosen["knobs"]), knobs_of(ours.start)):
        models = timed(
            "confirm: training",
            lambda k=knobs: [
                train_member(task, task.x_train, task.y_train, s, k, steps, batch)
                for s in seeds["confirm"]
            ],
        )
        members += len(models)
        compared.append(
            timed("confirm: scoring", lambda m=models: score(m, task.x_test, task.y_test))
        )
    done = time.perf_counter()
    return {
        "search_s": searched - started,
        "total_s": done - started,
        "parts": dict(seconds),
        "members": members,
        "confirmation": {
            "error": compared[0][0] - compared[1][0],
            "js": compared[0][1] - compared[1][1],
        },
    }
