"""The result of a learned-evaluator experiment (kind ``evaluator``).

:class:`EvaluatorResult` holds the headline numbers the report answers with (the true
preference before and after, its spread across members, which factor of the design drives
it, the evaluators' own disagreement, where proxy and truth part, the basins) and the
tables behind them (:data:`TABLES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from attractor.runs.results import strict_json

#: Tables an evaluator result may hold, with their columns (the report reads these names).
TABLES: dict[str, str] = {
    "spread": "measure, value, low, high, note: the final models' spread",
    "sources": "effect, component, share, share_low, share_high, ss_share: variance by factor",
    "rounds": "round, proxy, proxy_low, proxy_high, true, true_low, true_high: mean per round",
    "trajectories": "member, round, proxy, true: every member's rounds",
    "members": "resample, evaluator_seed, trainer_seed, true, true_base, proxy, basin, "
    "parting_round: one row per member",
    "structural": "parameter, level, true, true_low, true_high, sd, sd_low, sd_high, "
    "evaluator_accuracy: the evaluator's design perturbed",
    "suggestions": "index, pixels or text, rule, mutual_information, mean_probability: label next",
    "examples": "label, pixels or text: the human's examples",
    "samples": "member, pixels or text: final samples of the first members",
}


@dataclass(frozen=True, eq=False)
class EvaluatorResult:
    """What a learned-evaluator experiment measured (see :data:`TABLES`).

    Attributes:
        setting: ``digits`` or ``text``; preferred: the known rule (the classes the human
        prefers, or the text rule's name);
        examples: where the human's examples came from; model: the base generator's run
        and member; summary: headline numbers; tables: name -> DataFrame.
    """

    kind: ClassVar[str] = "evaluator"
    schema: ClassVar[int] = 1

    setting: str
    preferred: list[int] | str
    examples: str
    model: dict[str, Any]
    settings: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file stem: ``evaluator``."""
        return "evaluator"

    def to_json(self) -> dict[str, Any]:
        """Everything but the image tables, NaN as null."""
        keep = ("spread", "sources", "rounds", "members", "structural")
        small = {k: v for k, v in self.tables.items() if k in keep}
        return strict_json(
            {
                "setting": self.setting,
                "preferred": self.preferred,
                "examples": self.examples,
                "model": self.model,
                "settings": self.settings,
                "summary": self.summary,
                **small,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """Every table; the main one is ``members``."""
        tables = dict(self.tables)
        main = tables.pop("members", pd.DataFrame(columns=["resample", "true"]))
        return {"": main, **tables}


__all__ = ["TABLES", "EvaluatorResult"]
