"""MNIST and Fashion-MNIST from their IDX files (raw or ``.gz``), parsed with numpy only.

The IDX format (LeCun et al.'s MNIST page): two zero bytes, a type code, the number of
dimensions ``d``; then ``d`` big-endian ``uint32`` sizes; then the values, big-endian,
row-major. MNIST's images are ``0x00000803`` (``uint8 [n, 28, 28]``), its labels
``0x00000801`` (``uint8 [n]``); Fashion-MNIST uses the same file names and layout, so one
loader reads both: the files in ``root`` decide which dataset a task sees.

References:
    LeCun, Cortes & Burges, "The MNIST database of handwritten digits" (file format).
    Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST".
"""

from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from attractor.errors import UserError
from attractor.tasks.images.dataset import ImageSplit, resolve_root

#: The four files, (images, labels) per split; each may also be gzipped (``<name>.gz``).
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Where under ``root`` the files may lie: ``root`` itself, or torchvision's ``raw``.
SUBFOLDERS = ("", "raw")
NUM_CLASSES = 10
#: IDX type code -> big-endian numpy dtype.
DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
EXPECTED = ", ".join(name for pair in FILES.values() for name in pair) + " (each may be .gz)"


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds, ``[d0, d1, ...]`` in its own dtype (native byte order).

    Raises:
        UserError: (one line) the file is not gzip where it says so, its magic number is not
            IDX's, or its length does not match the sizes in its header.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read IDX file {str(path)!r}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise UserError(
            f"{str(path)!r} is not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 0000 then a type code such as 08 and the number of dimensions)"
        )
    dtype, ndim = DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise UserError(f"IDX file {str(path)!r} has a truncated header ({ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise UserError(
            f"IDX file {str(path)!r} holds {len(data)} bytes, but its header {list(shape)} "
            f"says {expected}: the file is truncated or corrupt"
        )
    # frombuffer is a view of the bytes just read: no second copy for uint8 data.
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def find_file(root: Path, name: str) -> Path:
    """``root/[raw/]name`` or the same with ``.gz``, the first that exists, or a one-line error."""
    for sub in SUBFOLDERS:
        for candidate in (root / sub / name, root / sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise UserError(f"no {name}[.gz] in MNIST root {str(root)!r}; expected the files {EXPECTED}")


@lru_cache(maxsize=2)
def _load(root: Path) -> ImageSplit:
    arrays: list[np.ndarray] = []
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = find_file(root, images_name), find_file(root, labels_name)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise UserError(
                f"{str(images_path)!r} holds {images.dtype} {list(images.shape)}, expected "
                "uint8 [n, height, width] images"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
            raise UserError(
                f"{str(labels_path)!r} holds {labels.dtype} {list(labels.shape)}, expected "
                f"uint8 [{len(images)}] labels, one per {split} image"
            )
        if len(labels) and int(labels.max()) >= NUM_CLASSES:
            raise UserError(
                f"{str(labels_path)!r} has label {int(labels.max())}; MNIST labels are 0-9"
            )
        # [n, H, W] -> [n, 1, H, W]: a view, one channel.
        arrays += [images[:, None], labels.astype(np.int64)]
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise UserError(
            f"MNIST root {str(root)!r}: training images are {list(arrays[0].shape[2:])} but "
            f"test images {list(arrays[2].shape[2:])}"
        )
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return ImageSplit(*arrays, classes=tuple(str(c) for c in range(NUM_CLASSES)))


def load_mnist(root: str) -> ImageSplit:
    """MNIST or Fashion-MNIST (whichever IDX files ``root`` holds): ``uint8 [60000, 1, 28,
    28]`` training and ``[10000, 1, 28, 28]`` test images, ``int64`` labels in ``[0, 10)``.

    Cached per resolved root, so every chunk of a run reads the files once.
    """
    return _load(resolve_root(root))
