"""lm-export --force replaces only an export it wrote; '.' and parents of the cwd never."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attractor.errors import UserError
from attractor.runs.lm_models import EXPORT_MARKER, save_member


def test_force_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "app.js").write_text("mine")
    with pytest.raises(UserError, match="not an attractor export"):
        save_member(tmp_path / "no-run", 0, out, force=True)
    assert (out / "app.js").read_text() == "mine"


def test_force_refuses_an_export_holding_the_users_files(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / EXPORT_MARKER).write_text(json.dumps({"attractor_export": 1, "files": ["config.json"]}))
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        save_member(tmp_path / "no-run", 0, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("target", [".", ".."])
def test_the_current_directory_and_its_parents_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    with pytest.raises(UserError, match="never deletes"):
        save_member(tmp_path / "no-run", 0, target, force=True)
    assert (work / "keep.txt").read_text() == "mine"
