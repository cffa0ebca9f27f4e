"""What `attractor import SPEC` names: members and steps from paths, globs and manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attractor.config import TrainerConfig
from attractor.errors import UserError
from attractor.runs.imports import factors
from attractor.runs.imports.manifests import is_manifest, read_manifest
from attractor.runs.imports.sources import UNKNOWN_STEP, check_steps, from_paths, step_of


def _weights(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def _hf_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    _weights(path / "model.safetensors")
    return path


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("step-500.safetensors", 500),
        ("step500", 500),
        ("checkpoint-12", 12),
        ("Step_3.safetensors", 3),
        ("final.safetensors", None),
        ("seed-1", None),
        ("step-x", None),
    ],
)
def test_step_of_reads_the_step_from_a_name(name: str, step: int | None) -> None:
    assert step_of(Path("a") / name) == step


def test_step_files_group_by_their_folder_in_natural_order(tmp_path: Path) -> None:
    for seed in (10, 2):
        for step in (0, 100):
            _weights(tmp_path / f"seed{seed}" / f"step-{step}.safetensors")
    members = from_paths([str(tmp_path / "seed*" / "step-*.safetensors")])
    assert [Path(m.name).name for m in members] == ["seed2", "seed10"]
    assert [sorted(m.files) for m in members] == [[0, 100], [0, 100]]
    # The member folders themselves name the same members.
    again = from_paths([str(tmp_path / "seed*")])
    assert [(m.name, sorted(m.files)) for m in again] == [
        (m.name, sorted(m.files)) for m in members
    ]


def test_hugging_face_directories_are_snapshots_or_members(tmp_path: Path) -> None:
    for step in (0, 50):
        _hf_dir(tmp_path / "seed-0" / f"checkpoint-{step}")
    _hf_dir(tmp_path / "final-model")
    found = from_paths([str(tmp_path / "seed-0"), str(tmp_path / "final-model")])
    final, stepped = found  # natural order of their paths
    assert sorted(stepped.files) == [0, 50] and all(s.hf for s in stepped.files.values())
    assert list(final.files) == [UNKNOWN_STEP] and not final.steps_known


def test_a_file_without_a_step_is_the_final_model(tmp_path: Path) -> None:
    (member,) = from_paths([str(_weights(tmp_path / "model.safetensors"))])
    assert list(member.files) == [UNKNOWN_STEP] and not member.steps_known


@pytest.mark.parametrize(
    ("layout", "fragment"),
    [
        (["a/model.pt"], "is a pickle"),
        (["a/x.safetensors", "a/y.safetensors"], "none is named step-N"),
        (["a/notes.txt"], "holds no safetensors file"),
    ],
)
def test_folders_that_name_no_snapshot_are_refused(
    tmp_path: Path, layout: list[str], fragment: str
) -> None:
    for name in layout:
        _weights(tmp_path / name)
    target = tmp_path / layout[0] if layout[0].endswith(".pt") else tmp_path / "a"
    with pytest.raises(UserError, match=fragment):
        from_paths([str(target)])


def test_a_glob_that_matches_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="matches no file"):
        from_paths([str(tmp_path / "nothing*")])


def test_members_must_share_their_steps(tmp_path: Path) -> None:
    for seed, steps in ((0, (0, 10)), (1, (0,))):
        for step in steps:
            _weights(tmp_path / f"s{seed}" / f"step-{step}.safetensors")
    members = from_paths([str(tmp_path / "s0"), str(tmp_path / "s1")])
    with pytest.raises(UserError, match=r"steps \[0\] but member .* at \[0, 10\]"):
        check_steps(members, [64, 64])
    # Members of different batch sizes keep lists of their own.
    assert check_steps(members, [32, 64]) == {32: [0, 10], 64: [0]}


def test_csv_manifest_rows_make_members_with_factors(tmp_path: Path) -> None:
    for name in ("a0", "a5", "b0", "b5"):
        _weights(tmp_path / "w" / f"{name}.safetensors")
    manifest = tmp_path / "members.csv"
    manifest.write_text(
        "member,step,path,init_seed,dataset\n"
        "a,0,w/a0.safetensors,3,v1\na,5,w/a5.safetensors,3,v1\n"
        "b,0,w/b0.safetensors,4,v2\nb,5,w/b5.safetensors,4,v2\n"
    )
    assert is_manifest([str(manifest)]) and not is_manifest([str(manifest), "x"])
    a, b = read_manifest(manifest)
    assert (a.name, sorted(a.files), a.factors) == (
        "a",
        [0, 5],
        {"init_seed": "3", "dataset": "v1"},
    )
    assert b.files[5].path == tmp_path / "w" / "b5.safetensors"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("member,file\na,x\n", "no 'path' column"),
        ("member,path,init_seed\na,w.safetensors,1\na,w2.safetensors,2\n", "init_seed = '2' here"),
        ("path,step\nw.safetensors,-1\n", "is not a whole number"),
        ("path\n\n", "names no members"),
        ("path\nmissing.safetensors\n", "does not exist"),
    ],
)
def test_bad_csv_manifests_are_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    _weights(tmp_path / "w.safetensors")
    _weights(tmp_path / "w2.safetensors")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(UserError, match=fragment):
        read_manifest(manifest)


def test_toml_manifest_takes_steps_or_one_path(tmp_path: Path) -> None:
    for name in ("a0", "a5", "b"):
        _weights(tmp_path / f"{name}.safetensors")
    manifest = tmp_path / "members.toml"
    manifest.write_text(
        '[[member]]\nname = "a"\ninit_seed = 1\n'
        'steps = { 0 = "a0.safetensors", 5 = "a5.safetensors" }\n'
        '[[member]]\npath = "b.safetensors"\nlr = 0.1\n'
    )
    a, b = read_manifest(manifest)
    assert (a.name, sorted(a.files), a.factors) == ("a", [0, 5], {"init_seed": 1})
    assert (b.name, list(b.files), b.factors) == ("member 2", [UNKNOWN_STEP], {"lr": 0.1})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[task]\nname = "x"\n', "unknown table 'task'"),
        ("[[member]]\ninit_seed = 1\n", "give either path"),
        ('[[member]]\nsteps = { x = "a.safetensors" }\n', "step 'x'"),
        ("[[member]\n", "not valid TOML"),
    ],
)
def test_bad_toml_manifests_are_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    _weights(tmp_path / "a.safetensors")
    manifest = tmp_path / "m.toml"
    manifest.write_text(text)
    with pytest.raises(UserError, match=fragment):
        read_manifest(manifest)


def test_factors_split_into_plan_and_the_users_own() -> None:
    plan, own = factors.split_factors(
        {"init_seed": "3", "lr": "0.1", "bootstrap": "", "dataset": "v2", "epochs": "3"}, "m"
    )
    assert plan == {"init_seed": 3, "lr": 0.1, "bootstrap": None}
    assert own == {"dataset": "v2", "epochs": 3}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("init_seed", "1.5", "not a whole number >= 0"),
        ("batch_size", "0", "a whole number >= 1"),
        ("lr", "-1", "must be > 0"),
        ("momentum", "nan", "must be in [0, 1)"),
        ("optimizer", "rmsprop", "one of sgd"),
    ],
)
def test_bad_factor_values_name_member_and_factor(name: str, value: str, fragment: str) -> None:
    with pytest.raises(UserError) as raised:
        factors.factor_value(name, value, "member 'x'")
    assert str(raised.value).startswith(f"member 'x': {name} = ") and fragment in str(raised.value)


def test_a_balanced_crossing_is_recorded_as_factorial() -> None:
    trainer = TrainerConfig()
    cells = [{"init_seed": s, "data_seed": d} for s in (0, 1) for d in (0, 1)]
    assert factors.crossed(factors.build_plan(cells * 2, trainer))
    assert not factors.crossed(factors.build_plan(cells[:3], trainer))
    distinct = factors.build_plan([{"init_seed": s} for s in range(4)], trainer)
    assert not factors.crossed(distinct)
    assert list(distinct.table["lr"]) == [trainer.lr] * 4  # unknown factors: the trainer's
