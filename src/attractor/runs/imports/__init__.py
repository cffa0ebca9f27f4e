"""``attractor import``: a run directory from models trained elsewhere, so every measure works.

::

    import_run(["runs/seed*/"], "digits-mlp", "runs/imported")      # paths or globs
    import_run(["members.csv"], "examples/digits.toml", "runs/imported", link=True)

SPEC (:mod:`~attractor.runs.imports.sources`, :mod:`~attractor.runs.imports.manifests`)
names the members and their snapshot files; TASK is a task name (built in, or your own
``module:function``) or a TOML config whose ``[task]`` (and ``[trainer]``, if the models
were trained so) is used. Every file is checked against the task's model before anything is
written (:mod:`~attractor.runs.imports.fit`); bad input is one line, and the directory is
not touched. The result is an ordinary run directory (:mod:`~attractor.runs.imports.write`)
with an ``imported`` record in its manifest; ``attractor run`` and other commands'
``--force`` refuse to replace it (:func:`attractor.runs.owned.refuse_protected`).

Safety: weights are read from safetensors only and ``config.json`` as JSON; no code from
the imported files runs. A ``module:function`` task is imported because the user named it
on the command line, and the manifest is signed as theirs (:mod:`attractor.runs.trust`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attractor.config import Config, RunConfig, TaskConfig, TrainerConfig, load_config, read_toml
from attractor.errors import UserError
from attractor.plan import Plan
from attractor.runs.imports import factors, hf
from attractor.runs.imports.fit import fit
from attractor.runs.imports.manifests import is_manifest, read_manifest
from attractor.runs.imports.sources import SourceMember, check_steps, from_paths
from attractor.runs.imports.write import Target, write_run
from attractor.runs.launch import resolve_strategy
from attractor.runs.lock import hold
from attractor.runs.owned import is_attractor_manifest, refuse_protected, remove_owned
from attractor.runs.progress import Stages
from attractor.runs.store import RunStore, identity
from attractor.tasks import build_task
from attractor.training.device import resolve_device

__all__ = ["import_run"]


def import_run(
    spec: list[str],
    task: str | Path,
    out: str | Path,
    link: bool = False,
    force: bool = False,
    progress: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Import the members ``spec`` names, as models of ``task``, into run directory ``out``.

    Args:
        spec: one CSV / TOML manifest, or paths and globs of safetensors files and Hugging
            Face model directories.
        task: a task name or a TOML config file (its ``[task]`` and ``[trainer]``).
        out: the run directory to write.
        link: hard-link (or symbolically link) files that need no change instead of copying.
        force: replace what ``out`` holds if it is an attractor run (an import or a trained run).
        progress: a line on stderr as each stage begins.
        device: where each snapshot's metrics are evaluated (``auto``, ``cpu``, ``cuda[:N]``);
            the files written are the same wherever, the metrics agree to float tolerance.

    Returns:
        What was imported: run, task, members, steps, files copied / linked / written.
    """
    out = Path(out)
    where = resolve_device(device)  # a GPU this machine lacks: one line, nothing read
    members = read_manifest(Path(spec[0])) if is_manifest(spec) else from_paths(spec)
    task_config, trainer, trainer_known = _task(task, members)
    built = build_task(task_config, search_cwd=True)  # the user's own command line
    template = _template(built)
    split = [factors.split_factors(m.factors, f"member '{m.name}'") for m in members]
    plan = factors.build_plan([given for given, _ in split], trainer)
    steps = check_steps(members, [int(b) for b in plan.table["batch_size"]])
    all_steps = sorted({s for each in steps.values() for s in each})
    probe = Config(task=task_config, trainer=trainer, run=RunConfig(strategy="auto"))
    with torch.random.fork_rng(devices=[]):  # it builds a model: keep the caller's RNG
        strategy = resolve_strategy(probe, built)
    config = factors.run_config(task_config, trainer, plan, all_steps, strategy)
    _check_target(out, force, config, plan, members)
    files = sum(len(m.files) for m in members)
    # Every file is read and checked before the directory is touched, and before the first
    # progress line: a refusal is then the only line on stderr.
    checked = [
        {step: fit(src, template, task_config.name).sums for step, src in m.files.items()}
        for m in members
    ]
    with Stages("import", 1, progress) as stages:
        stages.begin(f"writing {files} snapshots of {len(members)} members and their metrics")
        record = {
            "spec": [str(s) for s in spec],
            "how": "link" if link else "copy",
            "known_factors": factors.known_columns([given for given, _ in split]),
            "trainer_known": trainer_known,
            "steps_known": all(m.steps_known for m in members),
        }
        with hold(out):
            if force and is_attractor_manifest(out / "manifest.json"):
                remove_owned(out, imported_ok=True)
            store = RunStore.prepare(out, config, plan, steps)
            target = Target(store, config, plan, steps, strategy, link, where)
            counts = write_run(
                target, built, template, members, checked, record, [own for _, own in split]
            )
    return {
        "run": str(out),
        "task": task_config.name,
        "members": len(members),
        "steps": all_steps,
        "snapshots": files,
        **counts,
        "strategy": strategy,
        "known_factors": record["known_factors"],
    }


def _task(task: str | Path, members: list[SourceMember]) -> tuple[TaskConfig, TrainerConfig, bool]:
    """The task config (options filled in from a Hugging Face directory for tiny-lm), the
    trainer, and whether the user gave the trainer.
    """
    text = str(task)
    if text.endswith(".toml") or Path(text).is_file():
        config = load_config(text)
        task_config, trainer = config.task, config.trainer
        trainer_known = "trainer" in read_toml(text)
    else:
        task_config, trainer, trainer_known = TaskConfig(name=text), TrainerConfig(), False
    first_hf = next((s for m in members for s in m.files.values() if s.hf), None)
    if task_config.name == "tiny-lm" and first_hf is not None:
        # The model's size is in the directory's config; options the user gave win, and a
        # directory that disagrees with them is refused when it is checked.
        size = hf.tiny_lm_size(first_hf.path, hf.read_config(first_hf.path))
        task_config = TaskConfig(name="tiny-lm", **{**size, **task_config.options})
    return task_config, trainer, trainer_known


def _template(task: Any) -> nn.Module:
    """The task's model, as training stores it (float32, eval mode), outside the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        return task.make_model().float().eval()


def _check_target(
    out: Path, force: bool, config: Config, plan: Plan, members: list[SourceMember]
) -> None:
    """Refuse, before anything is read in full or written, an --out that cannot take the run."""
    store = RunStore(out)
    store.check_target(False, "run")  # a file, or a directory that is not attractor's
    root = out.resolve()
    for member in members:
        for source in member.files.values():
            if source.path.resolve().is_relative_to(root):
                raise UserError(
                    f"'{source.path}' lies inside --out '{out}'; import into another directory"
                )
    if force:
        refuse_protected(out, imported_ok=True)  # '.', home, '/', a parent of the cwd
        return
    if not store.contents():
        return
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = {}
    same = isinstance(old, dict) and (
        identity(old.get("config", {})) == identity(config.resolved())
        and old.get("plan_hash") == plan.hash()
    )
    if not same:  # the same import again (an interrupted one) is simply written again
        what = "an import" if isinstance(old, dict) and "imported" in old else "a run"
        raise UserError(
            f"'{out}' already holds {what}; give another --out, or --force to replace it"
        )
