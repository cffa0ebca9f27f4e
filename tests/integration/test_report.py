"""The HTML report: self-contained (interactive and --static), every PNG valid, sections iff
their data, the cloud, a real browser (tests/integration/test_report_browser.py drives the
interactive page).

One tiny run is trained per module; its results are synthetic (random symmetric matrices,
made-up curves, tests/report_samples.py) because the report only renders what it is given.
Each page is rendered from a copy of the run holding those results.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.decomposition import PCA

from attractor.report import cloud_coordinates, probe_set, render_directory
from attractor.report.interactive import plotly_js
from attractor.report.page import fmt, table
from attractor.report.plots import heatmap
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests import report_samples
from tests.conftest import tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALWAYS = ("run", "plan", "final-metrics", "cloud")
OPTIONAL = ("summary", "members", "basins", "pairwise", "cka", "trajectory", "lmc", "instability")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    return train(tiny_config(), tmp_path_factory.mktemp("run") / "run")


def page_with(ens: Ensemble, where: Path, results: list, static: bool = False) -> Path:
    """Copy the run to ``where``, store ``results`` there, and render its page."""
    shutil.copytree(ens.store.root, where)
    copy = Ensemble.load(where)
    for result in results:
        copy.store.write(result)
    return render_directory(where, static=static)


def synthetic_results(ens: Ensemble) -> list:
    """Every section's data, shaped as the measurement modules store it."""
    return [report_samples.measures(ens.members, ens.steps()), report_samples.instability()]


@pytest.fixture(scope="module")
def full_report(ens: Ensemble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return page_with(ens, tmp_path_factory.mktemp("report") / "run", synthetic_results(ens))


@pytest.fixture(scope="module")
def static_report(ens: Ensemble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("static") / "run"
    return page_with(ens, where, synthetic_results(ens), static=True)


def section_ids(page: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', page))


def test_report_is_self_contained_with_valid_pngs(static_report: Path) -> None:
    """The --static page: PNGs only, no scripts, no links."""
    full_report = static_report
    page = full_report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for external in ("http://", "https://", 'src="file', "<script", "<link"):
        assert external not in page
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == page.count("<img") > 0
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    # The write is atomic: no temporary file is left beside the report.
    assert full_report.name == "report.html"
    assert not [p.name for p in full_report.parent.iterdir() if p.name.endswith(".tmp")]


def test_interactive_page_inlines_plotly_once_and_links_nothing(
    full_report: Path, static_report: Path
) -> None:
    """The default page: plotly.js inline exactly once, every figure drawn by it or a PNG, no
    script or style fetched from anywhere (plotly.js itself mentions URLs, so the browser
    test is what proves nothing is fetched: it loads the page with the network cut).
    """
    page = full_report.read_text(encoding="utf-8")
    assert page.count(plotly_js()[:300]) == 1
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=\"(?!data:)", page)
    assert "<link" not in page and "cdn.plot.ly" not in page.replace(plotly_js(), "")
    divs = re.findall(r'<div id="(figure-\d+)" class="plotly-graph-div"', page)
    assert len(divs) == len(set(divs)) == page.count("Plotly.newPlot(") >= 4
    # The cloud moves (frames, a slider) and its points name members; heat maps are plotly's.
    cloud = re.search(r'<section id="cloud">.*?</section>', page, re.S).group(0)
    assert (
        "Plotly.addFrames" in cloud and '"sliders"' in cloud and "member %{customdata[0]}" in cloud
    )
    pairwise = re.search(r'<section id="pairwise">.*?</section>', page, re.S).group(0)
    assert '"type":"heatmap"' in pairwise and "<img" not in pairwise
    # The same sections either way, and the static page is the smaller one by far.
    static = static_report.read_text(encoding="utf-8")
    assert section_ids(page) == section_ids(static)
    assert len(static) < len(page) - 3_000_000


def test_every_section_with_data_is_shown(full_report: Path) -> None:
    page = full_report.read_text(encoding="utf-8")
    assert section_ids(page) == set(ALWAYS) | set(OPTIONAL)
    assert (
        "stable from spawn step 20 (threshold 0.02). Upper 95 % bound below it from spawn step 100."
        in page
    )
    assert "2 basins among 4 members (silhouette 0.410" in page


def test_sections_without_data_are_absent(ens: Ensemble, tmp_path: Path) -> None:
    kept = report_samples.summary_and_lmc(ens.members, ens.steps())
    page = page_with(ens, tmp_path / "run", [kept]).read_text(encoding="utf-8")
    assert section_ids(page) == set(ALWAYS) | {"summary", "lmc"}
    for heading in (
        "Basins",
        "Pairwise distances",
        "Instability analysis",
        "Spread vs training step",
    ):
        assert f"<h2>{heading}</h2>" not in page


def test_plan_shows_only_varying_factors(full_report: Path) -> None:
    plan = re.search(
        r'<section id="plan">.*?</section>', full_report.read_text(encoding="utf-8"), re.S
    ).group(0)
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", plan)
    assert headers == ["member", "init_seed", "data_seed", "status"]


def test_cloud_has_one_point_per_member_and_snapshot(ens: Ensemble) -> None:
    cloud = cloud_coordinates(ens)
    points = cloud.points
    steps = ens.steps()
    assert len(points) == len(ens.members) * len(steps)
    assert set(map(tuple, points[["member", "step"]].to_numpy())) == {
        (m, s) for m in ens.members for s in steps
    }
    assert list(cloud.mean["step"]) == steps
    ratio = cloud.explained_variance_ratio
    assert ratio.shape == (2,) and (ratio >= 0).all() and ratio.sum() <= 1 + 1e-9
    # Oracle: rebuild the probabilities independently; the plane keeps exactly the share
    # of variance it reports, and the mean point is the mean of the members' points.
    probe = probe_set(ens.task)
    features = np.concatenate(
        [
            ens.predict(probe, step=s).double().softmax(-1).reshape(len(ens.members), -1).numpy()
            for s in steps
        ]
    )
    assert np.isclose(
        points[["pc1", "pc2"]].to_numpy().var(axis=0).sum(),
        ratio.sum() * features.var(axis=0).sum(),
    )
    assert np.allclose(PCA(2).fit(features).explained_variance_ratio_, ratio)
    centre = points.groupby("snapshot")[["pc1", "pc2"]].mean().to_numpy()
    assert np.allclose(cloud.mean[["pc1", "pc2"]].to_numpy(), centre)
    per_step = features.reshape(len(steps), len(ens.members), -1)
    radius = np.linalg.norm(per_step - per_step.mean(1, keepdims=True), axis=-1).mean(1)
    assert np.allclose(cloud.mean["radius"], radius)


def test_probe_is_a_fixed_subset_of_the_test_split(ens: Ensemble) -> None:
    a, b = probe_set(ens.task), probe_set(ens.task)
    assert a.shape[0] == 64 and (a == b).all()
    rows = {tuple(r) for r in ens.task.x_test.tolist()}
    assert all(tuple(r) in rows for r in a.tolist())


def test_cells_are_rounded_aligned_and_escaped() -> None:
    assert [
        fmt(v) for v in (3, np.int64(7), 0.708333, 1.741871, 12.0, None, float("nan"), True)
    ] == ["3", "7", "0.7083", "1.742", "12", "–", "–", "yes"]
    html = table(pd.DataFrame({"name": ["<script>alert(1)</script>"], "value": [0.5]}))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<td class="num">0.5</td>' in html and '<td class="">' in html


def test_heatmap_refuses_a_matrix_that_does_not_match_its_labels() -> None:
    assert base64.b64decode(heatmap(np.eye(3), [0, 1, 2], "ok").split(",", 1)[1]).startswith(
        PNG_MAGIC
    )
    with pytest.raises(ValueError, match="shape"):
        heatmap(np.eye(3), [0, 1], "bad")


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary is not None
    start = time.monotonic()
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    # A few seconds each; far longer means chromium is stuck on something (network, GPU).
    assert time.monotonic() - start < 60
    return done


@pytest.mark.browser
@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (`make test` installs it)",
)
def test_report_renders_in_a_real_browser(static_report: Path, tmp_path: Path) -> None:
    """The --static page in chromium: painted, and every PNG decodes."""
    full_report = static_report
    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        full_report.as_uri(),
        user_data=tmp_path / "profile",
    )
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.05  # not a blank page
    assert (np.abs(pixels - pixels.reshape(-1, 3).max(0)).sum(-1) > 0.1).mean() > 0.02

    # Count images that failed to decode after load; a deliberately broken control image
    # proves that a broken one would be counted.
    probe = r"""<img id="control" src="data:image/png;base64,AAAA"><script>
    window.addEventListener("load", () => {
      const images = [...document.images].filter((i) => i.id !== "control");
      document.body.dataset.images = images.length;
      document.body.dataset.broken = images.filter((i) => !i.complete || i.naturalWidth ===
      0).length;
      document.body.dataset.control = document.getElementById("control").naturalWidth;
    });</script></body>"""
    page = full_report.read_text(encoding="utf-8")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", probe), encoding="utf-8")
    dom = chromium(
        "--virtual-time-budget=10000",
        "--dump-dom",
        checked.as_uri(),
        user_data=tmp_path / "profile",
    ).stdout
    body = dict(re.findall(r'data-(images|broken|control)="(\d+)"', dom))
    assert body == {"images": str(page.count("<img")), "broken": "0", "control": "0"}


def test_diverged_members_and_mixed_batch_sizes(tmp_path: Path) -> None:
    """Members with other batch sizes have other snapshot steps; diverged ones are listed but
    not drawn.

    lr = 1e6 makes the loss overflow; whether it reaches inf (diverged) or stays finite
    depends on the batch size, so only "at least one" is asserted.
    """
    config = tiny_config(
        trainer={"steps": None, "epochs": 0.1, "lr": 0.05},
        plan={
            "design": "factorial",
            "vary": ["batch_size", "lr"],
            "levels": {"batch_size": [16, 64], "lr": [0.05, 1e6]},
        },
    )
    ens = train(config, tmp_path / "run")
    diverged = int((ens.plan["status"] == "diverged").sum())
    assert diverged >= 1 and len(ens.members) == len(ens) - diverged
    cloud = cloud_coordinates(ens)
    expected = {(m, s) for m in ens.members for s in ens.steps(m)}
    assert set(map(tuple, cloud.points[["member", "step"]].to_numpy())) == expected and len(
        cloud.points
    ) == len(expected)
    assert not cloud.steps_agree
    page = render_directory(ens.store.root).read_text(encoding="utf-8")
    assert f"{len(ens.members)} done · {diverged} diverged" in page and "diverged_step" in page
    assert "at snapshot 0" in page
