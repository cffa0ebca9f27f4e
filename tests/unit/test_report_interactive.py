"""The interactive figures without a browser: the moving cloud's frames and areas, the
static/interactive switch, and the page's one copy of plotly.js.

What the figures do when drawn (slider, hover, selection) is tested in a real browser:
tests/integration/test_report_browser.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attractor.report.cloud import Cloud
from attractor.report.cloud_interactive import cloud_moving, hull, plan_factors
from attractor.report.interactive import Interactive, figure_mode, is_static, plotly_js
from attractor.report.page import figure, table, write_page
from attractor.report.plots import heatmap


def _cloud(members: int = 5, snapshots: int = 3) -> Cloud:
    rng = np.random.default_rng(0)
    rows = [
        (m, s, 10 * s, float(x), float(y))
        for s in range(snapshots)
        for m in range(members)
        for x, y in [rng.normal(size=2) / (s + 1)]
    ]
    points = pd.DataFrame(rows, columns=["member", "snapshot", "step", "pc1", "pc2"])
    mean = points.groupby("snapshot", as_index=False).agg(
        step=("step", "median"), pc1=("pc1", "mean"), pc2=("pc2", "mean")
    )
    mean["radius"] = 1.0
    return Cloud(points=points, mean=mean, explained_variance_ratio=np.array([0.6, 0.3]))


def _values(data: list | dict) -> np.ndarray:
    """Numbers from a figure's JSON: a list, or plotly's typed array (base64, plotly >= 6)."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data, dtype=float)


def _plan(members: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member": range(members),
            "init_seed": [100 + m for m in range(members)],
            "lr": [0.1] * members,  # the same for all: not a factor worth naming
            "status": ["done"] * members,
        }
    )


def test_hull_is_the_closed_convex_outline_or_a_segment() -> None:
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.7]])
    outline = hull(square)
    assert len(outline) == 5 and (outline[0] == outline[-1]).all()
    assert {tuple(p) for p in outline} == {(0, 0), (1, 0), (1, 1), (0, 1)}
    line = hull(np.array([[0, 0], [2, 2], [1, 1], [1, 1]]))
    assert {tuple(p) for p in line} == {(0, 0), (2, 2)} and len(line) == 2
    assert hull(np.array([[3.0, 4.0], [3.0, 4.0]])).shape == (0, 2)
    assert hull(np.zeros((0, 2))).shape == (0, 2)


def test_moving_cloud_has_a_frame_per_snapshot_and_names_members() -> None:
    cloud, basins = _cloud(), {0: 0, 1: 0, 2: 1, 3: 1, 4: 1}
    with figure_mode(static=False):
        fragment = cloud_moving(cloud, basins, _plan())
    assert isinstance(fragment, Interactive)
    frames = json.loads(re.search(r"Plotly\.addFrames\('[^']+', (\[.*?\])\);", fragment).group(1))
    assert [f["name"] for f in frames] == ["0", "1", "2"]
    points = cloud.points.set_index(["snapshot", "member"])
    for frame in frames:
        # Per basin: its area, then its members' points in member order; then the mean.
        areas, dots = frame["data"][0:4:2], frame["data"][1:4:2]
        assert [a["fill"] for a in areas] == ["toself", "toself"]
        assert [[c[0] for c in d["customdata"]] for d in dots] == [[0, 1], [2, 3, 4]]
        assert [c[1:] for c in dots[1]["customdata"]] == [[1, 102], [1, 103], [1, 104]]
        snapshot = int(frame["name"])
        expected = [points.loc[(snapshot, m), "pc1"] for m in (2, 3, 4)]
        assert np.allclose(_values(dots[1]["x"]), expected)
    assert "init_seed = %{customdata[2]}" in fragment and "lr =" not in fragment
    # The slider starts where training ended and labels each snapshot by its step.
    assert '"active":2' in fragment and '"label":"step 20"' in fragment


def test_plan_factors_are_the_columns_that_vary() -> None:
    assert plan_factors(_plan()) == ["init_seed"]


def test_figures_are_pngs_outside_a_page_and_on_a_static_one() -> None:
    assert is_static()
    assert heatmap(np.eye(2), [0, 1], "t").startswith("data:image/png;base64,")
    with figure_mode(static=True):
        assert heatmap(np.eye(2), [0, 1], "t").startswith("data:image/png;base64,")
    with figure_mode(static=False):
        assert not is_static()
        first, second = heatmap(np.eye(2), [0, 1], "a"), heatmap(np.eye(2), [0, 1], "b")
    assert isinstance(first, Interactive) and "%{z:.4g}" in first
    assert 'id="figure-0"' in first and 'id="figure-1"' in second  # numbered per page
    assert is_static()


@pytest.mark.parametrize("static", [True, False])
def test_page_inlines_plotly_only_with_interactive_figures(tmp_path: Path, static: bool) -> None:
    with figure_mode(static=static):
        part = figure(heatmap(np.eye(2), [0, 1], "t"), "map")
    rows = table(pd.DataFrame({"member": [3], "aligned.barrier_loss_linear": [0.5]}))
    page = write_page(tmp_path / "p.html", "t", [part, rows]).read_text(encoding="utf-8")
    assert page.count("<script") == (0 if static else 3 + 1)  # config, plotly.js, 1 fig, select
    assert (plotly_js()[:200] in page) is not static
    assert '<tr data-member="3">' in page and "aligned.<wbr>barrier_<wbr>loss_<wbr>" in page


def test_world_phase_portrait_moves_over_thinned_world_steps() -> None:
    from attractor.report.world_plots import MAX_FRAMES, phase_portrait

    rows = [(m, s, t, m + np.cos(t / 9), s + np.sin(t / 9)) for m in range(2) for s in range(3)
            for t in range(100)]  # fmt: skip
    paths = pd.DataFrame(rows, columns=["member", "state", "t", "px", "py"])
    assert phase_portrait(paths, "p", "x", "y").startswith("data:image/png;base64,")
    with figure_mode(static=False):
        fragment = phase_portrait(paths, "p", "x", "y")
    frames = json.loads(re.search(r"Plotly\.addFrames\('[^']+', (\[.*?\])\);", fragment).group(1))
    assert len(frames) == MAX_FRAMES and frames[0]["name"] == "0" and frames[-1]["name"] == "99"
    # One moving point per (member, initial state), each named on hover.
    assert all(len(f["data"][0]["customdata"]) == 6 for f in frames)
    assert '"meta":{"member":1' in fragment and "initial state %{customdata[1]}" in fragment
