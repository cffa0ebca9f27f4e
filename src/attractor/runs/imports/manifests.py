"""Import manifests: the members, their factors and their checkpoint files, written by the user.

CSV, one row per checkpoint file (paths relative to the manifest)::

    member,step,path,init_seed,data_seed,dataset
    a,0,seed0/step-0.safetensors,0,0,v2
    a,500,seed0/step-500.safetensors,0,0,v2
    b,0,seed1/step-0.safetensors,1,0,v2
    ...

``path`` is required; rows with the same ``member`` are one member (without that column
every row is a member); without ``step`` (or with the cell empty) a member's one file is
its final model. Every other column is a factor of the member.

TOML, one table per member::

    [[member]]
    name = "a"                     # optional
    init_seed = 0
    data_seed = 0
    dataset = "v2"
    steps = { 0 = "seed0/step-0.safetensors", 500 = "seed0/step-500.safetensors" }
    # or: path = "seed0/final.safetensors"  (its final model)

Paths are safetensors state dicts or Hugging Face model directories. Factors are read by
:mod:`attractor.runs.imports.factors`.
"""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path
from typing import Any

from attractor.errors import UserError
from attractor.runs.imports.sources import SourceMember, source

_RESERVED = ("member", "step", "path")


def is_manifest(items: list[str]) -> bool:
    """Whether SPEC is one manifest file (else it is paths or globs of weights)."""
    return len(items) == 1 and Path(items[0]).suffix.lower() in (".csv", ".toml")


def read_manifest(path: Path) -> list[SourceMember]:
    """The members a CSV or TOML manifest names; one line for anything malformed."""
    if not path.is_file():
        raise UserError(f"manifest '{path}' does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"manifest '{path}' is not a UTF-8 text file") from None
    members = _read_csv(path, text) if path.suffix.lower() == ".csv" else _read_toml(path, text)
    if not members:
        raise UserError(f"manifest '{path}' names no members; add one row (or table) per member")
    return members


def _read_csv(path: Path, text: str) -> list[SourceMember]:
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if "path" not in columns:
        raise UserError(
            f"manifest '{path}' has no 'path' column (columns: {', '.join(columns) or 'none'}); "
            "give each checkpoint file's path in a column named path"
        )
    members: dict[str, SourceMember] = {}
    for line, raw in enumerate(reader, start=2):
        if None in raw:  # more cells than columns
            raise UserError(f"{path}:{line}: more cells than columns; fix that row")
        row = {k.strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{path}:{line}"
        if not row["path"]:
            raise UserError(f"{where}: the path cell is empty; give the checkpoint file's path")
        name = row.get("member") or f"row {line}"
        factors = {k: v for k, v in row.items() if k not in _RESERVED}
        member = members.get(name)
        if member is None:
            member = members[name] = SourceMember(name=name, factors=factors)
        elif member.factors != factors:
            differ = next(k for k in factors if factors[k] != member.factors.get(k))
            raise UserError(
                f"{where}: member '{name}' has {differ} = {factors[differ]!r} here but "
                f"{member.factors.get(differ)!r} on an earlier row; a member's factors are the "
                "same on all its rows"
            )
        member.add(_step(row.get("step", ""), where), source(_resolve(path, row["path"])))
    return list(members.values())


def _read_toml(path: Path, text: str) -> list[SourceMember]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    other = sorted(set(data) - {"member"})
    if other:
        raise UserError(
            f"{path}: unknown table '{other[0]}'; a manifest holds [[member]] tables only"
        )
    tables = data.get("member", [])
    if not isinstance(tables, list):
        raise UserError(f"{path}: 'member' must be an array of tables, written [[member]]")
    members = []
    for index, table in enumerate(tables, start=1):
        where = f"{path}: member {index}"
        table = dict(table)
        steps, single = table.pop("steps", None), table.pop("path", None)
        if (steps is None) == (single is None):
            raise UserError(
                f"{where}: give either path = FILE (its final model) or steps = {{STEP = FILE}}"
            )
        name = str(table.pop("name", f"member {index}"))
        step = table.pop("step", "")
        if steps is not None and step != "":
            raise UserError(f"{where}: a step key goes with path = FILE, not with steps = {{...}}")
        member = SourceMember(name=name, factors=table)
        if single is not None:
            member.add(_step(step, where), source(_resolve(path, single)))
        elif not isinstance(steps, dict) or not steps:
            raise UserError(f"{where}: steps must be a table {{STEP = FILE, ...}}")
        else:
            for step, file in steps.items():
                member.add(_step(step, where, required=True), source(_resolve(path, file)))
        members.append(member)
    return members


def _step(value: Any, where: str, required: bool = False) -> int | None:
    text = str(value).strip()
    if not text and not required:
        return None
    if text.isdigit():
        return int(text)
    raise UserError(f"{where}: step {value!r} is not a whole number >= 0; fix it")


def _resolve(manifest: Path, file: Any) -> Path:
    if not isinstance(file, str) or not file:
        raise UserError(f"{manifest}: a path must be a non-empty string, not {file!r}")
    path = Path(file).expanduser()
    return path if path.is_absolute() else manifest.parent / path


__all__ = ["is_manifest", "read_manifest"]
