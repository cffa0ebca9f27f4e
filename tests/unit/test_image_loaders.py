"""Image loaders: every on-disk format written small in tmp_path and read back (the values
written are the oracle), and bad roots refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from attractor.errors import UserError
from attractor.tasks.images import (
    load_cifar10,
    load_cifar100,
    load_image_folder,
    load_mnist,
    read_idx,
)
from tests.image_files import (
    IDX_CODES,
    IDX_NAMES,
    cifar_records,
    idx_bytes,
    write_cifar10,
    write_mnist,
    write_png,
)

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


def test_cifar_with_a_missing_batch_names_it(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(UserError, match=r"lacks data_batch_4.bin; expected"):
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
