"""Old home of the page toolkit, now :mod:`attractor.report.page`; kept only while sections move.

Delete once nothing imports ``attractor.report.html`` (the run page is
:mod:`attractor.report.run_page`, the entry point :func:`attractor.report.render_directory`).
"""

from __future__ import annotations

from attractor.report.page import CSS, collapsible, figure, fmt, section, table, write_page

__all__ = ["CSS", "collapsible", "figure", "fmt", "section", "table", "write_page"]
