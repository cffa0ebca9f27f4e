"""`attractor demo` gives the numbers it gave before the architecture refactor.

tests/golden/demo-measures.json is the demo's measures.json written by the last commit
before the refactor (d98ad21): the refactor moved code, not results. Regenerate it only
when a change of numbers is intended and explained in its commit:

    ATTRACTOR_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_golden_demo.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parents[1] / "golden" / "demo-measures.json"
#: Float reductions may be reordered by a refactor (one shared divergence function instead
#: of three), never changed in meaning: agreement to 1e-6 relative is "the same numbers".
RTOL, ATOL = 1e-6, 1e-9

pytestmark = pytest.mark.slow


def _close(found: Any, expected: Any, where: str) -> list[str]:
    """Every place where ``found`` differs from ``expected`` (dicts by key, lists by index)."""
    if isinstance(expected, dict):
        if not isinstance(found, dict):
            return [f"{where}: expected an object"]
        missing = [f"{where}.{k}: missing" for k in expected if k not in found]
        return missing + [
            e for k in expected if k in found for e in _close(found[k], expected[k], f"{where}.{k}")
        ]
    if isinstance(expected, list):
        if not isinstance(found, list) or len(found) != len(expected):
            return [f"{where}: expected a list of {len(expected)}"]
        return [
            e
            for i, (f, x) in enumerate(zip(found, expected, strict=True))
            for e in _close(f, x, f"{where}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(found, int | float):
        return (
            []
            if math.isclose(found, expected, rel_tol=RTOL, abs_tol=ATOL)
            else [f"{where}: {found!r} != {expected!r}"]
        )
    return [] if found == expected else [f"{where}: {found!r} != {expected!r}"]


def test_demo_measures_match_the_golden_run(tmp_path: Path, cli) -> None:
    out = tmp_path / "demo"
    result = cli("demo", "--out", str(out), "--json")
    assert result.code == 0, result.err
    found = json.loads((out / "measures.json").read_text())
    found.pop("result", None)  # the results registry's header: where and what, not numbers
    if os.environ.get("ATTRACTOR_REGENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(found, indent=1))
        pytest.skip("golden file regenerated")
    expected = json.loads(GOLDEN.read_text())
    differences = _close(found, expected, "measures")
    assert not differences, "\n".join(differences[:20])
