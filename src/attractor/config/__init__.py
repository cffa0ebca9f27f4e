"""Typed configuration: one pydantic model per concern, every key validated.

The TOML shape is the contract shared by the CLI, the tests and ``examples/``::

    [task]     name + the task's own options (validated by the task's options model)
    [trainer]  optimizer and its hyperparameters, batch size, length, schedule
    [plan]     members, design, which factors vary and over what
    [run]      strategy, backend, snapshots, chunking

Every field has a default and a one-line description; ``attractor plan CONFIG`` prints
the fully resolved config, and the run directory stores it with its hash.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from attractor.config.messages import format_validation_error
from attractor.config.sections import (
    CONTINUOUS_FACTORS,
    DATA_FACTORS,
    FACTORS,
    INIT_FACTORS,
    MAX_MEMBERS,
    OPTIONAL_SEED_FACTORS,
    SCHEMA_VERSION,
    SEED_FACTORS,
    TRAINER_FACTORS,
    Config,
    OptimizerName,
    PlanConfig,
    RunConfig,
    ScheduleName,
    TaskConfig,
    TrackConfig,
    TrainerConfig,
)
from attractor.errors import UserError

__all__ = [
    "read_toml",
    "CONTINUOUS_FACTORS",
    "DATA_FACTORS",
    "FACTORS",
    "INIT_FACTORS",
    "MAX_MEMBERS",
    "OPTIONAL_SEED_FACTORS",
    "SCHEMA_VERSION",
    "SEED_FACTORS",
    "TRAINER_FACTORS",
    "Config",
    "OptimizerName",
    "PlanConfig",
    "RunConfig",
    "ScheduleName",
    "TaskConfig",
    "TrackConfig",
    "TrainerConfig",
    "format_validation_error",
    "load_config",
    "parse_config",
]


def _first_non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The key path and value of the first inf or nan anywhere in ``value``, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        return None
    for where, item in items:
        if found := _first_non_finite(item, where):
            return found
    return None


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping; a bad key or value raises :class:`UserError` with one line.

    inf and nan are refused in every float (task options and plan levels included, which no
    typed field checks), since TOML writes them as plain ``inf`` / ``nan``.
    """
    if found := _first_non_finite(data):
        where, value = found
        raise UserError(
            f"{source}: invalid value at '{where}': {value} is not a finite number; give a finite "
            "value"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def read_toml(path: str | Path, example: str = "examples/") -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; one line naming what is wrong otherwise.

    Args:
        example: where a user finds a file of the right kind (named in the messages).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"config '{path}' is a directory; pass the path of a TOML file (see {example})"
        )
    if not path.is_file():
        raise UserError(
            f"config file '{path}' does not exist; pass the path of a TOML file (see {example})"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); pass a TOML config") from None
    except OSError as exc:
        raise UserError(f"cannot read config file '{path}': {exc.strerror or exc}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    data = read_toml(path)
    return parse_config(data, source=str(path))
