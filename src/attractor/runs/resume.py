"""A pending member's checkpoint: its full training state, so a killed run goes on exactly.

``RUN/members/<id>/resume.safetensors`` holds what :class:`~attractor.training.chunk.Start`
holds (weights, buffers, optimizer state, the forward pass's random state, the path
walked) after some step, plus what the member produced up to there: its metrics rows and
the sha256 of the snapshot files it wrote. Resuming from it continues the member's data
stream at that step, so the finished member is bitwise the one an uninterrupted run makes
(``tests/faults/test_kill_points.py``).

The file is written by the worker training the member (never the manifest, which only
the coordinator writes), so it carries its own check: a sha256 over its tensors and
metadata. A checkpoint that is unreadable, fails that check, or whose snapshots changed
since is ignored and the member retrains from its start; the coordinator deletes it once
the member is marked finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from attractor.runs.checksums import sha256_file
from attractor.runs.files import atomic_path
from attractor.training.chunk import Start

RESUME = "resume.safetensors"
FORMAT = "attractor-resume-1"


@dataclass(frozen=True)
class Checkpoint:
    """A member's state after ``state.step`` steps and what it had written by then.

    Attributes:
        state: the training state to start from.
        metrics: the member's metrics rows at its snapshots up to ``state.step``.
        sums: snapshot file name -> sha256, for the snapshots written up to there.
    """

    state: Start
    metrics: list[dict[str, Any]]
    sums: dict[str, str]


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes and the metadata, in order."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors(state: Start) -> dict[str, torch.Tensor]:
    tensors = {f"param/{k}": v for k, v in state.params.items()}
    tensors |= {f"buffer/{k}": v for k, v in state.buffers.items()}
    for name, slots in state.optimizer_state.items():
        tensors |= {f"slot/{slot}/{name}": v for slot, v in slots.items()}
    if state.rng is not None:
        tensors["rng"] = state.rng
    if state.average is not None:
        tensors |= {f"average/{k}": v for k, v in state.average.items()}
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def save_checkpoint(member_dir: Path, member: int, checkpoint: Checkpoint) -> None:
    """Write (atomically) member ``member``'s checkpoint into its directory ``member_dir``."""
    state = checkpoint.state
    tensors = _tensors(state)
    metadata = {
        "format": FORMAT,
        "member": str(member),
        "step": str(state.step),
        "path_length": repr(state.path_length),
        "averaged": str(state.averaged),
        "metrics": json.dumps(checkpoint.metrics),
        "sha256": json.dumps(checkpoint.sums),
    }
    metadata["digest"] = _digest(tensors, metadata)
    with atomic_path(member_dir / RESUME) as tmp:
        tmp.write_bytes(save(tensors, metadata=metadata))


def load_checkpoint(member_dir: Path, member: int) -> Checkpoint | None:
    """Member ``member``'s checkpoint if there is a sound one (see the module doc), else None."""
    path = member_dir / RESUME
    try:
        data = path.read_bytes()
        tensors = load(data)
        metadata = _metadata(data)
        claimed = metadata.pop("digest")
        if metadata.get("format") != FORMAT or metadata.get("member") != str(member):
            return None
        if _digest(tensors, metadata) != claimed:
            return None
        sums = json.loads(metadata["sha256"])
        if any(sha256_file(member_dir / name) != digest for name, digest in sums.items()):
            return None  # a snapshot it wrote changed since: start the member over
        state = _state(
            tensors,
            int(metadata["step"]),
            float(metadata["path_length"]),
            int(metadata.get("averaged", "0")),
        )
        return Checkpoint(state, json.loads(metadata["metrics"]), sums)
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, RuntimeError):
        return None


def drop_checkpoint(member_dir: Path) -> None:
    """Delete a finished member's checkpoint (if any)."""
    (member_dir / RESUME).unlink(missing_ok=True)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header, read without its tensors."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        raise ValueError("no metadata")
    return {str(k): str(v) for k, v in metadata.items()}


def _state(tensors: dict[str, torch.Tensor], step: int, path_length: float, averaged: int) -> Start:
    params, buffers, slots, average = {}, {}, {}, {}
    for key, tensor in tensors.items():
        kind, _, name = key.partition("/")
        if kind == "param":
            params[name] = tensor
        elif kind == "buffer":
            buffers[name] = tensor
        elif kind == "average":
            average[name] = tensor
        elif kind == "slot":
            slot, _, parameter = name.partition("/")
            slots.setdefault(parameter, {})[slot] = tensor
    return Start(
        step,
        params,
        buffers,
        slots,
        rng=tensors.get("rng"),
        path_length=path_length,
        average=average or None,
        averaged=averaged,
    )


__all__ = ["RESUME", "Checkpoint", "drop_checkpoint", "load_checkpoint", "save_checkpoint"]
