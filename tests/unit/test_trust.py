"""Trust: manifests are signed with a per-user key, and a run's user code runs only if trusted."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from attractor.config import parse_config
from attractor.errors import UserError
from attractor.runs import trust
from attractor.runs.directory import MANIFEST, Directory
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config, tiny_mapping

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's user: a fresh config directory (no key yet), process trust off."""
    where = tmp_path / "config" / "attractor"
    monkeypatch.setenv("ATTRACTOR_CONFIG_DIR", str(where))
    monkeypatch.setattr(trust, "_default_trust", False)
    return where


@pytest.fixture(scope="module")
def built_in_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished digits-mlp run, trained once; tests copy its manifest into their own dirs."""
    return train(
        tiny_config(plan={"members": 2}), tmp_path_factory.mktemp("trust") / "run"
    ).store.root


def _copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_task(run: Path, task: dict) -> None:
    """What an attacker does: rewrite the manifest's task with a text editor."""
    path = run / MANIFEST
    data = json.loads(path.read_text())
    data["config"]["task"] = task
    path.write_text(json.dumps(data, indent=2))


def test_key_is_created_on_first_signature_owner_only(key_dir: Path, tmp_path: Path) -> None:
    assert not trust.signed_by_me({"a": 1, "signature": "00"})  # checking creates nothing
    assert not key_dir.exists()
    Directory(tmp_path / "d").write_manifest({"a": 1})
    key = key_dir / "key"
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert trust.signed_by_me(json.loads((tmp_path / "d" / MANIFEST).read_text()))


def test_config_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ATTRACTOR_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert trust.key_path() == tmp_path / "attractor" / "key"


def test_any_edit_of_a_signed_manifest_unsigns_it(key_dir: Path, built_in_run: Path) -> None:
    data = json.loads((built_in_run / MANIFEST).read_text())
    signed = trust.sign(key_dir / "none.json", data)
    text = json.dumps(signed, indent=2)
    assert trust.signed_by_me(json.loads(text))
    original = json.loads(text)
    edits = 0
    for at in range(len(text)):
        for byte in '0a" 7}':
            edited = text[:at] + byte + text[at + 1 :]
            try:
                parsed = json.loads(edited)
            except json.JSONDecodeError:
                continue  # not a manifest any more: refused as corrupt elsewhere
            if parsed != original:  # whitespace-only edits change nothing that is read
                edits += 1
                assert not (isinstance(parsed, dict) and trust.signed_by_me(parsed)), at
    assert edits > 100


def test_another_users_signature_is_not_mine(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Directory(tmp_path / "theirs").write_manifest({"a": 1})
    manifest = json.loads((tmp_path / "theirs" / MANIFEST).read_text())
    assert trust.signed_by_me(manifest)
    monkeypatch.setenv("ATTRACTOR_CONFIG_DIR", str(tmp_path / "other-user"))
    assert not trust.signed_by_me(manifest)


def test_rewriting_someone_elses_manifest_does_not_sign_it(key_dir: Path, tmp_path: Path) -> None:
    directory = Directory(tmp_path / "shared")
    directory.root.mkdir()
    (directory.root / MANIFEST).write_text(json.dumps({"a": 1}))  # unsigned: not made here
    directory.write_manifest({"a": 2})  # e.g. a resumed run marking members done
    assert "signature" not in json.loads((directory.root / MANIFEST).read_text())
    trust.set_default_trust(True)  # the user said --trust: then it becomes theirs
    directory.write_manifest({"a": 3})
    assert trust.signed_by_me(json.loads((directory.root / MANIFEST).read_text()))


def test_exploit_is_refused_and_runs_nothing(
    key_dir: Path, built_in_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(built_in_run, tmp_path / "shared")
    pwned = tmp_path / "pwned"
    _edit_task(run, {"name": "os:system", "command": f"touch {pwned}"})
    ens = Ensemble.load(run)  # reading the plan and metrics runs nothing
    with pytest.raises(UserError) as info:
        _ = ens.task
    message = str(info.value)
    assert "\n" not in message and "'os:system'" in message and "--trust" in message
    assert f"'{run}' was not made by you (or was edited)" in message
    assert not pwned.exists()
    # trust=True is the user's decision: the code runs (and os.system is no task).
    with pytest.raises(UserError, match="returned int"):
        _ = Ensemble.load(run, trust=True).task
    assert pwned.exists()


USER_MODULE = """
    import torch
    from torch import nn
    from attractor.tasks import Task

    def make_task(width=4):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        y = (x[:, 0] > 0).long()
        return Task(name="user", x_train=x, y_train=y, x_test=x, y_test=y,
                    make_model=lambda: nn.Linear(3, 2), num_classes=2)
"""


def _user_run(tmp_path: Path, name: str) -> Path:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    data = tiny_mapping(plan={"members": 2})
    data["task"] = {"name": f"{name}:make_task", "width": 4}
    return train(parse_config(data), tmp_path / "mine").store.root


def test_users_own_user_task_run_loads_without_trust(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"trust_user_{tmp_path.name}"
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _user_run(tmp_path, name)
    assert Ensemble.load(run).task.name == "user"
    _edit_task(run, {"name": f"{name}:make_task", "width": 5})  # one option edited
    with pytest.raises(UserError, match="was not made by you"):
        _ = Ensemble.load(run).task


def test_loaded_run_never_imports_from_the_current_directory(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"trust_cwd_{tmp_path.name}"
    monkeypatch.chdir(tmp_path)
    run = _user_run(tmp_path, name)  # the user's own config: found in the cwd, as before
    monkeypatch.delitem(sys.modules, name)
    with pytest.raises(UserError, match="never imported from the current directory"):
        _ = Ensemble.load(run).task  # signed, but the module is only in the cwd


def test_unsigned_built_in_run_loads(key_dir: Path, built_in_run: Path, tmp_path: Path) -> None:
    run = _copy_run(built_in_run, tmp_path / "old")
    data = json.loads((run / MANIFEST).read_text())
    data.pop("signature", None)  # made before manifests were signed
    (run / MANIFEST).write_text(json.dumps(data))
    assert Ensemble.load(run).task.name == "digits-mlp"
