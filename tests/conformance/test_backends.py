"""Conformance suite for backends: every entry of ``BACKENDS`` trains a tiny plan bit for bit.

A new backend is covered by its registry line (plus, if it needs an optional dependency, a
mark in :data:`MARKS`). Every backend trains the same 4-member plan in chunks of 2 to
exactly the parameters and metrics of ``local`` (invariant 1), writes a run directory that
loads like any other, and is named in the config's ``run.backend`` choices.
"""

from __future__ import annotations

import importlib.util
import typing
from pathlib import Path

import pytest
import torch

from attractor.backends import BACKENDS, open_backend
from attractor.config import Config, RunConfig
from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

#: Marks of backends that need more than the core install (deselected by ``-m "not ray"``).
MARKS = {"ray": [pytest.mark.ray, pytest.mark.slow]}
NAMES = [pytest.param(name, marks=MARKS.get(name, []), id=name) for name in sorted(BACKENDS)]


def _config(backend: str) -> Config:
    return tiny_config(
        trainer={"steps": 8},
        plan={"members": 4},
        run={"backend": backend, "chunk_size": 2, "snapshots": 2, "workers": 2},
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    return train(_config("local"), tmp_path_factory.mktemp("local") / "run")


def test_registry_matches_the_config_choices() -> None:
    choices = typing.get_args(RunConfig.model_fields["backend"].annotation)
    assert set(choices) == set(BACKENDS)
    for spec in BACKENDS.values():
        assert spec.summary.strip()


def test_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    run = RunConfig.model_construct(**{**RunConfig().model_dump(), "backend": "slurm"})
    with pytest.raises(UserError, match="known backends: local, process, ray"):
        with open_backend(run, tmp_path):
            pass


@pytest.mark.parametrize("name", NAMES)
class TestBackend:
    """Every registered backend against the local reference."""

    def test_opens_as_itself(self, name: str, tmp_path: Path) -> None:
        spec = BACKENDS[name]
        if spec.needs is not None and importlib.util.find_spec(spec.needs[0]) is None:
            with pytest.raises(UserError, match=spec.needs[1]):
                with open_backend(_config(name).run, tmp_path / "run"):
                    pass
            return
        with open_backend(_config(name).run, tmp_path / "run") as backend:
            assert backend.name == name and isinstance(backend.shares_filesystem, bool)

    def test_trains_the_local_bits(self, name: str, reference: Ensemble, tmp_path: Path) -> None:
        needs = BACKENDS[name].needs
        if needs is not None:
            pytest.importorskip(needs[0])
        run = train(_config(name), tmp_path / "run")
        assert run.members == reference.members == [0, 1, 2, 3]
        assert run.manifest["config"]["run"]["backend"] == name
        for member in run.members:
            mine, theirs = run.params(member), reference.params(member)
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine), member
        ordered = ["member", "step"]
        assert (
            run.metrics.sort_values(ordered)
            .reset_index(drop=True)
            .equals(reference.metrics.sort_values(ordered).reset_index(drop=True))
        )
