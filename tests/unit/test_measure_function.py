"""Function-space spread against hand computations, a per-pair loop, and invariances."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor.errors import UserError
from attractor.measure import function as fn
from attractor.measure.trajectory import pairwise_weight_distance, spread_over_training
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config

LN2 = math.log(2.0)


def random_logits(seed: int, m: int, b: int, c: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(
        m, b, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def loop_reference(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each pair on its own, straight from the definitions."""
    m = probs.shape[0]
    out = {k: torch.zeros(m, m, dtype=torch.float64) for k in ("js", "symmetric_kl")}
    for i in range(m):
        for j in range(m):
            p, q = probs[i], probs[j]
            mix = (p + q) / 2
            kl_pm = (p * (p / mix).log()).sum(-1)
            kl_qm = (q * (q / mix).log()).sum(-1)
            out["js"][i, j] = (0.5 * (kl_pm + kl_qm)).mean()
            out["symmetric_kl"][i, j] = ((p - q) * (p.log() - q.log())).sum(-1).mean()
    return out


# ---- hand computations -------------------------------------------------------------------


def test_two_member_hand_case() -> None:
    p, q = [0.5, 0.5], [0.9, 0.1]
    probs = torch.tensor([[p], [q]], dtype=torch.float64)
    h = lambda v: -sum(x * math.log(x) for x in v)  # noqa: E731
    mix = [0.7, 0.3]
    js = h(mix) - (h(p) + h(q)) / 2
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert fn.pairwise_js(probs)[0, 1].item() == pytest.approx(js, abs=1e-14)
    assert fn.pairwise_symmetric_kl(probs)[1, 0].item() == pytest.approx(kl_pq + kl_qp, abs=1e-14)
    kl_p_mix = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    kl_q_mix = 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    assert fn.kl_to_mean(probs).tolist() == pytest.approx([kl_p_mix, kl_q_mix], abs=1e-14)
    assert fn.mutual_information(probs).item() == pytest.approx(
        js, abs=1e-14
    )  # two members: MI = JS


def test_disjoint_predictions_reach_ln2() -> None:
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    assert fn.pairwise_js(probs)[0, 1].item() == pytest.approx(LN2, abs=1e-15)
    assert math.isfinite(
        fn.pairwise_symmetric_kl(probs)[0, 1].item()
    )  # zeros read as the tiniest float


def test_disagreement_hand_case() -> None:
    predictions = torch.tensor([[0, 1, 2, 0], [0, 1, 1, 1], [0, 1, 2, 0]])
    expected = torch.tensor([[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]], dtype=torch.float64)
    assert torch.equal(fn.pairwise_disagreement(predictions), expected)
    assert torch.equal(fn.pairwise_disagreement(predictions, per_example=True).mean(-1), expected)


def test_loss_accuracy_hand_case() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 0.0]]])  # probs [1/4, 3/4] and argmax 0
    targets = torch.tensor([1, 1])
    loss, correct = fn.per_example_loss_accuracy(logits, targets)
    assert loss[0, 0].item() == pytest.approx(math.log(4 / 3), abs=1e-7)
    assert loss[0, 1].item() == pytest.approx(math.log(1 + math.exp(2.0)), abs=1e-7)
    assert correct.tolist() == [[1.0, 0.0]]
    mean_loss, accuracy = fn.per_member_loss_accuracy(logits, targets)
    assert accuracy.tolist() == [0.5] and mean_loss.shape == (1,)


def test_ensemble_beats_its_members_when_their_mistakes_differ() -> None:
    # Three members, three examples of class 0; each member is wrong on a different one.
    right, wrong = [2.0, 0.0], [0.0, 1.0]
    logits = torch.tensor([[right, right, wrong], [right, wrong, right], [wrong, right, right]])
    result = fn.ensemble_accuracy(logits, torch.zeros(3, dtype=torch.long))
    assert result["mean_member_accuracy"] == pytest.approx(2 / 3)
    assert result["ensemble_accuracy"] == 1.0
    assert result["ensemble_loss"] < result["mean_member_loss"]


# ---- vectorized against the loop, invariances -------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    m=st.integers(1, 6),
    b=st.integers(1, 7),
    c=st.integers(2, 5),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_pair_metrics_match_loop_and_definitions(
    seed: int, m: int, b: int, c: int, scale: float
) -> None:
    logits = random_logits(seed, m, b, c, scale)
    probs = fn.probabilities(logits)
    reference = loop_reference(probs)
    for name, per_example in (
        ("js", False),
        ("js", True),
        ("symmetric_kl", False),
        ("symmetric_kl", True),
    ):
        metric = getattr(fn, f"pairwise_{name}")(probs, per_example)
        got = metric.mean(-1) if per_example else metric
        assert torch.allclose(got, reference[name], atol=1e-12)
    js = fn.pairwise_js(probs)
    assert torch.equal(js, js.T) and (js >= 0).all() and (js <= LN2 + 1e-12).all()
    assert torch.equal(js.diagonal(), torch.zeros(m, dtype=torch.float64))
    # MI = entropy of the mean - mean entropy = mean over members of KL to the mean.
    assert fn.mutual_information(probs).item() == pytest.approx(
        fn.kl_to_mean(probs).mean().item(), abs=1e-12
    )
    assert torch.allclose(
        fn.mutual_information(probs, True), fn.kl_to_mean(probs, True).mean(0), atol=1e-12
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(2, 6))
def test_member_order_permutes_the_matrices(seed: int, m: int) -> None:
    logits = random_logits(seed, m, 5, 3, 2.0)
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    for name, matrix in fn.pairwise_metrics(logits).items():
        permuted = fn.pairwise_metrics(logits[perm])[name]
        assert torch.allclose(permuted, matrix[perm][:, perm], atol=1e-12), name


def test_chunked_js_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    probs = fn.probabilities(random_logits(3, 9, 11, 4, 2.0))
    whole = fn.pairwise_js(probs, per_example=True)
    monkeypatch.setattr(fn, "CHUNK_BYTES", 2 * 9 * 11 * 4 * 8)  # two rows per chunk, five chunks
    assert torch.allclose(fn.pairwise_js(probs, per_example=True), whole, atol=1e-15)


def test_identical_members_have_no_spread() -> None:
    logits = random_logits(0, 1, 20, 4, 3.0).expand(3, -1, -1)
    for matrix in fn.pairwise_metrics(logits).values():
        assert torch.equal(matrix, torch.zeros(3, 3, dtype=torch.float64))
    assert fn.mutual_information(fn.probabilities(logits)).item() == pytest.approx(0.0, abs=1e-15)


# ---- spread over training on real (tiny) runs --------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ensemble]:
    root: Path = tmp_path_factory.mktemp("spread")
    varied = train(tiny_config(plan={"members": 3}), root / "varied")
    same = train(tiny_config(plan={"members": 2, "vary": []}), root / "same")
    return {"varied": varied, "same": same}


def test_spread_over_training_on_varied_seeds(runs: dict[str, Ensemble]) -> None:
    ens = runs["varied"]
    table = spread_over_training(ens)
    assert table["step"].tolist() == ens.steps() and table["step"].iloc[0] == 0
    assert list(table.columns) == [
        "step",
        "members",
        "js",
        "disagreement",
        "weight_distance",
        "loss",
        "accuracy",
    ]
    assert table["weight_distance"].iloc[0] > 0  # different init seeds
    assert 0 < table["disagreement"].iloc[-1] < 1
    assert ((table["js"] >= 0) & (table["js"] <= LN2)).all()
    # The accuracy column is the members' own accuracy, as the run's metrics recorded it.
    metrics = ens.metrics
    last = metrics[metrics["step"] == ens.steps()[-1]]
    assert table["accuracy"].iloc[-1] == pytest.approx(last["test_accuracy"].mean(), abs=1e-6)
    without_targets = spread_over_training(ens, x=ens.task.x_test[:50], members=ens.members[:2])
    assert "accuracy" not in without_targets and len(without_targets) == len(table)


def test_identical_members_do_not_spread(runs: dict[str, Ensemble]) -> None:
    table = spread_over_training(runs["same"])
    assert (table[["js", "disagreement", "weight_distance"]] == 0).all().all()
    ens = runs["varied"]
    with pytest.raises(UserError, match="at least 2"):
        spread_over_training(ens, members=[0])


def test_weight_distance_hand_case() -> None:
    params = {"w": torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]]), "b": torch.zeros(3, 1)}
    expected = torch.tensor([[0, 3, 5], [3, 0, 4], [5, 4, 0]], dtype=torch.float64)
    assert torch.allclose(pairwise_weight_distance(params), expected)
