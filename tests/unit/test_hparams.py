"""Hyperparameter maps: good-lr width and LR sensitivity against hand computations, and a tiny
real map.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attractor.errors import UserError
from attractor.experiments.hparam_map import check_grid, hparam_map
from attractor.measure.hparams import good_lr_range, lr_sensitivity, range_table, summarize_cells
from attractor.runs.ensemble import Ensemble
from attractor.runs.store import RunStore
from tests.conftest import tiny_config

LRS = np.array([0.001, 0.01, 0.1, 1.0])


def test_width_is_zero_when_only_the_best_lr_is_good() -> None:
    # errors 0.5, 0.3, 0.1, 0.9: only 0.1 is within 10 % of e* = 0.1
    width, lo, hi = good_lr_range(LRS, np.array([0.5, 0.7, 0.9, 0.1]), 0.1)
    assert (width, lo, hi) == (0.0, 0.1, 0.1)


def test_width_matches_hand_computation() -> None:
    # errors 0.21, 0.105, 0.1, 0.11 -> bound 0.11: lrs 0.01, 0.1, 1.0 are good -> 2 decades
    accuracy = 1 - np.array([0.21, 0.105, 0.1, 0.11])
    width, lo, hi = good_lr_range(LRS, accuracy, 0.1)
    assert (lo, hi) == (0.01, 1.0)
    assert width == pytest.approx(2.0)
    # a looser tolerance (bound 0.21) takes every lr: 3 decades; order of input does not matter
    assert good_lr_range(LRS[::-1], accuracy[::-1], 1.1)[0] == pytest.approx(3.0)


def test_width_counts_only_the_contiguous_run_around_the_best() -> None:
    # errors 0.5, 0.1, 0.5, 0.1: best at 0.01 (first minimum); 1.0 is as good but cut off by 0.1
    accuracy = 1 - np.array([0.5, 0.1, 0.5, 0.1])
    width, lo, hi = good_lr_range(LRS, accuracy, 0.1)
    assert (width, lo, hi) == (0.0, 0.01, 0.01)


def test_sensitivity_matches_hand_computation() -> None:
    capped = np.array([2.3, 0.5, 0.3, 2.3])
    assert lr_sensitivity(capped) == pytest.approx((2.3 + 0.5 + 0.3 + 2.3) / 4 - 0.3)


def _synthetic_members() -> pd.DataFrame:
    """Two momenta × 4 lrs × 3 seeds; diverged members already carry init values."""
    rng = np.random.default_rng(0)
    rows = []
    for momentum, best in ((0.0, 2), (0.9, 1)):
        for i, lr in enumerate(LRS):
            for _seed in range(3):
                acc = 0.95 - 0.2 * abs(i - best) + 0.01 * rng.standard_normal()
                diverged = momentum == 0.9 and i == 3
                rows.append(
                    {
                        "member": len(rows),
                        "lr": lr,
                        "momentum": momentum,
                        "diverged": diverged,
                        "init_loss": 2.3,
                        "final_loss": 2.3 if diverged else 2.0 * (1 - acc),
                        "final_accuracy": 0.1 if diverged else acc,
                    }
                )
    return pd.DataFrame(rows)


def test_cells_and_ranges_on_a_synthetic_table() -> None:
    members = _synthetic_members()
    cells = summarize_cells(members)
    assert len(cells) == 8
    assert cells.loc[(cells["momentum"] == 0.9) & (cells["lr"] == 1.0), "diverged"].item() == 1.0
    by_hand = (
        members.groupby(["lr", "momentum"])["final_accuracy"].agg(["mean", "std"]).reset_index()
    )
    merged = cells.merge(by_hand, on=["lr", "momentum"])
    np.testing.assert_allclose(merged["accuracy_mean"], merged["mean"])
    np.testing.assert_allclose(merged["accuracy_sd"], merged["std"])
    ranges = range_table(cells, members, tolerance=0.1, draws=200)
    assert list(ranges["momentum"]) == [0.0, 0.9]
    assert list(ranges["best_lr"]) == [0.1, 0.01]
    assert (ranges["low"] <= ranges["width"]).all() and (ranges["width"] <= ranges["high"]).all()
    capped = np.minimum(members["final_loss"], members["init_loss"])
    for row in ranges.itertuples():
        per_lr = capped[members["momentum"] == row.momentum].groupby(members["lr"]).mean()
        assert row.sensitivity == pytest.approx(per_lr.mean() - per_lr.min())


@pytest.mark.parametrize(
    ("lrs", "momenta", "seeds", "tolerance", "match"),
    [
        ([0.1], [0.0], 2, 0.1, "at least 2"),
        ([0.1, -1.0], [0.0], 2, 0.1, "positive"),
        ([0.1, 0.0], [0.0], 2, 0.1, "positive"),
        ([0.1, 1.0], [1.0], 2, 0.1, r"\[0, 1\)"),
        ([0.1, 1.0], [-0.1], 2, 0.1, r"\[0, 1\)"),
        ([0.1, 1.0], [0.0], 0, 0.1, "seeds"),
        ([0.1, 1.0], [0.0], 2, 0.0, "tolerance"),
    ],
)
def test_bad_input_is_refused(
    lrs: list[float], momenta: list[float], seeds: int, tolerance: float, match: str
) -> None:
    with pytest.raises(UserError, match=match):
        check_grid(lrs, momenta, seeds, tolerance)


def test_bad_input_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        hparam_map(tiny_config(), [0.1], [0.0], 2, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_tiny_digits_map(tmp_path: Path) -> None:
    lrs, momenta = [0.01, 0.1, 1.0, 50.0], [0.0, 0.9]
    result = hparam_map(
        tiny_config(trainer={"steps": 30}), lrs, momenta, 2, tmp_path / "run", draws=50
    )
    cells = result.cells
    assert len(cells) == len(lrs) * len(momenta)
    assert {
        "lr",
        "momentum",
        "seeds",
        "loss_mean",
        "loss_sd",
        "accuracy_mean",
        "accuracy_sd",
        "init_loss",
        "capped_loss",
        "diverged",
        "spread_js",
    } <= set(cells.columns)
    assert cells["diverged"].between(0, 1).all()
    assert (cells["seeds"] == 2).all()
    # lr = 50 wrecks every member: diverged, or no better than the best cell
    huge = cells[cells["lr"] == 50.0]
    assert (
        (huge["diverged"] == 1.0) | (huge["accuracy_mean"] < cells["accuracy_mean"].max() - 0.1)
    ).all()
    assert all(math.isnan(s) for s in cells.loc[cells["diverged"] > 0.5, "spread_js"])
    assert len(result.ranges) == 2 and (result.ranges["width"] >= 0).all()
    assert (result.ranges["sensitivity"] >= 0).all()
    for name in ("hparam-map.parquet", "hparam-map.json", "hparam-map.ranges.parquet"):
        assert (tmp_path / "run" / name).exists()
    saved = json.loads((tmp_path / "run" / "hparam-map.json").read_text())
    assert len(saved["cells"]) == 8 and saved["tolerance"] == 0.1
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "run" / "hparam-map.parquet"), cells, check_dtype=False
    )
    # The grid trained as one ordinary run inside the experiment's directory.
    assert (tmp_path / "run" / "runs" / "grid" / "manifest.json").is_file()
    assert [r.name for r in RunStore(tmp_path / "run").results()] == ["hparam-map"]

    # The same grid read on the training split (other settings: their own directory, the
    # same members): cells average the members' final train accuracy.
    train_map = hparam_map(
        tiny_config(trainer={"steps": 30}),
        lrs,
        momenta,
        2,
        tmp_path / "train",
        draws=50,
        split="train",
    )
    assert (
        train_map.split == "train"
        and json.loads((tmp_path / "train" / "hparam-map.json").read_text())["split"] == "train"
    )
    ens = Ensemble.load(tmp_path / "train" / "runs" / "grid")
    final = ens.final_metrics().merge(ens.plan[["member", "lr", "momentum", "status"]], on="member")
    healthy = train_map.cells[train_map.cells["diverged"] == 0]
    for cell in healthy.itertuples():
        rows = final[(final["lr"] == cell.lr) & (final["momentum"] == cell.momentum)]
        assert cell.accuracy_mean == pytest.approx(rows["train_accuracy"].mean())
    assert len(healthy) > 0


def test_cli_writes_the_map_its_figure_and_page(tmp_path: Path, cli) -> None:
    """`attractor hparam-map`: the result, hparam-map.png and report.html in OUT; same settings
    reopen it.
    """
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 10}))
    args = (
        "hparam-map",
        config,
        "--lr",
        "0.01:1:2",
        "--momentum",
        "0",
        "--seeds",
        "2",
        "--draws",
        "10",
        "--out",
        tmp_path / "map",
    )
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["cells"]) == 2 and set(data["files"]) == {"json", "png", "html"}
    for name in ("hparam-map.json", "hparam-map.png", "report.html"):
        assert (tmp_path / "map" / name).is_file()
    assert 'id="hparam-map"' in (tmp_path / "map" / "report.html").read_text()
    assert cli(*args).code == 0  # the same settings reopen the directory (the run resumes)
    other = cli(*args[:-2], "--seeds", "3", "--out", tmp_path / "map")
    assert other.code == 2 and "--force" in other.err and len(other.err.strip().splitlines()) == 1
