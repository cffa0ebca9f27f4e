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

import difflib
import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attractor.errors import UserError

SCHEMA_VERSION = 1

OptimizerName = Literal["sgd", "adam", "adamw", "cone"]
ScheduleName = Literal["constant", "cosine", "warmup-cosine", "linear-warmup"]

#: Every factor a plan row can carry, with its default when it does not vary.
#: Seeds and on/off factors (bootstrap, holdout_group) are ints or None.
SEED_FACTORS = ("init_seed", "data_seed", "noise_seed")
OPTIONAL_SEED_FACTORS = ("bootstrap",)
DATA_FACTORS = ("holdout_group", "label_noise")
INIT_FACTORS = ("init_scale", "init_noise")
TRAINER_FACTORS = ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
FACTORS = SEED_FACTORS + OPTIONAL_SEED_FACTORS + DATA_FACTORS + INIT_FACTORS + TRAINER_FACTORS
CONTINUOUS_FACTORS = ("lr", "momentum", "weight_decay", "label_noise", "init_scale", "init_noise")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(BaseModel):
    """``[task]``: a registered task name (or ``module:function``) plus that task's options.

    Options are checked against the task's own options model when the task is built, so
    an unknown option is refused with its path (``task.hiden``) like any other key.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        "digits-mlp", description="Task name (`attractor tasks`) or `module:function`."
    )

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainerConfig(_Strict):
    """``[trainer]``: the inner optimizer every member is trained with (unless the plan varies
    it).
    """

    optimizer: OptimizerName = Field("sgd", description="sgd | adam | adamw | cone.")
    lr: float = Field(0.05, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD and cone momentum (Adam: beta1).")
    nesterov: bool = Field(False, description="Nesterov momentum for sgd and cone.")
    beta2: float = Field(0.999, gt=0, lt=1, description="Adam/AdamW second-moment decay.")
    eps: float = Field(1e-8, gt=0, description="Adam/AdamW denominator epsilon.")
    weight_decay: float = Field(
        0.0, ge=0, description="L2 penalty (sgd, adam, cone) or decoupled decay (adamw)."
    )
    cone_angle: float = Field(
        0.3,
        ge=0,
        lt=math.pi / 2,
        description="Cone descent: half-angle in radians around -grad (0 = gradient descent).",
    )
    cone_random: bool = Field(
        False,
        description="Cone descent: draw each step's angle uniformly from [0, cone_angle], per "
        "member.",
    )
    cone_per_tensor: bool = Field(
        False,
        description="Cone descent: one cone per parameter tensor instead of one over all "
        "parameters.",
    )
    logit_penalty: float = Field(
        0.0,
        ge=0,
        description="Spectral decoupling: adds logit_penalty/2 * |logits|^2 per example to the "
        "training loss (Pezeshki et al. 2021).",
    )
    batch_size: int = Field(64, ge=1, description="Examples per minibatch.")
    epochs: float | None = Field(
        10, gt=0, description="Passes over the training split (ignored if steps is set)."
    )
    steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    schedule: ScheduleName = Field(
        "constant", description="constant | cosine | warmup-cosine | linear-warmup."
    )
    warmup_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of steps spent warming up (warm-up schedules)."
    )

    @model_validator(mode="after")
    def _length_given(self) -> TrainerConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set trainer.epochs or trainer.steps")
        return self


class PlanConfig(_Strict):
    """``[plan]``: how many members and what each one is perturbed by."""

    members: int = Field(8, ge=1, description="Ensemble members (rows of the plan).")
    design: Literal["random", "factorial", "grid", "sobol"] = Field(
        "random", description="random | factorial | grid | sobol."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the design itself (which values each row gets)."
    )
    vary: list[str] = Field(
        default_factory=lambda: ["init_seed"], description="Factors that differ between members."
    )
    levels: dict[str, list[Any]] = Field(
        default_factory=dict, description="Explicit levels per factor (factorial, grid, random)."
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="[low, high] of continuous factors (random, grid, sobol); lr is log-uniform.",
    )
    grid_points: int = Field(
        4, ge=2, description="Evenly spaced levels per ranged factor in a grid design."
    )

    @field_validator("vary")
    @classmethod
    def _known_vary(cls, vary: list[str]) -> list[str]:
        unknown = [f for f in vary if f not in FACTORS]
        if unknown:
            raise ValueError(f"unknown factor {unknown[0]!r}; factors are: {', '.join(FACTORS)}")
        return vary

    @field_validator("levels", "ranges")
    @classmethod
    def _known_factor_keys(cls, table: dict[str, Any]) -> dict[str, Any]:
        unknown = [f for f in table if f not in FACTORS]
        if unknown:
            raise ValueError(f"unknown factor {unknown[0]!r}; factors are: {', '.join(FACTORS)}")
        return table

    @field_validator("ranges")
    @classmethod
    def _ordered_ranges(
        cls, ranges: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for name, (low, high) in ranges.items():
            if name not in CONTINUOUS_FACTORS:
                raise ValueError(
                    f"{name!r} is not continuous; give it [plan.levels] instead of a range"
                )
            if not low <= high:
                raise ValueError(f"range of {name!r} must be [low, high] with low <= high")
            if name == "lr" and low <= 0:
                raise ValueError("range of 'lr' must be positive (it is sampled log-uniformly)")
        return ranges


class RunConfig(_Strict):
    """``[run]``: how the plan is executed and what is recorded."""

    strategy: Literal["auto", "vectorized", "loop"] = Field(
        "auto",
        description="vectorized (many members per process), loop (any module), or auto (vectorized "
        "where torch.func can batch the model).",
    )
    backend: Literal["local", "process", "ray"] = Field(
        "local",
        description="Where chunks run: local (this process) | process (a spawn pool on this "
        "machine) | ray (a Ray cluster; extra `ray`).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="process: pool size; ray without ray_address: CPUs of the local Ray instance. "
        "None = all cores.",
    )
    num_cpus: int = Field(
        1, ge=1, description="process and ray: CPUs (and torch threads) each chunk's worker uses."
    )
    ray_address: str | None = Field(
        None,
        description="ray: address of a running cluster (`ray start --head` prints it); None starts "
        "a local Ray instance.",
    )
    max_retries: int = Field(
        3,
        ge=0,
        description="ray: times a chunk is retried when its worker process or node dies (an error "
        "in training is not retried).",
    )
    snapshots: int | list[int] = Field(
        16, description="Number of log-spaced snapshot steps, or an explicit list of steps."
    )
    chunk_size: int | None = Field(
        None, ge=2, description="Members trained together; None picks by memory (always >= 2)."
    )
    eval_batch_size: int = Field(
        1024, ge=1, description="Examples per forward pass when evaluating."
    )
    track_path: bool = Field(
        False,
        description="Record each member's path length and distance from init in weight space at "
        "every snapshot.",
    )

    @field_validator("snapshots")
    @classmethod
    def _snapshots_valid(cls, snapshots: int | list[int]) -> int | list[int]:
        if isinstance(snapshots, int) and snapshots < 1:
            raise ValueError("snapshots must be >= 1 (the final step is always saved)")
        if isinstance(snapshots, list) and any(s < 0 for s in snapshots):
            raise ValueError("snapshot steps must be >= 0")
        return snapshots


class TrackConfig(_Strict):
    """``[track]``: where the run is also recorded (the run directory always is the record)."""

    mlflow: bool = Field(
        False,
        description="Log the run to MLflow (extra `mlflow`): config as params, per-member metrics, "
        "summary and report as artifacts.",
    )
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; None = $MLFLOW_TRACKING_URI, else sqlite `mlflow.db` "
        "beside the run directory.",
    )
    experiment: str = Field("attractor", description="MLflow experiment the run is logged under.")


class Config(_Strict):
    """A whole experiment: what to train, how, how many times, perturbed by what."""

    task: TaskConfig = Field(default_factory=TaskConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)

    def resolved(self) -> dict[str, Any]:
        """Every key with its value, defaults filled in: what a run directory records."""
        return json.loads(self.model_dump_json())

    def hash(self) -> str:
        """Hash of the *whole* resolved config, so changing a default changes the hash."""
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


#: pydantic names the branch of a union in an error's location (``run.snapshots.list[int]``).
_UNION_TAG = re.compile(r"^(int|float|str|bool|none|(list|tuple|dict)\[.*\])$")


def _section_fields(loc: tuple[Any, ...]) -> tuple[str, list[str]] | None:
    """``([trainer], its keys)`` for the model at ``loc`` (a path of field names), else None."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    name = "the top level" if not loc else "[" + ".".join(map(str, loc)) + "]"
    return name, list(model.model_fields)


def _unknown_key(loc: tuple[Any, ...], source: str) -> str:
    path = ".".join(map(str, loc))
    key = str(loc[-1])
    found = _section_fields(loc[:-1])
    if found is None:
        return f"{source}: unknown key '{path}'; remove it or check its spelling"
    where, keys = found
    hint = ""
    if close := difflib.get_close_matches(key, keys, n=1):
        hint = f"did you mean '{close[0]}'? "
    elif not loc[:-1]:  # a section key written above its [section] header
        owners = [name for name in keys if key in (_section_fields((name,)) or ("", []))[1]]
        if owners:
            hint = f"move it under [{owners[0]}]; "
    return f"{source}: unknown key '{path}'; {hint}keys of {where}: {', '.join(keys)}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One line naming the first bad key, what is wrong there and what is expected."""
    errors = exc.errors()
    error = errors[0]
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc, source)
    tagged = [i for i, part in enumerate(loc) if isinstance(part, str) and _UNION_TAG.match(part)]
    if (
        tagged
    ):  # a value no branch of a union accepts: name the branches, not the first one's complaint
        field = loc[: tagged[0]]
        branches = [
            str(e["loc"][len(field)])
            for e in errors
            if tuple(e["loc"][: len(field)]) == field and len(e["loc"]) > len(field)
        ]
        expected = " or ".join(dict.fromkeys(branches))
        return (
            f"{source}: invalid value at '{'.'.join(map(str, field))}': expected {expected}, "
            f"got {_shown(error['input'])}"
        )
    path = ".".join(map(str, loc))
    if (
        error["type"] in ("model_type", "model_attributes_type")
        and _section_fields(loc) is not None
    ):
        return (
            f"{source}: '{path}' must be a table ([{path}] followed by its keys), got "
            f"{_shown(error['input'])}"
        )
    if (
        error["type"] == "missing" and loc and isinstance(loc[-1], int)
    ):  # a short tuple, e.g. a range
        parent = ".".join(map(str, loc[:-1]))
        return f"{source}: invalid value at '{parent}': too few items, got {_shown(error['input'])}"
    message = error["msg"].removeprefix("Value error, ")
    where = f" at '{path}'" if path else ""
    got = (
        f", got {_shown(error['input'])}"
        if not isinstance(error["input"], dict) and error["type"] != "value_error"
        else ""
    )
    return f"{source}: invalid value{where}: {message}{got}"


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping; a bad key or value raises :class:`UserError` with one line."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"config '{path}' is a directory; pass the path of a TOML file (see examples/)"
        )
    if not path.is_file():
        raise UserError(
            f"config file '{path}' does not exist; pass the path of a TOML file (see examples/)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); pass a TOML config") from None
    except OSError as exc:
        raise UserError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
    return parse_config(data, source=str(path))
