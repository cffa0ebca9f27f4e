"""The learned-evaluator measures against hand computations and planted answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attractor.stack.learned import measures as M


def test_generated_class_js_by_hand() -> None:
    """The spread row of generated classes: mean pairwise JS of the class distributions."""
    classes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]])  # [1, 0], [0, 1], [.5, .5]
    true = torch.zeros(3, 4, dtype=torch.float64)
    table, _ = M.outcome_spread(true, classes, draws=100)
    js = table.set_index("measure").loc["generated classes (mean pairwise JS)", "value"]
    disjoint = math.log(2)
    # JS([1, 0], [.5, .5]) = (KL(p||m) + KL(q||m)) / 2 with m = [.75, .25]
    half = (math.log(1 / 0.75) + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2
    assert js == pytest.approx((disjoint + 2 * half) / 3)


def test_class_distributions_and_basins() -> None:
    classes = torch.tensor([[3, 3, 1, 3], [3, 1, 1, 1], [3, 3, 3, 0]])
    dists = M.class_distributions(classes)
    assert (
        dists[0, 3] == 0.75
        and dists[1, 1] == 0.75
        and torch.allclose(dists.sum(1), torch.ones(3, dtype=torch.float64))
    )
    true = torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table, basins = M.outcome_spread(true, classes, draws=100)
    assert basins == {"basin": [3, 1, 3], "majority": 3, "share": pytest.approx(2 / 3), "count": 2}
    mean = table.set_index("measure").loc["true preference (mean)"]
    assert mean["value"] == pytest.approx(float(true.mean())) and mean["low"] <= mean["high"]


def test_parting_rounds_by_hand() -> None:
    proxy = torch.tensor([[0.0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 0.5, 2]])
    true = torch.tensor([[0.5, 0.6, 0.5, 0.4], [0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.4, 0.5]])
    found = M.parting_rounds(proxy, true, tolerance=0.02)
    # member 0 parts at round 2; member 1 never; member 2's truth falls when the proxy falls too
    assert found[0] == 2 and torch.isnan(found[1:]).all()
    assert torch.isnan(M.parting_rounds(proxy[:1], true[:1], tolerance=0.2)).all()  # within noise
    summary = M.parting(proxy, true, 0.02, draws=100)
    assert summary["rounds"] == [2, None, None] and summary["share"] == pytest.approx(1 / 3)


def test_sources_find_the_planted_factor() -> None:
    design = M.design_frame(6, 2, 2)
    assert len(design) == 24 and design["resample"].tolist()[:4] == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    effect = rng.normal(0, 1.0, 6)[design["resample"]] + rng.normal(0, 0.05, 24)
    table = M.sources(design, torch.tensor(effect), draws=200).set_index("effect")
    assert table.loc["resample", "share"] > 0.9
    assert table.loc["evaluator_seed", "share"] < 0.05 and table.loc["trainer_seed", "share"] < 0.05
    one_level = M.sources(M.design_frame(4, 1, 2), torch.tensor(rng.normal(size=8)), draws=50)
    assert "evaluator_seed" not in set(
        one_level["effect"]
    )  # a factor with one level is not crossed


def test_rounds_means_with_intervals() -> None:
    proxy = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    true = torch.tensor([[0.2, 0.4], [0.2, 0.6]])
    frame = M.rounds(proxy, true, draws=100)
    assert frame["proxy"].tolist() == [0.0, 2.0] and frame["true"].tolist() == pytest.approx(
        [0.2, 0.5]
    )
    assert (frame["true_low"] <= frame["true"]).all() and (
        frame["true"] <= frame["true_high"]
    ).all()


def test_pairwise_image_distance_by_hand() -> None:
    images = torch.zeros(3, 2, 64, dtype=torch.float64)
    images[1] += 0.5  # member 1 is 0.5 * 8 = 4 away from member 0 on both noises
    images[2, 1] -= 1.0  # member 2 equals member 0 on noise 0, is 8 away on noise 1
    true = torch.zeros(3, 2, dtype=torch.float64)
    classes = torch.zeros(3, 2, dtype=torch.int64)
    flat = images.permute(1, 0, 2)
    pairs = torch.cdist(flat, flat).permute(1, 2, 0)
    table, _ = M.outcome_spread(true, classes, 100, 0, pairs, ("image distance", "pixels"))
    row = table.set_index("measure").loc["image distance"]
    # pairs (0,1): 4, 4; (0,2): 0, 8; (1,2): 4, sqrt(64 * 1.5^2) = 12 -> mean of the 6 = 5.33
    assert row["value"] == pytest.approx((4 + 4 + 0 + 8 + 4 + 12) / 6)
