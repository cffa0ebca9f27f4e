"""The interactive report in a real browser: Debian's chromium driven by Playwright.

Playwright's own browser download cannot work here (no network), so it drives the system
chromium (``executable_path``); `make test` installs chromium when it can (`make browser`),
and these tests skip without it or without playwright. The page is loaded with the network
cut (an offline context, and every request that is not for a local file aborted and
recorded), so it passes only if it is whole in its one file.

Checked: no console errors; every figure draws something (its screenshot is not blank);
the cloud's slider changes the drawn frame; hovering a point names its member and plan row,
hovering a heat map names two members and the value; a click selects a member across
figures and tables. A screenshot of the page's top is kept (the test's tmp dir and
``test-artifacts/report-top.png``, git-ignored) for a person to look at.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from attractor.report import render_directory
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests import report_samples
from tests.conftest import tiny_config

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (`make browser` installs it)"
    ),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    """A tiny trained run holding every section's (synthetic) results, two basins among them."""
    ens = train(tiny_config(), tmp_path_factory.mktemp("browser") / "run")
    ens.store.write(report_samples.measures(ens.members, ens.steps()))
    ens.store.write(report_samples.instability())
    return ens


@pytest.fixture(scope="module")
def page_file(run: Ensemble) -> Path:
    return render_directory(run.store.root)


class Loaded:
    """A page open in chromium, with what it logged and what it tried to fetch."""

    def __init__(self, page: Any, errors: list[str], blocked: list[str]) -> None:
        self.page, self.errors, self.blocked = page, errors, blocked

    def figures(self) -> list[Any]:
        return self.page.query_selector_all(".plotly-graph-div")


@pytest.fixture(scope="module")
def loaded(page_file: Path) -> Iterator[Loaded]:
    errors: list[str] = []
    blocked: list[str] = []

    def only_files(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        context.route("**/*", only_files)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri(), wait_until="load")
        # Every figure drawn (plotly adds its SVG layers) before anything is looked at.
        page.wait_for_function(
            "[...document.querySelectorAll('.plotly-graph-div')]"
            ".every(d => d.querySelector('.main-svg'))"
        )
        yield Loaded(page, errors, blocked)
        browser.close()


def _pixels(png: bytes) -> np.ndarray:
    return imread(io.BytesIO(png), format="png")[..., :3]


def _cloud(loaded: Loaded) -> Any:
    return loaded.page.query_selector("#cloud .plotly-graph-div")


def _point_positions(figure: Any) -> list[str]:
    """Where the members' points are drawn (their SVG transforms), trace by trace."""
    return figure.eval_on_selector_all(
        ".scatterlayer .trace .point", "ps => ps.map(p => p.getAttribute('transform'))"
    )


def test_page_loads_offline_without_console_errors(loaded: Loaded) -> None:
    assert loaded.errors == []
    assert loaded.blocked == []
    assert loaded.page.evaluate("typeof Plotly") == "object"


def test_every_figure_draws_something(loaded: Loaded) -> None:
    figures = loaded.figures()
    # The cloud (moving, paths), the pairwise heat maps and the CKA maps at least.
    assert len(figures) >= 4
    for figure in figures:
        figure.scroll_into_view_if_needed()
        box = figure.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 300
        pixels = _pixels(figure.screenshot())
        ink = (np.abs(pixels - 1.0).sum(-1) > 0.15).mean()  # share of pixels not white
        assert ink > 0.03, figure.get_attribute("id")
        drawn = figure.eval_on_selector_all(
            ".scatterlayer .trace path, .heatmaplayer image", "es => es.length"
        )
        assert drawn > 0
    # Images of the sections still drawn as PNGs decode.
    broken = loaded.page.evaluate(
        "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
    )
    assert broken == 0


def test_slider_changes_the_drawn_frame(loaded: Loaded) -> None:
    cloud = _cloud(loaded)
    cloud.scroll_into_view_if_needed()
    label = cloud.query_selector(".slider-group > text.slider-label")  # the current value
    before, shown = _point_positions(cloud), label.text_content()
    assert before and shown.startswith("shown: step")  # the last snapshot, where it ended
    rail = cloud.query_selector(".slider-rail-rect").bounding_box()
    # The rail's left end is the first snapshot (step 0): click it.
    loaded.page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)
    loaded.page.wait_for_timeout(600)
    after = _point_positions(cloud)
    assert label.text_content() == "shown: step 0"
    assert after != before
    # The grey points of every snapshot stay where they are; the members' points moved.
    assert len(after) == len(before)


def _hover_text(loaded: Loaded, figure: Any) -> str:
    """The hover box's lines (plotly draws one ``tspan.line`` per line), joined by spaces."""
    loaded.page.wait_for_timeout(300)
    lines = figure.eval_on_selector_all(
        ".hoverlayer text",
        "ts => ts.map(t => t.querySelectorAll('tspan.line').length ? "
        "[...t.querySelectorAll('tspan.line')].map(l => l.textContent).join(' ') : t.textContent)",
    )
    return " ".join(lines)


def test_hover_names_the_member_and_its_plan_row(loaded: Loaded, run: Ensemble) -> None:
    cloud = _cloud(loaded)
    cloud.scroll_into_view_if_needed()
    # The members' points are traces with customdata; the grey backdrop and the mean are not.
    point = cloud.query_selector(".scatterlayer .trace:nth-child(3) .point")
    box = point.bounding_box()
    loaded.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    text = _hover_text(loaded, cloud)
    found = re.search(r"member (\d+)", text)
    assert found and int(found.group(1)) in run.members, text
    assert "init_seed = " in text and "basin = " in text

    heat = loaded.page.query_selector("#pairwise .plotly-graph-div")
    heat.scroll_into_view_if_needed()
    area = heat.query_selector(".nsewdrag").bounding_box()
    loaded.page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.6)
    cell = _hover_text(loaded, heat)
    assert re.search(r"member \d+ × member \d+ \S*\d", cell), cell


def test_click_selects_a_member_in_every_view(loaded: Loaded) -> None:
    cloud = _cloud(loaded)
    cloud.scroll_into_view_if_needed()
    point = cloud.query_selector(".scatterlayer .trace:nth-child(3) .point")
    box = point.bounding_box()
    loaded.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    loaded.page.wait_for_timeout(400)
    member = loaded.page.evaluate("document.body.dataset.selectedMember")
    assert member and member.isdigit()
    rows = loaded.page.eval_on_selector_all("tr.selected", "rs => rs.map(r => r.dataset.member)")
    assert rows and set(rows) == {member}  # its plan row and its final-metrics row
    # Heat maps outline the member's row and column; the path figure fades the others.
    outlined = loaded.page.eval_on_selector_all(
        "#pairwise .plotly-graph-div", "ds => ds.map(d => (d.layout.shapes || []).length)"
    )
    bare = loaded.page.eval_on_selector_all(
        "#pairwise .plotly-graph-div", "ds => ds.map(d => (d._attractorShapes || []).length)"
    )
    assert all(o == b + 2 for o, b in zip(outlined, bare, strict=True))
    # A click on the same row again clears the selection everywhere.
    loaded.page.click(f'#plan tr[data-member="{member}"]')
    assert loaded.page.evaluate("document.body.dataset.selectedMember") == ""
    assert loaded.page.query_selector_all("tr.selected") == []


def test_screenshot_of_the_top_of_the_page(loaded: Loaded, tmp_path: Path) -> None:
    """Kept for a person: the page's top at a laptop's width (1280 × 900)."""
    loaded.page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "report-top.png"
    loaded.page.screenshot(path=str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report-top.png")
    pixels = _pixels(shot.read_bytes())
    assert pixels.shape[:2] == (900, 1280) and pixels.std() > 0.05
    # Nothing is wider than the window: tables wrap or scroll inside their section.
    assert loaded.page.evaluate("document.documentElement.scrollWidth") <= 1280
