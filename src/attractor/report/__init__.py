"""The run report: one self-contained HTML page (tables, CIs, PNG plots embedded).

    from attractor.report import render_report
    render_report(ens, measures, ens.store.root / "report.html")

Always shown: run summary, resolved config, plan (varying factors and status), final
metrics, and the ensemble cloud (computed here from the snapshots). Every key of
``measures`` is optional and its section appears only when it is given:

- ``summary``: ``{name: {"value", "low", "high"}}``, estimates with 95 % CIs.
- ``members``: DataFrame, one row per member (``member`` column sets the member order
  that matrices and basin labels follow; default ``ens.members``).
- ``basins``: ``{"labels": [per member], "order": [member positions], "sizes": [per basin],
  "representatives": [member id per basin], "silhouette": float | None}``.
- ``pairwise``: ``{"js" | "disagreement" | "weight_distance" | "aligned_distance" | ...:
  [members, members]}``; ``cka``: ``{layer: [members, members]}``.
- ``trajectory``: DataFrame ``step`` + one column per spread measure (optional
  ``<col>_low`` / ``<col>_high`` are drawn as bands).
- ``lmc``: list of ``{"members": [a, b], "curve": DataFrame(alpha, loss, error),
  "aligned_curve": DataFrame | None, "barriers": {name: float}}``.
- ``instability``: DataFrame ``(spawn_step, barrier_mean, low, high)`` or
  ``{"curve": that DataFrame, "onset": int | None, "threshold": float}``.
"""

from __future__ import annotations

from attractor.report.html import render_report
from attractor.report.sections.cloud import (
    Cloud,
    cloud_coordinates,
    cloud_panels,
    cloud_trails,
    probe_set,
)

__all__ = ["Cloud", "cloud_coordinates", "cloud_panels", "cloud_trails", "probe_set", "render_report"]
