"""The line plots (spread vs step, interpolation paths, bands): interactive figures holding
the same data on an interactive page, PNGs on a static one and outside a page.

How they look in a browser (drawn, not blank, no console errors) is checked by
tests/integration/test_report_browser.py on a whole page.
"""

from __future__ import annotations

import base64
import json
import re

import matplotlib.scale
import numpy as np
import pandas as pd
import pytest

from attractor.report.interactive import Interactive, figure_mode
from attractor.report.lines_interactive import symlog
from attractor.report.plots import band_plot, path_curves, series_panels
from attractor.report.style import color

STEPS = [0, 1, 3, 10, 40, 200]


def _figure(fragment: str) -> tuple[list[dict], dict]:
    """The traces and layout that the fragment's script hands to ``Plotly.newPlot``."""
    start = re.search(r'Plotly\.newPlot\(\s*"figure-\d+",\s*', fragment).end()
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(fragment, start)
    layout, _ = decoder.raw_decode(fragment, fragment.index("{", end))
    return data, layout


def _values(data: list | dict) -> np.ndarray:
    """Numbers from a figure's JSON: a list, or plotly's typed array (base64, plotly >= 6)."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray([np.nan if v is None else v for v in data], dtype=float)


def _trajectory() -> pd.DataFrame:
    js = np.linspace(0.02, 0.001, len(STEPS))
    return pd.DataFrame(
        {
            "step": STEPS[::-1],  # drawn in step order whatever the table's order
            "js": js[::-1],
            "js_low": js[::-1] * 0.8,
            "js_high": js[::-1] * 1.2,
            "disagreement": np.linspace(0.2, 0.5, len(STEPS)),
        }
    )


def _paths() -> list[tuple[str, pd.DataFrame, pd.DataFrame | None]]:
    alpha = np.linspace(0, 1, 11)
    bump = np.sin(np.pi * alpha)
    curve = pd.DataFrame({"alpha": alpha, "loss": 1 + 0.5 * bump, "error": 0.3 + 0.1 * bump})
    aligned = curve.assign(loss=1 + 0.05 * bump, error=0.3 + 0.01 * bump)
    return [("0–3", curve, aligned), ("1–2", curve.assign(loss=2 + bump), None)]


def _band(**kwargs: object) -> str:
    return band_plot(
        [0, 5, 20, 100],
        [0.2, 0.1, 0.015, 0.005],
        [0.15, 0.05, 0.005, 0.0],
        [0.25, 0.15, 0.025, 0.01],
        title="error barrier between copies spawned at step k",
        ylabel="error barrier",
        xlabel="spawn step k",
        threshold=0.02,
        onset=20,
        **kwargs,
    )


def _draw_all() -> list[str]:
    return [
        series_panels(_trajectory(), ["js", "disagreement"], "spread across members"),
        path_curves(_paths()),
        _band(),
    ]


def test_symlog_is_matplotlibs_scale_of_the_png_axis() -> None:
    x = np.array([-50.0, -0.5, 0.0, 0.3, 1.0, 2.0, 10.0, 220.0])
    png = matplotlib.scale.SymmetricalLogTransform(10, 1.0, 0.5).transform(x)
    np.testing.assert_allclose(symlog(x), png)


@pytest.mark.parametrize("static", [True, None])
def test_static_pages_and_calls_outside_a_page_get_pngs(static: bool | None) -> None:
    if static is None:
        uris = _draw_all()
    else:
        with figure_mode(static=True):
            uris = _draw_all()
    for uri in uris:
        assert not isinstance(uri, Interactive)
        assert uri.startswith("data:image/png;base64,")
        assert "<img" in f'<img src="{uri}">'  # what page.figure makes of it


def test_series_panels_are_interactive_with_the_data_and_the_band() -> None:
    with figure_mode(static=False):
        fragment = series_panels(_trajectory(), ["js", "disagreement"], "spread across members")
    assert isinstance(fragment, Interactive) and "<img" not in fragment
    data, layout = _figure(fragment)
    ordered = _trajectory().sort_values("step")
    lines = [t for t in data if t["mode"] == "lines+markers"]
    bands = [t for t in data if t.get("fill") == "toself"]
    assert len(lines) == 2 and len(bands) == 1  # only js has _low / _high
    for trace, column in zip(lines, ["js", "disagreement"], strict=True):
        np.testing.assert_allclose(_values(trace["y"]), ordered[column])
        np.testing.assert_allclose(_values(trace["x"]), symlog(ordered["step"]))
        assert trace["line"]["color"] == color(0)
        assert "training step 200<br>" in trace["text"][-1]
    assert "interval [" in lines[0]["text"][0]
    # The band: the high edge forward, the low edge back.
    band_y = _values(bands[0]["y"])
    np.testing.assert_allclose(band_y[: len(STEPS)], ordered["js_high"])
    np.testing.assert_allclose(band_y[len(STEPS) :], ordered["js_low"][::-1])
    assert "customdata" not in lines[0]  # not a member: the selection script must skip it
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == ["js", "disagreement"]
    assert layout["title"]["text"] == "spread across members"
    axis = layout["xaxis"]
    assert axis["title"]["text"] == "training step"
    assert axis["ticktext"] == ["0", "1", "10", "100"]  # decades, as on the PNG
    np.testing.assert_allclose(axis["tickvals"][:2], symlog([0, 1]))


def test_series_panels_keep_levels_in_0_1_on_a_linear_axis() -> None:
    levels = pd.DataFrame({"level": [0.0, 0.1, 0.3, 0.5], "kl": [0.0, 0.01, 0.05, 0.2]})
    with figure_mode(static=False):
        fragment = series_panels(levels, ["kl"], "prune", x="level", xlabel="prune level")
    data, layout = _figure(fragment)
    np.testing.assert_allclose(_values(data[0]["x"]), levels["level"])
    assert "tickvals" not in layout["xaxis"]
    assert layout["xaxis"]["title"]["text"] == "prune level"


def test_path_curves_are_interactive_and_carry_the_pairs_members() -> None:
    with figure_mode(static=False):
        fragment = path_curves(_paths())
    assert isinstance(fragment, Interactive)
    data, layout = _figure(fragment)
    # Per path: raw loss, raw error, (aligned loss, aligned error).
    assert [t["name"] for t in data] == ["0–3", "0–3", "0–3 aligned", "0–3 aligned", "1–2", "1–2"]
    alpha = _paths()[0][1]["alpha"]
    for trace in data:
        assert trace["mode"] == "lines"  # the script skips line traces when it marks points
        np.testing.assert_allclose(_values(trace["x"]), alpha)
        assert "pair " + trace["name"] in trace["hovertemplate"]
    np.testing.assert_allclose(_values(data[0]["y"]), _paths()[0][1]["loss"])
    np.testing.assert_allclose(_values(data[3]["y"]), _paths()[0][2]["error"])
    assert data[0]["customdata"][0] == [0, 3] and data[4]["customdata"][-1] == [1, 2]
    assert {t["line"]["color"] for t in data[:4]} == {color(0)}
    assert data[4]["line"]["color"] == color(1)
    assert [t["line"]["dash"] for t in data[:4]] == ["solid", "solid", "dash", "dash"]
    assert [t["showlegend"] for t in data[:4]] == [True, False, True, False]
    assert [a["text"] for a in layout["annotations"]] == ["loss", "error"]
    assert layout["xaxis"]["title"]["text"].startswith("α (0 = first member")


def test_a_path_whose_label_is_not_a_pair_carries_no_members() -> None:
    (_, curve, _), *_ = _paths()
    with figure_mode(static=False):
        data, _ = _figure(path_curves([("seed 3 vs seed 7", curve, None)], columns=["loss"]))
    assert len(data) == 1 and "customdata" not in data[0]


def test_band_plot_is_interactive_with_band_threshold_and_onset() -> None:
    with figure_mode(static=False):
        fragment = _band()
    data, layout = _figure(fragment)
    band, mean, threshold, onset = data
    assert band["fill"] == "toself" and band["name"] == "95 % CI"
    np.testing.assert_allclose(
        _values(band["y"]), [0.25, 0.15, 0.025, 0.01, 0.0, 0.005, 0.05, 0.15]
    )
    assert mean["name"] == "mean over pairs"
    np.testing.assert_allclose(_values(mean["y"]), [0.2, 0.1, 0.015, 0.005])
    np.testing.assert_allclose(_values(mean["x"]), symlog([0, 5, 20, 100]))
    assert mean["text"][2] == "spawn step k 20<br>error barrier = 0.015<br>95 % CI [0.005, 0.025]"
    assert threshold["name"] == "threshold 0.02" and threshold["line"]["dash"] == "dot"
    np.testing.assert_allclose(_values(threshold["x"]), layout["xaxis"]["range"])  # whole width
    assert onset["name"] == "stable from step 20"
    np.testing.assert_allclose(_values(onset["x"]), symlog([20, 20]))
    np.testing.assert_allclose(_values(onset["y"]), layout["yaxis"]["range"])  # whole height
    assert layout["title"]["text"] == "error barrier between copies spawned at step k"
    assert layout["xaxis"]["title"]["text"] == "spawn step k"
    assert layout["yaxis"]["title"]["text"] == "error barrier"
    assert layout["xaxis"]["range"][0] == 0.0


def test_band_plot_without_threshold_or_onset_leaves_missing_band_rows_out() -> None:
    with figure_mode(static=False):
        fragment = band_plot(
            [0, 10, 100], [0.3, 0.2, 0.1], [0.2, np.nan, 0.05], [0.4, np.nan, 0.15],
            title="t", ylabel="y",
        )  # fmt: skip
    data, _ = _figure(fragment)
    assert [t["name"] for t in data] == ["95 % CI", "mean over pairs"]
    assert len(_values(data[0]["y"])) == 4  # two rows, each edge
