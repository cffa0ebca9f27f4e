"""The verdict block at the top of a page: one computed line per question, linked to its section.

The lines come from :func:`attractor.measure.verdict.verdict` (the stored results, never
recomputed); this module only lays them out: a status badge, the answer (a link to the
section that backs it), the question and what its interval is, then the thresholds used.
Styles are inline so the block needs nothing from the page's stylesheet and the page
stays one self-contained file; colours are the report's palette (:mod:`attractor.report.style`).
"""

from __future__ import annotations

import html

from attractor.measure.verdict import Verdict, VerdictLine
from attractor.report.style import PALETTE

#: Badge colours (background, text) per status: Tol's green, red and yellow, grey for none.
_BADGES = {
    "yes": (PALETTE[2], "#ffffff"),
    "no": (PALETTE[1], "#ffffff"),
    "unclear": (PALETTE[3], "#1f2328"),
    "not measured": ("#d0d7de", "#1f2328"),
}
_BOX = (
    "margin:12px 0 4px;padding:10px 14px;border:1px solid #dfe3e8;border-radius:6px;"
    "background:#f9fafb"
)
_BADGE = (
    "flex:0 0 88px;align-self:flex-start;margin-top:2px;padding:0 6px;border-radius:4px;"
    "font-size:12px;font-weight:600;text-align:center"
)
#: The answer reads as text and links quietly to the section that backs it.
_LINK = "color:#1f2328;text-decoration:underline dotted #8c959f"
_QUIET = "color:#59636e;font-size:13px"


def _line(line: VerdictLine, sections: set[str] | None) -> str:
    """One ``<li>``: badge, the answer (linked where its section is on the page), the question."""
    background, colour = _BADGES[line.status]
    badge = (
        f'<span class="status" style="{_BADGE};background:{background};color:{colour}">'
        f"{html.escape(line.status)}</span>"
    )
    answer = html.escape(line.answer)
    linked = line.status != "not measured" and (sections is None or line.section in sections)
    if linked and line.section:
        answer = f'<a href="#{html.escape(line.section)}" style="{_LINK}">{answer}</a>'
    note = html.escape(line.question) + (
        f" · interval: {html.escape(line.interval)}" if line.interval else ""
    )
    return (
        f'<li data-question="{html.escape(line.id)}" data-status="{html.escape(line.status)}" '
        f'style="display:flex;gap:10px;margin:5px 0">{badge}<div>{answer}<br>'
        f'<span style="{_QUIET}">{note}</span></div></li>'
    )


def verdict_block(verdict: Verdict, sections: set[str] | None = None) -> str:
    """The block's HTML (empty when no question has an answer, e.g. an experiment without one).

    Args:
        verdict: the computed lines.
        sections: ids of the sections on the page; a line links only to one of them (None:
            link every measured line).
    """
    if not verdict.lines:
        return ""
    items = "".join(_line(line, sections) for line in verdict.lines)
    thresholds = "; ".join(html.escape(text) for text in verdict.thresholds.values())
    footer = (
        f'<p style="{_QUIET};margin:8px 0 0">Thresholds: {thresholds}. "yes" only when the '
        'whole interval is on the threshold\'s good side, "unclear" when it straddles it.</p>'
        if thresholds
        else ""
    )
    return (
        f'<div id="verdict" class="verdict" style="{_BOX}">'
        f'<h2 style="margin:0 0 6px;font-size:17px">Verdict</h2>'
        f'<ul style="list-style:none;margin:0;padding:0">{items}</ul>{footer}</div>'
    )
