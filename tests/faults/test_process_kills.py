"""SIGKILL at random moments of real runs on the process and Ray backends (workers and
coordinator die together, as when a machine is switched off): the next run finishes with
exactly the uninterrupted result and loses no more than the work since the checkpoints.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attractor.config import Config
from attractor.runs.launch import train
from attractor.runs.resume import RESUME
from tests.conftest import tiny_config, write_toml

#: Kill moments tried per backend (the README's reliability section counts them).
KILLS = {"process": 3, "ray": 1}


def _config(backend: str) -> Config:
    return tiny_config(
        trainer={"steps": 3000, "optimizer": "adam", "lr": 0.01},
        plan={"members": 6, "vary": ["init_seed", "data_seed", "bootstrap"]},
        run={"chunk_size": 2, "snapshots": 12, "backend": backend, "workers": 2},
    )


def _tensors(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(run)): load_file(p) for p in run.glob("members/*/step-*")}


def _written_since(out: Path, began: float) -> bool:
    """Whether this run has written a member file yet (training is under way)."""
    files = list(out.glob("members/*/*.safetensors"))
    return any(_mtime(p) >= began for p in files)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # replaced meanwhile
        return 0.0


def _kill_somewhere(config: Config, out: Path, tmp: Path, rng: random.Random) -> None:
    """Start ``attractor run`` and SIGKILL its whole process group at a random moment
    after it began training (wrote a member file), or let it finish if it is quicker.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "attractor.cli", "run", str(write_toml(tmp / "c.toml", config))]
        + ["--out", str(out), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline, began = time.monotonic() + 240, time.time()
    while not _written_since(out, began) and process.poll() is None:
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.02)
    time.sleep(rng.uniform(0.2, 3.0))
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["process", pytest.param("ray", marks=pytest.mark.ray)])
def test_sigkill_at_random_moments_then_resume_is_exact(backend: str, tmp_path: Path) -> None:
    if backend == "ray":
        pytest.importorskip("ray")
    rng = random.Random(f"kills-{backend}")
    config, out = _config(backend), tmp_path / "killed"
    for _ in range(KILLS[backend]):
        _kill_somewhere(config, out, tmp_path, rng)
    # Resumed here on the local backend: where members run is not what they compute.
    resumed = train(_config("local"), out)
    clean = train(_config("local"), tmp_path / "clean")
    a, b = _tensors(out), _tensors(tmp_path / "clean")
    assert a.keys() == b.keys()
    for name in a:
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    assert (
        resumed.metrics.sort_values(["member", "step"])
        .reset_index(drop=True)
        .equals(clean.metrics.sort_values(["member", "step"]).reset_index(drop=True))
    )
    assert not list(out.glob(f"members/*/{RESUME}"))
    assert not list(out.rglob("*.tmp")), "temporary files of the killed runs were left behind"
