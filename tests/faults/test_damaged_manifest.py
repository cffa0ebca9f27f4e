"""Run directories whose manifest was damaged or edited: one line and exit 2, never a
traceback (issue 16, case 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_user_error, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attractor.runs.launch import train

    root = tmp_path_factory.mktemp("damaged") / "run"
    train(tiny_config(), root)
    return root


def edited(run: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``run`` whose manifest ``edit(manifest)`` changed in place."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_manifest_without_member_status_is_one_line(run: Path, tmp_path: Path, cli) -> None:
    copy = edited(run, tmp_path, lambda m: m.pop("members"))
    assert_user_error(cli("info", copy), "manifest.json", "damaged", "--force")


def test_manifest_with_malformed_snapshot_steps_is_one_line(run: Path, tmp_path: Path, cli) -> None:
    copy = edited(run, tmp_path, lambda m: m.update(snapshot_steps=["not", "a", "table"]))
    assert_user_error(cli("measure", copy), "manifest.json", "damaged")


def test_edited_architecture_is_one_line_before_any_forward_pass(
    run: Path, tmp_path: Path, cli
) -> None:
    copy = edited(run, tmp_path, lambda m: m["config"]["task"].update(hidden=[8]))
    line = assert_user_error(cli("measure", copy), "do not fit the run's task", "--force")
    assert "the model wants (8" in line
