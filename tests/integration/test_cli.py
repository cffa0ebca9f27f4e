"""The `attractor` command line end to end: happy paths, and the rule for bad input.

Bad input gets ONE line on stderr starting with ``error:`` that names what is wrong, exit
code 2, no traceback, and nothing in an existing run directory is touched.

Most tests go through the in-process ``cli`` fixture; one runs the installed console
script in a subprocess to prove the entry point and its exit code.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from attractor.config import Config
from attractor.runs.launch import train
from tests.conftest import CliResult, assert_user_error, tiny_config, tiny_mapping, write_toml

Cli = Callable[..., CliResult]
KNOWN_TASKS = ("digits-mlp", "spurious-digits", "modular-addition")


# ---- helpers --------------------------------------------------------------------------------


def fingerprint(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (hidden ones too) with its bytes and mtime."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """One finished tiny run (4 members), trained once for the module; copy it before use."""
    config = tiny_config()
    root = tmp_path_factory.mktemp("trained") / "run"
    train(config, root)
    return config, root


@pytest.fixture
def run_dir(trained_run: tuple[Config, Path], tmp_path: Path) -> Path:
    """A private copy of the trained run (mtimes preserved)."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run[1], copy)
    return copy


# ---- happy paths ----------------------------------------------------------------------------


def test_tasks_lists_the_built_in_tasks(cli: Cli) -> None:
    result = cli("tasks")
    assert result.code == 0, result.err
    for name in KNOWN_TASKS:
        assert name in result.out
    assert "[task] name = 'package.module:function'" in result.out


def test_tasks_json(cli: Cli) -> None:
    result = cli("tasks", "--json")
    assert result.code == 0, result.err
    found = json.loads(result.out)
    assert {"digits-mlp", "spurious-digits", "modular-addition"} <= {t["name"] for t in found}
    digits = next(t for t in found if t["name"] == "digits-mlp")
    assert digits["options"]["hidden"] == [128, 128] and digits["summary"]


def test_plan_prints_the_resolved_config_and_the_table(cli: Cli, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", tiny_mapping())
    result = cli("plan", path)
    assert result.code == 0, result.err
    assert '"eval_batch_size": 1024' in result.out  # a default the file did not set
    assert "4 members" in result.out and "varies: init_seed" in result.out


def test_plan_json_has_one_row_per_member(cli: Cli, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", tiny_mapping(plan={"members": 6}))
    result = cli("plan", path, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["plan"]) == 6 == data["config"]["plan"]["members"]
    assert [row["member"] for row in data["plan"]] == list(range(6))
    assert (
        data["config"]["trainer"]["batch_size"] == 32
        and data["config"]["run"]["backend"] == "local"
    )
    assert data["config_hash"] == tiny_config(plan={"members": 6}).hash()


def test_run_json_trains_every_member_then_resumes(cli: Cli, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", tiny_mapping(plan={"members": 3}))
    out = tmp_path / "run"
    result = cli("run", path, "--out", out, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["done"] == summary["members"] == 3 and summary["pending"] == 0
    assert 0 <= summary["test_accuracy"]["mean"] <= 1
    assert (out / "manifest.json").is_file() and (
        out / "members" / "2" / "step-12.safetensors"
    ).is_file()
    weights = {p: p.read_bytes() for p in out.glob("members/*/*.safetensors")}

    again = cli("run", path, "--out", out, "--json")  # finished: nothing is retrained
    assert again.code == 0, again.err
    assert json.loads(again.out)["done"] == 3
    assert {p: p.read_bytes() for p in out.glob("members/*/*.safetensors")} == weights


def test_run_text_summary(cli: Cli, tmp_path: Path, trained_run: tuple[Config, Path]) -> None:
    path = write_toml(tmp_path / "c.toml", trained_run[0])
    out = tmp_path / "run"
    shutil.copytree(trained_run[1], out)
    result = cli("run", path, "--out", out)  # resumes a finished run: prints the summary
    assert result.code == 0, result.err
    assert "4 done, 0 diverged, 0 pending of 4" in result.out and "test accuracy" in result.out


def test_info_json(cli: Cli, run_dir: Path, trained_run: tuple[Config, Path]) -> None:
    before = fingerprint(run_dir)
    result = cli("info", run_dir, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["summary"]["done"] == data["summary"]["members"] == 4
    assert data["config"] == trained_run[0].resolved()
    assert data["manifest"]["config_hash"] == trained_run[0].hash()
    assert "config" not in data["manifest"]
    assert fingerprint(run_dir) == before  # info only reads


def test_info_text(cli: Cli, run_dir: Path) -> None:
    result = cli("info", run_dir)
    assert result.code == 0, result.err
    assert "4 done" in result.out and "config hash" in result.out
    assert "init_seed" in result.out and "status" in result.out


def test_demo_json(cli: Cli, tmp_path: Path) -> None:
    result = cli("demo", "--out", tmp_path / "demo", "--members", "4", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["task"] == "digits-mlp"
    assert summary["done"] == summary["members"] == 4


#: The experiment commands (each runs one entry of attractor.experiments.EXPERIMENTS).
EXPERIMENT_COMMANDS = [
    "instability",
    "hparam-map",
    "shortcuts",
    "trainer2",
    "tangent",
    "diff",
    "world",
]


@pytest.mark.parametrize(
    "command",
    [[], ["tasks"], ["plan"], ["run"], ["info"], ["demo"], *[[c] for c in EXPERIMENT_COMMANDS]],
)
def test_help(cli: Cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.code == 0, result.err
    assert "Usage: attractor" in result.out and "Traceback" not in result.out
    if command:  # every command takes --json
        assert "--json" in result.out
    else:  # the overview lists every experiment command
        assert all(f" {c} " in result.out for c in EXPERIMENT_COMMANDS)


# ---- bad config: one line, exit 2, the existing run untouched -----------------------------

BAD_CONFIGS = [
    pytest.param({"bogus": 1}, ("unknown key 'bogus'",), id="unknown-top-level-key"),
    pytest.param(
        {"trainer": {"lrr": 0.1}}, ("trainer.lrr", "did you mean 'lr'"), id="unknown-trainer-key"
    ),
    pytest.param({"task": {"hiden": [8]}}, ("task.hiden",), id="unknown-task-option"),
    pytest.param({"trainer": {"lr": "fast"}}, ("trainer.lr", "'fast'"), id="lr-wrong-type"),
    pytest.param(
        {"plan": {"members": "many"}}, ("plan.members", "'many'"), id="members-wrong-type"
    ),
    pytest.param(
        {"task": {"name": "nope"}}, ("unknown task 'nope'", *KNOWN_TASKS), id="unknown-task"
    ),
    pytest.param({"plan": {"members": 0}}, ("plan.members",), id="members-zero"),
    pytest.param({"trainer": {"lr": -0.1}}, ("trainer.lr", "greater than 0"), id="negative-lr"),
    pytest.param(
        {"trainer": {"momentum": 1.5}}, ("trainer.momentum", "1.5"), id="momentum-too-big"
    ),
    pytest.param({"run": {"snapshots": 0}}, ("run.snapshots",), id="snapshots-zero"),
    pytest.param(
        {"run": {"snapshots": [1, "a"]}},
        ("run.snapshots", "int or list[int]"),
        id="snapshots-bad-list",
    ),
    pytest.param({"task": {"hidden": "big"}}, ("task.hidden",), id="task-option-wrong-type"),
]


def _bad(overrides: dict[str, Any]) -> dict[str, Any]:
    base = tiny_mapping()
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section].update(values)
        else:
            base[section] = values
    return base


@pytest.mark.parametrize(("overrides", "fragments"), BAD_CONFIGS)
def test_bad_config_in_plan(
    cli: Cli, tmp_path: Path, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    path = write_toml(tmp_path / "bad.toml", _bad(overrides))
    assert_user_error(cli("plan", path), *fragments)


@pytest.mark.parametrize(("overrides", "fragments"), BAD_CONFIGS)
def test_bad_config_leaves_the_run_dir_alone(
    cli: Cli, tmp_path: Path, run_dir: Path, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    path = write_toml(tmp_path / "bad.toml", _bad(overrides))
    before = fingerprint(run_dir)
    assert_user_error(cli("run", path, "--out", run_dir, "--force"), *fragments)
    assert fingerprint(run_dir) == before


def test_bad_config_creates_no_run_dir(cli: Cli, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bad.toml", _bad({"trainer": {"lrr": 1}}))
    assert_user_error(cli("run", path, "--out", tmp_path / "new"), "trainer.lrr")
    assert not (tmp_path / "new").exists()


def test_section_that_is_not_a_table(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("trainer = 3\n")
    assert_user_error(cli("plan", path), "'trainer' must be a table")


def test_trainer_key_above_its_section(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("lr = 0.1\n[trainer]\nsteps = 3\n")
    assert_user_error(cli("plan", path), "unknown key 'lr'", "move it under [trainer]")


# ---- files and directories ---------------------------------------------------------------


def test_config_file_missing(cli: Cli, tmp_path: Path) -> None:
    assert_user_error(cli("plan", tmp_path / "nope.toml"), "nope.toml", "does not exist")
    assert_user_error(cli("run", tmp_path / "nope.toml", "--out", tmp_path / "r"), "nope.toml")
    assert not (tmp_path / "r").exists()


def test_config_is_a_directory(cli: Cli, tmp_path: Path) -> None:
    assert_user_error(cli("plan", tmp_path), str(tmp_path), "is a directory")


def test_invalid_toml(cli: Cli, tmp_path: Path, run_dir: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[trainer\nlr = 0.1\n")
    assert_user_error(cli("plan", path), "broken.toml", "not valid TOML", "line 1")
    before = fingerprint(run_dir)
    assert_user_error(cli("run", path, "--out", run_dir), "broken.toml")
    assert fingerprint(run_dir) == before


def test_binary_config(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "weights.toml"
    path.write_bytes(b"\xff\xfe\x00\x01")
    assert_user_error(cli("plan", path), "weights.toml", "not a text file")


def test_out_is_an_existing_file(cli: Cli, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_mapping())
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    before = fingerprint(tmp_path)
    assert_user_error(cli("run", config, "--out", out), "notes.txt", "is a file")
    assert fingerprint(tmp_path) == before


def test_out_below_a_file(cli: Cli, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_mapping())
    (tmp_path / "notes.txt").write_text("my notes")
    before = fingerprint(tmp_path)
    assert_user_error(cli("run", config, "--out", tmp_path / "notes.txt" / "run"), "notes.txt")
    assert fingerprint(tmp_path) == before


def test_out_is_a_directory_that_is_not_a_run(cli: Cli, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "c.toml", tiny_mapping())
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\x89 not really")
    before = fingerprint(out)
    assert_user_error(cli("run", config, "--out", out), "photos", "not an attractor run directory")
    assert_user_error(
        cli("run", config, "--out", out, "--force"), "photos", "not an attractor run directory"
    )
    assert fingerprint(out) == before


def test_run_dir_from_another_config_is_refused_then_forced(
    cli: Cli, tmp_path: Path, run_dir: Path, trained_run: tuple[Config, Path]
) -> None:
    other = write_toml(
        tmp_path / "other.toml", tiny_mapping(trainer={"lr": 0.02}, plan={"members": 2})
    )
    before = fingerprint(run_dir)
    line = assert_user_error(
        cli("run", other, "--out", run_dir), str(run_dir), "another config", "--force"
    )
    assert trained_run[0].hash() in line
    assert fingerprint(run_dir) == before

    forced = cli("run", other, "--out", run_dir, "--force", "--json")
    assert forced.code == 0, forced.err
    assert json.loads(forced.out)["done"] == json.loads(forced.out)["members"] == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["trainer"]["lr"] == 0.02
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == ["0", "1"]  # old members gone


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
@pytest.mark.parametrize("as_json", [False, True])
def test_info_on_damaged_weights_names_the_file(
    cli: Cli, run_dir: Path, damage: str, as_json: bool
) -> None:
    target = run_dir / "members" / "2" / "step-12.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(b"not safetensors at all")
    else:
        target.unlink()
    before = fingerprint(run_dir)
    args = ["info", run_dir, *(["--json"] if as_json else [])]
    line = assert_user_error(cli(*args), str(target), "member 2")
    assert ("missing" if damage == "delete" else "truncated or corrupt") in line
    assert fingerprint(run_dir) == before


def test_info_on_a_directory_that_is_not_a_run(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    assert_user_error(cli("info", tmp_path), str(tmp_path), "not an attractor run directory")
    assert_user_error(
        cli("info", tmp_path / "missing"), "missing", "not an attractor run directory"
    )


def test_info_on_a_corrupt_manifest(cli: Cli, run_dir: Path) -> None:
    manifest = run_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    assert_user_error(cli("info", run_dir), "manifest.json", "corrupt")


def test_batch_size_larger_than_the_data_touches_nothing(
    cli: Cli, tmp_path: Path, run_dir: Path
) -> None:
    config = write_toml(tmp_path / "big.toml", tiny_mapping(trainer={"batch_size": 5000}))
    assert_user_error(cli("run", config, "--out", tmp_path / "new"), "batch_size")
    assert not (tmp_path / "new").exists()
    before = fingerprint(run_dir)
    assert_user_error(cli("run", config, "--out", run_dir, "--force"), "batch_size")
    assert fingerprint(run_dir) == before


def test_rerun_retrains_a_member_whose_weights_were_deleted(
    cli: Cli, tmp_path: Path, run_dir: Path, trained_run: tuple[Config, Path]
) -> None:
    target = run_dir / "members" / "2" / "step-12.safetensors"
    target.unlink()  # what the error message for a corrupt file tells the user to do
    config = write_toml(tmp_path / "c.toml", trained_run[0])
    result = cli("run", config, "--out", run_dir, "--json")
    assert result.code == 0, result.err
    retrained, original = (
        load_file(target),
        load_file(trained_run[1] / "members" / "2" / "step-12.safetensors"),
    )
    assert retrained.keys() == original.keys()
    assert all(
        torch.equal(retrained[k], original[k]) for k in original
    )  # a member depends only on its row


def test_force_rebuilds_a_run_with_a_corrupt_manifest(
    cli: Cli, tmp_path: Path, run_dir: Path
) -> None:
    manifest = run_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])  # the error says: re-run with --force
    config = write_toml(tmp_path / "c.toml", tiny_mapping(plan={"members": 2}))
    result = cli("run", config, "--out", run_dir, "--force", "--json")
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    "damage",
    [
        "plan-missing",
        "plan-garbage",
        "metrics-garbage",
        "manifest-config",
    ],
)
def test_info_on_damaged_tables_is_one_line(cli: Cli, run_dir: Path, damage: str) -> None:
    if damage == "plan-missing":
        (run_dir / "plan.parquet").unlink()
    elif damage == "plan-garbage":
        (run_dir / "plan.parquet").write_bytes(b"junk")
    elif damage == "metrics-garbage":
        (run_dir / "metrics.parquet").write_bytes(b"junk")
    else:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        manifest["config"]["trainer"]["lr"] = "fast"
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(cli("info", run_dir), str(run_dir))


# ---- optional dependencies ---------------------------------------------------------------

needs_no_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is not None, reason="ray is installed"
)


@needs_no_ray
def test_ray_backend_without_ray_names_the_extra(cli: Cli, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "ray.toml", tiny_mapping(run={"backend": "ray"}))
    assert_user_error(cli("run", config, "--out", tmp_path / "run"), "attractor[ray]", "ray")


@needs_no_ray
def test_ray_backend_without_ray_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "ray.toml", tiny_mapping(run={"backend": "ray"}))
    assert_user_error(cli("run", config, "--out", tmp_path / "run"), "attractor[ray]")
    assert not (tmp_path / "run").exists()


@needs_no_ray
def test_ray_backend_without_ray_keeps_the_old_run_with_force(
    cli: Cli, tmp_path: Path, run_dir: Path
) -> None:
    config = write_toml(tmp_path / "ray.toml", tiny_mapping(run={"backend": "ray"}))
    before = fingerprint(run_dir)
    assert_user_error(cli("run", config, "--out", run_dir, "--force"), "attractor[ray]")
    assert fingerprint(run_dir) == before


# ---- usage errors (typer/click) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "c.toml"], ("--out", "attractor run --help")),
        (["run", "c.toml", "--outt", "x"], ("--outt",)),
        (["info"], ("RUN_DIR",)),
        (["runn"], ("runn", "Did you mean 'run'")),
        (["demo", "--members", "abc"], ("--members",)),
        (["demo", "--members", "0"], ("--members",)),
        (["tasks", "extra"], ("extra",)),
    ],
)
def test_usage_errors_are_one_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    fragments: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)  # a refused demo must not create runs/demo
    assert_user_error(cli(*args), *fragments)
    assert not (tmp_path / "runs").exists()


def test_bare_command_shows_help(cli: Cli) -> None:
    result = cli()
    assert "Traceback" not in result.err
    assert "Usage: attractor" in result.out + result.err
    assert result.code == 2


# ---- the installed console script ---------------------------------------------------------


def test_console_script_end_to_end(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("attractor")
    if not script.exists():
        found = shutil.which("attractor")
        if found is None:
            pytest.skip("the attractor console script is not installed")
        script = Path(found)

    ok = subprocess.run([script, "tasks", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert set(KNOWN_TASKS) <= {t["name"] for t in json.loads(ok.stdout)}

    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer]\nlrr = 0.1\n")
    failed = subprocess.run([script, "plan", bad], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [failed.stderr.strip()]
    assert failed.stderr.startswith("error:") and "trainer.lrr" in failed.stderr
    assert "Traceback" not in failed.stderr
