"""`attractor evaluator --device`: placement, not identity.

``--device cpu`` on this CPU machine is the default (``auto``) bit for bit, in the same
default directory (reopened, not refused), its base trained with ``[run] device = "cpu"``;
a device the machine lacks or a bad name is one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from tests.conftest import assert_user_error

pytestmark = pytest.mark.usefixtures("one_thread")

#: The smallest factorial that still has every stage: a base trained in OUT/base, 2 x 2 x 2
#: members, one round, a structural level and suggestions (~10 s on one thread).
CONFIG = """
[evaluator]
preferred = [0]
base_steps = 60
examples = 20
resamples = 2
evaluator_seeds = 2
trainer_seeds = 2
label_noise = 0.1
eval_samples = 16
draws = 60
suggest = 3
[evaluator.reward_model]
steps = 40
[evaluator.trainer]
rounds = 1
samples = 32
keep = 8
steps = 5
sampler_steps = 5
[evaluator.structural]
kl = [0.0]
resamples = 2
"""


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "e.toml"
    path.write_text(textwrap.dedent(CONFIG).replace("[evaluator]\n", f"[evaluator]\n{extra}", 1))
    return path


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every table the experiment wrote (the JSON payload leaves some out: the trajectories,
    the suggestions, the samples).
    """
    return {p.name: pd.read_parquet(p) for p in sorted(root.glob("evaluator*.parquet"))}


def test_device_cpu_is_the_default_directory_and_numbers(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default OUT, runs/evaluator-HASH, lands here
    config = _config(tmp_path)
    plain = cli("evaluator", config, "--json")
    assert plain.code == 0, plain.err
    first: dict[str, Any] = json.loads(plain.out)
    root = Path(first["files"]["json"]).parent
    assert root.parent == Path("runs") and root.name.startswith("evaluator-")
    tables = _tables(root)
    assert {"evaluator.trajectories.parquet", "evaluator.samples.parquet"} <= tables.keys()

    on_cpu = cli("evaluator", config, "--device", "cpu", "--json")
    assert on_cpu.code == 0, on_cpu.err  # reopened: the device is not the directory's identity
    second: dict[str, Any] = json.loads(on_cpu.out)
    assert second["files"] == first["files"]
    assert first["settings"].pop("device") == "auto"
    assert second["settings"].pop("device") == "cpu"
    assert second == first  # strict JSON floats: equal text is equal bits
    again = _tables(root)
    assert again.keys() == tables.keys()
    for name, table in tables.items():
        pd.testing.assert_frame_equal(again[name], table, check_exact=True, obj=name)

    from attractor.runs.ensemble import Ensemble

    # The base trained where the evaluator computes: [run] device resolved from auto.
    assert Ensemble.load(root / "base").config.run.device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("where", ["option", "config"])
def test_a_gpu_this_machine_lacks_is_one_line_and_writes_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if where == "option":
        args = [_config(tmp_path), "--device", "cuda"]
    else:
        args = [_config(tmp_path, 'device = "cuda:1"\n')]
    assert_user_error(cli("evaluator", *args), "sees no CUDA device")
    assert_user_error(cli("evaluator", *args, "--out", tmp_path / "out"), "sees no CUDA device")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_a_bad_device_name_is_one_line_and_writes_nothing(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("evaluator", _config(tmp_path), "--device", "tpu", "--out", out)
    assert_user_error(result, "device must be auto, cpu, cuda or cuda:N", "'tpu'")
    assert not out.exists()
