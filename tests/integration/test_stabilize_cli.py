"""`attractor stabilize` end to end: a tiny search with --json, reopened with the same
numbers, and bad input as one line with exit 2 and nothing written."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_user_error

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = """\
[task]
name = "digits-mlp"
hidden = [8]

[trainer]
steps = 10
batch_size = 16

[plan]
members = 4
vary = ["init_seed", "data_seed"]
"""
GOOD = """
[stabilize]
trials = 2
parallel = 2
members = 2
confirm_members = 2
draws = 10

[stabilize.search]
label_smoothing = [0.0, 0.2]
"""
BAD = [
    ("[stabilize]\ntrials = 2\n", "search is empty"),
    ("[stabilize]\nmembers = 3\n[stabilize.search]\nlr = [0.01, 0.1]\n", "members = 19"),
    ("[stabilize]\nspread = 'kl'\n[stabilize.search]\nlr = [0.01, 0.1]\n", "stabilize.spread"),
    ("[stabilize.search]\nlr = [0.1, 0.01]\n", "low < high"),
    ("[stabilize.search]\nsam = [0.1, 0.2]\n", "did you mean 'sam_rho'"),
]


def _toml(path: Path, text: str) -> Path:
    path.write_text(BASE + textwrap.dedent(text))
    return path


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_config_is_one_line_and_writes_nothing(
    cli, tmp_path: Path, text: str, fragment: str
) -> None:
    out = tmp_path / "out"
    assert_user_error(cli("stabilize", _toml(tmp_path / "bad.toml", text), "--out", out), fragment)
    assert not out.exists()


def test_a_tiny_search_writes_its_result_and_reopens_the_same(cli, tmp_path: Path) -> None:
    config, out = _toml(tmp_path / "s.toml", GOOD), tmp_path / "out"
    first = cli("stabilize", config, "--out", out, "--json")
    assert first.code == 0, first.err
    data = json.loads(first.out)
    assert data["n_trials"] == 2 and (out / "stabilize.db").is_file()
    verdict = data["confirmation"]["verdict"].split(":")[0]
    assert verdict in ("confirmed on fresh seeds", "not confirmed")
    again = json.loads(cli("stabilize", config, "--out", out, "--json").out)
    assert again["trials"] == data["trials"]
    assert "NOT confirmed" in (out / "report.html").read_text() or data["confirmed"]
    other = cli("stabilize", config, "--out", out, "--sampler", "random")
    assert_user_error(other, "another config")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_gpu_is_refused_before_the_directory_exists(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _toml(tmp_path / "s.toml", GOOD)
    assert_user_error(cli("stabilize", config, "--out", out, "--device", "cuda"), "no CUDA")
    assert_user_error(cli("stabilize", config, "--out", out, "--device", "gpu"), "run.device")
    assert not out.exists()
