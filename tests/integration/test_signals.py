"""Ctrl-C and SIGTERM during `attractor run`: the current step ends, finished members stay,
one line says so, the exit code is 128 + signal, and a re-run finishes bit-for-bit as if
never interrupted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attractor.runs.launch import train
from tests.conftest import tiny_config, write_toml

LINE = re.compile(r"interrupted: (\d+) of 8 members done; run the same command to resume")


def _start_run(tmp_path: Path, backend: str = "local") -> tuple[object, Path, subprocess.Popen]:
    config = tiny_config(
        trainer={"steps": 400},
        plan={"members": 8, "vary": ["init_seed", "data_seed", "bootstrap"]},
        run={"chunk_size": 2, "snapshots": 3, "backend": backend, "workers": 2},
    )
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "attractor.cli", "run", str(write_toml(tmp_path / "c.toml", config))]
        + ["--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal for the test's run only, as a terminal would send
    )
    return config, out, process


def _wait_for_progress(process: subprocess.Popen, percent: int) -> list[str]:
    """Stderr lines until a plain progress line reports at least ``percent``."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 240
    for line in process.stderr:
        seen.append(line)
        found = re.search(r"member-steps \((\d+) %\)", line)
        if found and int(found.group(1)) >= percent:
            return seen
        assert time.monotonic() < deadline, "no progress line in time"
    raise AssertionError(f"run ended before {percent} % of progress: {''.join(seen)}")


def _snapshots(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        str(p.relative_to(run_dir)): load_file(p)
        for p in sorted(run_dir.glob("members/*/*.safetensors"))
    }


def _assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = _snapshots(a_dir), _snapshots(b_dir)
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_run_keeps_members_and_resumes_exactly(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    config, out, process = _start_run(tmp_path)
    started = _wait_for_progress(process, 30)  # a quarter of the work is a finished chunk
    assert started[0].startswith("training 8 of 8 members"), started[0]
    os.killpg(process.pid, sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    last = err.strip().splitlines()[-1]
    match = LINE.fullmatch(last)
    assert match, err
    done = int(match.group(1))
    assert 2 <= done < 8, last
    assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    finished = [m for m, s in manifest["members"].items() if s["status"] == "done"]
    assert len(finished) == done
    assert not list(out.rglob("*.tmp")), "temporary files were left behind"

    resumed = train(config, out)
    assert resumed.members == list(range(8))
    train(config, tmp_path / "clean")
    _assert_same_weights(out, tmp_path / "clean")


@pytest.mark.slow
def test_sigterm_reaches_process_backend_workers(tmp_path: Path) -> None:
    """SIGTERM to the coordinator alone (not its group): workers stop too, exit 143."""
    config, out, process = _start_run(tmp_path, backend="process")
    _wait_for_progress(process, 0)
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert LINE.fullmatch(err.strip().splitlines()[-1]), err
    json.loads((out / "manifest.json").read_text())
    train(config, out)
    train(config, tmp_path / "clean")
    _assert_same_weights(out, tmp_path / "clean")


def test_keyboard_interrupt_anywhere_in_the_cli_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """typer turns a KeyboardInterrupt into a returned 130, which main() used to drop."""
    import attractor.cli as cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.core, "load_config", interrupted)
    monkeypatch.setattr(cli, "exit_on_sigterm", lambda: None)  # keep pytest's SIGTERM
    monkeypatch.setattr(sys, "argv", ["attractor", "plan", "nothing.toml"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted"), err
