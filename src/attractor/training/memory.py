"""A chunk's peak memory, estimated before anything is allocated, and the refusal beyond it.

The model is built on PyTorch's ``meta`` device (shapes and dtypes, no storage), so a model
of ten billion parameters is sized in milliseconds instead of failing after minutes of
allocation; one meta forward pass of a single example counts the activations.

The estimate is deliberately rough (within a small factor): per member, parameters,
gradients, optimizer state and the initial weights kept for snapshots and distances, plus
every module's output for one batch and its gradient. It only has to tell a run that fits
from one that cannot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from attractor.config import Config
from attractor.errors import UserError
from attractor.tasks.base import Task

#: Members per chunk when the config leaves it open: large enough that batched matmuls
#: are efficient, small enough that a killed run loses little work.
DEFAULT_CHUNK = 64
#: Rough memory a chunk may take when its size is picked automatically.
CHUNK_MEMORY_BYTES = 4 << 30
#: Per-parameter tensors an optimizer keeps besides the weights (momentum, Adam's moments).
OPTIMIZER_SLOTS = {"sgd": 1, "cone": 2, "adam": 2, "adamw": 2}
#: Weights, gradients and the initial weights kept for snapshots and distance from init.
PARAMETER_COPIES = 3
#: A model whose forward pass meta tensors cannot run is run once for real up to this size.
SMALL_MODEL_BYTES = 256 << 20


@dataclass(frozen=True)
class ChunkMemory:
    """What one chunk of members is expected to take at its peak, in bytes."""

    members: int
    parameters: int  # per member
    bytes_per_member: int

    @property
    def total(self) -> int:
        return self.members * self.bytes_per_member


def default_chunk_size(n_params: int, bytes_per_member: int | None = None) -> int:
    """Members per chunk when ``run.chunk_size`` is not set: bounded by a memory budget.

    ``bytes_per_member`` (:func:`estimate_chunk`'s, activations included) bounds it too:
    a convolutional net's activations, not its weights, fill memory (ResNet-20 has 0.27 M
    parameters but keeps ~200 MB for the backward of one batch of 128 CIFAR images, and
    this estimate says ~510 MB), so 64 such members would ask for ~32 GB.
    """
    by_params = CHUNK_MEMORY_BYTES // max(1, 16 * n_params)
    by_member = by_params if bytes_per_member is None else CHUNK_MEMORY_BYTES // bytes_per_member
    return max(2, min(DEFAULT_CHUNK, by_params, by_member))


#: Share of a GPU's free memory a chunk picked automatically may take (the rest: the
#: allocator's fragmentation, evaluation batches, cuBLAS workspaces).
GPU_MEMORY_SHARE = 0.7
#: Members per chunk on a GPU at most: beyond this a bigger batched matmul gains little.
MAX_GPU_CHUNK = 4096


def device_chunk_size(per_member_bytes: int, free_bytes: int) -> int:
    """Members per chunk on a GPU with ``free_bytes`` free: as many as fit in its share."""
    fitting = int(GPU_MEMORY_SHARE * free_bytes) // max(1, per_member_bytes)
    return max(2, min(MAX_GPU_CHUNK, fitting))


def _activations(model: nn.Module, example: torch.Tensor) -> int | None:
    """Elements every leaf module outputs for one example; None if the forward pass fails."""
    outputs: list[int] = []

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # e.g. a data-dependent branch (``.item()``) meta tensors cannot take
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return sum(outputs)


def _sizes(task: Task) -> tuple[int, int, int] | None:
    """``(parameters, bytes per parameter, activation elements per example)`` of the task's
    model, measured on the meta device; None when the model cannot be built there.
    """
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = task.make_model()
    except Exception:  # a model that loads files or needs real storage: no estimate
        return None
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    width = max((p.element_size() for p in params), default=4)
    activations = _activations(model, task.x_train[:1].to("meta"))
    if activations is None and n_params * width <= SMALL_MODEL_BYTES:
        # Hugging Face models branch on data; a small one is cheap to run for real once.
        activations = _activations(task.make_model(), task.x_train[:1])
    return n_params, width, activations or 0


def estimate_chunk(config: Config, task: Task) -> ChunkMemory | None:
    """The peak memory of the largest chunk ``config`` trains; None when it cannot be told."""
    sizes = _sizes(task)
    if sizes is None:
        return None
    n_params, width, activations = sizes
    levels = config.plan.levels
    batch = max([config.trainer.batch_size, *levels.get("batch_size", [])])
    optimizers = [config.trainer.optimizer, *levels.get("optimizer", [])]
    slots = max(OPTIMIZER_SLOTS.get(str(name), 2) for name in optimizers)
    per_member = width * (n_params * (PARAMETER_COPIES + slots) + 2 * batch * activations)
    if config.run.strategy == "loop":
        members = 1
    else:
        members = config.run.chunk_size or default_chunk_size(n_params, per_member)
    members = min(members, config.plan.members)
    return ChunkMemory(members=members, parameters=n_params, bytes_per_member=per_member)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_memory(config: Config, task: Task, available: int | None = None) -> None:
    """Refuse, with one line, a run whose chunk cannot fit in the memory available now.

    Called before the model is first built for real, so a model or plan far too big fails
    in a second instead of after minutes of allocation. ``available`` defaults to
    ``psutil.virtual_memory().available``; a Ray cluster's workers (``run.ray_address``)
    have their own memory and are not checked here.
    """
    if config.run.ray_address:
        return
    chunk = estimate_chunk(config, task)
    if chunk is None:
        return
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if chunk.total <= available:
        return
    raise UserError(
        f"a chunk of {chunk.members} member(s) of this {chunk.parameters:,}-parameter model "
        f"needs about {_gb(chunk.total)} (parameters, gradients, optimizer state, activations) "
        f"but {_gb(available)} of memory is available; use a smaller model, batch_size or "
        "run.chunk_size"
    )
