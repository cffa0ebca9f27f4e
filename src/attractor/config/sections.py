"""The config's models, one per concern (``[task]``, ``[trainer]``, ``[plan]``, ``[run]``,
``[track]``), and the plan factors they name."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

OptimizerName = Literal["sgd", "adam", "adamw", "cone"]
ScheduleName = Literal["constant", "cosine", "warmup-cosine", "linear-warmup", "step"]

#: Every factor a plan row can carry, with its default when it does not vary.
#: Seeds and on/off factors (bootstrap, holdout_group) are ints or None.
SEED_FACTORS = ("init_seed", "data_seed", "noise_seed")
OPTIONAL_SEED_FACTORS = ("bootstrap",)
DATA_FACTORS = ("holdout_group", "label_noise")
INIT_FACTORS = ("init_scale", "init_noise")
TRAINER_FACTORS = ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
FACTORS = SEED_FACTORS + OPTIONAL_SEED_FACTORS + DATA_FACTORS + INIT_FACTORS + TRAINER_FACTORS
CONTINUOUS_FACTORS = ("lr", "momentum", "weight_decay", "label_noise", "init_scale", "init_noise")
#: Most members one plan may have: refused when the config is read, long before a plan of ten
#: million rows takes a minute to build and gigabytes to train (split a bigger study in runs).
MAX_MEMBERS = 100_000


class _Strict(BaseModel):
    # inf / nan pass a float field's bounds (``lr = inf`` is > 0): refuse them outright.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Label smoothing: (1 - e) cross-entropy + e x the mean -log p over classes "
        "(classification tasks).",
    )
    clip_norm: float | None = Field(
        None, gt=0, description="Clip each member's gradient to this global L2 norm."
    )
    sam_rho: float = Field(
        0.0,
        ge=0,
        description="Sharpness-aware minimization: the gradient is taken at w + rho g/|g| "
        "(Foret et al. 2021); 0 = off.",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="EMA of weights: a member's model (snapshots, measures) is the average "
        "a <- d a + (1 - d) w after every step; 0 = off.",
    )
    swa_start: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Stochastic weight averaging: from this share of the steps on, a member's "
        "model is the running mean of its weights after every step.",
    )
    batch_size: int = Field(64, ge=1, description="Examples per minibatch.")
    epochs: float | None = Field(
        10, gt=0, description="Passes over the training split (ignored if steps is set)."
    )
    steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    schedule: ScheduleName = Field(
        "constant", description="constant | cosine | warmup-cosine | linear-warmup | step."
    )
    warmup_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of steps spent warming up (warm-up schedules)."
    )
    milestones: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [0.5, 0.75],
        description="Shares of training after which the step schedule multiplies the lr by gamma.",
    )
    gamma: float = Field(0.1, gt=0, le=1, description="The step schedule's factor per milestone.")

    @model_validator(mode="after")
    def _length_given(self) -> TrainerConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set trainer.epochs or trainer.steps")
        if self.ema_decay and self.swa_start is not None:
            raise ValueError("choose one weight average: ema_decay or swa_start, not both")
        return self


class PlanConfig(_Strict):
    """``[plan]``: how many members and what each one is perturbed by."""

    members: int = Field(
        8, ge=1, description=f"Ensemble members (rows of the plan), at most {MAX_MEMBERS:,}."
    )
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

    @field_validator("members")
    @classmethod
    def _at_most_max(cls, members: int) -> int:
        if members > MAX_MEMBERS:
            raise ValueError(
                f"{members} is over the maximum of {MAX_MEMBERS} members per run; split the "
                "study into several runs"
            )
        return members

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
    device: str = Field(
        "auto",
        description="Where members train: auto (CUDA when available, else the CPU) | cpu | cuda "
        "| cuda:N. Random draws stay on the CPU; files are the same on every device.",
    )
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32",
        description="Training forward passes: fp32 | tf32 (CUDA matmuls in TensorFloat-32) | bf16 "
        "(autocast); snapshots and measures stay float32.",
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

    @field_validator("device")
    @classmethod
    def _device_known(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device

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
