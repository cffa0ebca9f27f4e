"""Backends without Ray: the process pool's bits and resume, and the one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config, write_toml

HAS_RAY = importlib.util.find_spec("ray") is not None


def _config(**run):
    return tiny_config(
        trainer={"steps": 60}, plan={"members": 8}, run={"chunk_size": 2, "snapshots": 3, **run}
    )


def _assert_same(a: Ensemble, b: Ensemble) -> None:
    assert a.members == b.members and a.members
    for member in a.members:
        pa, pb = a.params(member), b.params(member)
        assert all(torch.equal(pa[k], pb[k]) for k in pa), member


def _done(run_dir: Path) -> int:
    try:
        members = json.loads((run_dir / "manifest.json").read_text())["members"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(m["status"] == "done" for m in members.values())


@pytest.mark.slow
def test_killed_process_run_resumes_under_local_with_the_same_bits(tmp_path: Path, cli) -> None:
    """Chunks finished by the pool are kept; the rest finish under another backend, bit for bit."""
    config = write_toml(tmp_path / "config.toml", _config())
    out = tmp_path / "run"
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attractor.cli",
            "run",
            str(config),
            "--out",
            str(out),
            "--backend",
            "process",
            "--workers",
            "2",
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _done(out) < 2 and pool.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.poll() is None, "the run ended before it could be killed"
    os.killpg(pool.pid, signal.SIGKILL)  # the driver and its spawned workers
    pool.wait()
    assert 2 <= _done(out) < 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["run"]["backend"] == "process"
    kept = {
        p: p.stat().st_mtime_ns
        for m, s in manifest["members"].items()
        if s["status"] == "done"
        for p in (out / "members" / m).iterdir()
        # A checkpoint left by a kill between "done" and its deletion is dropped on resume.
        if p.name != "resume.safetensors"
    }

    result = cli("run", config, "--out", out, "--json")  # config says local: resumes all the same
    assert result.code == 0, result.err
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), (
        "a finished chunk was trained again"
    )
    _assert_same(train(_config(), tmp_path / "local"), Ensemble.load(out))


def test_another_config_is_still_refused_on_resume(tmp_path: Path, cli) -> None:
    small = tiny_config(plan={"members": 2})
    train(small, tmp_path / "run")
    other = write_toml(
        tmp_path / "other.toml", tiny_config(plan={"members": 2}, trainer={"lr": 0.07})
    )
    result = cli("run", other, "--out", tmp_path / "run", "--backend", "process")
    assert result.code == 2 and "another config" in result.err


def test_unknown_backend_is_one_line(tmp_path: Path, cli) -> None:
    config = write_toml(tmp_path / "config.toml", tiny_config())
    result = cli("run", config, "--out", tmp_path / "run", "--backend", "slurm")
    assert (
        result.code == 2
        and len(result.err.strip().splitlines()) == 1
        and "run.backend" in result.err
    )
    assert not (tmp_path / "run").exists()


def test_missing_ray_names_the_extra(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    config = write_toml(tmp_path / "config.toml", tiny_config())
    result = cli("run", config, "--out", tmp_path / "run", "--backend", "ray")
    assert result.code == 2 and "pip install 'attractor[ray]'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_RAY, reason="needs the ray extra")
@pytest.mark.parametrize(
    ("address", "says"),
    [("not-an-address", "HOST:PORT"), ("127.0.0.1:1", "no Ray cluster answers")],
)
def test_bad_ray_address_is_refused_before_anything_is_written(
    tmp_path: Path, cli, address: str, says: str
) -> None:
    config = write_toml(tmp_path / "config.toml", tiny_config())
    # A finished run that --force would replace: a bad address must be refused first.
    assert cli("run", config, "--out", tmp_path / "run").code == 0
    (tmp_path / "run" / "keep.txt").write_text("mine")
    manifest = (tmp_path / "run" / "manifest.json").read_text()
    result = cli(
        "run",
        config,
        "--out",
        tmp_path / "run",
        "--force",
        "--backend",
        "ray",
        "--ray-address",
        address,
    )
    assert result.code == 2 and says in result.err and len(result.err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "run" / "manifest.json").read_text() == manifest


def test_ray_temp_dir_is_beside_the_run_or_per_user(tmp_path: Path) -> None:
    from attractor.backends.ray_backend import MAX_TEMP_DIR, temp_dir

    assert temp_dir(Path("/r/runs/demo")) == Path("/r/runs/.ray")
    deep = Path("/" + "d" * MAX_TEMP_DIR) / "run"
    assert temp_dir(deep).name == f"attractor-ray-{os.getuid()}"
