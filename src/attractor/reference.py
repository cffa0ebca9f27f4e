"""The config reference, generated from the pydantic models so field, default and help never drift.

The README embeds :func:`config_reference` verbatim (a test checks it) and
``attractor plan --help`` points to it.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from attractor.config import PlanConfig, RunConfig, TaskConfig, TrackConfig, TrainerConfig

SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("task", TaskConfig),
    ("trainer", TrainerConfig),
    ("plan", PlanConfig),
    ("run", RunConfig),
    ("track", TrackConfig),
)


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    value = field.get_default(call_default_factory=True)
    return json.dumps(value) if value is not None else "none"


def config_reference() -> str:
    """Markdown tables, one per TOML section: key, default, meaning."""
    lines: list[str] = []
    for section, model in SECTIONS:
        lines += [f"`[{section}]`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | `{_default(model, name)}` | {meaning} |")
        if section == "task":
            lines.append(
                "| *other keys* | | the task's own options: `attractor tasks` lists them with "
                "defaults |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
