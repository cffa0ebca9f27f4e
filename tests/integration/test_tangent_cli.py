"""`attractor tangent` end to end: trains the run, replays it with tangents, and the report shows
them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import tiny_config, write_toml


def test_tangent_command_and_report(tmp_path: Path, cli: Callable) -> None:
    config = write_toml(
        tmp_path / "c.toml",
        tiny_config(task={"hidden": [8]}, trainer={"steps": 12}, plan={"members": 2}),
    )
    result = cli(
        "tangent",
        config,
        "--out",
        tmp_path / "run",
        "--directions",
        "2",
        "--hyper",
        "lr",
        "--power-iterations",
        "1",
        "--threads",
        "1",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    members = data["members"]
    assert len(members) == 2
    # The replay follows the engine's own training of each member (float32 rounding only).
    assert all(m["engine_max_abs_diff"] < 1e-4 for m in members)
    assert cli("report", tmp_path / "run").code == 0
    assert 'id="tangent"' in (tmp_path / "run" / "report.html").read_text()
    bad = cli("tangent", config, "--out", tmp_path / "run", "--hyper", "lr,beta")
    assert bad.code == 2 and "--hyper" in bad.err
