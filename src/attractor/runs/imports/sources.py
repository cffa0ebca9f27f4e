"""What ``attractor import SPEC`` names: members, each with its snapshot files by step.

SPEC is one of:

* a manifest, ``members.csv`` or ``members.toml`` (:mod:`attractor.runs.imports.manifests`);
* paths or globs of safetensors state dicts and Hugging Face model directories. A path whose
  own name carries a step number (``step-500``, ``step500``, ``checkpoint-500``, with or
  without ``.safetensors``) is that step of the member named by its parent directory;
  any other path is a member of its own: a file or model directory is its one snapshot, and
  a directory holding step-numbered files or model directories has those as its snapshots.

A snapshot whose step nobody gave is the member's final model, recorded at step
:data:`UNKNOWN_STEP` (step 0 is reserved for initial weights). Nothing here reads a
weight: sources are only found and named (see :mod:`attractor.runs.imports.fit`).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attractor.errors import UserError

#: The step recorded for a member's only snapshot when no step was given: after init.
UNKNOWN_STEP = 1
SAFETENSORS = ".safetensors"
#: Weights formats attractor never reads: loading them runs pickle (arbitrary code).
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_STEP = re.compile(r"^(?:step|checkpoint)[-_]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One snapshot's weights: a safetensors state dict, or a Hugging Face model directory."""

    path: Path
    hf: bool


@dataclass
class SourceMember:
    """One imported member: how the user names it, its snapshots, and its factors (raw)."""

    name: str
    files: dict[int, Source] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)
    steps_known: bool = True

    def add(self, step: int | None, source: Source) -> None:
        """Add a snapshot (``step`` None: the final model, step unknown)."""
        if step is None:
            if self.files:
                raise UserError(
                    f"member '{self.name}' has several files and '{source.path}' has no step; "
                    "give every file its step (a step column, or step-N in its name)"
                )
            step, self.steps_known = UNKNOWN_STEP, False
        elif not self.steps_known:
            raise UserError(
                f"member '{self.name}' has a file without a step and '{source.path}' with one; "
                "give every file its step"
            )
        if step in self.files:
            raise UserError(
                f"member '{self.name}' has two files for step {step} ('{self.files[step].path}' "
                f"and '{source.path}'); keep one"
            )
        self.files[step] = source


def step_of(path: Path) -> int | None:
    """The step a file or directory's own name gives (``step-500``, ``checkpoint-500``)."""
    name = path.name[: -len(SAFETENSORS)] if path.name.endswith(SAFETENSORS) else path.name
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def natural_key(text: str) -> list[Any]:
    """Sort key that puts ``seed-2`` before ``seed-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def source(path: Path) -> Source:
    """``path`` as one snapshot's weights; one line if it is neither kind."""
    if path.is_file() and path.name.endswith(SAFETENSORS):
        return Source(path, hf=False)
    if is_hf_dir(path):
        return Source(path, hf=True)
    if path.suffix.lower() in PICKLED:
        raise UserError(
            f"'{path}' is a pickle ({path.suffix}): attractor imports safetensors only, since "
            "loading a pickle can run code; save it with safetensors.torch.save_file"
        )
    if not path.exists():
        raise UserError(f"'{path}' does not exist; check the path")
    raise UserError(
        f"'{path}' is neither a .safetensors file nor a Hugging Face model directory "
        "(config.json beside safetensors weights)"
    )


def expand(items: list[str]) -> list[Path]:
    """Paths the items name, globs expanded (a quoted glob reaches here unexpanded)."""
    paths: list[Path] = []
    for item in items:
        if Path(item).exists() or not glob.has_magic(item):
            paths.append(Path(item))
            continue
        found = sorted(glob.glob(item), key=natural_key)
        if not found:
            raise UserError(f"'{item}' matches no file or directory; check the pattern")
        paths += [Path(p) for p in found]
    return paths


def _snapshots_in(folder: Path) -> list[tuple[int | None, Path]]:
    """A member directory's snapshots: step-numbered entries, else its one safetensors file."""
    entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    stepped = [
        (step, p)
        for p in entries
        if (step := step_of(p)) is not None and (p.name.endswith(SAFETENSORS) or is_hf_dir(p))
    ]
    if stepped:
        return stepped
    files = [p for p in entries if p.is_file() and p.name.endswith(SAFETENSORS)]
    if len(files) == 1:
        return [(None, files[0])]
    pickled = [p.name for p in entries if p.suffix.lower() in PICKLED]
    what = (
        f"holds {len(files)} safetensors files and none is named step-N"
        if files
        else f"holds only pickled weights ({pickled[0]}), which attractor never loads"
        if pickled
        else "holds no safetensors file, step-N file or Hugging Face model directory"
    )
    raise UserError(f"'{folder}' {what}; name the files in a CSV or TOML manifest instead")


def from_paths(items: list[str]) -> list[SourceMember]:
    """Members from paths and globs (see the module docstring), in natural order of their names."""
    members: dict[Path, SourceMember] = {}
    for path in expand(items):
        step = step_of(path)
        if step is not None and (path.name.endswith(SAFETENSORS) or is_hf_dir(path)):
            key = path.parent
            pairs: list[tuple[int | None, Path]] = [(step, path)]
        elif path.is_dir() and not is_hf_dir(path):
            key, pairs = path, _snapshots_in(path)
        else:
            key, pairs = path, [(None, path)]
        member = members.setdefault(key, SourceMember(name=str(key)))
        for each_step, each in pairs:
            member.add(each_step, source(each))
    return [members[k] for k in sorted(members, key=lambda p: natural_key(str(p)))]


def check_steps(members: list[SourceMember], batch_sizes: list[int]) -> dict[int, list[int]]:
    """The snapshot steps per batch size; members of one batch size must share their steps
    (a run records one list of steps per batch size).
    """
    steps: dict[int, tuple[str, list[int]]] = {}
    for member, batch_size in zip(members, batch_sizes, strict=True):
        mine = sorted(member.files)
        first = steps.setdefault(batch_size, (member.name, mine))
        if first[1] != mine:
            raise UserError(
                f"member '{member.name}' has snapshots at steps {_show(mine)} but member "
                f"'{first[0]}' at {_show(first[1])}; every member needs the same steps (list the "
                "steps they share in a CSV or TOML manifest)"
            )
    return {bs: each for bs, (_, each) in steps.items()}


def _show(steps: list[int]) -> str:
    return str(steps) if len(steps) <= 6 else f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}]"


__all__ = [
    "UNKNOWN_STEP",
    "Source",
    "SourceMember",
    "check_steps",
    "expand",
    "from_paths",
    "natural_key",
    "source",
    "step_of",
]
