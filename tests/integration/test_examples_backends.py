"""Examples stay valid, the process backend agrees with the local one, and vmap models train."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from attractor.config import Config, TaskConfig, load_config, parse_config
from attractor.errors import UserError
from attractor.plan import build_plan
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.stack import load_trainer2
from attractor.tasks import build_task
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def _check_world_example(path: Path) -> None:
    """A world config: valid settings, a world that builds, and its model's task too."""
    from attractor.cli.world import _read
    from attractor.experiments.world import WorldSettings, _check_settings
    from attractor.world import get_world

    settings = WorldSettings(**_read(path))
    world = get_world(settings.name, settings.options)
    _check_settings(world, settings)
    if world.task is not None and settings.model is None:
        from attractor.config import TaskConfig

        assert build_task(TaskConfig(**world.task)).n_train > 0


def _check_evaluator_example(path: Path) -> None:
    """An evaluator config: valid settings that can run together, and the human's draw."""
    from attractor.stack.learned.examples import digits_examples
    from attractor.stack.learned.settings import EvaluatorSettings, read_evaluator

    settings = EvaluatorSettings(**read_evaluator(path))
    settings.check()
    if settings.setting == "text":
        from attractor.stack.learned.text import pydoc_examples

        s = settings
        drawn = pydoc_examples(s.rule, s.examples, s.seed, s.positives, s.length)
    else:
        drawn = digits_examples(
            settings.preferred, settings.examples, settings.seed, settings.positives
        )
    assert len(drawn) == settings.examples


def _with_fake_image_files(config: Config, tmp_path: Path) -> Config:
    """``config`` itself, or, where its task reads the user's image files (``root``) and no
    such folder is in the repository: the config with ``root`` pointing at small fake files
    in that task's format. The config as written must fail only for the missing data, with
    the one-line error naming its root; everything else is then checked as for any example.
    """
    from tests.image_files import FAKE_DATA

    writer = FAKE_DATA.get(config.task.name)
    root = config.task.options.get("root")
    if writer is None or (root is not None and Path(root).exists()):
        return config
    with pytest.raises(UserError, match="set \\[task\\] root"):
        build_task(config.task)
    writer(tmp_path / "data")
    task = TaskConfig(**{**config.task.model_dump(), "root": str(tmp_path / "data")})
    return config.model_copy(update={"task": task})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_configs_build_their_plans(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)  # user-task example imports examples/my_task.py from the repo root
    if "world" in tomllib.loads(path.read_text()):
        _check_world_example(path)
        return
    if "evaluator" in tomllib.loads(path.read_text()):
        _check_evaluator_example(path)
        return
    if "stabilize" in tomllib.loads(path.read_text()):
        from attractor.stack.stabilize import StabilizeRun, load_stabilize
        from attractor.stack.stabilize.experiment import check

        base, settings = load_stabilize(path)
        check(StabilizeRun(config=base, stabilize=settings))
        return
    # A trainer2 config carries a [trainer2] table beside the usual ones.
    config = (
        load_trainer2(path)[0]
        if "trainer2" in tomllib.loads(path.read_text())
        else load_config(path)
    )
    config = _with_fake_image_files(config, tmp_path)
    task = build_task(config.task)
    plan = build_plan(config.plan, config.trainer, task.group_ids)
    assert len(plan) == config.plan.members


def test_user_task_example_trains_vectorized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    config = load_config(ROOT / "examples" / "user-task.toml")
    config = config.model_copy(
        update={"trainer": config.trainer.model_copy(update={"epochs": None, "steps": 5})}
    )
    ens = train(config, tmp_path / "cnn")
    assert ens.manifest["strategy"] == "vectorized"
    assert ens.predict(ens.task.x_test[:8]).shape == (4, 8, 10)


def _final(ens: Ensemble) -> dict[int, dict[str, torch.Tensor]]:
    return {m: ens.params(m) for m in ens.members}


@pytest.mark.slow
def test_process_backend_equals_local(tmp_path: Path) -> None:
    local = train(tiny_config(run={"chunk_size": 2}), tmp_path / "local")
    pooled = train(tiny_config(run={"chunk_size": 2, "backend": "process"}), tmp_path / "pool")
    a, b = _final(local), _final(pooled)
    assert a.keys() == b.keys() == {0, 1, 2, 3}
    for member in a:
        assert all(torch.equal(a[member][k], b[member][k]) for k in a[member])


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_vmapped_models_match_the_loop(tmp_path: Path, model: str) -> None:
    def config(strategy: str):
        return parse_config(
            {
                "task": {
                    "name": "modular-addition",
                    "p": 11,
                    "train_fraction": 0.5,
                    "model": model,
                    "embed_dim": 16,
                    "hidden": 32,
                },
                # SGD, not Adam: Adam divides by sqrt(v), so gradients that are zero up to float
                # noise (unused embedding rows) become lr-sized steps and hide what we test here.
                "trainer": {
                    "optimizer": "sgd",
                    "lr": 0.05,
                    "weight_decay": 1e-3,
                    "steps": 15,
                    "batch_size": 16,
                },
                "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
                "run": {"strategy": strategy, "snapshots": 2},
            }
        )

    vec = train(config("vectorized"), tmp_path / "vec")
    loop = train(config("loop"), tmp_path / "loop")
    assert vec.manifest["strategy"] == "vectorized" and loop.manifest["strategy"] == "loop"
    a, b = _final(vec), _final(loop)
    for member in a:
        for name in a[member]:
            torch.testing.assert_close(a[member][name], b[member][name], rtol=0, atol=1e-5)
