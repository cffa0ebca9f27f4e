"""Random bytes of random files of a measured run overwritten, or a file cut short (issue 16,
case 4): ``verify`` names the file, every reading command gives either one line and exit 2
or exactly the numbers of the intact run, and ``run`` on the directory restores it (or
refuses with one line when the manifest itself is unreadable) — never a traceback, never a
silently different number.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attractor.config import Config
from attractor.runs.launch import train
from tests.conftest import CliResult, tiny_config, write_toml

pytestmark = pytest.mark.usefixtures("one_thread")

#: Random corruptions tried (the README's reliability section counts them).
CORRUPTIONS = 40
#: Files attractor writes that hold no data to check: the lock and the page it renders.
UNCHECKED = {".lock", ".lock.pid", "report.html"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    from attractor.measure.dispatch import MeasureOptions, measure_run
    from attractor.runs.ensemble import Ensemble

    config = tiny_config(run={"snapshots": 3})
    root = tmp_path_factory.mktemp("corrupt") / "run"
    train(config, root)
    ensemble = Ensemble.load(root)
    ensemble.store.write(measure_run(ensemble, MeasureOptions(draws=20)))
    return config, root


def _corrupt(run: Path, seed: int) -> Path:
    """Damage one random file of ``run``: 1-16 random bytes flipped, or the file cut short."""
    rng = random.Random(seed)
    files = sorted(p for p in run.rglob("*") if p.is_file() and p.name not in UNCHECKED)
    target = rng.choice(files)
    data = bytearray(target.read_bytes())
    if rng.random() < 0.25:
        data = data[: rng.randrange(len(data))]
    else:
        start = rng.randrange(len(data))
        for i in range(start, min(len(data), start + rng.randint(1, 16))):
            data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def _one_line_or_ok(result: CliResult) -> bool:
    """True for exit 0; for anything else, it must be exit 2 with one ``error:`` line."""
    assert "Traceback" not in result.out + result.err, result.err
    if result.code == 0:
        return True
    assert result.code == 2, (result.code, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.err.strip().splitlines()[-1] == errors[0], result.err
    return False


def _measures(cli, run: Path) -> dict | None:
    """``measure --json``'s numbers (without the paths written), or None if refused."""
    shown = cli("measure", run, "--draws", "20", "--json")
    if not _one_line_or_ok(shown):
        return None
    return {k: v for k, v in json.loads(shown.out).items() if k != "files"}


@pytest.mark.parametrize("seed", range(CORRUPTIONS))
def test_random_damage_is_detected_refused_or_harmless_and_repaired(
    cli, measured: tuple[Config, Path], tmp_path: Path, seed: int
) -> None:
    config, clean = measured
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    target = _corrupt(run, seed)

    verified = cli("verify", run)
    assert verified.code == 2 and str(target) in verified.out + verified.err, (
        target,
        verified.out,
        verified.err,
    )
    _one_line_or_ok(cli("info", run))
    _one_line_or_ok(cli("report", run, "--json"))
    numbers = _measures(cli, run)
    if numbers is not None:  # read past the damage: then exactly the intact run's numbers
        intact = tmp_path / "intact"
        shutil.copytree(clean, intact)
        assert numbers == _measures(cli, intact)

    rerun = cli("run", write_toml(tmp_path / "c.toml", config), "--out", run, "--json")
    if _one_line_or_ok(rerun):
        assert cli("verify", run).code == 0 or target.suffix == ".json"  # a result is redone
        for snapshot in clean.glob("members/*/step-*.safetensors"):
            a, b = load_file(snapshot), load_file(run / snapshot.relative_to(clean))
            assert all(torch.equal(a[k], b[k]) for k in a)
