"""Image datasets from local files: every format written small in tmp_path and read back
(the values written are the oracle), bad roots refused in one line, the crop-and-flip
augmentation, and the image tasks built through the registry.
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
    load_cifar100,
    load_image_folder,
    load_mnist,
    read_idx,
    stratified_subset,
)
from tests.conftest import CliResult, assert_user_error, write_toml
from tests.image_files import (
    IDX_CODES,
    IDX_NAMES,
    cifar_records,
    idx_bytes,
    write_cifar10,
    write_mnist,
    write_png,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# --- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(IDX_CODES), ids=str)
def test_read_idx_returns_what_was_written(tmp_path: Path, dtype: np.dtype) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype.newbyteorder("="))
    if dtype.kind == "u":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    read = read_idx(tmp_path / "a.idx")
    assert read.shape == (2, 3, 4) and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_loads_the_pixels_and_labels_written(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "mnist", gz)
    split = load_mnist(str(tmp_path / "mnist"))
    np.testing.assert_array_equal(split.x_train[:, 0], arrays[IDX_NAMES[0]])
    np.testing.assert_array_equal(split.y_train, arrays[IDX_NAMES[1]])
    np.testing.assert_array_equal(split.x_test[:, 0], arrays[IDX_NAMES[2]])
    np.testing.assert_array_equal(split.y_test, arrays[IDX_NAMES[3]])
    assert split.shape == (1, 28, 28) and split.num_classes == 10


def test_mnist_files_are_found_in_torchvisions_raw_folder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "raw", gz=True)
    assert load_mnist(str(tmp_path)).x_train.shape == (30, 1, 28, 28)


def _corrupt(root: Path, name: str, data: bytes) -> None:
    (root / name).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (lambda root: (root / IDX_NAMES[2]).unlink(), ["no t10k-images-idx3-ubyte", "expected"]),
        (lambda root: _corrupt(root, IDX_NAMES[0], b"\x12\x34\x08\x03" + b"\0" * 64), ["magic"]),
        (
            lambda root: _corrupt(root, IDX_NAMES[0], (root / IDX_NAMES[0]).read_bytes()[:-5]),
            ["truncated"],
        ),
        (
            lambda root: _corrupt(root, IDX_NAMES[1], idx_bytes(np.zeros(7, dtype=np.uint8))),
            ["one per train image"],
        ),
        (
            lambda root: _corrupt(root, IDX_NAMES[3], idx_bytes(np.full(12, 10, np.uint8))),
            ["label 10"],
        ),
        (lambda root: _corrupt(root, f"{IDX_NAMES[0]}.gz", b"not gzip"), ["cannot read"]),
    ],
    ids=["missing", "magic", "truncated", "count", "label", "bad-gzip"],
)
def test_bad_mnist_files_are_refused_in_one_line(
    tmp_path: Path, damage: Callable[[Path], None], needles: list[str]
) -> None:
    root = tmp_path / "mnist"
    write_mnist(root)
    if needles == ["cannot read"]:
        (root / IDX_NAMES[0]).unlink()  # only the broken .gz is left to find
    damage(root)
    with pytest.raises(UserError) as caught:
        load_mnist(str(root))
    message = str(caught.value)
    assert "\n" not in message and all(n in message for n in needles), message


# --- CIFAR --------------------------------------------------------------------------------


@pytest.mark.parametrize("at_parent", [False, True], ids=["folder", "parent"])
def test_cifar10_binary_loads_the_records_written(tmp_path: Path, at_parent: bool) -> None:
    train, test = write_cifar10(tmp_path / "cifar-10-batches-bin")
    root = tmp_path if at_parent else tmp_path / "cifar-10-batches-bin"
    split = load_cifar10(str(root))
    assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(split.y_train, train[:, 0])
    np.testing.assert_array_equal(split.x_train.reshape(20, -1), train[:, 1:])
    # The first 1024 bytes are the red plane, row by row: pixel (row 1, col 2) is byte 34.
    assert (
        split.x_test[3, 0, 1, 2] == test[3, 1 + 34]
        and split.x_test[3, 2, 0, 0] == test[3, 1 + 2048]
    )
    assert split.classes[0] == "airplane"


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100_binary_reads_either_label(tmp_path: Path, labels: str) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, test = cifar_records(6, 2, (20, 100), 0), cifar_records(3, 2, (20, 100), 1)
    (folder / "train.bin").write_bytes(train.tobytes())
    (folder / "test.bin").write_bytes(test.tobytes())
    (folder / "coarse_label_names.txt").write_text("\n".join(f"super{i}" for i in range(20)))
    split = load_cifar100(str(tmp_path), labels)  # type: ignore[arg-type]
    column = 1 if labels == "fine" else 0
    np.testing.assert_array_equal(split.y_train, train[:, column])
    np.testing.assert_array_equal(split.y_test, test[:, column])
    np.testing.assert_array_equal(split.x_test.reshape(3, -1), test[:, 2:])
    assert split.num_classes == (100 if labels == "fine" else 20)
    assert split.classes[3] == ("3" if labels == "fine" else "super3")


def test_cifar_truncated_record_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder)
    data = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(data[:-100])
    with pytest.raises(UserError, match=r"data_batch_3.bin.*not a whole number of 3073-byte"):
        load_cifar10(str(tmp_path))


def test_cifar_missing_files_name_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_cifar10(str(tmp_path))
    message = str(caught.value)
    assert "cifar-10-batches-bin/" in message and "test_batch.bin" in message
    assert str(tmp_path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("loader", "folder", "file"),
    [
        (load_cifar10, "cifar-10-batches-py", "data_batch_1"),
        (load_cifar100, "cifar-100-python", "train"),
    ],
    ids=["cifar10", "cifar100"],
)
def test_pickled_cifar_is_refused_without_being_read(
    tmp_path: Path, loader: Callable[[str], object], folder: str, file: str
) -> None:
    (tmp_path / folder).mkdir()
    # A pickle that would run code if unpickled: the loader must not open it at all.
    (tmp_path / folder / file).write_bytes(b"cos\nsystem\n(S'exit 1'\ntR.")
    with pytest.raises(UserError) as caught:
        loader(str(tmp_path))
    message = str(caught.value)
    assert "pickled python version" in message and "binary.tar.gz" in message, message
    assert "\n" not in message


# --- ImageFolder --------------------------------------------------------------------------


def test_image_folder_with_train_and_test_reads_pixels_and_sorted_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written: dict[tuple[str, str], list[np.ndarray]] = {}
    for split in ("train", "test"):
        for name in ("zebra", "ant"):  # written unsorted: ids follow the sorted names
            for i in range(2 if split == "test" else 3):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                write_png(tmp_path / split / name / f"{i}.png", pixels)
                written.setdefault((split, name), []).append(pixels)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    loaded = load_image_folder(str(tmp_path), image_size=6)
    assert loaded.classes == ("ant", "zebra")
    np.testing.assert_array_equal(loaded.y_train, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(loaded.y_test, [0, 0, 1, 1])
    expected = np.stack(written[("train", "ant")] + written[("train", "zebra")])
    np.testing.assert_array_equal(loaded.x_train, expected.transpose(0, 3, 1, 2))
    gray = load_image_folder(str(tmp_path), image_size=4, channels=1)
    assert gray.x_test.shape == (4, 1, 4, 4) and gray.x_test.dtype == np.uint8


def test_image_folder_without_split_holds_out_a_fixed_stratified_share(tmp_path: Path) -> None:
    for name in ("a", "b"):
        for i in range(10):
            write_png(tmp_path / name / f"{i}.png", np.full((5, 5), 10 * i, np.uint8))
    first = load_image_folder(str(tmp_path), image_size=5, channels=1, test_fraction=0.2)
    assert np.bincount(first.y_test).tolist() == [2, 2] and len(first.y_train) == 16
    again = load_image_folder(str(tmp_path.parent / tmp_path.name), 5, 1, test_fraction=0.2)
    np.testing.assert_array_equal(first.x_test, again.x_test)


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        (lambda root: (root / "train" / "cat").mkdir(parents=True), "no test/ folder"),
        (lambda root: (root / "cat").mkdir(parents=True), "holds no images"),
        (lambda root: None, "no class folders"),
        (lambda root: write_png(root / "a" / "x.png", np.zeros((3, 3), np.uint8)), "too few"),
        (
            lambda root: [_junk(root / split / "a" / "x.png") for split in ("train", "test")],
            "cannot decode",
        ),
    ],
    ids=["no-test", "empty-class", "empty", "too-few", "junk"],
)
def test_bad_image_folders_are_refused_in_one_line(
    tmp_path: Path, layout: Callable[[Path], None], needle: str
) -> None:
    layout(tmp_path)
    with pytest.raises(UserError) as caught:
        load_image_folder(str(tmp_path), image_size=4)
    assert needle in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def _junk(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a png")


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
