"""What can be compared: model specs loaded into ready ``nn.Module`` s and their task.

The spec grammar (``RUN_DIR:MEMBER[:STEP]``, ``RUN_DIR:mean[:STEP]`` or ``FILE.safetensors``,
then ``@`` perturbations) is in :mod:`attractor.search.spec`, the perturbations in
:mod:`attractor.search.perturb`; both stay importable from here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from attractor.config import TaskConfig, load_config
from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.search.perturb import PERTURBATIONS
from attractor.search.spec import ModelSpec, parse_spec
from attractor.seeds import torch_generator
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.device import module_on

__all__ = [
    "PERTURBATIONS",
    "MeanModel",
    "Placed",
    "ModelSpec",
    "check_compatible",
    "load_members",
    "load_model",
    "load_pair",
    "parse_spec",
    "placed",
]


class Placed(nn.Module):
    """``model`` computing on ``device`` for callers whose tensors stay on the CPU: inputs go
    to the device, logits come back; gradients flow through both moves (PGD's ascent).
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = module_on(model, device)
        self.device = device

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(self.device)).to(x.device)


def placed(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` itself on the CPU, else a :class:`Placed` copy on ``device`` (``auto``: CUDA
    when available; a GPU this machine lacks is one line).
    """
    from attractor.training.device import resolve_device

    where = resolve_device(str(device))
    return model if where.type == "cpu" else Placed(model, where)


class MeanModel(nn.Module):
    """The ensemble mean: ``log(mean_i softmax(f_i(x)))`` as logits, ``[n, *shape] -> [n, C]``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        log_p = torch.stack([torch.log_softmax(m(x), -1) for m in self.members])
        return torch.logsumexp(log_p, 0) - math.log(len(self.members))


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
    # Building the architecture must not move the caller's RNG.
    with torch.random.fork_rng(devices=[]):
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
        model, leaves = _run_module(ens, spec)
    for name, level in spec.perturbations:
        for i, leaf in enumerate(leaves):
            PERTURBATIONS[name][0](
                leaf, level, torch_generator(f"search:model:{name}:{level!r}", spec.seed, i)
            )
    model.requires_grad_(False)  # a search needs gradients in the inputs only
    return model.eval(), found


def _run_module(ens: Ensemble, spec: ModelSpec) -> tuple[nn.Module, list[nn.Module]]:
    """A run's member or mean, and its leaves: the member modules the perturbations change."""
    if spec.member != "mean":
        model = _member_module(ens, int(spec.member), spec.step, spec.text)
        return model, [model]
    if not ens.members:
        raise UserError(
            f"model spec {spec.text!r}: {ens.store.root} has no finished member to average"
        )
    leaves = [_member_module(ens, m, spec.step, spec.text) for m in ens.members]
    return MeanModel(leaves), leaves


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
