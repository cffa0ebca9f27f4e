"""The page toolkit: one self-contained HTML page of titled sections, tables and figures.

Every report page (a run's, an experiment's) is built from these pieces and nothing else:
:func:`section` around each part, :func:`table` and :func:`figure` inside, and
:func:`write_page` to put them in one file with the inline :data:`CSS`. No links: the page
opens from disk, offline, and can be mailed as one file. Figures are PNG data URIs or
interactive plotly fragments (:mod:`attractor.report.interactive`); a page with any of the
latter carries plotly.js inline, once, and the script that highlights a selected member.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import attractor
from attractor.report.interactive import Interactive, page_scripts
from attractor.runs.files import atomic_path

# Inline so the page needs nothing else; system fonts, a readable column, light tables. Short
# rules one per line, long ones one declaration per line.
CSS = """
body {
  margin: 0;
  background: #f6f7f9;
  color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
}
main {
  max-width: 1040px;
  margin: 0 auto;
  padding: 24px 28px 40px;
  background: #fff;
  min-height: 100vh;
  box-sizing: border-box;
}
header h1 { margin: 0 0 2px; font-size: 26px; letter-spacing: -0.01em; }
header .run {
  margin: 0 0 16px;
  color: #59636e;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 13px;
}
section { margin: 28px 0 0; padding-top: 18px; border-top: 1px solid #e4e7eb; }
h2 { margin: 0 0 4px; font-size: 19px; }
p.lead { margin: 0 0 12px; color: #59636e; font-size: 14px; }
table {
  border-collapse: collapse;
  margin: 8px 0 12px;
  font-size: 13px;
  font-variant-numeric: tabular-nums;
}
th, td { border: 1px solid #dfe3e8; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #f1f3f5; font-weight: 600; }
td { overflow-wrap: anywhere; }
tr[data-member] { cursor: pointer; }
tr.selected td { background: #fde8e8; }
td.num, th.num { text-align: right; }
table.facts th { background: #f6f7f9; font-weight: 600; white-space: nowrap; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #2c5d92; font-size: 14px; }
pre {
  background: #f6f7f9;
  border: 1px solid #e4e7eb;
  padding: 10px;
  font-size: 12px;
  overflow-x: auto;
}
figure { margin: 10px 0; min-width: 0; }
.interactive { width: 100%; }
img { max-width: 100%; height: auto; display: block; }
.grid {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(440px, 1fr));
  gap: 8px 16px;
  align-items: start;
}
.scroll { overflow-x: auto; }
footer { margin-top: 36px; color: #8c959f; font-size: 12px; }
"""


def fmt(value: Any) -> str:
    """A cell's text: ints as they are, floats to 4 significant digits, missing as a dash."""
    if value is None or (not isinstance(value, str | bool | list | tuple) and pd.isna(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def percent(value: Any) -> str:
    """A share as "12.3 %" ("n/a" for None)."""
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


def _numeric(column: pd.Series) -> bool:
    """Right-align numbers; booleans read as yes/no, so they align like text."""
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _heading(name: object) -> str:
    """A column name that may break after ``.`` and ``_`` (``aligned.barrier_loss``), so a
    table of long names narrows to its numbers instead of running past the column. Short
    names are left whole: they are no wider than the numbers below them.
    """
    text = html.escape(str(name))
    return re.sub(r"([._])", r"\1<wbr>", text) if len(text) > 16 else text


def table(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` (no index); numeric columns right-aligned.

    A table with a ``member`` column marks each row with its member id, so selecting a
    member in a figure highlights its row (and clicking the row selects it).
    """
    align = {c: "num" if _numeric(frame[c]) else "" for c in frame.columns}
    head = "".join(f'<th class="{align[c]}">{_heading(c)}</th>' for c in frame.columns)
    members = frame["member"].map(fmt).tolist() if "member" in frame.columns else None
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cells = "".join(
            f'<td class="{align[c]}">{html.escape(fmt(v))}</td>'
            for c, v in zip(frame.columns, values, strict=True)
        )
        mark = f' data-member="{html.escape(members[i])}"' if members else ""
        rows.append(f"<tr{mark}>{cells}</tr>")
    # Wide tables scroll inside the column instead of stretching the page.
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def facts(rows: dict[str, Any]) -> str:
    """A two-column table of labelled facts (the header tables of a page)."""
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
    )
    return f'<table class="facts">{cells}</table>'


def figure(uri: str, alt: str) -> str:
    """An embedded figure: an image (a PNG ``data:`` URI from :mod:`attractor.report.plots`)
    or an interactive plotly fragment (:class:`~attractor.report.interactive.Interactive`).
    """
    if isinstance(uri, Interactive):
        return f'<figure aria-label="{html.escape(alt)}">{uri}</figure>'
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"></figure>'


def section(key: str, title: str, lead: str, body: str) -> str:
    """A titled section; ``lead`` is the one sentence saying how to read it."""
    return (
        f'<section id="{key}"><h2>{html.escape(title)}</h2>'
        f'<p class="lead">{html.escape(lead)}</p>{body}</section>'
    )


def collapsible(label: str, body: str, open_: bool) -> str:
    """``body`` behind a disclosure triangle, open at first when ``open_``."""
    state = " open" if open_ else ""
    return f"<details{state}><summary>{html.escape(label)}</summary>{body}</details>"


def header(title: str, subtitle: str) -> str:
    """The page's heading: ``title`` and, in monospace below it, what the page is about."""
    return (
        f'<header><h1>{html.escape(title)}</h1><p class="run">{html.escape(subtitle)}</p></header>'
    )


def write_page(path: str | Path, title: str, parts: Sequence[str]) -> Path:
    """Write ``parts`` (header and sections) as one self-contained page, atomically.

    A page with interactive figures gets plotly.js once, inline, and the member selection
    script; a page of PNGs only stays free of scripts.
    """
    body = "".join(parts)
    head, end = page_scripts() if 'class="plotly-graph-div"' in body else ("", "")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style>{head}</head><body><main>{body}"
        f"<footer>attractor {html.escape(attractor.__version__)}</footer></main>{end}</body></html>"
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
