"""Experiments: a system run from a plan of perturbed initial conditions, its outcomes measured.

Every level of the stack is studied with the same shape (DESIGN.md, "One experiment shape
at every level"), and every workflow that plans, trains and measures is one
:class:`Experiment`: typed settings (a pydantic model, ``extra="forbid"``) and a
``run(settings, store, progress) -> results`` function. :func:`run_experiment` gives it a
directory of its own (``RunStore.prepare_experiment``: a manifest with the experiment's
name and resolved settings, refused if it holds something else unless ``force``), runs it,
and writes every result it returns through the run store, so nothing here writes files by
itself and nothing overwrites another experiment's results.

A new experiment is one file exposing ``EXPERIMENT = Experiment(...)`` plus one line in
:data:`EXPERIMENTS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from attractor.errors import UserError
from attractor.runs.lock import hold
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.training.device import resolve_device

S = TypeVar("S", bound=BaseModel)

#: name -> module defining ``EXPERIMENT``. A fixed table written here, never read from a
#: file, so importing one of these can't be steered by a run directory's contents.
EXPERIMENTS: dict[str, str] = {
    "hparam-map": "attractor.experiments.hparam_map",
    "instability": "attractor.experiments.instability",
    "shortcuts": "attractor.experiments.shortcuts",
    "trainer2": "attractor.stack.trainer2",
    "tangent": "attractor.experiments.tangent",
    "diff": "attractor.experiments.diff",
    "world": "attractor.experiments.world",
    "evaluator": "attractor.stack.learned.experiment",
    "stabilize": "attractor.stack.stabilize.experiment",
    "compare": "attractor.experiments.two_runs",
}


@dataclass(frozen=True)
class Experiment(Generic[S]):
    """One workflow: ``run(settings, store, progress)`` plans, trains (inside ``store.root``)
    and measures.

    Attributes:
        name: the registry key, the CLI command and the manifest's ``experiment``.
        settings: the typed settings model; its JSON dump is the directory's identity.
        run: does the work; may place trained runs under ``store.root``; returns the results
            (it never writes them: :func:`run_experiment` does, through the store). With
            ``progress`` it tells on stderr how far it is (a line per stage:
            :class:`~attractor.runs.progress.Stages`; the runs it trains draw their own bars),
            beginning only once its input is checked, so that a refusal is the only line.
        summary: one line for ``--help`` texts and the docs.
        check: refuses settings that cannot run together (one :class:`UserError` line),
            called by :func:`run_experiment` before the directory is touched; None: the
            settings model's own validation is all.
    """

    name: str
    settings: type[S]
    run: Callable[[S, RunStore, bool], Sequence[Result]]
    summary: str
    check: Callable[[S], None] | None = None


def get_experiment(name: str) -> Experiment[Any]:
    """The registered experiment ``name``; the error lists the known ones."""
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment '{name}'; known: {', '.join(sorted(EXPERIMENTS))}")
    return importlib.import_module(EXPERIMENTS[name]).EXPERIMENT


def default_out(name: str, settings: BaseModel) -> Path:
    """``runs/<name>-<hash of the settings>``: a directory per distinct setting, never shared
    (placement such as ``device`` left out: :func:`~attractor.runs.identity.experiment_identity`).
    """
    from attractor.runs.files import config_digest
    from attractor.runs.identity import experiment_identity

    settings_json = experiment_identity(settings.model_dump(mode="json"))
    return Path("runs") / f"{name}-{config_digest(settings_json)[:10]}"


def _devices(settings: Any) -> list[str]:
    """Every device the settings name: their own ``device`` and any ``run`` table's."""
    found: list[str] = []
    if isinstance(settings, dict):
        for key, value in settings.items():
            if key == "device" and isinstance(value, str):
                found.append(value)
            elif key == "run" and isinstance(value, dict) and isinstance(value.get("device"), str):
                found.append(value["device"])
            else:
                found += _devices(value)
    elif isinstance(settings, list):
        for value in settings:
            found += _devices(value)
    return found


def run_experiment(
    name: str, settings: BaseModel, out: str | Path, force: bool = False, progress: bool = False
) -> tuple[RunStore, list[Result]]:
    """Run experiment ``name`` with ``settings`` in directory ``out``; its store and results.

    The same settings on the same directory reopen it (an experiment may reuse the runs it
    finished there); other settings are refused unless ``force``. ``progress``: the
    experiment's stages (and its runs' training) on stderr; off by default.
    """
    experiment = get_experiment(name)
    if not isinstance(settings, experiment.settings):
        raise TypeError(
            f"{name} takes {experiment.settings.__name__}, not {type(settings).__name__}"
        )
    if experiment.check is not None:
        experiment.check(settings)
    for device in _devices(settings.model_dump(mode="json")):
        resolve_device(device)  # a GPU this machine lacks: refused before OUT exists
    RunStore(out).check_target(force, "experiment")  # refusals before the lock creates OUT
    with hold(out):  # one writer: a second experiment on OUT is refused, naming this pid
        store = RunStore.prepare_experiment(
            out,
            name,
            settings.model_dump(mode="json"),
            force=force,
            current=lambda recorded: experiment.settings.model_validate(recorded).model_dump(
                mode="json"
            ),
        )
        try:
            results = list(experiment.run(settings, store, progress))
        except UserError:
            # Refused input found only while running (a spawn step past the end, a model
            # spec): a directory holding nothing but its manifest is removed, so fixing the
            # input and running again is not refused as "another config". Anything trained
            # there stays.
            store.discard_if_unused()
            raise
        for result in results:
            store.write(result)
    return store, results
