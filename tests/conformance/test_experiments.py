"""Conformance of experiments: every registered experiment honours the Experiment contract.

Each entry of :data:`attractor.experiments.EXPERIMENTS` runs with tiny settings (a few
steps of a small digits MLP) and must: write results that :meth:`RunStore.results` lists,
in a directory whose manifest names it; reopen that directory for the same settings;
refuse other settings (``UserError``) unless ``force``; write strict JSON (no NaN); and
render a page (``attractor.report.render_directory``) holding the section of every result
kind it returned. A new experiment gets these tests by one entry in :data:`TINY`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from attractor.errors import UserError
from attractor.experiments import EXPERIMENTS, get_experiment, run_experiment
from attractor.report import render_directory
from attractor.report.sections import Context, sections_for
from attractor.runs.results import RESULT_KINDS
from attractor.runs.store import RunStore
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**trainer: Any) -> Any:
    return tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 6, "batch_size": 16, **trainer},
        plan={"members": 2},
        run={"snapshots": 2},
    )


def _hparam_map(_: Path) -> BaseModel:
    from attractor.experiments.hparam_map import HparamMapSettings

    return HparamMapSettings(config=_config(), lrs=[0.01, 0.1], momenta=[0.0], seeds=2, draws=10)


def _instability(_: Path) -> BaseModel:
    from attractor.experiments.instability import InstabilitySettings

    return InstabilitySettings(config=_config(), spawn_steps=[0, 3], pairs=2, points=3)


def _shortcuts(_: Path) -> BaseModel:
    from attractor.experiments.shortcuts import ShortcutsSettings

    return ShortcutsSettings(config=_config(), variants=["sgd:optimizer=sgd"], seeds=2, draws=10)


def _trainer2(_: Path) -> BaseModel:
    from attractor.stack import Trainer2Run, Trainer2Settings

    search = Trainer2Settings.model_validate(
        {
            "trials": 2,
            "startup_trials": 1,
            "sampler_seeds": 2,
            "validation_bootstraps": 0,
            "final_members": 2,
            "draws": 10,
            "threads": 1,
        }
    )
    return Trainer2Run(config=_config(), trainer2=search)


def _tangent(_: Path) -> BaseModel:
    from attractor.experiments.tangent import TangentSettings

    return TangentSettings(
        config=_config(),
        directions=1,
        hypers=["lr"],
        power_iterations=0,
        finite_scale=None,
        basin_eps=None,
    )


def _diff(run: Path) -> BaseModel:
    from attractor.experiments.diff import DiffSettings

    return DiffSettings(a=f"{run}:0", b=f"{run}:1", points=2, budget_s=0, restarts=1, steps=2)


def _world(_: Path) -> BaseModel:
    from attractor.experiments.world import WorldSettings

    return WorldSettings(
        name="double-well", states=16, scales=[1.0, 2.0], draws=50, growth_states=2, trajectories=2
    )


def _evaluator(_: Path) -> BaseModel:
    from attractor.stack.learned.settings import EvaluatorSettings

    return EvaluatorSettings(
        examples=12,
        base_steps=50,
        resamples=2,
        evaluator_seeds=1,
        trainer_seeds=1,
        eval_samples=8,
        draws=50,
        suggest=2,
        reward_model={"steps": 10},
        trainer={"rounds": 1, "samples": 8, "keep": 2, "steps": 2, "sampler_steps": 4},
    )


def _stabilize_config(lr: float = 0.05) -> Any:
    return tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 6, "batch_size": 16, "lr": lr},
        plan={"members": 4, "vary": ["init_seed", "data_seed"]},
    )


def _stabilize(_: Path) -> BaseModel:
    from attractor.stack.stabilize import StabilizeRun, StabilizeSettings

    config = _stabilize_config()
    settings = StabilizeSettings.model_validate(
        {
            "trials": 2,
            "parallel": 2,
            "members": 2,
            "confirm_members": 2,
            "draws": 10,
            "search": {"label_smoothing": [0.0, 0.2]},
        }
    )
    return StabilizeRun(config=config, stabilize=settings)


def _compare(run: Path) -> BaseModel:
    from attractor.experiments.two_runs import CompareSettings
    from attractor.runs.launch import train

    other = run.parent / "other-lr"  # a second run of the same task, trained once
    if not (other / "manifest.json").is_file():
        train(_config(lr=0.07), other)
    return CompareSettings(a=str(run), b=str(other), draws=10)


#: name -> (tiny settings given a trained two-member run, a change that makes other settings).
TINY: dict[str, tuple[Callable[[Path], BaseModel], dict[str, Any]]] = {
    "hparam-map": (_hparam_map, {"draws": 11}),
    "instability": (_instability, {"threshold": 0.05}),
    "shortcuts": (_shortcuts, {"draws": 11}),
    "trainer2": (_trainer2, {"config": _config(lr=0.07)}),
    "tangent": (_tangent, {"seed": 1}),
    "diff": (_diff, {"seed": 1}),
    "world": (_world, {"seed": 1}),
    "evaluator": (_evaluator, {"seed": 1}),
    "stabilize": (_stabilize, {"config": _stabilize_config(lr=0.07)}),
    "compare": (_compare, {"seed": 1}),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-member run (what diff compares)."""
    from attractor.runs.launch import train

    root = tmp_path_factory.mktemp("trained") / "run"
    train(_config(), root)
    return root


def test_every_registered_experiment_has_tiny_settings() -> None:
    assert set(TINY) == set(EXPERIMENTS)


def _strict(path: Path) -> Any:
    """``path``'s JSON, refusing NaN and infinities (strict JSON)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{path.name} holds {token}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("name", sorted(TINY))
class TestExperiment:
    """The contract every experiment keeps (see the module docstring)."""

    def test_settings_model_forbids_unknown_keys(self, name: str, trained: Path) -> None:
        experiment = get_experiment(name)
        settings = TINY[name][0](trained)
        assert (
            isinstance(settings, experiment.settings)
            and experiment.name == name
            and experiment.summary
        )
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            experiment.settings.model_validate({**settings.model_dump(), "bogus": 1})

    def test_runs_lists_reopens_refuses_and_forces(
        self, name: str, trained: Path, tmp_path: Path
    ) -> None:
        make, change = TINY[name]
        settings = make(trained)
        out = tmp_path / name
        store, results = run_experiment(name, settings, out)
        assert results and store.experiment() == name
        assert all(r.kind in RESULT_KINDS for r in results)
        listed = RunStore(out).results()
        assert sorted(r.name for r in listed) == sorted(r.name for r in results)
        for stored in listed:
            assert _strict(stored.path)["result"]["kind"] == stored.kind
            for key in stored.table_keys:
                stored.table(key)  # every table it names reads back
        manifest = _strict(out / "manifest.json")
        assert manifest["experiment"] == name and manifest["config"] == settings.model_dump(
            mode="json"
        )

        again, _ = run_experiment(name, settings, out)  # the same settings reopen it
        assert _strict(out / "manifest.json")["config_hash"] == manifest["config_hash"]
        assert [r.name for r in again.results()] == [r.name for r in listed]

        other = settings.model_copy(update=change)
        with pytest.raises(UserError, match="--force"):
            run_experiment(name, other, out)
        assert _strict(out / "manifest.json")["config_hash"] == manifest["config_hash"]  # untouched
        forced, _ = run_experiment(name, other, out, force=True)
        assert _strict(out / "manifest.json")["config_hash"] != manifest["config_hash"]
        assert forced.results()

    def test_page_shows_a_section_for_every_result(
        self, name: str, trained: Path, tmp_path: Path
    ) -> None:
        store, results = run_experiment(name, TINY[name][0](trained), tmp_path / name)
        page = render_directory(store.root).read_text(encoding="utf-8")
        for kind in {r.kind for r in results}:
            sections = sections_for(kind)
            assert sections, f"no report section renders results of kind {kind!r}"
            for section in sections:
                alone = section.render(store.results(kind), Context(store, None))
                keys = re.findall(r'<section id="([^"]+)"', alone)
                assert keys, f"the {kind} section rendered no <section>"
                assert all(f'<section id="{key}"' in page for key in keys), (kind, keys)
        # What a reader sees: no images' bytes, no inline scripts (plotly.js spells NaN itself).
        text = re.sub(r'src="data:[^"]*"|<script[^>]*>.*?</script>', "", page, flags=re.DOTALL)
        assert not re.search(r"\bnan\b", text, re.IGNORECASE)  # missing values show as a dash
