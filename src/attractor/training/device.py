"""Where a chunk's tensors live: ``run.device`` resolved, a task's tensors moved there, and
the settings that keep CUDA deterministic.

Everything random is drawn on the CPU whatever the device — initial weights (the modules
are built on the CPU from the row's seed), batch orders, label noise — and only then moved,
so a member starts from the same numbers on every device. Results leave the device as CPU
tensors: snapshots and checkpoints are the same files wherever a run trained.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re

import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.tasks.base import Task

#: cuBLAS needs a fixed workspace for deterministic matmuls (PyTorch's reproducibility notes).
_CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a CUDA
    device this machine lacks is refused in one line.
    """
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device '{spec}' asked for, but this torch sees no CUDA device "
                f"(torch {torch.__version__}, cuda {torch.version.cuda}); use device = 'auto' "
                "or 'cpu', or install a CUDA build of torch"
            )
        index = torch.device(spec).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"device '{spec}' asked for, but this machine has {torch.cuda.device_count()} "
                "CUDA device(s) (cuda:0 ..); pick one of them"
            )
        deterministic()
    return torch.device(spec)


def deterministic() -> None:
    """Deterministic CUDA kernels, so a member alone and in a chunk agree on a GPU too.

    ``warn_only``: an op PyTorch has no deterministic CUDA kernel for warns instead of
    failing the run. The common one here, adaptive average pooling's backward (every
    ResNet's global pool), is exact anyway: each input element receives a single
    ``atomicAdd`` onto zero. Others (bilinear upsampling's backward, reflection padding, ...)
    may make a member's bits depend on the run; ``benchmarks/device_agreement.py`` and
    the ``gpu`` tests measure the invariant.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The training forward pass's precision: ``fp32`` (as written), ``tf32`` (CUDA matmuls
    and convolutions in TensorFloat-32; no effect on the CPU) or ``bf16`` (autocast to
    bfloat16 where PyTorch allows it, on the CPU and on CUDA).

    Snapshots, evaluation and measures stay in float32; only training steps change.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def task_on(task: Task, device: torch.device) -> Task:
    """``task`` with its evaluated tensors (splits and probes) on ``device`` (itself on the CPU).

    Index-like fields (groups, units) stay on the CPU: pools and resamples are built there.
    """
    if device.type == "cpu":
        return task
    probes = {name: (x.to(device), y.to(device)) for name, (x, y) in task.probes.items()}
    return dataclasses.replace(
        task,
        x_train=task.x_train.to(device),
        y_train=task.y_train.to(device),
        x_test=task.x_test.to(device),
        y_test=task.y_test.to(device),
        probes=probes,
    )


def module_on(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` (built on the CPU) itself for the CPU, else a copy of it on ``device``: the
    caller's module stays where it is.
    """
    return module if device.type == "cpu" else copy.deepcopy(module).to(device)


def host(tensor: Tensor) -> Tensor:
    """A CPU copy of ``tensor`` without autograd history (what snapshots and states keep)."""
    return tensor.detach().to("cpu", copy=True)


def free_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA ``device`` now (``torch.cuda.mem_get_info``); None on the CPU."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])
