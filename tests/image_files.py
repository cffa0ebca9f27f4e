"""Small image datasets written in each on-disk format the image loaders read (IDX, CIFAR
binary, class folders of PNGs), for the loaders' tests and for example configs whose data
is the user's: what is written is the oracle.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B}
IDX_CODES |= {np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written by hand from the format's description."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[big.dtype], array.ndim])
    return header + np.array(array.shape, dtype=">u4").tobytes() + big.tobytes()


def write_mnist(
    root: Path, gz: bool = False, n: tuple[int, int] = (30, 12), side: int = 28
) -> dict[str, np.ndarray]:
    """The four MNIST IDX files (``.gz`` if ``gz``) of random ``side x side`` images, labels
    cycling through 0-9; returns file name -> the array written.
    """
    rng = np.random.default_rng(1)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n[0], side, side), dtype=np.uint8),
        IDX_NAMES[1]: np.arange(n[0], dtype=np.uint8) % 10,
        IDX_NAMES[2]: rng.integers(0, 256, (n[1], side, side), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n[1], dtype=np.uint8) * 3) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


def cifar_records(n: int, label_bytes: int, classes: tuple[int, ...], seed: int) -> np.ndarray:
    """``uint8 [n, label_bytes + 3072]`` records: labels, then random pixels."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (n, label_bytes + 3072), dtype=np.uint8)
    for b, k in enumerate(classes):
        records[:, b] = rng.integers(0, k, n)
    return records


def write_cifar10(folder: Path, per_file: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's six binary files in ``folder``; returns the training and test records."""
    folder.mkdir(parents=True)
    train = [cifar_records(per_file, 1, (10,), seed) for seed in range(5)]
    test = cifar_records(per_file + 1, 1, (10,), 9)
    for i, records in enumerate(train, start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(records.tobytes())
    (folder / "test_batch.bin").write_bytes(test.tobytes())
    return np.concatenate(train), test


def write_png(path: Path, pixels: np.ndarray) -> None:
    """``pixels`` (``uint8 [H, W]`` or ``[H, W, 3]``) as a PNG, folders made as needed."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image_folder(root: Path, classes: int = 3, per_class: int = 5, side: int = 20) -> None:
    """``root/<class>/<i>.png`` RGB images of a constant colour per image (no train/test)."""
    for c in range(classes):
        for i in range(per_class):
            write_png(
                root / f"class{c}" / f"{i}.png", np.full((side, side, 3), 10 * c + i, np.uint8)
            )


#: Task name -> a writer of small fake files that task reads from ``root``.
FAKE_DATA = {
    "mnist-lenet": lambda root: write_mnist(root),
    "cifar10-resnet20": lambda root: write_cifar10(root / "cifar-10-batches-bin"),
    "cifar10-vgg": lambda root: write_cifar10(root / "cifar-10-batches-bin"),
    "image-folder": write_image_folder,
}
