"""The world experiment: does a trained model bring a world to one basin from any start?

``attractor world CONFIG --out DIR``. The model is an ensemble: the members of an existing
run (``[world] model = "RUN"`` or ``"RUN:MEMBER"``), or one the experiment trains first in
``DIR/run`` from the world's own task (``[task]``, ``[trainer]``, ``[plan]`` of the config
override its defaults). A world that can take models attractor did not train
(``World.for_model``: lm-continuation) also takes local Hugging Face model directories,
one or a list (a seed family; ``RUN:MEMBER`` entries may join them), one member each.
Then, with every member rolled out from the same initial states
(:mod:`attractor.world.rollout`):

1. basin share vs the size of the initial-state perturbation (scales of the default range),
   with a two-way bootstrap interval over members and initial states;
2. the spread of each outcome feature split into its sources, member vs initial state;
3. the basin map over two initial-state factors (``[world.map]``);
4. closed-loop finite-time Lyapunov exponents (differentiable worlds);
5. structural stability of the world level: the basin share when the model is perturbed
   (dropout, DropConnect, weight noise, ...) and when the world's constants are, and the
   perturbation size at which the basin breaks;
6. trajectories in the world's 2-D projection and the final states per basin (images where
   the world renders them) for the report.

The rollouts — the members' forward passes and the world's steps — run on ``device``
(``--device``; placement, not part of the directory's identity): the policy's weights and
the initial states move there, the latter drawn on the CPU first (as every random number
is: model perturbations, sampling noise), so each device starts from the same numbers.
Final states and trajectories come back to the CPU, where every measure (labels, features,
bootstrap intervals, variance components) is taken: tables and JSON have the same form
wherever the rollouts ran, and agree across devices to float tolerance, not bitwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from attractor.errors import UserError
from attractor.experiments import Experiment
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.seeds import torch_generator
from attractor.training.device import resolve_device
from attractor.world import EnsemblePolicy, Policy, World, get_world, rollout
from attractor.world.result import WorldResult
from attractor.world.rollout import initial_batch


class MapSettings(BaseModel):
    """A basin map over two initial-state factors (the others at their nominal values)."""

    model_config = ConfigDict(extra="forbid")

    factors: list[str] = Field(min_length=1, max_length=2, description="One or two factors.")
    points: int = Field(21, ge=3, le=101, description="Grid points per factor.")
    scale: float = Field(5.0, gt=0, description="The map spans +- scale x each factor's range.")
    symmetric: bool = Field(
        True,
        description="False: 0 .. scale x range (factors that are sizes or counts, such as "
        "lm-continuation's substitutions).",
    )


class StructuralSettings(BaseModel):
    """Perturbations of the system itself: the model's weights and the world's constants."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("model")
    @classmethod
    def _kind_names(cls, model: dict[str, list[float]]) -> dict[str, list[float]]:
        # The CLI's spelling (weight-noise) and the library's (weight_noise) both work.
        return {kind.replace("-", "_"): levels for kind, levels in model.items()}

    model: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Model perturbation (dropout, dropconnect, weight-noise, quantize) -> "
        "levels, e.g. {weight-noise = [0.01, 0.05, 0.1]}.",
    )
    constants: dict[str, list[float]] = Field(
        default_factory=dict,
        description="World constant -> multipliers of its default, e.g. {length = [1.5, 2]}.",
    )
    threshold: float = Field(
        0.5, gt=0, lt=1, description="The basin breaks below this share of the unperturbed one."
    )


class WorldSettings(BaseModel):
    """Everything a world experiment depends on (its directory's identity)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A built-in world (attractor worlds) or module:function.")
    options: dict[str, Any] = Field(default_factory=dict, description="The world's options.")
    model: str | list[str] | None = Field(
        None,
        description="RUN or RUN:MEMBER; for lm-continuation also a Hugging Face model directory "
        "or a list of them (one member each); None trains one in OUT/run.",
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="[task]/[trainer]/[plan]/[run] overriding the world's training defaults.",
    )
    states: int = Field(256, ge=2, le=1_000_000, description="Initial states per scale.")
    steps: int | None = Field(None, ge=1, description="Rollout length; None: the world's.")
    scales: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0],
        description="Initial-state perturbation sizes, in units of the default range.",
    )
    seed: int = 0
    draws: int = Field(1000, ge=50, description="Bootstrap draws for every interval.")
    map: MapSettings | None = None
    growth_states: int = Field(16, ge=0, description="Initial states for Lyapunov exponents.")
    trajectories: int = Field(12, ge=0, description="Initial states drawn in the phase portrait.")
    structural: StructuralSettings = Field(default_factory=StructuralSettings)
    device: str = Field(
        "auto",
        description="Where the rollouts run (the model's forward passes and the world's "
        "steps) and, unless [world.train.run] names one, where the model trains: auto, cpu, "
        "cuda or cuda:N (placement: not part of the directory's identity; random draws and "
        "measures stay on the CPU).",
    )

    @field_validator("model")
    @classmethod
    def _some_model(cls, model: str | list[str] | None) -> str | list[str] | None:
        if isinstance(model, list) and not model:
            raise ValueError("model is an empty list; name at least one model directory")
        return model

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, scales: list[float]) -> list[float]:
        if not scales or any(not s > 0 for s in scales):
            raise ValueError("scales must be a non-empty list of positive numbers")
        return sorted(set(scales))


def _model_members(spec: str) -> tuple[Path, list[int] | None]:
    """``RUN`` or ``RUN:MEMBER`` -> the run directory and the members (None: all)."""
    run, _, member = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if member and not member.isdigit():
        raise UserError(f"model {spec!r} is not RUN or RUN:MEMBER (a member is a number)")
    return Path(run or spec), ([int(member)] if member else None)


def _entries(model: str | list[str]) -> list[str]:
    return [model] if isinstance(model, str) else list(model)


def _is_model_directory(entry: str) -> bool:
    """A Hugging Face model directory (``config.json``), not a run directory."""
    path = Path(entry)
    return (path / "config.json").is_file() and not (path / "manifest.json").is_file()


def _from_outside(world: World, model: str | list[str]) -> bool:
    """Whether ``model`` names models attractor did not train (or a list of members), loaded
    one by one through ``world.for_model``; one line if the world cannot take them.
    """
    entries = _entries(model)
    outside = isinstance(model, list) or any(_is_model_directory(e) for e in entries)
    if outside and world.for_model is None:
        what = next((e for e in entries if _is_model_directory(e)), None)
        raise UserError(
            f"world '{world.name}' takes its model from a run: give one RUN or RUN:MEMBER"
            + (f", not the model directory '{what}'" if what else ", not a list")
        )
    for entry in entries:
        if not _is_model_directory(entry):
            run, _ = _model_members(entry)
            if outside and not (run / "manifest.json").is_file():
                raise UserError(
                    f"model '{entry}' is neither a Hugging Face model directory (config.json) "
                    "nor a run directory (manifest.json)"
                )
    return outside


def _outside_policy(
    world: World, model: str | list[str], device: torch.device
) -> tuple[World, Policy, dict[str, Any], int]:
    """The world made for the models ``model`` names and their policy on ``device`` (see
    :func:`_policy`).
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.runs.lm_models import load_model
    from attractor.tasks.lm_models import check_compatible

    specs: list[str] = []
    for entry in _entries(model):
        if _is_model_directory(entry):
            specs.append(entry)
            continue
        run, members = _model_members(entry)
        specs += [f"{run}:{i}" for i in (members or Ensemble.load(run).members)]
    models = [load_model(spec).to(device) for spec in specs]
    for other in models[1:]:
        check_compatible(models[0], other)
    assert world.for_model is not None
    made, policy = world.for_model(models)
    return made, policy, {"models": specs, "members": list(range(len(models)))}, len(models)


def _trained(world: World, settings: WorldSettings, store: RunStore, progress: bool) -> Any:
    """The world's model ensemble, trained in ``OUT/run`` (resumed if it is there)."""
    from attractor.config import parse_config
    from attractor.runs.launch import train

    sections: dict[str, dict[str, Any]] = {
        "task": dict(world.task or {}),
        "trainer": dict(world.trainer),
        "plan": {"members": 8, "vary": ["init_seed", "data_seed"]},
    }
    for section, values in settings.train.items():
        if not isinstance(values, dict):
            raise UserError(
                f"[world.train] {section} must be a table, e.g. [world.train.{section}]"
            )
        sections.setdefault(section, {}).update(values)
    # The model trains where the rollouts run unless [world.train.run] says otherwise.
    sections.setdefault("run", {}).setdefault("device", settings.device)
    config = parse_config(sections, source="[world.train]")
    return train(config, store.root / "run", progress=progress)


def _policy(
    world: World, settings: WorldSettings, store: RunStore, progress: bool, device: torch.device
) -> tuple[World, Policy | None, dict[str, Any], int]:
    """The world (re-made for models from outside attractor), the policy of every member on
    ``device`` (None for a world without a model), where the models came from, and m.
    """
    from attractor.runs.ensemble import Ensemble

    if world.task is None:
        return world, None, {}, 1
    if settings.model is not None and _from_outside(world, settings.model):
        return _outside_policy(world, settings.model, device)
    if settings.model is not None:
        run, chosen = _model_members(_entries(settings.model)[0])
        ensemble = Ensemble.load(run)
    else:
        chosen, ensemble = None, _trained(world, settings, store, progress)
    finished = ensemble.members
    members = finished if chosen is None else chosen
    missing = sorted(set(members) - set(finished))
    if missing:
        raise UserError(f"run '{ensemble.store.root}' has no finished member {missing[0]}")
    params, buffers = ensemble.stacked(members)
    policy = EnsemblePolicy(ensemble.task.make_model(), params, buffers, device=device)
    root = str(ensemble.store.root)
    if world.for_model is not None:
        from attractor.runs.lm_models import member_model

        # The world as the run's models see it (an LM's context and vocabulary); the stacked
        # members stay the policy (one vectorized call instead of one per member).
        world = world.for_model([member_model(ensemble, members[0], f"{root}:{members[0]}")])[0]
    return world, policy, {"run": root, "members": members}, len(members)


def _trajectories(
    world: World, policy: Policy | None, m: int, settings: WorldSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Projected trajectories of a few initial states (phase portrait) and their spread
    over time: the mean distance of the states from their mean, in the projection.
    """
    n = settings.trajectories
    if n == 0:
        return pd.DataFrame(), pd.DataFrame()
    x0 = world.initial(n, 1.0, torch_generator("world", settings.seed, 7))
    run = rollout(world, policy, initial_batch(x0, m), settings.steps, record=50)
    if run.trajectory is None:
        return pd.DataFrame(), pd.DataFrame()
    xy = world.project(run.trajectory.cpu()).detach().double()  # [k, m, n, 2]
    k = xy.shape[0]
    index = pd.MultiIndex.from_product(
        [run.times, range(m), range(n)], names=["t", "member", "state"]
    )
    frame = pd.DataFrame(xy.reshape(k * m * n, 2).numpy(), index=index, columns=["px", "py"])
    centre = xy.mean(dim=2, keepdim=True)
    spread = (xy - centre).norm(dim=-1).mean(dim=(1, 2))
    return frame.reset_index(), pd.DataFrame({"t": run.times, "spread": spread.numpy()})


def _samples(
    world: World, final: torch.Tensor, labels: torch.Tensor, per_basin: int = 8
) -> pd.DataFrame:
    """Up to ``per_basin`` final states of each basin, rendered by the world (images or
    texts).
    """
    if world.describe is None:
        return pd.DataFrame()
    rows = []
    m, s = labels.shape
    flat_labels = labels.reshape(-1)
    for label in torch.unique(flat_labels).tolist():
        # Round-robin over members, so a row shows what different members make of it.
        by_member: dict[int, list[int]] = {}
        for i in torch.nonzero(flat_labels == label).flatten().tolist():
            by_member.setdefault(i // s, []).append(i)
        picks: list[int] = []
        for rank in range(per_basin):
            picks += [items[rank] for items in by_member.values() if rank < len(items)]
        picks = picks[:per_basin]
        states = torch.stack([final[i // s, i % s] for i in picks])
        rendered = world.describe(states)
        for pick, item in zip(picks, rendered, strict=True):
            row: dict[str, Any] = {"basin": int(label), "member": pick // s, "state": pick % s}
            if isinstance(item, str):
                row["text"] = item
            else:
                image = item.detach().double()
                row |= {"shape": list(image.shape), "pixels": image.reshape(-1).tolist()}
            rows.append(row)
    return pd.DataFrame(rows)


def run_world(settings: WorldSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Run the world experiment (see the module docstring) in ``store``'s directory."""
    world = get_world(settings.name, settings.options)
    _check_settings(world, settings)
    device = resolve_device(settings.device)
    stages_total = 4 + (settings.map is not None) + bool(_structural_levels(settings))
    with Stages("world", stages_total, progress) as stages:
        stages.begin("the model: " + ("none" if world.task is None else "loading or training"))
        world, policy, model, m = _policy(world, settings, store, progress, device)
        # Every initial state from here on is drawn on the CPU and moved to the device.
        measured = _measure(world.on(device), policy, m, settings, stages)
    summary = _summary(measured, world.goal is not None)
    return [
        WorldResult(
            world=world.name,
            description=world.description,
            constants=dict(world.constants),
            model=model,
            settings=settings.model_dump(mode="json"),
            summary=summary,
            tables=measured["tables"],
        )
    ]


def _measure(
    world: World, policy: Policy | None, m: int, settings: WorldSettings, stages: Stages
) -> dict[str, Any]:
    """Every measure of the module docstring; their tables and headline numbers."""
    from attractor.world.basins import basin_labels, basin_vs_scale

    tables: dict[str, pd.DataFrame] = {}
    found: dict[str, Any] = {}
    stages.begin(f"basin share at {len(settings.scales)} scales x {settings.states} states")
    tables["scales"] = basin_vs_scale(
        world,
        policy,
        m,
        settings.scales,
        settings.states,
        settings.steps,
        settings.seed,
        draws=settings.draws,
    )
    stages.begin("outcomes at the default range: sources, agreement")
    x0 = world.initial(settings.states, 1.0, torch_generator("world", settings.seed, 1))
    final = rollout(world, policy, initial_batch(x0, m), settings.steps).final.cpu()
    labels = basin_labels(world, final)
    features = world.features(final, world.constants)
    if m >= 2:
        tables["sources"], found["agreement"] = _sources(world, features, labels, settings)
    if m >= 2 and isinstance(policy, EnsemblePolicy) and settings.structural.model:
        tables["perturbed_sources"] = _perturbed_sources(world, policy, x0, settings)
    tables["samples"] = _samples(world, final, features.get(world.basin_feature, labels))
    if settings.map is not None:
        stages.begin(f"basin map over {' x '.join(settings.map.factors)}")
        tables["map"] = _map(world, policy, m, settings)
    stages.begin("closed-loop Lyapunov exponents and trajectories")
    if world.differentiable and settings.growth_states > 0:
        tables["growth"], found["lyapunov_top"] = _growth(world, policy, m, settings)
    tables["trajectories"], tables["spread"] = _trajectories(world, policy, m, settings)
    if _structural_levels(settings):
        stages.begin(f"structural stability: {_structural_levels(settings)} perturbation levels")
        tables["structural"], found["breaks"] = _structural(world, policy, m, settings)
    found["tables"] = {k: v for k, v in tables.items() if not v.empty}
    found["axes"] = world.axes
    return found


def _sources(
    world: World,
    features: dict[str, torch.Tensor],
    labels: torch.Tensor,
    settings: WorldSettings,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The spread of every outcome feature ``[m, s]`` by source, and whether members agree
    on a basin.
    """
    from attractor.world.basins import basin_agreement
    from attractor.world.sources import outcome_sources

    values = dict(features)
    majority = int(torch.mode(labels.reshape(-1)).values)
    values["in the majority basin"] = (labels == majority).long()
    frames = []
    for name, value in values.items():
        if not value.is_floating_point() and int(value.max()) > 1:
            continue  # a many-class label: its 0/1 basin indicator stands for it
        if float(value.double().var()) == 0:
            continue  # no spread to split
        frame = outcome_sources(value.double(), draws=settings.draws, seed=settings.seed)
        frames.append(frame.assign(feature=name))
    # Agreement on *which* basin: the basin feature (a digit's class), not the goal flag.
    basins = values.get(world.basin_feature, labels)
    agreement = basin_agreement(basins, draws=settings.draws, seed=settings.seed)
    rates = {
        str(row["between"]): {k: float(row[k]) for k in ("rate", "low", "high", "chance")}
        for row in agreement.to_dict("records")
    }
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        table = table[["feature", *[c for c in table.columns if c != "feature"]]]
    return table, rates


#: Perturbed copies of every member drawn for the three-way split of the spread.
PERTURBED_COPIES = 4


def _perturbed_sources(
    world: World, policy: EnsemblePolicy, x0: torch.Tensor, settings: WorldSettings
) -> pd.DataFrame:
    """Each numeric outcome's spread split into model perturbation (independent draws of the
    first structural perturbation at its smallest level), member and initial state.
    """
    from attractor.world.sources import perturbed_sources
    from attractor.world.structural import perturbed_policy

    kind, levels = next(iter(settings.structural.model.items()))
    size = min(levels) if kind != "quantize" else max(levels)
    outcomes: dict[str, list[torch.Tensor]] = {}
    for copy in range(PERTURBED_COPIES):
        gen = torch_generator(f"world-sources:{kind}:{size!r}", settings.seed, copy)
        perturbed = perturbed_policy(
            policy.template, policy.params, policy.buffers, kind, size, gen
        )
        x = initial_batch(x0, policy.members)
        final = rollout(world, perturbed, x, settings.steps).final.cpu()
        for name, value in world.features(final, world.constants).items():
            if value.is_floating_point():
                outcomes.setdefault(name, []).append(value.double())
    frames = []
    for name, values in outcomes.items():
        stacked = torch.stack(values)  # [copies, m, s]
        if float(stacked.var()) > 0 and bool(torch.isfinite(stacked).all()):
            frame = perturbed_sources(stacked, draws=settings.draws, seed=settings.seed)
            frames.append(frame.assign(feature=name, perturbation=f"{kind} {size:g}"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _map(world: World, policy: Policy | None, m: int, settings: WorldSettings) -> pd.DataFrame:
    """Basin share over a grid of one or two factors, +- scale x their default ranges."""
    from attractor.world.basins import basin_map

    assert settings.map is not None
    factors, points, scale = settings.map.factors, settings.map.points, settings.map.scale
    low = -scale if settings.map.symmetric else 0.0
    grid = [
        torch.linspace(low * world.factors[f], scale * world.factors[f], points) for f in factors
    ]
    a, b = factors[0], factors[1] if len(factors) > 1 else None
    frame = basin_map(
        world, policy, a, grid[0], b, grid[1] if b else None, members=m, steps=settings.steps
    )
    return frame.assign(factor_a=a, factor_b=b or "")


def _growth(
    world: World, policy: Policy | None, m: int, settings: WorldSettings
) -> tuple[pd.DataFrame, dict[str, float]]:
    from attractor.world.growth import lyapunov

    x0 = world.initial(settings.growth_states, 1.0, torch_generator("world", settings.seed, 3))
    found = lyapunov(world, policy, initial_batch(x0, m), settings.steps, seed=settings.seed)
    values = found.exponents.double()
    mm, ss, k = values.shape
    index = pd.MultiIndex.from_product(
        [range(mm), range(ss), range(1, k + 1)], names=["member", "state", "exponent"]
    )
    table = pd.DataFrame({"value": values.reshape(-1).numpy()}, index=index).reset_index()
    top = found.top(draws=settings.draws, seed=settings.seed)
    return table, {"mean": top.value, "low": top.low, "high": top.high}


def _structural(
    world: World, policy: Policy | None, m: int, settings: WorldSettings
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Basin share under each perturbation of the model and of the world's constants, and
    where each breaks (:func:`attractor.world.structural.break_point`).
    """
    from attractor.world.structural import break_point, constants_curve, model_curve

    common = {"steps": settings.steps, "seed": settings.seed, "draws": settings.draws}
    frames, breaks = [], {}
    for kind, levels in settings.structural.model.items():
        assert isinstance(policy, EnsemblePolicy)  # _check_settings refused the others
        curve = model_curve(
            world,
            policy.template,
            policy.params,
            policy.buffers,
            kind,
            levels,
            settings.states,
            **common,
        )
        frames.append(curve.assign(perturbation=f"model {kind}"))
    for name, factors in settings.structural.constants.items():
        curve = constants_curve(world, policy, m, [name], factors, settings.states, **common)
        frames.append(curve.rename(columns={"factor": "level"}).assign(perturbation=f"{name} x"))
    for frame in frames:
        where = break_point(frame, fraction=settings.structural.threshold, x="level")
        name = str(frame["perturbation"].iloc[0])
        breaks[name] = (
            {"at": None}
            if where is None
            else {
                "at": where.at,
                "early": where.early,
                "late": where.late,
                "threshold": where.threshold,
            }
        )
    keep = ["perturbation", "level", "share", "low", "high", "n"]
    table = pd.concat([f[[c for c in keep if c in f]] for f in frames], ignore_index=True)
    return table, breaks


def _summary(measured: dict[str, Any], has_goal: bool) -> dict[str, Any]:
    """The headline numbers the report answers with (see :class:`WorldResult`)."""
    scales = measured["tables"]["scales"]
    at_one = scales[scales["scale"] == 1.0]
    row = (at_one if not at_one.empty else scales).iloc[0]
    widest = scales.iloc[-1]
    summary: dict[str, Any] = {
        "has_goal": has_goal,
        "basin_share": float(row["share"]),
        "low": float(row["low"]),
        "high": float(row["high"]),
        "scale": float(row["scale"]),
        "basin": None if has_goal else int(row["basin"]),
        "widest": {k: float(widest[k]) for k in ("scale", "share", "low", "high")},
        "axes": list(measured["axes"]),
    }
    sources = measured["tables"].get("sources")
    if sources is not None and not sources.empty:
        split = sources[sources["source"].isin(["member", "state"])]
        top = split.loc[split["share"].idxmax()]
        summary["dominant_source"] = {
            "feature": top["feature"],
            "source": top["source"],
            "share": float(top["share"]),
        }
    for key in ("lyapunov_top", "agreement", "breaks"):
        if key in measured:
            summary[key] = measured[key]
    return summary


def _structural_levels(settings: WorldSettings) -> int:
    s = settings.structural
    return sum(len(v) for v in s.model.values()) + sum(len(v) for v in s.constants.values())


def _check_settings(world: World, settings: WorldSettings) -> None:
    """One line for a setting the world cannot take, before anything is trained."""
    if settings.map is not None:
        if world.at is None:
            raise UserError(
                f"world '{world.name}' cannot set its factors one by one; drop [world.map]"
            )
        if len(set(settings.map.factors)) != len(settings.map.factors):
            raise UserError("[world.map] factors: give two different factors, or one")
        unknown = [f for f in settings.map.factors if f not in world.factors]
        if unknown:
            raise UserError(
                f"world '{world.name}' has no factor {unknown[0]!r}; its factors: "
                f"{', '.join(world.factors)}"
            )
    world.with_constants(**{name: 1.0 for name in settings.structural.constants})
    if settings.structural.model and world.task is None:
        raise UserError(
            f"world '{world.name}' has no model to perturb; drop [world.structural].model"
        )
    from attractor.measure.perturbations import check_levels

    for kind, levels in settings.structural.model.items():
        check_levels(kind, levels)
    if settings.model is not None and _from_outside(world, settings.model):
        if settings.structural.model:
            raise UserError(
                "[world.structural] model perturbations need a run's stacked members; drop "
                "them for models loaded from directories"
            )
        if settings.train:
            raise UserError("[world.train] is for a model the world trains; drop it with model")
    task = settings.train.get("task", {})
    if any(world.task is None or world.task.get(k) != v for k, v in task.items()):
        raise UserError(
            "the world's task options go in [world.options] task = {...}, not [task]: the "
            "world samples with the same options its model is trained on"
        )
    _dry_step(world)


def _dry_step(world: World) -> None:
    """One step of two initial states without a model, so that a world of the wrong shape
    is refused before anything is trained (a model-driven step is checked as it runs).
    """
    if world.task is not None:
        return
    from attractor.world.basins import rollout_labels

    x0 = world.initial(2, 1.0, torch_generator("world", 0, 9))
    rollout_labels(world, None, initial_batch(x0, 1), steps=1)


EXPERIMENT = Experiment(
    name="world",
    settings=WorldSettings,
    run=run_world,
    summary="a model acting on a world: basins of attraction, their sources, closed-loop growth",
)


__all__ = ["EXPERIMENT", "MapSettings", "StructuralSettings", "WorldSettings", "run_world"]
