"""Interactive figures: plotly figures embedded in the page, and the switch to static PNGs.

A report page is interactive by default: the ensemble cloud moves, heat maps name the value
under the pointer, and clicking a member in any figure or table highlights it in all of them.
The page stays one self-contained file that opens offline: plotly's JavaScript is inlined
once per page by :func:`attractor.report.page.write_page` (never a CDN link), and every
figure is a ``<div>`` with the small script that draws it.

``attractor report RUN --static`` renders the same page with PNG figures only (no
scripts; far smaller, see the README). The choice is made once per page with
:func:`figure_mode` (outside one, figures are PNGs); plotting functions ask :func:`is_static`
and return either a PNG data
URI or an :class:`Interactive` fragment, both strings, so sections pass either to
:func:`attractor.report.page.figure` and never need to know which page they are on.

Member ids are the link between views: every point or trace that stands for one member
carries its id as the first entry of its ``customdata`` (a trace that is one member's path
carries it in ``meta.member``); heat maps name their rows and columns by member id. The
page's script (:data:`SELECT_JS`) reads only these.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # plotly is imported when a figure is drawn, not when the report loads
    import plotly.graph_objects as go

#: Whether figures are drawn as PNGs on the page being rendered. Outside a page (a plot
#: function called on its own) they are: its documented return is a PNG data URI.
_STATIC: contextvars.ContextVar[bool] = contextvars.ContextVar("attractor_static", default=True)
#: Numbers the figures of the page being rendered (div ids: stable, so equal pages are equal).
_IDS: contextvars.ContextVar[Iterator[int] | None] = contextvars.ContextVar(
    "attractor_figure_ids", default=None
)

#: The plotly look that matches the PNG figures' style (attractor.report.style.STYLE): white
#: plot, light grid, system font. An explicit small layout instead of a plotly template, so
#: each figure does not carry a template's ~7 kB of JSON.
LAYOUT: dict[str, Any] = {
    "template": "none",
    "font": {"family": 'system-ui, "DejaVu Sans", sans-serif', "size": 12, "color": "#1f2328"},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "hoverlabel": {"bgcolor": "white", "font": {"size": 12}},
}
AXIS: dict[str, Any] = {
    "showgrid": True,
    "gridcolor": "#e6e6e6",
    "zeroline": False,
    "linecolor": "#777777",
    "showline": True,
    "ticks": "outside",
}
#: Plot toolbar: no plotly logo, no "edit in chart studio" (it would leave the page).
CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


class Interactive(str):
    """An HTML fragment that draws one plotly figure (what :func:`to_fragment` returns).

    A ``str`` so that it travels where a PNG data URI does (``figure(uri, alt)``);
    :func:`attractor.report.page.figure` embeds it as it is instead of as an ``<img>``.
    """

    __slots__ = ()


def is_static() -> bool:
    """Whether the page being rendered takes PNG figures only (``--static``)."""
    return _STATIC.get()


@contextmanager
def figure_mode(static: bool) -> Iterator[None]:
    """Render one page: its figures static (PNG) or interactive, numbered from 0."""
    static_token = _STATIC.set(static)
    ids_token = _IDS.set(itertools.count())
    try:
        yield
    finally:
        _STATIC.reset(static_token)
        _IDS.reset(ids_token)


def plotly() -> Any:
    """``plotly.graph_objects``, with a hint when plotly is missing (it is a core dependency)."""
    try:
        import plotly.graph_objects as go
    except ImportError as error:  # pragma: no cover - plotly is installed with attractor
        raise ImportError(
            "the interactive report needs plotly: `pip install plotly` "
            "(or render a static page: `attractor report RUN --static`)"
        ) from error
    return go


def to_fragment(fig: go.Figure, height: int) -> Interactive:
    """``fig`` as a ``<div>`` and its drawing script (no plotly.js: the page inlines it once).

    Animation frames, if any, are added after the first draw and never play by themselves.
    """
    ids = _IDS.get()
    if ids is None:  # drawn outside a page (a test, a notebook): name it by its content
        number = int(hashlib.sha1(fig.to_json().encode()).hexdigest()[:8], 16)
    else:
        number = next(ids)
    fig.update_layout(height=height)
    fragment = fig.to_html(
        include_plotlyjs=False,
        full_html=False,
        div_id=f"figure-{number}",
        auto_play=False,
        config=CONFIG,
        default_height=f"{height}px",
    )
    return Interactive(f'<div class="interactive">{fragment}</div>')


def plotly_js() -> str:
    """plotly.js as shipped with the installed plotly (about 4.8 MB, minified)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def page_scripts() -> tuple[str, str]:
    """What an interactive page adds: plotly.js for the head, the member selection for the end.

    plotly.js goes in the head because every figure's script calls ``Plotly.newPlot`` as soon
    as the page reaches it.
    """
    head = (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f"<script>{plotly_js()}</script>"
    )
    return head, f"<script>{SELECT_JS}</script>"


def member_hover(columns: list[str]) -> str:
    """A hover template naming the member (``customdata[0]``) and its plan row's factors."""
    lines = ["<b>member %{customdata[0]}</b>"]
    lines += [f"{html_text(c)} = %{{customdata[{i + 1}]}}" for i, c in enumerate(columns)]
    return "<br>".join(lines) + "<extra></extra>"


def html_text(text: str) -> str:
    """``text`` safe inside plotly's hover HTML (it renders a small subset of tags)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def jsonable(value: Any) -> Any:
    """A plan cell as plotly's JSON can hold it (numpy scalars as Python numbers)."""
    if hasattr(value, "item"):
        return value.item()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


#: Member selection across every figure and table of the page. A click on a point, a heat
#: map cell or a table row selects that member; a click on the same member again (or on
#: an empty part of a plot, via plotly_doubleclick) clears it. Points: plotly's own
#: ``selectedpoints`` (others fade); one-member paths: trace opacity; heat maps: an outline
#: around the member's row and column; tables: the row's class. After a frame of an
#: animation is drawn, the selection is drawn again (a frame replaces the points' data).
SELECT_JS = r"""
(function () {
  "use strict";
  var selected = null;
  function memberOf(point) {
    var c = point && point.customdata;
    if (Array.isArray(c)) { c = c[0]; }
    if (c === undefined || c === null) { return null; }
    return String(c);
  }
  function paint(gd) {
    var data = gd.data || [];
    var pointTraces = [], points = [], pathTraces = [], opacity = [];
    var shapes = (gd._attractorShapes = gd._attractorShapes || (gd.layout.shapes || []).slice());
    var extra = [];
    data.forEach(function (trace, i) {
      if (trace.meta && trace.meta.member !== undefined) {
        pathTraces.push(i);
        opacity.push(selected === null || String(trace.meta.member) === selected
          ? (trace.meta.opacity || 1) : 0.12);
      } else if (trace.type === "heatmap") {
        var labels = (trace.x || []).map(String), at = labels.indexOf(selected);
        if (selected !== null && at >= 0) {
          var line = {color: "#d62728", width: 2};
          extra.push({type: "rect", xref: "x", yref: "paper", x0: at - 0.5, x1: at + 0.5,
                      y0: 0, y1: 1, line: line});
          extra.push({type: "rect", yref: "y", xref: "paper", y0: at - 0.5, y1: at + 0.5,
                      x0: 0, x1: 1, line: line});
        }
      } else if (Array.isArray(trace.customdata) && trace.mode !== "lines") {
        var hits = [];
        trace.customdata.forEach(function (c, j) {
          if (memberOf({customdata: c}) === selected) { hits.push(j); }
        });
        pointTraces.push(i);
        points.push(selected === null ? null : hits);
      }
    });
    var work = [];
    if (pointTraces.length) {
      work.push(Plotly.restyle(gd, {selectedpoints: points}, pointTraces));
    }
    if (pathTraces.length) {
      work.push(Plotly.restyle(gd, {opacity: opacity}, pathTraces));
    }
    if (gd._attractorShapes.length || extra.length || (gd.layout.shapes || []).length) {
      work.push(Plotly.relayout(gd, {shapes: shapes.concat(extra)}));
    }
    return Promise.all(work);
  }
  function select(member) {
    selected = member === selected ? null : member;
    document.body.dataset.selectedMember = selected === null ? "" : selected;
    document.querySelectorAll("tr[data-member]").forEach(function (row) {
      row.classList.toggle("selected", row.dataset.member === selected);
    });
    document.querySelectorAll(".plotly-graph-div").forEach(paint);
  }
  window.attractorSelect = select;
  document.querySelectorAll(".plotly-graph-div").forEach(function (gd) {
    gd.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      if (!point) { return; }
      var member = memberOf(point), meta = point.data && point.data.meta;
      if (member === null && meta && meta.member !== undefined) {
        member = String(meta.member);
      }
      if (member === null && point.data && point.data.type === "heatmap") {
        member = String(point.y);
      }
      if (member !== null) { select(member); }
    });
    gd.on("plotly_doubleclick", function () { if (selected !== null) { select(selected); } });
    gd.on("plotly_animated", function () { if (selected !== null) { paint(gd); } });
  });
  document.querySelectorAll("tr[data-member]").forEach(function (row) {
    row.addEventListener("click", function () { select(row.dataset.member); });
  });
  // A figure is drawn while the page is still being read, at the width its box had then
  // (the first of a grid row spans the row until the second arrives): fit it once laid out.
  window.addEventListener("load", function () {
    document.querySelectorAll(".plotly-graph-div").forEach(function (gd) {
      Plotly.Plots.resize(gd);
    });
  });
})();
"""
