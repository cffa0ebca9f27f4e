"""Conformance suite for tasks: every entry of ``TASKS`` (with tiny options) gets every check.

A new built-in task is covered by one line in :data:`TINY` (options that build it in well
under a second); the first test fails until that line exists. Checked: shapes and dtypes of
the data, the model's output ``[batch, ..., classes]``, same options -> same data and same
seeded model, a finite loss and finite metrics on a fresh model, and the declared optional
extras (``groups``, ``units``, ``documents``, ``probes``...) consistent with the data.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from torch import Tensor

from attractor.config import TaskConfig
from attractor.tasks import TASKS, Task, build_task
from tests.image_files import FAKE_DATA

pytestmark = pytest.mark.usefixtures("one_thread")

#: Registry name -> tiny options. Variants of one task add ``name@label`` keys.
TINY: dict[str, dict[str, Any]] = {
    "digits-mlp": {"hidden": [8]},
    "spurious-digits": {"hidden": [8], "shortcut_fraction": 0.9},
    "modular-addition": {"p": 7, "hidden": 8, "embed_dim": 4, "n_groups": 3},
    "modular-addition@transformer": {
        "p": 7,
        "n_groups": 3,
        "model": "transformer",
        "embed_dim": 8,
        "heads": 2,
        "hidden": 8,
        "shortcut": True,
    },
    "tiny-lm": {"layers": 1, "heads": 1, "width": 8, "context": 8, "windows_per_document": 1},
    "cartpole-lqr": {"hidden": [8], "samples": 64},
    "denoise-digits": {"hidden": [8], "draws": 1, "timesteps": 10},
    "digits-cnn": {"width": 4},
    "mnist-lenet": {"train_examples": 20},
    "cifar10-resnet20": {"depth": 8, "width": 4},
    "cifar10-vgg": {"augment": False},
    "image-folder": {"image_size": 16, "model": "lenet"},
    "image-folder@resnet": {"image_size": 8, "depth": 8, "width": 4, "augment": True},
}
#: Tasks that read the user's files get ``root`` from :func:`file_roots`: small fake files
#: in their format (tests/image_files.py), written once per module.
#: Tasks whose model needs an optional extra: name -> module.
NEEDS = {"tiny-lm": "transformers"}
BATCH = 4


def _registry(key: str) -> str:
    return key.partition("@")[0]


def _build(key: str, roots: dict[str, str]) -> Task:
    name = _registry(key)
    module = NEEDS.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"task {name!r} needs {module}")
    root = {"root": roots[name]} if name in roots else {}
    return build_task(TaskConfig(name=name, **TINY[key], **root))


@pytest.fixture(scope="module")
def file_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Task name -> a folder of fake files that task reads, for tasks with a ``root``."""
    roots = {}
    for name, write in FAKE_DATA.items():
        root = tmp_path_factory.mktemp(name)
        write(root)
        roots[name] = str(root)
    return roots


@pytest.fixture(params=sorted(TINY), scope="module")
def key(request: pytest.FixtureRequest) -> str:
    """One registered task (or variant) per test instance."""
    return request.param


@pytest.fixture(scope="module")
def task(key: str, file_roots: dict[str, str]) -> Task:
    return _build(key, file_roots)


def _fresh_model(task: Task, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return task.make_model()


def _tensors(task: Task) -> dict[str, Tensor]:
    """Every tensor a task holds, by a stable name."""
    found = {
        name: getattr(task, name)
        for name in ("x_train", "y_train", "x_test", "y_test", "groups", "units", "test_units")
    }
    for name, (x, y) in task.probes.items():
        found[f"probe/{name}/x"], found[f"probe/{name}/y"] = x, y
    return {k: v for k, v in found.items() if v is not None}


def test_every_registered_task_has_tiny_options() -> None:
    assert set(TASKS) <= {_registry(k) for k in TINY}, "add the new task to TINY"
    assert {_registry(k) for k in TINY} <= set(TASKS)


class TestTask:
    """Every task in :data:`TINY` against the :class:`~attractor.tasks.Task` contract."""

    def test_data_shapes_and_dtypes(self, task: Task) -> None:
        assert task.x_train.shape[0] == task.y_train.shape[0] == task.n_train > 0
        assert task.x_test.shape[0] == task.y_test.shape[0] > 0
        assert task.x_train.shape[1:] == task.x_test.shape[1:]
        assert task.y_train.shape[1:] == task.y_test.shape[1:]
        assert task.x_train.dtype == task.x_test.dtype
        if task.num_classes is not None:
            for y in (task.y_train, task.y_test):
                assert y.dtype == torch.int64
                assert 0 <= int(y.min()) and int(y.max()) < task.num_classes

    def test_model_output_has_a_class_axis(self, task: Task) -> None:
        logits = _fresh_model(task)(task.x_test[:BATCH])
        assert logits.shape[: task.y_test.dim()] == task.y_test[:BATCH].shape
        if task.num_classes is not None:
            assert logits.shape == (*task.y_test[:BATCH].shape, task.num_classes)
        assert logits.dtype.is_floating_point and torch.isfinite(logits).all()

    def test_same_options_give_the_same_data_and_model(
        self, key: str, task: Task, file_roots: dict[str, str]
    ) -> None:
        again = _build(key, file_roots)
        first, second = _tensors(task), _tensors(again)
        assert first.keys() == second.keys()
        for name, value in first.items():
            assert torch.equal(value, second[name]), name
        assert task.documents == again.documents and task.model_config == again.model_config
        a, b = _fresh_model(task, 3).state_dict(), _fresh_model(again, 3).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def test_loss_and_metrics_are_finite_per_example_on_a_fresh_model(self, task: Task) -> None:
        x, y = task.x_train[:BATCH], task.y_train[:BATCH]
        with torch.no_grad():
            logits = _fresh_model(task)(x)
        metrics = task.evaluation_metrics()
        assert "loss" in metrics and ("accuracy" in metrics) == (task.num_classes is not None)
        for name, metric in metrics.items():
            values = metric(logits, y)
            assert values.shape == y.shape, name
            assert torch.isfinite(values).all(), name

    def test_groups_and_units_match_the_data(self, task: Task) -> None:
        if task.groups is not None:
            assert task.groups.shape == (task.n_train,) and task.groups.dtype == torch.int64
        if task.train_groups is not None:
            assert task.group_ids == sorted({int(g) for g in task.train_groups})
        for units, n, names in (
            (task.units, task.n_train, task.documents),
            (task.test_units, task.x_test.shape[0], task.test_documents),
        ):
            if units is None:
                assert names is None
                continue
            assert units.shape == (n,) and units.dtype == torch.int64 and int(units.min()) >= 0
            if names is not None:  # names indexed by unit id, every one used
                assert len(names) == int(units.max()) + 1 == len(torch.unique(units))
        assert (task.units is None) == (task.test_units is None)

    def test_probes_look_like_the_test_split(self, task: Task) -> None:
        for name, (x, y) in task.probes.items():
            assert x.shape[1:] == task.x_test.shape[1:] and x.dtype == task.x_test.dtype, name
            assert y.shape[0] == x.shape[0] and y.shape[1:] == task.y_test.shape[1:], name
            logits = _fresh_model(task)(x[:BATCH])
            assert logits.shape[0] == min(BATCH, x.shape[0]), name

    def test_names_and_description(self, key: str, task: Task) -> None:
        assert task.name == _registry(key)
        assert task.description.strip() and TASKS[task.name].summary.strip()
        assert task.model_config is None or isinstance(task.model_config, dict)
