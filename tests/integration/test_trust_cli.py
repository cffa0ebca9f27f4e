"""A shared run directory never makes `attractor` run its code without `--trust` (issue 16, 1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attractor.runs.launch import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

# Every command that loads a run's task from its manifest.
COMMANDS = [
    ["info"],
    ["measure"],
    ["report"],
    ["structural"],
    ["suggest"],
    ["diff", "{run}:0", "{run}:1"],
]


@pytest.fixture(scope="module")
def built_in_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(
        tiny_config(plan={"members": 2}), tmp_path_factory.mktemp("trust") / "run"
    ).store.root


def _exploit(source: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The issue's exploit: a shared run whose manifest was edited to run a shell command."""
    run = tmp_path / "shared"
    shutil.copytree(source, run)
    pwned = tmp_path / "pwned"
    data = json.loads((run / "manifest.json").read_text())
    data["config"]["task"] = {"name": "os:system", "command": f"touch {pwned}"}
    (run / "manifest.json").write_text(json.dumps(data, indent=2))
    return run, pwned


def _args(command: list[str], run: Path) -> list[str]:
    args = [part.format(run=run) for part in command]
    return args if len(args) > 1 else [*args, str(run)]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_exploit_is_refused_by_every_command(
    cli, built_in_run: Path, tmp_path: Path, command: list[str]
) -> None:
    run, pwned = _exploit(built_in_run, tmp_path)
    result = cli(*_args(command, run))
    assert result.code == 2, result.err
    line = result.err.strip()
    assert "\n" not in line and line.startswith("error: "), result.err
    assert "was not made by you (or was edited)" in line and "'os:system'" in line
    assert "--trust" in line
    assert not pwned.exists()


def test_trust_is_the_users_decision_and_lasts_one_command(
    cli, built_in_run: Path, tmp_path: Path
) -> None:
    run, pwned = _exploit(built_in_run, tmp_path)
    result = cli("--trust", "info", run)
    assert pwned.exists()  # the user said so: the code ran
    assert result.code == 2 and "returned int" in result.err  # and os.system is no task
    pwned.unlink()
    assert cli("info", run).code == 2  # the next command trusts nothing again
    assert not pwned.exists()


def test_console_script_refuses_the_exploit(built_in_run: Path, tmp_path: Path) -> None:
    """The real entry point, in a fresh process, run from inside the shared directory."""
    run, pwned = _exploit(built_in_run, tmp_path)
    (run / "evil.py").write_text(f"open({str(pwned)!r}, 'w').close()\n")
    data = json.loads((run / "manifest.json").read_text())
    data["config"]["task"] = {"name": "evil:make"}  # a module shipped in the directory itself
    (run / "manifest.json").write_text(json.dumps(data))
    attractor = Path(sys.executable).with_name("attractor")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(attractor), "info", "."], cwd=run, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "its task 'evil:make' is code from that directory" in done.stderr
    assert not pwned.exists()
    # Trusted, a loaded run's module is still never looked up in the current directory.
    done = subprocess.run(
        [str(attractor), "--trust", "info", "."], cwd=run, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "cannot import module 'evil'" in done.stderr, done.stderr
    assert not pwned.exists()


def test_unsigned_built_in_run_and_own_runs_need_no_trust(
    cli, built_in_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "old"
    shutil.copytree(built_in_run, run)
    data = json.loads((run / "manifest.json").read_text())
    assert "signature" in data  # every manifest attractor writes is signed
    del data["signature"]  # as made before signing
    (run / "manifest.json").write_text(json.dumps(data))
    assert cli("info", run).code == 0
    assert cli("info", built_in_run).code == 0
