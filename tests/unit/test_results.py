"""The results registry: one writer (RunStore.write), strict JSON, tables beside, safe reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attractor.errors import UserError
from attractor.runs.results import RESULT_KINDS, strict_json
from attractor.runs.store import RunStore
from tests.report_samples import stub


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.prepare_experiment(tmp_path / "exp", "test", {"a": 1})


def sample(kind: str = "structural", name: str = "structural-dropout") -> object:
    table = pd.DataFrame({"level": [0.0, 0.1], "kl": [0.0, float("nan")]})
    data = {
        "value": float("nan"),
        "numbers": np.array([1.0, np.inf]),
        "count": np.int64(3),
        "nested": {"x": -np.inf},
    }
    return stub(kind, name, data, {"": table, "members": table.assign(member=[0, 1])})


def test_round_trip_nan_becomes_null_and_tables_sit_beside(store: RunStore) -> None:
    paths = store.write(sample())
    text = Path(paths["json"]).read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    header = data["result"]
    assert (header["kind"], header["name"], header["schema"]) == (
        "structural",
        "structural-dropout",
        1,
    )
    assert header["tables"] == ["", "members"]
    assert (
        data["value"] is None
        and data["numbers"] == [1.0, None]
        and data["count"] == 3
        and data["nested"] == {"x": None}
    )
    assert Path(paths["parquet"]).name == "structural-dropout.parquet"
    assert Path(paths["parquet:members"]).name == "structural-dropout.members.parquet"

    stored = store.result("structural-dropout")
    assert (
        stored.kind == "structural" and stored.data["value"] is None and "result" not in stored.data
    )
    pd.testing.assert_frame_equal(
        stored.table(), pd.DataFrame({"level": [0.0, 0.1], "kl": [0.0, float("nan")]})
    )
    assert list(stored.table("members")["member"]) == [0, 1]
    with pytest.raises(KeyError, match="no table"):
        stored.table("other")
    assert [r.name for r in store.results()] == ["structural-dropout"]
    assert [r.name for r in store.results("measures")] == []


def test_the_same_result_again_replaces_it(store: RunStore) -> None:
    store.write(sample())
    store.write(
        stub("structural", "structural-dropout", {"value": 2.0}, {"": pd.DataFrame({"a": [1]})})
    )
    assert store.result("structural-dropout").data == {"value": 2.0}
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_another_kind_under_the_same_name_is_refused(store: RunStore) -> None:
    store.write(sample("measures", "measures"))
    before = (store.root / "measures.json").read_text()
    with pytest.raises(UserError, match="holds a measures result"):
        store.write(sample("lm-measures", "measures"))
    assert (store.root / "measures.json").read_text() == before


def test_a_file_that_is_not_a_result_is_never_overwritten(store: RunStore) -> None:
    (store.root / "measures.json").write_text('{"mine": true}')
    with pytest.raises(UserError, match="not an attractor result"):
        store.write(sample("measures", "measures"))
    assert json.loads((store.root / "measures.json").read_text()) == {"mine": True}


def test_unknown_kinds_and_foreign_files_are_skipped(store: RunStore) -> None:
    store.write(sample())
    header = {
        "header": 1,
        "kind": "from-a-newer-attractor",
        "schema": 1,
        "name": "future",
        "tables": [],
    }
    (store.root / "future.json").write_text(json.dumps({"result": header}))
    (store.root / "notes.json").write_text('{"mine": true}')
    (store.root / "broken.json").write_text("{not json")
    renamed = json.loads((store.root / "structural-dropout.json").read_text())
    (store.root / "copy.json").write_text(json.dumps(renamed))  # its header names another file
    assert [r.name for r in store.results()] == ["structural-dropout"]
    with pytest.raises(UserError, match="holds no result 'notes'.*structural-dropout"):
        store.result("notes")


def test_unregistered_kinds_and_bad_names_are_programming_errors(store: RunStore) -> None:
    assert "no-such-kind" not in RESULT_KINDS
    with pytest.raises(TypeError, match="RESULT_KINDS"):
        store.write(sample("no-such-kind", "x"))
    with pytest.raises(ValueError, match="file stem"):
        store.write(sample("structural", "../escape"))
    assert not (store.root.parent / "escape.json").exists()


def test_strict_json_is_the_one_nan_helper() -> None:
    value = {
        "a": [np.float32(1.5), float("nan")],
        "b": pd.DataFrame({"x": [np.inf]}),
        3: (np.int64(2),),
    }
    assert strict_json(value) == {"a": [1.5, None], "b": [{"x": None}], "3": [2]}
    json.dumps(strict_json(value), allow_nan=False)


def test_a_result_an_older_attractor_wrote_is_replaced_by_the_same_analysis(
    store: RunStore,
) -> None:
    """Run directories from before the registry hold header-less JSON of the same analysis."""
    (store.root / "structural-dropout.json").write_text('{"value": 1.0, "levels": [0, 1]}')
    store.write(sample())
    assert store.result("structural-dropout").data["count"] == 3
