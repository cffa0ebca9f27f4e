"""Config contract: every key validated, the resolved form complete, the README reference
current.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor.config import Config, parse_config
from attractor.errors import UserError
from attractor.reference import config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_readme_embeds_the_generated_reference() -> None:
    assert config_reference() in (ROOT / "README.md").read_text(), (
        "regenerate: python -m attractor.reference"
    )


def test_resolved_has_every_default_and_round_trips() -> None:
    config = parse_config({"trainer": {"lr": 0.1}})
    resolved = config.resolved()
    assert resolved["trainer"]["lr"] == 0.1 and resolved["trainer"]["batch_size"] == 64
    assert set(resolved) == {"task", "trainer", "plan", "run", "track"}
    assert Config.model_validate(resolved).hash() == config.hash()


def test_hash_covers_defaults_too() -> None:
    # open_lth hashes only non-default fields; we hash everything, so a run made with an
    # explicit default and one relying on it are the same run, and any change differs.
    assert parse_config({}).hash() == parse_config({"trainer": {"lr": 0.05}}).hash()
    assert parse_config({}).hash() != parse_config({"trainer": {"lr": 0.06}}).hash()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"trainer": {"lrr": 0.1}}, "unknown key 'trainer.lrr'"),
        ({"bogus": {}}, "unknown key 'bogus'"),
        ({"trainer": {"lr": "fast"}}, "trainer.lr"),
        ({"trainer": {"lr": -1}}, "trainer.lr"),
        ({"plan": {"members": 0}}, "plan.members"),
        ({"plan": {"vary": ["colour"]}}, "unknown factor 'colour'"),
        ({"plan": {"ranges": {"batch_size": [1, 2]}}}, "not continuous"),
        ({"run": {"snapshots": 0}}, "run.snapshots"),
        ({"trainer": {"epochs": None, "steps": None}}, "set trainer.epochs or trainer.steps"),
    ],
)
def test_bad_values_give_one_line(data: dict, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        parse_config(data)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_public_train_is_the_function_even_after_engine_imports() -> None:
    import attractor
    import attractor.training.engine  # noqa: F401  (a submodule import must not shadow `train`)
    from attractor import train

    assert callable(train) and attractor.train is train


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"trainer": {"lr": float("inf")}}, "'trainer.lr': inf"),
        ({"trainer": {"momentum": float("nan")}}, "'trainer.momentum': nan"),
        ({"trainer": {"epochs": float("inf")}}, "'trainer.epochs': inf"),
        ({"plan": {"levels": {"lr": [0.1, float("nan")]}}}, "'plan.levels.lr[1]': nan"),
        ({"plan": {"ranges": {"lr": [0.01, float("inf")]}}}, "'plan.ranges.lr[1]': inf"),
        ({"task": {"name": "digits-mlp", "init_gain": float("-inf")}}, "'task.init_gain': -inf"),
    ],
)
def test_inf_and_nan_are_refused_in_every_float(data: dict, where: str) -> None:
    with pytest.raises(UserError) as info:
        parse_config(data)
    message = str(info.value)
    assert where in message and "not a finite number" in message and "\n" not in message


def test_every_float_field_refuses_inf_from_python_too() -> None:
    from pydantic import ValidationError

    from attractor.config import TrainerConfig

    with pytest.raises(ValidationError, match="finite"):
        TrainerConfig(lr=float("inf"))


def test_a_plan_over_the_maximum_of_members_is_refused_when_read() -> None:
    from attractor.config import MAX_MEMBERS

    assert parse_config({"plan": {"members": MAX_MEMBERS}}).plan.members == MAX_MEMBERS
    with pytest.raises(UserError) as info:
        parse_config({"plan": {"members": 10_000_000}})
    message = str(info.value)
    assert "plan.members" in message and f"maximum of {MAX_MEMBERS}" in message
    assert "\n" not in message


def test_plan_command_refuses_inf_and_huge_plans_fast(cli, tmp_path: Path) -> None:
    import time

    for text, says in [
        ("[trainer]\nlr = inf\n", "trainer.lr"),
        ("[plan]\nmembers = 10000000\n", "maximum of"),
    ]:
        config = tmp_path / "c.toml"
        config.write_text(text)
        start = time.monotonic()
        result = cli("plan", str(config))
        assert result.code == 2 and says in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
        assert time.monotonic() - start < 10
