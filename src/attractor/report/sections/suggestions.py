"""What a human should look at next (``RUN/suggestions.json`` of ``attractor suggest``)."""

from __future__ import annotations

import html

from attractor.report.page import section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: Columns shown, in order (the table holds exactly these today; others are left out).
_COLUMNS = ["rank", "kind", "id", "score", "unit", "reason"]


def render_suggestions(results: list[StoredResult], context: Context) -> str:
    """The ranked examples, data groups and training examples, one table."""
    body = []
    for stored in results:
        rows = stored.table()
        data = stored.data
        body.append(
            f"<p>From {html.escape(str(data.get('members', '–')))} members' predictions; "
            f"examples index the {html.escape(str(data.get('pool', '–')))} split.</p>"
        )
        body.append(table(rows[[c for c in _COLUMNS if c in rows]]))
    lead = (
        "Ranked per kind: test examples the members disagree on most (mutual information), "
        "data groups that move accuracy or spread most, training examples with the largest effect."
    )
    return section("suggestions", "What to look at next", lead, "".join(body))


SECTION = Section("suggestions", 75, render_suggestions)
