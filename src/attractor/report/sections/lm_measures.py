"""The spread of a language-model run (``lm-measures``): next-token intervals, JS and CKA matrices.

Shown where a classification run shows its spread measures (order 10), with the same
tables and heat maps: the summary of next-token loss, pairwise JS and KL to the ensemble
mean, the members' pairwise JS, and linear CKA of their residual streams per layer.
"""

from __future__ import annotations

import numpy as np

from attractor.report.sections import Context, Section
from attractor.report.sections.spread_parts import (
    CKA_LEAD,
    PAIRWISE_LEAD,
    cka_style,
    matrices_section,
    pair_style,
    summary_section,
)
from attractor.runs.results import StoredResult

#: Summary rows, in this order: the measure's JSON key.
_SUMMARY = ("loss", "pairwise_js", "kl_to_mean")


def render_lm_spread(results: list[StoredResult], context: Context) -> str:
    """Summary with intervals, pairwise JS, and residual-stream CKA of every stored result."""
    parts = []
    for stored in results:
        data = stored.data
        ids = [int(m) for m in data["members"]]
        summary = {
            f"next-token {name}": {k: data[name].get(k) for k in ("value", "low", "high")}
            for name in _SUMMARY
        }
        parts.append(summary_section(summary))
        js = {"js": np.asarray(data["pairwise_js"]["matrix"], dtype=float)}
        parts.append(
            matrices_section(
                "pairwise", "Pairwise distances", PAIRWISE_LEAD, js, ids, None, pair_style
            )
        )
        cka = {
            f"residual stream, {layer}": np.asarray(matrix, dtype=float)
            for layer, matrix in (data.get("cka") or {}).items()
        }
        if cka:
            parts.append(
                matrices_section(
                    "cka", "Representation similarity (CKA)", CKA_LEAD, cka, ids, None, cka_style
                )
            )
    return "".join(parts)


SECTION = Section("lm-measures", 10, render_lm_spread)
