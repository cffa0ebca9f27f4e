"""CIFAR-10 and CIFAR-100 from their *binary* versions, parsed with numpy only.

CIFAR-10 (``cifar-10-batches-bin/``): ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
``test_batch.bin``, each a run of 3073-byte records: one label byte, then 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, rows top to bottom). CIFAR-100 (``cifar-100-binary/``):
``train.bin`` and ``test.bin``, 3074-byte records: the coarse label byte (20 superclasses),
the fine label byte (100 classes), then the pixels.

The "python version" of both datasets is pickled, and unpickling runs whatever code the
file names, so attractor never reads it: given only that, the loaders say which binary
archive to get instead.

References:
    Krizhevsky (2009), "Learning Multiple Layers of Features from Tiny Images"
    (https://www.cs.toronto.edu/~kriz/cifar.html, file format).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from attractor.errors import UserError
from attractor.tasks.images.dataset import ImageSplit, resolve_root

SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant's binary files lie and how its records look."""

    name: str
    folder: str  # the folder the binary archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # leading label bytes of a record
    python_folder: str  # the pickled version's folder, recognized only to refuse it
    python_file: str  # a file only the pickled version has
    archive: str  # what to download instead of the python version
    names: tuple[str, ...]  # plain-text class-name lists, one per label byte

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS

    @property
    def expected(self) -> str:
        return f"{self.folder}/ with {', '.join(self.train + self.test)}"


CIFAR10 = CifarLayout(
    name="CIFAR-10",
    folder="cifar-10-batches-bin",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test=("test_batch.bin",),
    label_bytes=1,
    python_folder="cifar-10-batches-py",
    python_file="data_batch_1",
    archive="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    names=("batches.meta.txt",),
)
CIFAR100 = CifarLayout(
    name="CIFAR-100",
    folder="cifar-100-binary",
    train=("train.bin",),
    test=("test.bin",),
    label_bytes=2,
    python_folder="cifar-100-python",
    python_file="train",
    archive="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    names=("coarse_label_names.txt", "fine_label_names.txt"),
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def find_folder(root: Path, layout: CifarLayout) -> Path:
    """The folder holding ``layout``'s binary files: ``root`` itself or ``root/<folder>``.

    Raises:
        UserError: (one line) neither holds them; names the binary archive where only the
            pickled python version is found.
    """
    for folder in (root, root / layout.folder):
        missing = [name for name in layout.train + layout.test if not (folder / name).is_file()]
        if not missing:
            return folder
        if len(missing) < len(layout.train + layout.test):
            raise UserError(
                f"{layout.name} binary folder {str(folder)!r} lacks {', '.join(missing)}; "
                f"expected {layout.expected} (from {layout.archive})"
            )
    if any(
        (folder / layout.python_file).is_file() for folder in (root / layout.python_folder, root)
    ):
        raise UserError(
            f"{str(root)!r} holds only the pickled python version of {layout.name}, which "
            f"attractor does not read (unpickling runs code); get the binary version "
            f"{layout.archive} and extract it there"
        )
    raise UserError(
        f"no {layout.name} binary files in {str(root)!r}; expected {layout.expected} "
        f"(from {layout.archive}) there or in root itself"
    )


def read_records(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One binary file's ``uint8 [n, label_bytes]`` labels and ``uint8 [n, 3, 32, 32]`` images
    (views of one array read from disk).

    Raises:
        UserError: (one line) the file is empty or not a whole number of records.
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % layout.record:
        raise UserError(
            f"{str(path)!r} holds {data.size} bytes, not a whole number of {layout.record}-byte "
            f"{layout.name} records: the file is truncated or not {layout.name} binary"
        )
    records = data.reshape(-1, layout.record)
    return records[:, : layout.label_bytes], records[:, layout.label_bytes :].reshape(-1, *SHAPE)


def read_split(
    folder: Path, names: tuple[str, ...], layout: CifarLayout
) -> tuple[np.ndarray, np.ndarray]:
    """The files ``names`` concatenated: ``uint8 [n, 3, 32, 32]`` images and ``uint8 [n,
    label_bytes]`` labels, filled file by file, so at most one file's bytes are held besides.
    """
    sizes = [(folder / name).stat().st_size // layout.record for name in names]
    images = np.empty((sum(sizes), *SHAPE), dtype=np.uint8)
    labels = np.empty((sum(sizes), layout.label_bytes), dtype=np.uint8)
    start = 0
    for name, size in zip(names, sizes, strict=True):
        file_labels, file_images = read_records(folder / name, layout)
        if len(file_images) != size:  # changed between stat and read
            raise UserError(f"{str(folder / name)!r} changed while it was read")
        images[start : start + size] = file_images
        labels[start : start + size] = file_labels
        start += size
    return images, labels


@lru_cache(maxsize=2)
def _load(root: Path, layout: CifarLayout, label: int, classes: int) -> ImageSplit:
    folder = find_folder(root, layout)
    arrays: list[np.ndarray] = []
    for names in (layout.train, layout.test):
        images, labels = read_split(folder, names, layout)
        ids = labels[:, label].astype(np.int64)
        if len(ids) and int(ids.max()) >= classes:
            raise UserError(
                f"{layout.name} files in {str(folder)!r} have label {int(ids.max())}, but there "
                f"are {classes} classes: not {layout.name} binary records"
            )
        arrays += [images, ids]
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return ImageSplit(*arrays, classes=class_names(folder, layout, label, classes))


def class_names(folder: Path, layout: CifarLayout, label: int, classes: int) -> tuple[str, ...]:
    """The class names from the archive's plain-text list (``batches.meta.txt``,
    ``fine_label_names.txt``, ``coarse_label_names.txt``) where it is there and fits; else
    CIFAR-10's known names, or the ids.
    """
    text = folder / layout.names[label]
    if text.is_file():
        names = tuple(n.strip() for n in text.read_text(errors="replace").splitlines() if n.strip())
        if len(names) == classes:
            return names
    return CIFAR10_CLASSES if classes == 10 else tuple(str(c) for c in range(classes))


def load_cifar10(root: str) -> ImageSplit:
    """CIFAR-10: ``uint8 [50000, 3, 32, 32]`` training and ``[10000, 3, 32, 32]`` test images,
    ``int64`` labels in ``[0, 10)``. ``root`` is ``cifar-10-batches-bin`` or its parent.
    Cached per resolved root.
    """
    return _load(resolve_root(root), CIFAR10, 0, 10)


def load_cifar100(root: str, labels: Literal["fine", "coarse"] = "fine") -> ImageSplit:
    """CIFAR-100: ``uint8 [50000, 3, 32, 32]`` training and ``[10000, 3, 32, 32]`` test
    images; ``int64`` labels, the 100 fine classes or the 20 coarse superclasses (names from
    the archive's text lists, else the ids). ``root`` is
    ``cifar-100-binary`` or its parent. Cached per resolved root.
    """
    fine = labels == "fine"
    return _load(resolve_root(root), CIFAR100, 1 if fine else 0, 100 if fine else 20)
