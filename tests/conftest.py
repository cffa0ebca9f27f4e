"""Shared fixtures: tiny configs that train in a second, and an in-process CLI runner."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attractor.config import Config, parse_config


@pytest.fixture(scope="session", autouse=True)
def signing_key_dir(tmp_path_factory: pytest.TempPathFactory):
    """Every manifest is signed: keep the tests' signing key out of the user's ~/.config."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTRACTOR_CONFIG_DIR", str(tmp_path_factory.mktemp("attractor-config")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a loaded machine, waking torch's thread pool costs up to ~100x the math.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**sections: dict[str, Any]) -> Config:
    """digits-mlp with a small net and a few steps; sections override keys per table."""
    return parse_config(tiny_mapping(**sections))


def tiny_mapping(**sections: dict[str, Any]) -> dict[str, Any]:
    """The raw mapping behind :func:`tiny_config` with keys overridden (possibly invalid)."""
    data: dict[str, dict[str, Any]] = {
        "task": {"name": "digits-mlp", "hidden": [32]},
        "trainer": {"steps": 12, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
        "plan": {"members": 4, "vary": ["init_seed", "data_seed"]},
        "run": {"snapshots": 3},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def write_toml(path: Path, config: Config | dict[str, Any]) -> Path:
    """Write a config (or raw mapping, possibly invalid) as TOML."""
    import tomli_w  # dev dependency

    data = config.resolved() if isinstance(config, Config) else config
    data = _drop_none(data)
    path.write_text(tomli_w.dumps(data))
    return path


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``attractor ARGS`` in this process; returns exit code, stdout, stderr."""
    from attractor.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["attractor", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_user_error(result: CliResult, *fragments: str) -> str:
    """Exit 2, exactly one stderr line ``error: ...`` containing every fragment, no traceback."""
    assert "Traceback" not in result.err + result.out, result.err
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith("error:"), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line
