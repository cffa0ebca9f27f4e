"""What can be compared: model specs parsed into ready ``nn.Module`` s and their task.

A spec is a source, then any number of ``@`` perturbations applied in order::

    RUN_DIR:MEMBER[:STEP]        member MEMBER of a run at snapshot STEP (default: its last)
    RUN_DIR:mean[:STEP]          the ensemble mean of the run's finished members: the log of
                                 the mean probabilities, used as logits
    FILE.safetensors             weights for a task's architecture; the task comes from the
                                 ``task`` argument (a run directory, a config TOML or a task
                                 name with default options) or, for a run's own snapshot
                                 files (RUN/members/M/step-S.safetensors), from that run

    @dropout=P      drop each hidden unit with probability P (one fixed mask, rescaled 1/(1-P))
    @dropconnect=P  zero each weight-matrix entry with probability P (fixed mask, rescaled)
    @noise=S        add Gaussian noise of S x RMS(tensor) to every parameter tensor
    @prune=P        zero the share P of smallest-magnitude entries of every weight matrix
    @fp16 / @bf16   round every parameter to half precision / bfloat16 (compute stays float32)
    @int8 / @bits=B symmetric per-tensor rounding of every parameter to 8 / B bits
    @seed=N         seed of the random masks and noises of this spec (default 0)

e.g. ``runs/digits:3@dropout=0.1`` or ``runs/digits:mean:120@noise=1e-3@seed=2``. A mean's
perturbation draws each member's mask from its own generator. Dropout, DropConnect,
noise and rounding are those of :mod:`attractor.measure.structural` (one copy, ``K = 1``).

References:
    Han, Pool, Tran & Dally (2015), "Learning both Weights and Connections for Efficient
    Neural Networks" (magnitude pruning); see :mod:`attractor.measure.structural` for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from attractor.config import TaskConfig, load_config
from attractor.errors import UserError
from attractor.measure import structural
from attractor.runs.ensemble import Ensemble
from attractor.seeds import torch_generator
from attractor.tasks import build_task
from attractor.tasks.base import Task

_GRAMMAR = (
    "RUN_DIR:MEMBER[:STEP], RUN_DIR:mean[:STEP] or FILE.safetensors, then @PERTURBATION=LEVEL..."
)


class MeanModel(nn.Module):
    """The ensemble mean: ``log(mean_i softmax(f_i(x)))`` as logits, ``[n, *shape] -> [n, C]``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        log_p = torch.stack([torch.log_softmax(m(x), -1) for m in self.members])
        return torch.logsumexp(log_p, 0) - math.log(len(self.members))


def _stacked(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach()[None] for k, v in model.named_parameters()}


def _hidden_inputs(model: nn.Module) -> set[str]:
    """Weights of every ``nn.Linear`` but the first (their inputs are hidden units), stacked-name
    style.
    """
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return {f"{name}.weight" for name in linears[1:]}


def _structural(
    kind: str, level: Callable[[float], float] = lambda x: x
) -> Callable[[nn.Module, float, torch.Generator], None]:
    def apply(model: nn.Module, value: float, gen: torch.Generator) -> None:
        hidden = _hidden_inputs(model)
        if kind == "dropout" and not hidden:
            raise UserError(
                "@dropout needs a model with a hidden nn.Linear layer; this one has none (try "
                "@dropconnect)"
            )
        new = structural.KINDS[kind][0](_stacked(model), level(value), gen, hidden)
        _assign(model, {k: v[0] for k, v in new.items()})

    return apply


def _round(dtype: torch.dtype) -> Callable[[nn.Module, float, torch.Generator], None]:
    def apply(model: nn.Module, value: float, gen: torch.Generator) -> None:
        _assign(model, {k: v.detach().to(dtype).to(v.dtype) for k, v in model.named_parameters()})

    return apply


def _prune(model: nn.Module, share: float, gen: torch.Generator) -> None:
    """Zero the ``share`` smallest |w| of each weight matrix (ties by position); biases stay."""
    out = {}
    for k, v in model.named_parameters():
        w = v.detach()
        if k.endswith("weight") and w.dim() >= 2 and share > 0:
            n = int(round(share * w.numel()))
            order = torch.argsort(w.abs().flatten(), stable=True)[:n]
            w = w.flatten().clone().index_fill_(0, order, 0.0).view_as(w)
        out[k] = w
    _assign(model, out)


def _assign(model: nn.Module, values: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(values[k])


_PROBABILITY = (lambda x: 0 <= x < 1, "a probability in [0, 1)")
#: Perturbation name -> (apply(model, level, generator), (level check, valid levels), or None when
#: it takes no level).
PERTURBATIONS: dict[
    str,
    tuple[
        Callable[[nn.Module, float, torch.Generator], None],
        tuple[Callable[[float], bool], str] | None,
    ],
] = {
    "dropout": (_structural("dropout"), _PROBABILITY),
    "dropconnect": (_structural("dropconnect"), _PROBABILITY),
    "noise": (_structural("weight_noise"), (lambda x: x >= 0, "a relative noise scale >= 0")),
    "prune": (_prune, (lambda x: 0 <= x <= 1, "a share in [0, 1]")),
    "bits": (
        _structural("quantize"),
        (lambda x: x >= 1 and float(x).is_integer(), "a whole number of bits >= 1"),
    ),
    "int8": (lambda m, _, g: _structural("quantize")(m, 8.0, g), None),
    "fp16": (_round(torch.float16), None),
    "bf16": (_round(torch.bfloat16), None),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``source`` (run directory or weights file), ``member`` (an id,
    ``"mean"``, or ``None`` for a file), ``step``, ``perturbations`` in order, ``seed``."""

    text: str
    source: str
    member: int | str | None
    step: int | None
    perturbations: tuple[tuple[str, float], ...]
    seed: int = 0


def parse_spec(text: str) -> ModelSpec:
    """Parse ``text`` (grammar in the module docstring); a bad spec raises a one-line
    :class:`UserError`.
    """
    source, *mods = text.strip().split("@")
    if not source:
        raise UserError(f"model spec {text!r} names no model; write {_GRAMMAR}")
    perturbations, seed = [], 0
    for mod in mods:
        name, has_level, raw = mod.partition("=")
        if name == "seed":
            if not raw.isdigit():
                raise UserError(
                    f"model spec {text!r}: '@seed=' takes a whole number >= 0, got {raw!r}"
                )
            seed = int(raw)
            continue
        if name not in PERTURBATIONS:
            raise UserError(
                f"model spec {text!r}: unknown perturbation '@{mod}'; choose one of: "
                f"{', '.join('@' + k for k in PERTURBATIONS)}, @seed"
            )
        check = PERTURBATIONS[name][1]
        if check is None:
            if has_level:
                raise UserError(f"model spec {text!r}: '@{name}' takes no level; write '@{name}'")
            perturbations.append((name, 0.0))
            continue
        try:
            level = float(raw)
        except ValueError:
            raise UserError(
                f"model spec {text!r}: '@{name}' needs a level, {check[1]}, e.g. '@{name}=0.1'"
            ) from None
        if not (math.isfinite(level) and check[0](level)):
            raise UserError(
                f"model spec {text!r}: level {raw} of '@{name}' is out of range; it must be "
                f"{check[1]}"
            )
        perturbations.append((name, level))
    if source.endswith(".safetensors"):
        return ModelSpec(text, source, None, None, tuple(perturbations), seed)
    parts = source.split(":")
    # Read from the right, so a run directory may itself contain ':'.
    if len(parts) >= 3 and parts[-1].isdigit() and (parts[-2].isdigit() or parts[-2] == "mean"):
        run, member, step = ":".join(parts[:-2]), parts[-2], int(parts[-1])
    elif len(parts) >= 2 and (parts[-1].isdigit() or parts[-1] == "mean"):
        run, member, step = ":".join(parts[:-1]), parts[-1], None
    else:
        raise UserError(
            f"model spec {text!r} names no member; write {_GRAMMAR} (e.g. 'runs/digits:0' or "
            "'runs/digits:mean')"
        )
    if not run:
        raise UserError(f"model spec {text!r} names no run directory before ':{member}'")
    return ModelSpec(
        text, run, member if member == "mean" else int(member), step, tuple(perturbations), seed
    )


def _member_module(ens: Ensemble, member: int, step: int | None, text: str) -> nn.Module:
    if member not in ens.members:
        raise UserError(
            f"model spec {text!r}: {ens.store.root} has no finished member {member} (finished: "
            f"{', '.join(map(str, ens.members)) or 'none'})"
        )
    steps = ens.steps(member)
    if step is not None and step not in steps:
        raise UserError(
            f"model spec {text!r}: member {member} has no snapshot at step {step} (steps: "
            f"{', '.join(map(str, steps))})"
        )
    return ens.module(member, step)


def _resolve_task(task: Task | str | Path | None, weights: Path, text: str) -> Task:
    """The task of a weights file: given, or that of the run the file lies in."""
    if isinstance(task, Task):
        return task
    if task is None:
        run = weights.parent.parent.parent  # RUN/members/M/step-S.safetensors
        if weights.parent.parent.name == "members" and (run / "manifest.json").exists():
            return Ensemble.load(run).task
        raise UserError(
            f"model spec {text!r}: give the task of the weights (a run directory, a config TOML or "
            "a task name, e.g. --task digits-mlp)"
        )
    path = Path(task)
    if path.is_dir():
        return Ensemble.load(path).task
    if str(task).endswith(".toml"):
        return build_task(load_config(path).task)
    return build_task(TaskConfig(name=str(task)))


def _file_module(path: Path, task: Task, text: str) -> nn.Module:
    if not path.is_file():
        raise UserError(f"model spec {text!r}: weights file '{path}' does not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"model spec {text!r}: '{path}' is not a readable safetensors file "
            f"({str(exc).splitlines()[0]})"
        ) from None
    with torch.random.fork_rng(
        devices=[]
    ):  # building the architecture must not move the caller's RNG
        model = task.make_model().float()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(
            f"model spec {text!r}: weights in '{path}' do not fit task {task.name!r}'s "
            f"architecture ({detail})"
        ) from None
    return model.eval()


def load_model(
    spec: str | ModelSpec, task: Task | str | Path | None = None
) -> tuple[nn.Module, Task]:
    """The model a spec names (eval mode, gradients off for its parameters) and its task.

    Args:
        spec: see the module docstring.
        task: for a weights file only: a :class:`Task`, a run directory, a config TOML or a
            task name (default options).

    Returns:
        ``(model, task)``: ``model`` maps ``[n, *input_shape] -> [n, C]`` logits.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.member is None:
        found = _resolve_task(task, Path(spec.source), spec.text)
        model = _file_module(Path(spec.source), found, spec.text)
        leaves = [model]
    else:
        ens = Ensemble.load(spec.source)
        found = ens.task
        if spec.member == "mean":
            if not ens.members:
                raise UserError(
                    f"model spec {spec.text!r}: {ens.store.root} has no finished member to average"
                )
            leaves = [_member_module(ens, m, spec.step, spec.text) for m in ens.members]
            model = MeanModel(leaves)
        else:
            model = _member_module(ens, int(spec.member), spec.step, spec.text)
            leaves = [model]
    for name, level in spec.perturbations:
        for i, leaf in enumerate(leaves):
            PERTURBATIONS[name][0](
                leaf, level, torch_generator(f"search:model:{name}:{level!r}", spec.seed, i)
            )
    model.requires_grad_(False)  # a search needs gradients in the inputs only
    return model.eval(), found


def check_compatible(
    a: tuple[nn.Module, Task], b: tuple[nn.Module, Task], names: tuple[str, str] = ("A", "B")
) -> None:
    """Refuse, with one line, two models whose inputs or outputs differ in shape."""
    (model_a, task_a), (model_b, task_b) = a, b
    shape_a, shape_b = tuple(task_a.x_test.shape[1:]), tuple(task_b.x_test.shape[1:])
    if shape_a != shape_b:
        raise UserError(
            f"models {names[0]} and {names[1]} take different inputs ({list(shape_a)} vs "
            f"{list(shape_b)}); compare models of the same task"
        )
    with torch.no_grad():
        out_a, out_b = model_a(task_a.x_test[:1]).shape[1:], model_b(task_a.x_test[:1]).shape[1:]
    if out_a != out_b:
        raise UserError(
            f"models {names[0]} and {names[1]} give different outputs ({list(out_a)} vs "
            f"{list(out_b)}); compare models of the same task"
        )


def load_pair(
    spec_a: str, spec_b: str, task: Task | str | Path | None = None
) -> tuple[nn.Module, nn.Module, Task]:
    """Two comparable models and the first one's task (see :func:`load_model`)."""
    a, b = load_model(spec_a, task), load_model(spec_b, task)
    check_compatible(a, b, (spec_a, spec_b))
    return a[0], b[0], a[1]


def load_members(
    run_dir: str | Path, step: int | None = None, members: list[int] | None = None
) -> tuple[list[nn.Module], Task]:
    """The finished members of a run as modules (eval mode), and its task."""
    ens = Ensemble.load(run_dir)
    members = ens.members if members is None else members
    if len(members) < 2:
        raise UserError(
            f"{ens.store.root} has {len(members)} finished member(s); the ensemble spread needs at "
            "least two"
        )
    modules = [
        _member_module(ens, m, step, f"{run_dir}:{m}").requires_grad_(False) for m in members
    ]
    return modules, ens.task
