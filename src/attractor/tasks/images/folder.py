"""Images in class folders (torchvision's ImageFolder layout), decoded with Pillow.

Two layouts, the first that fits:

* ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (any Pillow-readable
  extension in :data:`EXTENSIONS`): the files give the split;
* ``root/<class>/*.png``: a fixed, class-stratified split (seed 0) holds out
  ``test_fraction`` of each class.

Classes are the folder names sorted, ids in that order (the training folders define them;
a test folder with another name is refused). Every image is converted to RGB (3 channels)
or grayscale (1) and resized to ``image_size x image_size`` (bilinear, aspect ratio not
kept); names starting with ``.`` are skipped.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from attractor.errors import UserError
from attractor.tasks.images.dataset import SUBSET_SEED, ImageSplit, resolve_root, stratified_subset

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
EXPECTED = "root/train/<class>/*.png and root/test/<class>/*.png, or root/<class>/*.png"


def pillow() -> Any:
    """``PIL.Image``, imported lazily (only image folders need it), or a one-line hint."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError(
            "reading an image folder needs Pillow; install it with: pip install pillow"
        ) from None
    return Image


def list_classes(folder: Path) -> list[tuple[str, list[Path]]]:
    """``(class name, sorted image paths)`` for every visible subfolder of ``folder``, sorted
    by name.

    Raises:
        UserError: (one line) no class folders, or a class folder without images.
    """
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"no class folders in {str(folder)!r}; expected {EXPECTED}")
    found = []
    for path in classes:
        images = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
        )
        if not images:
            raise UserError(
                f"class folder {str(path)!r} holds no images ({', '.join(sorted(EXTENSIONS))})"
            )
        found.append((path.name, images))
    return found


def decode(paths: list[Path], image_size: int, channels: int) -> np.ndarray:
    """``uint8 [len(paths), channels, image_size, image_size]``: each file decoded, converted
    and resized, written into one preallocated array.
    """
    image = pillow()
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with image.open(path) as opened:
                pixels = opened.convert(mode).resize(
                    (image_size, image_size), image.Resampling.BILINEAR
                )
        except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
            raise UserError(f"cannot decode image {str(path)!r}: {exc}") from None
        array = np.asarray(pixels, dtype=np.uint8)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def _flatten(
    classes: list[tuple[str, list[Path]]], ids: dict[str, int]
) -> tuple[list[Path], np.ndarray]:
    paths = [path for _, images in classes for path in images]
    labels = np.array([ids[name] for name, images in classes for _ in images], dtype=np.int64)
    return paths, labels


def _choose(paths: list[Path], labels: np.ndarray, n: int | None) -> tuple[list[Path], np.ndarray]:
    """The stratified subset of ``n`` files (all where ``None``), chosen before decoding."""
    if n is None or n >= len(paths):
        return paths, labels
    index = stratified_subset(labels, n)
    return [paths[i] for i in index], labels[index]


@lru_cache(maxsize=2)
def _load(
    root: Path,
    image_size: int,
    channels: int,
    test_fraction: float,
    train_examples: int | None,
    test_examples: int | None,
) -> ImageSplit:
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        missing = "test" if has_train else "train"
        raise UserError(f"image folder {str(root)!r} has no {missing}/ folder; expected {EXPECTED}")
    if has_train:
        train = list_classes(root / "train")
        names = [name for name, _ in train]
        ids = {name: i for i, name in enumerate(names)}
        test = list_classes(root / "test")
        unknown = sorted({name for name, _ in test} - set(names))
        if unknown:
            raise UserError(
                f"test class folders {unknown} in {str(root / 'test')!r} have no training "
                "folder in 'train'; the training folders define the classes"
            )
        train_paths, y_train = _flatten(train, ids)
        test_paths, y_test = _flatten(test, ids)
    else:
        found = list_classes(root)
        names = [name for name, _ in found]
        paths, labels = _flatten(found, {name: i for i, name in enumerate(names)})
        n_test = round(test_fraction * len(paths))
        if not 0 < n_test < len(paths):
            raise UserError(
                f"{str(root)!r} has {len(paths)} images: too few to hold out test_fraction = "
                f"{test_fraction}; add images or give train/ and test/ folders"
            )
        test_index = stratified_subset(labels, n_test, SUBSET_SEED)
        is_test = np.zeros(len(paths), dtype=bool)
        is_test[test_index] = True
        train_paths = [p for p, t in zip(paths, is_test, strict=True) if not t]
        test_paths = [p for p, t in zip(paths, is_test, strict=True) if t]
        y_train, y_test = labels[~is_test], labels[is_test]
    train_paths, y_train = _choose(train_paths, y_train, train_examples)
    test_paths, y_test = _choose(test_paths, y_test, test_examples)
    arrays = (
        decode(train_paths, image_size, channels),
        y_train,
        decode(test_paths, image_size, channels),
        y_test,
    )
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return ImageSplit(*arrays, classes=tuple(names))


def load_image_folder(
    root: str,
    image_size: int,
    channels: int = 3,
    test_fraction: float = 0.2,
    train_examples: int | None = None,
    test_examples: int | None = None,
) -> ImageSplit:
    """An image-folder dataset: ``uint8 [n, channels, image_size, image_size]`` images and
    ``int64 [n]`` labels per split.

    ``train_examples`` / ``test_examples`` pick a fixed class-stratified subset *before*
    decoding (a quick try on a large folder decodes only what it uses); the result is then
    already that subset. Cached per arguments (resolved root), so a run decodes once.
    """
    if channels not in (1, 3):
        raise UserError(f"image folder channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return _load(
        resolve_root(root), image_size, channels, test_fraction, train_examples, test_examples
    )
