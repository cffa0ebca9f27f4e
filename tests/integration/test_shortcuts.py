"""`attractor shortcuts`: trainer variants on one task, shortcut reliance with known answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from attractor.errors import UserError
from attractor.experiments.shortcuts import parse_variant, shortcut_probe, variant_config
from tests.conftest import tiny_config, write_toml


def spurious(strength: float, steps: int = 60) -> object:
    return tiny_config(
        task={"name": "spurious-digits", "hidden": [32], "strength": strength},
        trainer={"steps": steps, "momentum": 0.0},
    )


def test_variant_strings_parse_and_refuse() -> None:
    assert parse_variant("adam:optimizer=adam,lr=0.001") == (
        "adam",
        {"optimizer": "adam", "lr": 0.001},
    )
    assert parse_variant("sd: logit_penalty=0.1, nesterov=true") == (
        "sd",
        {"logit_penalty": 0.1, "nesterov": True},
    )
    assert parse_variant("plain") == ("plain", {})
    with pytest.raises(UserError, match="label"):
        parse_variant("bad label:lr=1")
    with pytest.raises(UserError, match="key=value"):
        parse_variant("x:lr")
    with pytest.raises(UserError, match="trainer variant 'x'.*lrr"):
        variant_config(tiny_config(), {"lrr": 0.1}, 2, "x")
    config = variant_config(tiny_config(), {"optimizer": "cone", "cone_random": True}, 3, "x")
    assert config.plan.members == 3 and config.run.track_path and config.trainer.cone_random


def test_no_shortcut_feature_means_no_reliance(tmp_path: Path) -> None:
    """With strength 0 the agree and random probes are the same inputs: reliance is exactly 0."""
    result = shortcut_probe(spurious(0.0), ["sgd:optimizer=sgd"], seeds=2, out=tmp_path, draws=50)
    assert result.has_shortcut
    assert (result.members["shortcut_reliance"] == 0).all()
    row = result.summary.iloc[0]
    assert (
        row["shortcut_reliance"]
        == row["shortcut_reliance_low"]
        == row["shortcut_reliance_high"]
        == 0
    )


def test_a_strong_perfect_shortcut_is_relied_on(tmp_path: Path, cli: Callable) -> None:
    """A strength-5 one-hot that always gives the label in training: prediction follows it at
    test.
    """
    config = write_toml(tmp_path / "c.toml", spurious(5.0, steps=80))
    result = cli(
        "shortcuts",
        config,
        "-t",
        "sgd:optimizer=sgd",
        "-t",
        "sd:optimizer=sgd,logit_penalty=0.1",
        "--seeds",
        "2",
        "--draws",
        "50",
        "--out",
        tmp_path / "probe",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    summary = pd.DataFrame(data["summary"]).set_index("variant")
    assert list(summary.index) == ["sgd", "sd"]
    assert (summary["shortcut_reliance"] > 0.5).all()
    # Distance is a straight line, path length the walk: never shorter.
    members = pd.read_parquet(tmp_path / "probe" / "shortcuts.parquet")
    assert (
        (members["path_length"] >= members["init_distance"]) & (members["straightness"] <= 1)
    ).all()
    html = (tmp_path / "probe" / "report.html").read_text()
    assert 'id="shortcuts"' in html and "sgd" in html and "data:image/png;base64," in html
    for variant in ("sgd", "sd"):
        assert (tmp_path / "probe" / "runs" / variant / "manifest.json").is_file()


def test_bad_variant_is_one_line_and_exit_2(tmp_path: Path, cli: Callable) -> None:
    config = write_toml(tmp_path / "c.toml", spurious(1.0))
    result = cli("shortcuts", config, "-t", "x:momentum=2", "--out", tmp_path / "probe")
    assert (
        result.code == 2 and len(result.err.strip().splitlines()) == 1 and "momentum" in result.err
    )
    assert not (tmp_path / "probe").exists()
