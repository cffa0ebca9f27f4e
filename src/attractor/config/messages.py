"""One line for a config that does not validate: the first bad key, what is wrong, what fits."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from attractor.config.sections import Config

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
    if tagged:
        # A value no branch of a union accepts: name the branches, not the first one's complaint.
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
    if error["type"] == "missing" and loc and isinstance(loc[-1], int):  # a short tuple (range)
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
