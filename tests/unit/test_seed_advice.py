"""Seed advice against planted answers: basins readable only once the members split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attractor.errors import UserError
from attractor.sensitivity.seed_advice import (
    predicted_basins,
    prediction_curve,
    readable_from,
    seed_advice,
)


def _planted(split_at: int, steps: int = 6, m: int = 12) -> tuple[dict, np.ndarray]:
    """Members 0..7 head for class 0, 8..11 for class 1; before ``split_at`` every member
    predicts noise around the uniform, from then on its own basin's class (plus noise).
    """
    generator = torch.Generator().manual_seed(0)
    labels = np.array([0] * 8 + [1] * 4)
    snapshots = {}
    for step in range(steps):
        noise = 0.05 * torch.randn(m, 20, 2, generator=generator, dtype=torch.float64)
        target = torch.zeros(m, 20, 2, dtype=torch.float64)
        if step >= split_at:
            target[torch.arange(m), :, torch.tensor(labels)] = 1.0
        else:
            target += 0.5
        snapshots[step] = (target + noise).softmax(-1)
    return snapshots, labels


def test_basins_are_readable_from_the_split_on() -> None:
    snapshots, labels = _planted(split_at=3)
    curve = prediction_curve(snapshots, labels, draws=200)
    assert curve["chance"].iloc[0] == pytest.approx(8 / 12)
    late = curve[curve["step"] >= 3]
    assert (late["accuracy"] == 1.0).all()
    assert curve[curve["step"] < 3]["accuracy"].max() < 0.95  # noise: no better than a coin
    assert readable_from(curve) == 3


def test_a_singleton_basin_cannot_be_foreseen() -> None:
    snapshots, labels = _planted(split_at=0)
    labels = labels.copy()
    labels[11] = 2  # alone in its basin: no other member to form its centroid
    found = predicted_basins(snapshots[5], labels)
    assert found[11] == 1 and (found[:8] == 0).all()  # never its own basin 2


def test_never_readable() -> None:
    snapshots, labels = _planted(split_at=99)
    assert readable_from(prediction_curve(snapshots, labels, draws=100)) is None


def test_a_trained_run_and_its_refusals(tmp_path) -> None:
    from attractor.config import parse_config
    from attractor.runs.ensemble import Ensemble
    from attractor.runs.launch import train
    from tests.conftest import tiny_mapping

    run = train(parse_config(tiny_mapping(plan={"members": 4})), tmp_path / "run")
    advice = seed_advice(Ensemble.load(tmp_path / "run"), draws=100)
    assert len(advice.labels) == 4 and list(advice.table["step"]) == run.steps(0)
    assert 0 <= advice.share <= 1 and advice.table["accuracy"].between(0, 1).all()
    assert advice.to_json()["basins"] == advice.basins
    two = train(parse_config(tiny_mapping(plan={"members": 2})), tmp_path / "two")
    with pytest.raises(UserError, match="at least 3"):
        seed_advice(two)


def test_the_command_writes_the_result_and_the_report_shows_it(cli, tmp_path) -> None:
    import json

    from attractor.config import parse_config
    from attractor.runs.launch import train
    from tests.conftest import assert_user_error, tiny_mapping

    train(parse_config(tiny_mapping(plan={"members": 4})), tmp_path / "run")
    shown = cli("seed-advice", tmp_path / "run", "--json", "--draws", "100")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert (tmp_path / "run" / "seed-advice.json").is_file() and data["basins"] >= 1
    assert cli("report", tmp_path / "run").code == 0
    assert "Seed advice" in (tmp_path / "run" / "report.html").read_text()
    assert_user_error(cli("seed-advice", tmp_path / "nowhere"), "nowhere")
