"""The store under faults: corrupt bytes, --force beside the user's files, protected paths,
a directory in use (issue 16, cases 2, 4 and 6)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from attractor.config import Config
from attractor.errors import UserError
from attractor.runs.launch import train
from attractor.runs.store import RunStore
from tests.conftest import assert_user_error, tiny_config, write_toml

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    config = tiny_config()
    root = tmp_path_factory.mktemp("faults") / "run"
    train(config, root)
    return config, root


@pytest.fixture
def run_dir(trained: tuple[Config, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained[1], copy)
    return copy


def _members(run_dir: Path) -> dict[str, dict]:
    return json.loads((run_dir / "manifest.json").read_text())["members"]


def _corrupt_random_snapshot(run_dir: Path, seed: int) -> tuple[int, Path, bytes]:
    """Overwrite random tensor bytes (the header stays intact) of a random snapshot."""
    rng = random.Random(seed)
    target = rng.choice(sorted(run_dir.glob("members/*/step-*.safetensors")))
    original = target.read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    data = bytearray(original)
    start = rng.randrange(header, len(data) - 16)
    for i in range(start, start + 16):
        data[i] ^= 0xFF  # every byte changes, so the file is certainly different
    target.write_bytes(bytes(data))
    return int(target.parent.name), target, original


@pytest.mark.parametrize("seed", [0, 1])
def test_corrupt_snapshot_is_detected_everywhere_and_only_its_member_retrains(
    cli, run_dir: Path, trained: tuple[Config, Path], tmp_path: Path, seed: int
) -> None:
    member, target, original = _corrupt_random_snapshot(run_dir, seed)
    before = _members(run_dir)
    # The last snapshot is what info and measure read; an earlier one is what verify catches.
    last = max(int(p.stem.split("-")[1]) for p in target.parent.glob("step-*.safetensors"))
    if int(target.stem.split("-")[1]) == last:
        assert_user_error(cli("info", run_dir), str(target), "re-run the config")
        assert_user_error(cli("measure", run_dir), str(target), f"member {member}")
    verified = cli("verify", run_dir, "--json")
    assert verified.code == 2
    report = json.loads(verified.out)
    assert [d["path"] for d in report["damaged"]] == [str(target)]
    config_path = write_toml(tmp_path / "config.toml", trained[0])
    rerun = cli("run", config_path, "--out", run_dir, "--json")
    assert rerun.code == 0, rerun.err
    retrained, kept = load_file(target), load(original)
    assert retrained.keys() == kept.keys()
    assert all(torch.equal(retrained[k], kept[k]) for k in kept)  # retrained bitwise equal
    after = _members(run_dir)
    assert {m for m in after if after[m] != before[m]} <= {str(member)}
    assert cli("verify", run_dir).code == 0


def test_corrupt_result_table_is_one_line(cli, run_dir: Path) -> None:
    assert cli("measure", run_dir).code == 0
    table = run_dir / "measures.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    verified = cli("verify", run_dir)
    assert verified.code == 2 and str(table) in verified.out
    with pytest.raises(UserError, match="truncated or corrupt"):
        RunStore(run_dir).result("measures").table()


def test_force_keeps_the_users_files(cli, run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "members" / "0" / "plot.png").write_bytes(b"mine too")
    other = write_toml(tmp_path / "other.toml", tiny_config(trainer={"lr": 0.07}))
    forced = cli("run", other, "--out", run_dir, "--force", "--json")
    assert forced.code == 0, forced.err
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert (run_dir / "members" / "0" / "plot.png").read_bytes() == b"mine too"
    warning = [line for line in forced.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "notes.txt" in warning[0] and "plot.png" in warning[0]
    assert cli("verify", run_dir).code == 0


def test_force_refuses_a_folder_whose_manifest_is_not_attractors(cli, tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my web app", "version": "1.0"}')
    (app / "src" / "app.js").write_text("console.log(1)")
    config = write_toml(tmp_path / "c.toml", tiny_config())
    assert_user_error(cli("run", config, "--out", app, "--force"), "not an attractor run")
    assert (app / "src" / "app.js").read_text() == "console.log(1)"
    assert sorted(p.name for p in app.iterdir()) == ["manifest.json", "src"]


@pytest.mark.parametrize("where", [".", "parent"])
def test_force_refuses_the_current_directory_and_its_parents(
    cli, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    other = write_toml(tmp_path / "other.toml", tiny_config(trainer={"lr": 0.07}))
    inner = run_dir / "members" / "0"
    monkeypatch.chdir(run_dir if where == "." else inner)
    out = "." if where == "." else str(run_dir)
    files = sorted(p for p in run_dir.rglob("*"))
    assert_user_error(cli("run", other, "--out", out, "--force"), "never deletes")
    assert sorted(p for p in run_dir.rglob("*")) == files


def test_another_plan_with_the_same_config_says_so(cli, run_dir: Path, tmp_path: Path) -> None:
    manifest = run_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["plan_hash"] = "0" * 16
    manifest.write_text(json.dumps(data, indent=2))
    config = write_toml(tmp_path / "c.toml", tiny_config())
    line = assert_user_error(cli("run", config, "--out", run_dir), "another plan", "0" * 16)
    assert data["config_hash"] in line


def test_a_held_lock_refuses_a_second_run_naming_the_pid(cli, run_dir: Path, tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from attractor.runs.lock import hold\n"
            "with hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        config = write_toml(tmp_path / "c.toml", tiny_config())
        assert_user_error(cli("run", config, "--out", run_dir), f"pid {holder.pid}", "in use")
        other = write_toml(tmp_path / "o.toml", tiny_config(trainer={"lr": 0.07}))
        assert_user_error(cli("run", other, "--out", run_dir, "--force"), f"pid {holder.pid}")
        assert (run_dir / "plan.parquet").exists()  # --force replaced nothing
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert cli("run", write_toml(tmp_path / "c2.toml", tiny_config()), "--out", run_dir).code == 0
    assert os.path.exists(run_dir / "manifest.json")
