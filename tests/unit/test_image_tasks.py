"""Image tasks: fixed stratified subsets, per-channel standardization, the crop-and-flip
augmentation, and the tasks built through the registry (the loaders: test_image_loaders.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from attractor.config import TaskConfig
from attractor.errors import UserError
from attractor.tasks import TASKS, build_task
from attractor.tasks.images import (
    crop_and_flip,
    image_tensors,
    load_cifar10,
    stratified_subset,
)
from tests.conftest import CliResult, assert_user_error, write_toml
from tests.image_files import (
    write_cifar10,
    write_image_folder,
    write_mnist,
    write_png,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --- subsets and standardization -------------------------------------------------------------


def test_stratified_subset_is_proportional_fixed_and_ordered() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    index = stratified_subset(labels, 10)
    assert np.bincount(labels[index]).tolist() == [5, 3, 2]
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, stratified_subset(labels, 10))
    assert len(stratified_subset(labels, 7)) == 7
    np.testing.assert_array_equal(stratified_subset(labels, 500), np.arange(100))


def test_image_tensors_standardize_with_the_training_statistics(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    split = load_cifar10(str(tmp_path))
    x_train, y_train, x_test, y_test = image_tensors(split, 10, None)
    assert x_train.shape == (10, 3, 32, 32) and x_train.dtype == torch.float32
    assert y_train.dtype == torch.int64 and y_test.shape == (5,)
    chosen = stratified_subset(split.y_train, 10)
    raw = split.x_train[chosen].astype(np.float64)
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3))
    oracle = (split.x_test.astype(np.float64) - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(x_test.numpy(), oracle, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert not split.x_train.flags.writeable  # the cached pixels stay untouched


# --- augmentation -------------------------------------------------------------------------


def _crop_flip_by_hand(x: torch.Tensor, seed: int, padding: int) -> torch.Tensor:
    """The specification, one example at a time, with the documented order of draws."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    rows = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    cols = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    flips = torch.randint(0, 2, (b,), generator=g, dtype=torch.bool)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    out = []
    for i in range(b):
        crop = padded[i, :, rows[i] : rows[i] + h, cols[i] : cols[i] + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def test_crop_and_flip_matches_the_per_example_specification() -> None:
    x = torch.randn(16, 3, 8, 6)
    out = crop_and_flip(x, torch.Generator().manual_seed(3), padding=2)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    torch.testing.assert_close(out, _crop_flip_by_hand(x, 3, 2), rtol=0, atol=0)


def test_crop_and_flip_depends_only_on_the_generator_state() -> None:
    x = torch.randn(32, 3, 8, 8)
    a = crop_and_flip(x, torch.Generator().manual_seed(7))
    b = crop_and_flip(x.clone(), torch.Generator().manual_seed(7))
    c = crop_and_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    identity = crop_and_flip(x, torch.Generator().manual_seed(7), padding=0, flip=False)
    assert torch.equal(identity, x)
    # Zero padding: a crop moves pixels and fills with zeros, never invents values.
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


# --- tasks ------------------------------------------------------------------------------------


def test_digits_cnn_is_a_resnet8_on_8x8_images() -> None:
    task = build_task(TaskConfig(name="digits-cnn"))
    assert task.x_train.shape == (1437, 1, 8, 8) and task.x_test.shape == (360, 1, 8, 8)
    assert task.augment is None and task.num_classes == 10
    torch.manual_seed(0)
    model = task.make_model()
    assert len(model.stages) == 3 and model.stem[0].out_channels == 8
    assert model.head[-1].in_features == 32
    assert model(task.x_test[:5]).shape == (5, 10)
    with pytest.raises(UserError, match="6k \\+ 2"):
        build_task(TaskConfig(name="digits-cnn", depth=9))


def test_cifar_tasks_build_from_a_root_with_subsets_and_augmentation(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    resnet = build_task(
        TaskConfig(name="cifar10-resnet20", root=str(tmp_path), train_examples=10, depth=8)
    )
    assert resnet.x_train.shape == (10, 3, 32, 32) and resnet.n_train == 10
    assert resnet.x_test.shape == (5, 3, 32, 32)
    assert resnet.augment is not None
    model = resnet.make_model()
    assert model(resnet.x_test[:2]).shape == (2, 10)
    x = resnet.augment(resnet.x_train[:4], torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 32, 32)
    vgg = build_task(TaskConfig(name="cifar10-vgg", root=str(tmp_path), augment=False))
    assert vgg.augment is None and vgg.n_train == 20


def test_mnist_lenet_and_image_folder_tasks_train_shapes(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist")
    lenet = build_task(TaskConfig(name="mnist-lenet", root=str(tmp_path / "mnist")))
    assert lenet.x_train.shape == (30, 1, 28, 28)
    assert lenet.make_model()(lenet.x_test[:3]).shape == (3, 10)
    for name in ("a", "b", "c"):
        for i in range(5):
            write_png(tmp_path / "folder" / name / f"{i}.png", np.full((20, 20, 3), i, np.uint8))
    folder = build_task(
        TaskConfig(name="image-folder", root=str(tmp_path / "folder"), model="lenet", image_size=16)
    )
    assert folder.num_classes == 3 and folder.x_train.shape == (12, 3, 16, 16)
    assert folder.make_model()(folder.x_test).shape == (3, 3)


def test_options_of_image_tasks_are_described_with_defaults() -> None:
    for name in ("digits-cnn", "mnist-lenet", "cifar10-resnet20", "cifar10-vgg", "image-folder"):
        options = TASKS[name].options
        assert all(field.description for field in options.model_fields.values()), name
        options()  # every option has a default
    with pytest.raises(UserError, match="LeNet needs image_size"):
        build_task(TaskConfig(name="image-folder", model="lenet", image_size=8))


def test_cli_lists_the_image_tasks_and_refuses_a_missing_root(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    listed = {t["name"]: t for t in json.loads(cli("tasks", "--json").out)}
    assert {"digits-cnn", "mnist-lenet", "cifar10-resnet20", "cifar10-vgg", "image-folder"} <= set(
        listed
    )
    assert listed["cifar10-resnet20"]["options"]["root"] == "data/cifar10"
    config = {
        "task": {"name": "cifar10-resnet20", "root": str(tmp_path / "nowhere")},
        "trainer": {"steps": 1},
        "plan": {"members": 2},
    }
    assert_user_error(
        cli("plan", write_toml(tmp_path / "c.toml", config)), "nowhere", "set [task] root"
    )


def test_a_run_records_its_data_root_absolute_and_loads_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative root is resolved where the run is made; measuring it from another directory
    still finds the data (the manifest holds the absolute path)."""
    from attractor.config import parse_config
    from attractor.runs.ensemble import Ensemble
    from attractor.runs.launch import train
    from attractor.tasks import absolute_paths
    from tests.conftest import tiny_mapping

    made = tmp_path / "made"
    write_image_folder(made / "data")
    monkeypatch.chdir(made)
    data = tiny_mapping(trainer={"steps": 2, "batch_size": 4}, plan={"members": 2})
    data["task"] = {"name": "image-folder", "root": "data", "image_size": 8, "depth": 8, "width": 4}
    config = parse_config(data)
    assert absolute_paths(config.task).options["root"] == str(made / "data")
    assert absolute_paths(parse_config(tiny_mapping()).task) == parse_config(tiny_mapping()).task
    train(config, made / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ens = Ensemble.load(made / "run")
    assert ens.config.task.options["root"] == str(made / "data")
    assert ens.predict(ens.task.x_test[:3]).shape[:2] == (2, 3)
