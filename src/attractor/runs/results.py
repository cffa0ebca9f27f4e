"""Results: every analysis returns a typed result object; the run store alone writes it.

A result is a dataclass that satisfies :class:`Result`: a ``kind`` (a key of
:data:`RESULT_KINDS`, which is also what a report section renders), a ``schema`` version
of its JSON, a ``name`` (the file stem, unique within a run directory: ``measures``,
``structural-dropconnect``), ``to_json()`` (everything, JSON-able up to NaN/inf and numpy
scalars) and ``to_tables()`` (its tables: the main one under ``""``, others by name).

:meth:`attractor.runs.store.RunStore.write` turns it into files, always in one way::

    RUN/<name>.json              {"result": {"kind", "schema", "name", "written"}, **to_json()}
    RUN/<name>.parquet           the main table ("" in to_tables())
    RUN/<name>.<table>.parquet   every other table

strict JSON (NaN and infinities become ``null``), each file written atomically, the
tables before the JSON so that a JSON file on disk always has its tables beside it.
:meth:`~attractor.runs.store.RunStore.results` lists what a run holds by reading those
headers: reading a result is reading JSON and Parquet, never importing anything the
files name (data never runs code).

A new kind of result is one dataclass in its own module plus one line in ``RESULT_KINDS``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from attractor.errors import UserError
from attractor.runs.checksums import check, content_sha256

#: Every kind of result a run directory may hold, with what it is. Reading skips files
#: of other kinds (a newer attractor's results, a user's own JSON) instead of failing.
RESULT_KINDS: dict[str, str] = {
    "measures": "spread of an ensemble in function, representation and weight space",
    "lm-measures": "next-token loss, pairwise JS, KL to the mean and CKA of a language-model "
    "ensemble",
    "structural": "accuracy drop and KL under a model perturbation, per level",
    "sensitivity-variance": "variance components of the plan's crossed factors",
    "sensitivity-sobol": "Sobol indices of the plan's continuous factors",
    "sensitivity-influence": "leave-group-out influence of data groups",
    "suggestions": "the examples and groups a human should look at next",
    "seed-advice": "the majority basin and from which step a member's final basin shows",
    "instability": "linear-mode-connectivity barriers of copies spawned along training",
    "hparam-map": "spread and accuracy over a learning-rate x momentum grid",
    "shortcuts": "shortcut reliance and path of trainer variants with the same seeds",
    "trainer2": "hyperparameter searches run from many initial conditions",
    "tangent": "Lyapunov exponents and hypergradients through training",
    "diff": "inputs where two models disagree, found by search and bounded by proof",
    "world": "basins of attraction, outcome sources and closed-loop growth of a model in a world",
    "evaluator": "human examples -> learned evaluators -> fine-tuned models: spread and sources",
    "stabilize": "the trainer whose runs spread least, searched and confirmed on fresh seeds",
    "compare": "two runs of one task side by side: paired intervals of accuracy and spread",
}

#: Bumped whenever the header layout changes; results of another header schema are skipped.
HEADER_SCHEMA = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


@runtime_checkable
class Result(Protocol):
    """What every analysis returns (see the module docstring)."""

    kind: ClassVar[str]
    schema: ClassVar[int]

    @property
    def name(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...

    def to_tables(self) -> dict[str, pd.DataFrame]: ...


def strict_json(value: Any) -> Any:
    """``value`` as plain JSON: NaN/inf -> None, numpy and torch scalars and arrays -> Python.

    The one place that decides how numbers reach a result file (``json.dumps`` would write
    ``NaN``, which strict parsers and browsers reject).
    """
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return strict_json(value.to_dict("records"))
    if isinstance(value, pd.Series | np.ndarray) or type(value).__name__ == "Tensor":
        return strict_json(value.tolist())
    if isinstance(value, list | tuple | set | frozenset):
        return [strict_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_result(result: Any) -> None:
    """Refuse an object that is not a registered result (a programming error, not a user's)."""
    kind = getattr(result, "kind", None)
    if kind not in RESULT_KINDS:
        raise TypeError(f"{type(result).__name__} has kind {kind!r}; register it in RESULT_KINDS")
    if not isinstance(result, Result):
        raise TypeError(f"{type(result).__name__} does not satisfy the Result protocol")
    if not _NAME.match(result.name):
        raise ValueError(f"result name {result.name!r} is not a plain file stem")


def table_paths(root: Path, name: str, keys: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """Where each table of result ``name`` lives."""
    return {
        key: root / (f"{name}.parquet" if key == "" else f"{name}.{key}.parquet") for key in keys
    }


@dataclass(frozen=True)
class StoredResult:
    """A result as a run directory holds it: its header, its JSON and its tables (read lazily)."""

    kind: str
    schema: int
    name: str
    path: Path
    data: dict[str, Any]
    table_keys: tuple[str, ...]
    sha256: Mapping[str, str] | None = None  # table key -> sum recorded when written
    body_sha256: str | None = None  # the content's sum recorded when written

    @property
    def intact(self) -> bool:
        """Whether the content matches the sum recorded with it (true when none was, as in
        results written before sums).
        """
        try:
            return self.body_sha256 is None or content_sha256(self.data) == self.body_sha256
        except ValueError:  # NaN or infinity in a file that should hold strict JSON
            return False

    def frame(self, key: str) -> pd.DataFrame:
        """``key`` as a table wherever the result keeps it: a list in its JSON (small tables)
        or a table file (large ones); empty if it has neither.
        """
        if isinstance(self.data.get(key), list):
            return pd.DataFrame(self.data[key])
        return self.table(key) if key in self.table_keys else pd.DataFrame()

    def table(self, key: str = "") -> pd.DataFrame:
        """Table ``key`` ("" is the main table); a missing or corrupt file is a user error."""
        if key not in self.table_keys:
            raise KeyError(
                f"result {self.name!r} has no table {key!r} (it has {list(self.table_keys)})"
            )
        path = table_paths(self.path.parent, self.name, [key])[key]
        rerun = f"re-run the analysis that wrote {self.name}"
        try:
            check(path, (self.sha256 or {}).get(key), rerun)
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"table '{path}' is missing or corrupt ({str(exc).splitlines()[0]}); "
                f"re-run the analysis that wrote {self.name}"
            ) from None


def read_stored(path: Path, verify_body: bool = True) -> StoredResult | None:
    """The result in JSON file ``path``, or None if the file is not a result this attractor
    reads.

    Raises:
        UserError: (with ``verify_body``) the result's content differs from the sum recorded in its
            header when it was written: damaged or edited since.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    header = data.get("result") if isinstance(data, dict) else None
    if not isinstance(header, dict) or header.get("header") != HEADER_SCHEMA:
        return None
    kind, name, schema = header.get("kind"), header.get("name"), header.get("schema")
    if kind not in RESULT_KINDS or name != path.stem or not isinstance(schema, int):
        return None
    keys = header.get("tables", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return None
    sums, recorded = header.get("sha256"), header.get("body_sha256")
    stored = StoredResult(
        kind=kind,
        schema=schema,
        name=name,
        path=path,
        data={k: v for k, v in data.items() if k != "result"},
        table_keys=tuple(keys),
        sha256=sums if isinstance(sums, dict) else None,
        body_sha256=recorded if isinstance(recorded, str) else None,
    )
    if verify_body and not stored.intact:
        raise UserError(
            f"'{path}' is corrupt or was edited (its content differs from the sha256 recorded "
            f"when it was written); re-run the analysis that wrote {name}"
        )
    return stored
