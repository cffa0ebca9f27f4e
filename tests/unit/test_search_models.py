"""Model specs: parsing, loading members / means / weight files, perturbed copies, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attractor.errors import UserError
from attractor.measure.structural import quantize
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.search import (
    load_members,
    load_model,
    load_pair,
    parse_spec,
    sample_disagreement,
    sample_ensemble_spread,
    search_disagreement,
    search_ensemble_spread,
    task_region,
)
from attractor.search.models import check_compatible
from attractor.tasks.base import Task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    return train(
        tiny_config(trainer={"steps": 20}, plan={"members": 3}),
        tmp_path_factory.mktemp("search") / "run",
    )


def _x(ens: Ensemble) -> torch.Tensor:
    return ens.task.x_test[:50]


def test_parse_good_specs() -> None:
    spec = parse_spec("runs/a:3")
    assert (spec.source, spec.member, spec.step, spec.perturbations, spec.seed) == (
        "runs/a",
        3,
        None,
        (),
        0,
    )
    assert (parse_spec("runs/a:3:120").member, parse_spec("runs/a:3:120").step) == (3, 120)
    assert (parse_spec("runs/a:mean").member, parse_spec("runs/a:mean:8").step) == ("mean", 8)
    assert parse_spec("C:/odd:dir:2").source == "C:/odd:dir"  # read from the right
    spec = parse_spec("w.safetensors@fp16@dropout=0.1@seed=3@int8")
    assert (spec.source, spec.member, spec.seed) == ("w.safetensors", None, 3)
    assert spec.perturbations == (("fp16", 0.0), ("dropout", 0.1), ("int8", 0.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no model"),
        ("runs/a", "names no member"),
        ("runs/a:x", "names no member"),
        (":3", "no run directory"),
        ("runs/a:3@dropout", "needs a level"),
        ("runs/a:3@dropout=1.5", r"out of range; it must be a probability in \[0, 1\)"),
        ("runs/a:3@noise=nan", "out of range"),
        ("runs/a:3@bits=2.5", "whole number of bits"),
        ("runs/a:3@fp16=1", "takes no level"),
        ("runs/a:3@blur=2", "unknown perturbation '@blur=2'; choose one of: @dropout"),
        ("runs/a:3@seed=-1", "whole number"),
    ],
)
def test_bad_specs_get_one_helpful_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as exc:
        parse_spec(text)
    assert "\n" not in str(exc.value)


def test_member_and_step(ens: Ensemble) -> None:
    x = _x(ens)
    model, task = load_model(f"{ens.store.root}:1")
    assert task.name == "digits-mlp"
    assert torch.allclose(model(x), ens.predict(x, members=[1])[0], atol=1e-5)
    first = ens.steps(1)[0]
    early, _ = load_model(f"{ens.store.root}:1:{first}")
    assert torch.allclose(early(x), ens.predict(x, members=[1], step=first)[0], atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_mean_is_log_of_mean_probabilities(ens: Ensemble) -> None:
    x = _x(ens)
    mean, _ = load_model(f"{ens.store.root}:mean")
    expected = torch.softmax(ens.predict(x).double(), -1).mean(0).log()
    assert torch.allclose(mean(x).double(), expected, atol=1e-5)
    assert torch.allclose(mean(x).exp().sum(-1), torch.ones(len(x)), atol=1e-5)


def test_missing_members_steps_and_runs(ens: Ensemble, tmp_path: Path) -> None:
    root = ens.store.root
    with pytest.raises(UserError, match=r"no finished member 9 \(finished: 0, 1, 2\)"):
        load_model(f"{root}:9")
    with pytest.raises(UserError, match=r"no snapshot at step 7 \(steps: "):
        load_model(f"{root}:0:7")
    with pytest.raises(UserError, match="not an attractor run directory"):
        load_model(f"{tmp_path}:0")


def test_perturbed_copies(ens: Ensemble) -> None:
    x, root = _x(ens), ens.store.root
    plain, _ = load_model(f"{root}:0")
    for zero in (
        "dropout=0",
        "dropconnect=0",
        "noise=0",
        "prune=0",
    ):  # zero perturbation -> identity
        assert torch.equal(load_model(f"{root}:0@{zero}")[0](x), plain(x)), zero
    half, _ = load_model(f"{root}:0@fp16")
    for p in half.parameters():
        assert torch.equal(p, p.half().float())
    int8, _ = load_model(f"{root}:0@int8")
    stacked = {k: v[None] for k, v in plain.named_parameters()}
    expected = quantize(stacked, 8, torch.Generator(), set())
    assert all(torch.equal(p, expected[k][0]) for k, p in int8.named_parameters())
    pruned, _ = load_model(f"{root}:0@prune=0.5")
    for name, p in pruned.named_parameters():
        share = float((p == 0).double().mean())
        assert share == pytest.approx(0.5, abs=0.01) if name.endswith("weight") else share < 0.5
    noisy, again, other = (
        load_model(f"{root}:0@noise=0.01{s}")[0] for s in ("", "@seed=0", "@seed=1")
    )
    assert torch.equal(noisy(x), again(x)) and not torch.equal(noisy(x), other(x))
    assert torch.allclose(noisy(x), plain(x), atol=0.5)
    dropped, _ = load_model(f"{root}:0@dropout=0.5")
    assert (dropped[2].weight == 0).all(0).any()  # whole hidden units are dropped
    mean_dropped, _ = load_model(f"{root}:mean@dropconnect=0.2")
    assert not torch.equal(mean_dropped(x), load_model(f"{root}:mean")[0](x))


def test_weight_files(ens: Ensemble, tmp_path: Path) -> None:
    x, root = _x(ens), ens.store.root
    plain, _ = load_model(f"{root}:2")
    path = tmp_path / "member.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    for task in (root, ens.task):
        model, found = load_model(str(path), task=task)
        assert torch.equal(model(x), plain(x)) and found.name == "digits-mlp"
    snapshot = ens.store.snapshot_path(2, ens.steps(2)[-1])
    assert torch.equal(load_model(str(snapshot))[0](x), plain(x))  # the task of a run's own file
    with pytest.raises(UserError, match="give the task"):
        load_model(str(path))
    with pytest.raises(UserError, match="do not fit task 'digits-mlp'") as exc:
        load_model(str(path), task="digits-mlp")  # default hidden [128, 128], not [32]
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "none.safetensors"), task=root)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_model(str(tmp_path / "bad.safetensors"), task=root)


def test_incompatible_models_are_refused() -> None:
    def task(d: int) -> Task:
        x = torch.zeros(2, d)
        return Task("t", x, torch.zeros(2), x, torch.zeros(2), lambda: nn.Linear(d, 3))

    with pytest.raises(UserError, match=r"take different inputs \(\[64\] vs \[74\]\)"):
        check_compatible((nn.Linear(64, 10), task(64)), (nn.Linear(74, 10), task(74)))
    with pytest.raises(UserError, match=r"give different outputs \(\[10\] vs \[3\]\)"):
        check_compatible((nn.Linear(64, 10), task(64)), (nn.Linear(64, 3), task(64)))


def test_search_between_two_members_beats_sampling(ens: Ensemble) -> None:
    a, b, task = load_pair(f"{ens.store.root}:0", f"{ens.store.root}:1@noise=0.05")
    region = task_region(task, eps=0.5, limit=20)
    found = search_disagreement(a, b, region, "js", restarts=2, steps=10)
    base = sample_disagreement(a, b, region, found.evaluations, "js")
    assert found.best >= base.best and found.best <= math.log(2)
    assert float(found.best_per_point.mean()) > float(base.best_per_point.mean())
    box = task_region(task)
    assert box.points == 1 and torch.equal(box.lower[0], task.x_train.amin(0))
    members, _ = load_members(ens.store.root)
    assert len(members) == 3
    spread = [
        search_ensemble_spread(m, region, "mi", restarts=2, steps=5)
        for m in (members, ens, ens.store.root)
    ]
    assert spread[0].best == spread[1].best == spread[2].best
    assert sample_ensemble_spread(ens, region, spread[0].evaluations, "mi").best <= spread[0].best
