"""Model-level structural stability: perturbations checked by hand, curves on a tiny
trained ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attractor.errors import UserError
from attractor.measure.perturbations import KINDS, dropconnect, dropout, quantize, weight_noise
from attractor.measure.structural import perturbation_curves
from attractor.report import render_directory
from attractor.report.plots import series_panels
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config

LEVELS = {
    "dropout": [0.0, 0.1, 0.3, 0.6],
    "dropconnect": [0.0, 0.1, 0.3, 0.6],
    "weight_noise": [0.0, 0.1, 0.5, 2.0],
    "quantize": [16, 4, 2],
}


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    out: Path = tmp_path_factory.mktemp("structural") / "run"
    return train(tiny_config(trainer={"steps": 60}, plan={"members": 3}), out)


def _stack(w: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    return {"0.weight": w.expand(k, *w.shape), "0.bias": torch.ones(k, w.shape[0])}


def test_dropconnect_keeps_the_mean_and_leaves_biases() -> None:
    w = torch.randn(6, 5, dtype=torch.float64)
    out = dropconnect(_stack(w, 20000), 0.3, torch.Generator().manual_seed(0), set())
    assert torch.equal(out["0.bias"], torch.ones(20000, 6))
    zero = (out["0.weight"] == 0).double().mean()
    assert abs(float(zero) - 0.3) < 0.01
    kept = out["0.weight"][out["0.weight"] != 0].view(-1)
    assert torch.allclose(kept.abs().unique().sort().values, (w.abs() / 0.7).unique().sort().values)
    # Rescaling by 1/(1-p): the mean of many masked copies is the original
    # (sd of the mean ~ 0.005 |w|).
    assert torch.allclose(out["0.weight"].mean(0), w, atol=0.03 * float(w.abs().max()))


def test_dropout_masks_whole_input_units_of_later_layers() -> None:
    w = torch.randn(4, 7, dtype=torch.float64)
    out = dropout(
        {"1.weight": w.expand(500, 4, 7)}, 0.5, torch.Generator().manual_seed(1), {"1.weight"}
    )["1.weight"]
    column_zero = (out == 0).all(1)  # [K, 7]: unit dropped in copy k
    column_kept = torch.isclose(out, 2 * w).all(1)
    assert bool((column_zero | column_kept).all())
    assert abs(float(column_zero.double().mean()) - 0.5) < 0.05


def test_weight_noise_scale_is_relative_to_the_tensor_rms() -> None:
    w = 3.0 * torch.randn(40, 50, dtype=torch.float64)
    out = weight_noise(
        {"0.weight": w.expand(200, 40, 50)}, 0.1, torch.Generator().manual_seed(2), set()
    )["0.weight"]
    rms = float(w.pow(2).mean().sqrt())
    assert float((out - w).std()) == pytest.approx(0.1 * rms, rel=0.02)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_quantize_gives_at_most_two_to_the_bits_values(bits: int) -> None:
    w = torch.randn(2, 30, 20, dtype=torch.float64)
    out = quantize({"0.weight": w}, bits, torch.Generator(), set())["0.weight"]
    for k in range(2):
        assert out[k].unique().numel() <= 2**bits
    assert float((out - w).abs().max()) <= float(w.abs().max()) * (
        1.0 if bits == 1 else 0.5 / (2 ** (bits - 1) - 1) + 1e-12
    )


def test_level_zero_is_the_identity(ens: Ensemble) -> None:
    for kind in KINDS:
        levels = [16] if kind == "quantize" else [0.0]
        table = perturbation_curves(ens, kind, levels, samples=2).table
        assert (table["acc_drop_mean"].abs() < 1e-12).all(), kind
        # Same batched call for reference and copy: exactly zero, except 16-bit rounding.
        assert (table["kl_mean"] <= (1e-8 if kind == "quantize" else 0.0)).all(), kind


@pytest.mark.parametrize("kind", list(KINDS))
def test_kl_and_drop_grow_with_the_level(ens: Ensemble, kind: str) -> None:
    res = perturbation_curves(ens, kind, LEVELS[kind], samples=6)
    # Quantization: fewer bits is the stronger perturbation.
    curve = res.ensemble.sort_values("level", ascending=kind != "quantize")
    assert np.all(np.diff(curve["kl"]) > 0)
    assert curve["acc_drop"].iloc[-1] > curve["acc_drop"].iloc[0] + 0.02
    assert (res.table["kl_low"] <= res.table["kl_mean"] + 1e-12).all() and (
        res.table["kl_mean"] <= res.table["kl_high"] + 1e-12
    ).all()
    assert set(res.auc) == set(ens.members) and all(v >= 0 for v in res.auc.values())


def test_auc_is_the_trapezoid_of_the_member_curve(ens: Ensemble) -> None:
    res = perturbation_curves(ens, "weight_noise", [0.5, 0.0, 0.2], samples=3)
    assert res.levels == [0.0, 0.2, 0.5]
    member = ens.members[0]
    kl = res.table.loc[res.table["member"] == member].sort_values("level")["kl_mean"].to_numpy()
    assert res.auc[member] == pytest.approx(0.2 * (kl[0] + kl[1]) / 2 + 0.3 * (kl[1] + kl[2]) / 2)
    assert res.auc_ensemble["value"] == pytest.approx(np.mean(list(res.auc.values())))
    row = res.auc_table.set_index("member").loc[member]
    assert (
        row["auc"] == pytest.approx(res.auc[member])
        and row["auc_low"] <= row["auc"] <= row["auc_high"]
    )


def test_same_seed_same_result_and_members_independent(ens: Ensemble) -> None:
    a = perturbation_curves(ens, "dropconnect", [0.1, 0.3], samples=3, seed=5)
    b = perturbation_curves(ens, "dropconnect", [0.1, 0.3], samples=3, seed=5)
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.ensemble, b.ensemble)
    one = perturbation_curves(
        ens, "dropconnect", [0.3], samples=3, seed=5, members=[ens.members[1]]
    )
    row = a.table[(a.table["member"] == ens.members[1]) & (a.table["level"] == 0.3)]
    assert one.table["kl_mean"].iloc[0] == pytest.approx(float(row["kl_mean"].iloc[0]), rel=1e-12)
    c = perturbation_curves(ens, "dropconnect", [0.1, 0.3], samples=3, seed=6)
    assert not np.allclose(a.table["kl_mean"], c.table["kl_mean"])


def test_result_serializes_and_plots(ens: Ensemble) -> None:
    res = perturbation_curves(ens, "quantize", [8, 3], samples=8)
    assert res.samples == 1  # deterministic: one sample, zero-width interval over samples
    data = res.to_dict()
    assert (
        data["kind"] == "quantize"
        and len(data["ensemble"]) == 2
        and len(data["members"]) == 2 * len(ens.members)
    )
    uri = series_panels(res.for_report(), ["kl", "acc_drop"], "quantize", x="level", xlabel="bits")
    assert uri.startswith("data:image/png;base64,")


def test_report_has_a_structural_section(ens: Ensemble, tmp_path: Path) -> None:
    import shutil

    assert "Structural stability" not in render_directory(ens.store.root).read_text()
    shutil.copytree(ens.store.root, tmp_path / "run")
    store = Ensemble.load(tmp_path / "run").store
    for kind, levels in (("dropout", [0, 0.2]), ("quantize", [8, 2])):
        paths = store.write(perturbation_curves(ens, kind, levels, samples=2))
        assert (
            Path(paths["json"]).name == f"structural-{kind}.json"
            and Path(paths["parquet"]).exists()
        )
    page = render_directory(tmp_path / "run").read_text()
    assert 'id="structural"' in page and page.count("perturbation curves") == 2


@pytest.mark.parametrize(
    ("kind", "levels", "samples", "message"),
    [
        ("gaussian", [0.1], 8, "dropout, dropconnect, weight_noise, quantize"),
        ("dropout", [], 8, "at least one level"),
        ("dropout", [1.0], 8, "[0, 1)"),
        ("dropconnect", [-0.1], 8, "[0, 1)"),
        ("weight_noise", [-1.0], 8, ">= 0"),
        ("quantize", [0], 8, "bits >= 1"),
        ("quantize", [2.5], 8, "bits >= 1"),
        ("weight_noise", [0.1], 1, "at least 2"),
    ],
)
def test_bad_input_is_one_user_error(
    ens: Ensemble, kind: str, levels: list[float], samples: int, message: str
) -> None:
    with pytest.raises(UserError, match=None) as info:
        perturbation_curves(ens, kind, levels, samples=samples)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["weight_noise", "dropout"])
def test_the_perturbed_copies_run_on_the_ensembles_device(ens: Ensemble, kind: str) -> None:
    """``structural --device``: the forward passes run there (meta stands in for a GPU: a
    CPU tensor mixed in would fail with another error, and a CPU-only run would finish).
    """
    placed = Ensemble.load(ens.store.root)
    placed.device = torch.device("meta")
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta"):
        perturbation_curves(placed, kind, [0.1], samples=2, draws=50)
