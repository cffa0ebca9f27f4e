"""`attractor import` end to end: models trained elsewhere measure exactly as attractor's own.

The reference is a run attractor trained itself, written out as plain safetensors state
dicts (and, for language models, as Hugging Face directories with ``save_pretrained``),
then imported: every measure must give the trained run's numbers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from attractor.measure.dispatch import measure_run
from attractor.measure.spread import MeasureOptions
from attractor.runs.ensemble import Ensemble
from attractor.runs.imports import import_run
from attractor.runs.launch import train
from tests.conftest import assert_user_error, tiny_config, write_toml

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A digits run attractor trained (4 members, 4 snapshots) and its config file."""
    root = tmp_path_factory.mktemp("import")
    config = tiny_config()
    write_toml(root / "config.toml", config)
    return train(config, root / "run").store.root, root / "config.toml"


@pytest.fixture(scope="module")
def exported(trained: tuple[Path, Path]) -> Path:
    """The trained members as plain state dicts, seed<i>/step-<k>.safetensors, and a CSV."""
    run, _ = trained
    ens = Ensemble.load(run)
    folder = run.parent / "elsewhere"
    rows = []
    for member in ens.members:
        factors = ens.row(member)
        for step in ens.steps(member):
            path = folder / f"seed{member}" / f"step-{step}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(ens.params(member, step), str(path))
            rows.append(
                {
                    "member": f"seed{member}",
                    "step": step,
                    "path": path.relative_to(folder).as_posix(),
                    "init_seed": factors.init_seed,
                    "data_seed": factors.data_seed,
                    "dataset": "digits-v1",
                }
            )
    with open(folder / "members.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def imported(trained: tuple[Path, Path], exported: Path) -> Path:
    _, config = trained
    out = exported.parent / "imported"
    import_run([str(exported / "members.csv")], config, out)
    return out


def test_an_import_measures_exactly_as_the_trained_run(
    trained: tuple[Path, Path], imported: Path
) -> None:
    options = MeasureOptions(draws=50)
    ours, theirs = Ensemble.load(trained[0]), Ensemble.load(imported)
    a, b = measure_run(ours, options), measure_run(theirs, options)
    assert a.summary == b.summary  # every value and interval, bitwise
    pd.testing.assert_frame_equal(a.members, b.members)
    for name, matrix in a.pairwise.items():
        assert (matrix == b.pairwise[name]).all(), name
    pd.testing.assert_frame_equal(a.trajectory, b.trajectory)
    pd.testing.assert_frame_equal(ours.metrics, theirs.metrics)  # evaluated as training did
    factors = ["member", "init_seed", "data_seed", "lr", "batch_size"]
    pd.testing.assert_frame_equal(ours.plan[factors], theirs.plan[factors])


def test_the_manifest_records_the_import_and_verify_checks_it(
    imported: Path, exported: Path, cli: Callable
) -> None:
    manifest = json.loads((imported / "manifest.json").read_text())
    record = manifest["imported"]
    assert record["spec"] == [str(exported / "members.csv")] and record["how"] == "copy"
    assert record["known_factors"] == ["init_seed", "data_seed"] and record["trainer_known"]
    member = record["members"]["0"]
    assert member["name"] == "seed0" and member["factors"] == {"dataset": "digits-v1"}
    entry = member["files"]["step-0.safetensors"]
    source = (exported / "seed0" / "step-0.safetensors").resolve()
    assert entry["placed"] == "copied" and list(entry["sources"]) == [str(source)]
    assert entry["sources"][str(source)] == manifest["members"]["0"]["sha256"]["step-0.safetensors"]
    assert cli("verify", imported).code == 0
    info = cli("info", imported, "--json")
    assert info.code == 0 and json.loads(info.out)["summary"]["done"] == 4


def test_run_refuses_to_train_over_an_import(
    trained: tuple[Path, Path], imported: Path, cli: Callable
) -> None:
    before = (imported / "manifest.json").read_bytes()
    for force in ([], ["--force"]):
        result = cli("run", trained[1], "--out", imported, *force)
        assert_user_error(result, "holds models imported from", "nothing to train")
    assert (imported / "manifest.json").read_bytes() == before


def test_import_again_needs_force_and_then_replaces(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable
) -> None:
    out = tmp_path / "again"
    first = cli(
        "import", exported / "seed0", exported / "seed1", "--task", trained[1], "--out", out
    )
    assert first.code == 0, first.err
    three = [exported / f"seed{i}" for i in range(3)]
    assert_user_error(
        cli("import", *three, "--task", trained[1], "--out", out), "already holds an import"
    )
    again = cli("import", *three, "--task", trained[1], "--out", out, "--force", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["members"] == 3 and len(Ensemble.load(out).members) == 3


def test_link_places_the_sources_themselves(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable
) -> None:
    sources = tmp_path / "sources"
    for member in (0, 1):
        (sources / f"m{member}").mkdir(parents=True)
        for step in Ensemble.load(trained[0]).steps(member):
            name = f"step-{step}.safetensors"
            (sources / f"m{member}" / name).write_bytes(
                (exported / f"seed{member}" / name).read_bytes()
            )
    out = tmp_path / "linked"
    args = ("import", str(sources / "m*"), "--task", trained[1], "--out", out, "--link")
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["linked"] == 8
    source, placed = sources / "m0" / "step-12.safetensors", out / "members/0/step-12.safetensors"
    assert os.path.samefile(source, placed)
    # Replacing the import unlinks its names, never the sources.
    assert cli(*args, "--force").code == 0
    assert source.is_file()
    # A source edited in place is the run's file too: verify names it.
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    source.write_bytes(bytes(data))
    damaged = cli("verify", out)
    assert damaged.code == 2 and "members/0/step-12.safetensors" in damaged.out


def _bad_task(root: Path) -> Path:
    return write_toml(root / "wide.toml", tiny_config(task={"hidden": [16]}))


@pytest.mark.parametrize(
    ("spec", "task", "fragment"),
    [
        (lambda e, r: [e / "members.csv"], _bad_task, "'0.bias' is (32,), the model wants (16,)"),
        (lambda e, r: [e / "seed0"], lambda r: "no-such-task", "unknown task 'no-such-task'"),
        (lambda e, r: [r / "x.pt"], None, "is a pickle"),
        (lambda e, r: [e / "seed0", e / "seed1" / "step-0.safetensors"], None, "same steps"),
        (lambda e, r: [r / "nan"], None, "NaN or inf"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable, spec, task, fragment
) -> None:
    (tmp_path / "x.pt").write_bytes(b"pickle")
    state = Ensemble.load(trained[0]).params(0)
    (tmp_path / "nan").mkdir()
    save_file(
        {**state, "0.bias": torch.full_like(state["0.bias"], float("nan"))},
        str(tmp_path / "nan" / "w.safetensors"),
    )
    given = trained[1] if task is None else task(tmp_path)
    out = tmp_path / "out"
    assert_user_error(
        cli("import", *spec(exported, tmp_path), "--task", given, "--out", out), fragment
    )
    assert not out.exists()


def test_an_out_that_is_not_a_run_is_refused(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable
) -> None:
    (tmp_path / "mine.txt").write_text("my notes")
    args = ("import", exported / "seed0", "--task", trained[1], "--out")
    assert_user_error(cli(*args, tmp_path), "not an attractor run directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    # --force may replace a run, but never one whose files are being imported.
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    inside = ("import", run / "members" / "0", "--task", trained[1], "--out", run, "--force")
    assert_user_error(cli(*inside), "lies inside --out")
    assert (run / "members" / "0" / "step-0.safetensors").is_file()


def test_final_models_alone_import_at_their_step(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable
) -> None:
    out = tmp_path / "final"
    result = cli(
        "import",
        str(exported / "seed*" / "step-12.safetensors"),
        "--task",
        trained[1],
        "--out",
        out,
        "--json",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["steps"] == [12]
    assert cli("compare", trained[0], out, "--draws", "20").code == 0


def test_measure_works_without_initial_weights(
    trained: tuple[Path, Path], exported: Path, tmp_path: Path, cli: Callable
) -> None:
    out = tmp_path / "final"
    import_run([str(exported / "seed*" / "step-12.safetensors")], trained[1], out)
    result = cli("measure", out, "--draws", "20", "--json")
    assert result.code == 0, result.err


USER_TASK = """
import torch
from torch import nn
from attractor import Task

def make_task(width: int = 8) -> Task:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    return Task(name="importtask:make_task", x_train=x[:48], y_train=y[:48], x_test=x[48:],
                y_test=y[48:], make_model=lambda: nn.Sequential(nn.Linear(5, width), nn.Tanh(),
                nn.Linear(width, 2)), num_classes=2)
"""


def test_a_user_task_imports_and_loads_without_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "importtask.py").write_text(USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    from torch import nn

    for member in range(3):
        torch.manual_seed(member)
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
        for step in (0, 7):
            path = tmp_path / "w" / f"m{member}" / f"step-{step}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(model.state_dict(), str(path))
            with torch.no_grad():
                model[0].weight.add_(0.1)
    toml = tmp_path / "task.toml"
    toml.write_text('[task]\nname = "importtask:make_task"\nwidth = 4\n')
    out = tmp_path / "run"
    result = cli("import", str(tmp_path / "w" / "m*"), "--task", toml, "--out", out)
    assert result.code == 0, result.err
    measured = cli("measure", out, "--draws", "20", "--json")  # signed as the user's own
    assert measured.code == 0, measured.err


# ---- Hugging Face directories: a tiny-lm family saved with save_pretrained --------------
LM_TASK = {
    "name": "tiny-lm",
    "width": 16,
    "context": 16,
    "layers": 1,
    "heads": 2,
    "windows_per_document": 1,
}


@pytest.fixture(scope="module")
def lm_family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny-lm run (4 seeds, snapshots at steps 0, 2, 4) and every (member, step) of it as a
    Hugging Face directory, seed-<i>/step-<k>/ (lm-export: save_pretrained).
    """
    pytest.importorskip("transformers")
    from attractor.config import parse_config
    from attractor.runs.lm_models import save_member

    root = tmp_path_factory.mktemp("lm-import")
    config = parse_config(
        {
            "task": LM_TASK,
            "trainer": {"optimizer": "adam", "lr": 0.003, "batch_size": 8, "steps": 4},
            "plan": {"members": 4, "vary": ["init_seed", "data_seed"]},
            "run": {"snapshots": [0, 2, 4]},
        }
    )
    run = train(config, root / "run").store.root
    for member in range(4):
        for step in (0, 2, 4):
            save_member(run, member, root / "hf" / f"seed-{member}" / f"step-{step}", step=step)
    return run, root / "hf"


@pytest.mark.slow
def test_a_hugging_face_family_measures_as_the_trained_lm_run(
    lm_family: tuple[Path, Path], tmp_path: Path, cli: Callable
) -> None:
    from transformers import GPT2LMHeadModel

    run, family = lm_family
    task = tmp_path / "task.toml"  # the size comes from the directories' config.json
    task.write_text('[task]\nname = "tiny-lm"\nwindows_per_document = 1\n')
    out = tmp_path / "imported"
    result = cli("import", str(family / "seed-*"), "--task", task, "--out", out, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert (summary["members"], summary["steps"], summary["written"]) == (4, [0, 2, 4], 12)
    ours, theirs = Ensemble.load(run), Ensemble.load(out)
    assert theirs.config.task == ours.config.task
    a, b = (
        measure_run(ours, MeasureOptions(draws=50)),
        measure_run(theirs, MeasureOptions(draws=50)),
    )
    assert (a.loss, a.pairwise_js, a.kl_to_mean, a.cka) == (
        b.loss,
        b.pairwise_js,
        b.kl_to_mean,
        b.cka,
    )
    columns = ["train_loss", "test_loss"]
    pd.testing.assert_frame_equal(ours.metrics[columns], theirs.metrics[columns], rtol=1e-5)
    # Member 2 at step 2 computes what transformers loads from its directory.
    x = theirs.task.x_test[:3]
    hf = GPT2LMHeadModel.from_pretrained(family / "seed-2" / "step-2", attn_implementation="eager")
    with torch.no_grad():
        assert torch.equal(theirs.module(2, 2)(x), hf.eval()(input_ids=x).logits)
    corpus = tmp_path / "zen.txt"
    corpus.write_text("Beautiful is better than ugly.\nExplicit is better than implicit.\n" * 4)
    compared = cli("lm-compare", f"{out}:0", f"{out}:1", "--corpus", corpus, "--draws", "20")
    assert compared.code == 0, compared.err
    # The imported member and the directory it came from are one model.
    same = cli("lm-compare", f"{out}:3", family / "seed-3" / "step-4", "--corpus", corpus, "--json")
    assert same.code == 0, same.err
    assert json.loads(same.out)["means"]["js"]["value"] == 0
    assert cli("report", out).code == 0


@pytest.mark.slow
def test_a_directory_of_another_size_is_refused(
    lm_family: tuple[Path, Path], tmp_path: Path, cli: Callable
) -> None:
    _, family = lm_family
    odd = tmp_path / "odd" / "seed-9"
    shutil.copytree(family / "seed-0", odd)
    config = json.loads((odd / "step-2" / "config.json").read_text())
    (odd / "step-2" / "config.json").write_text(json.dumps({**config, "n_embd": 32}))
    out = tmp_path / "out"
    result = cli("import", family / "seed-0", odd, "--task", "tiny-lm", "--out", out)
    assert_user_error(result, "step-2/config.json' has n_embd = 32", "model has 16")
    assert not out.exists()


def test_device_places_the_metrics_only(
    trained: tuple[Path, Path], exported: Path, imported: Path, tmp_path: Path, cli: Callable
) -> None:
    """``--device cpu`` writes what the default writes (same files, same metrics); a GPU this
    machine lacks is one line and nothing is written (checked with CUDA absent).
    """
    out = tmp_path / "placed"
    spec = str(exported / "members.csv")
    result = cli("import", spec, "--task", trained[1], "--out", out, "--device", "cpu", "--json")
    assert result.code == 0, result.err
    pd.testing.assert_frame_equal(
        Ensemble.load(out).metrics, Ensemble.load(imported).metrics, check_exact=True
    )
    if not torch.cuda.is_available():
        missing = tmp_path / "missing"
        line = cli("import", spec, "--task", trained[1], "--out", missing, "--device", "cuda")
        assert_user_error(line, "no CUDA device")
        assert not missing.exists()
