"""Level 1 of the learned trainer2: the human's labelled examples and each member's view of them.

A human says which items they prefer by labelling examples (1 = preferred, 0 = not). In the
image setting the items are the 8x8 digits with pixels in ``[-1, 1]`` (as
:func:`attractor.tasks.denoise_digits.load_images` returns them) and the "human" can be
simulated: :func:`digits_examples` labels a draw of training digits by whether their class
is among the preferred ones, so the true preference of any image is known and
:func:`held_out_digits` measures an evaluator against it. :func:`read_examples` reads the
examples a real user wrote into a CSV.

An evaluator ensemble is honest about what the examples do not pin down only if its members
see different, equally plausible versions of them. :class:`ExampleRow` is one member's
version: a bootstrap resample (which examples happened to be given), a subsample (fewer
examples), flipped labels (annotator noise) and image augmentation (shifts by one pixel,
pixel noise). :func:`perturbed_sets` builds all members' versions; each row's draws come
from generators derived from that row alone (:mod:`attractor.seeds`), so a member's set does
not depend on the other rows.

References:
    Christiano et al., "Deep Reinforcement Learning from Human Preferences", NeurIPS 2017
    (reward models learned from human labels, an ensemble of them).
    Efron, "Bootstrap Methods: Another Look at the Jackknife", Ann. Statist. 1979.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.seeds import torch_generator

PIXELS = 64
SIDE = 8
#: The sklearn digits' pixel scale: a CSV holds 0..16, items hold x / 8 - 1 in [-1, 1].
PIXEL_MAX = 16.0
BACKGROUND = -1.0
PIXEL_COLUMNS = tuple(f"p{i}" for i in range(PIXELS))
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclass(frozen=True)
class HumanExamples:
    """The human's labelled examples.

    Attributes:
        items: ``[n, 64]`` float32, pixels in ``[-1, 1]``.
        labels: ``[n]`` int64, 1 = preferred, 0 = not.
        source: where they came from, for the record.
    """

    items: Tensor
    labels: Tensor
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check_preferred(preferred: Sequence[int]) -> list[int]:
    classes = sorted({int(c) for c in preferred})
    if not classes:
        raise UserError("preferred is empty; name at least one digit class 0..9 the human prefers")
    bad = [c for c in classes if not 0 <= c <= 9]
    if bad:
        raise UserError(f"preferred class {bad[0]} is not a digit; use classes 0..9")
    return classes


def _digits(split: str) -> tuple[Tensor, Tensor]:
    # Lazy: the task module pulls in sklearn, which only the digits helpers need.
    from attractor.tasks.denoise_digits import load_images

    x_train, y_train, x_test, y_test = load_images()
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def labelled_draw(
    is_pos: Tensor,
    n: int,
    positives: float | None,
    generator: torch.Generator,
    items: str,
    supply: str,
) -> Tensor:
    """``n`` distinct indices into a pool whose items the rule marks ``is_pos [pool]``:
    uniform (``positives`` None), or ``round(positives n)`` (half up) preferred ones and the
    rest from the others, shuffled together so that their order says nothing of the labels.
    A one-line :class:`UserError` names ``items`` and what the pool's ``supply`` is when it
    has too few of either.
    """
    if positives is None:
        return torch.randperm(len(is_pos), generator=generator)[:n]
    if not 0.0 <= positives <= 1.0:
        raise UserError(f"positives = {positives}: give a share in [0, 1]")
    n_pos = math.floor(positives * n + 0.5)  # round half up, not to even
    pos, neg = is_pos.nonzero().squeeze(1), (~is_pos).nonzero().squeeze(1)
    if n_pos > pos.numel() or n - n_pos > neg.numel():
        raise UserError(
            f"positives = {positives} of n = {n} needs {n_pos} preferred and {n - n_pos} "
            f"other {items}; {supply} {pos.numel()} and {neg.numel()}"
        )
    index = torch.cat(
        [
            pos[torch.randperm(pos.numel(), generator=generator)[:n_pos]],
            neg[torch.randperm(neg.numel(), generator=generator)[: n - n_pos]],
        ]
    )
    return index[torch.randperm(n, generator=generator)]


def digits_examples(
    preferred: Sequence[int], n: int, seed: int, positives: float | None = None
) -> HumanExamples:
    """``n`` distinct training digits labelled by a simulated human: 1 iff the class is preferred.

    Args:
        preferred: the digit classes the human prefers.
        n: how many examples (distinct images of the digits' training split).
        seed: seeds the draw (same arguments -> the same examples, in the same order).
        positives: the share of preferred examples: ``round(positives n)`` drawn from the
            preferred classes, the rest from the others (then shuffled together); ``None``
            draws uniformly from the whole split.

    Returns:
        ``items [n, 64]``, ``labels [n]``.
    """
    classes = _check_preferred(preferred)
    x, y = _digits("train")
    pool = int(y.shape[0])
    if not 2 <= n <= pool:
        raise UserError(f"n = {n} examples: draw between 2 and {pool} (the digits training split)")
    is_pos = torch.isin(y, torch.tensor(classes))
    generator = torch_generator("learned.digits_examples", seed)
    index = labelled_draw(is_pos, n, positives, generator, "digits", "the training split has")
    labels = is_pos[index].to(torch.int64)
    hint = "draw more examples, set positives, or prefer other classes"
    if labels.sum() == 0:
        raise UserError(f"the human's examples have no preferred item; {hint}")
    if labels.sum() == n:
        raise UserError(f"the human's examples have no item that is not preferred; {hint}")
    how = "uniformly" if positives is None else f"{labels.sum().item()} preferred"
    return HumanExamples(
        items=x[index].clone(),
        labels=labels,
        source=f"digits: {n} drawn {how} (seed {seed}), preferred {classes}",
    )


def held_out_digits(preferred: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The digits' test split with the true preference: ``items [360, 64]`` float32,
    ``labels [360]`` int64 (1 iff the class is preferred).
    """
    classes = _check_preferred(preferred)
    x, y = _digits("test")
    return x, torch.isin(y, torch.tensor(classes)).to(torch.int64)


def _label(value: str, where: str, path: Path) -> int:
    text = value.strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise UserError(
        f"{path}: {where}, column label: {value!r} is not a label; write 1 (preferred) or 0 "
        "(also true/false, yes/no)"
    )


def _pixel(value: str, where: str, column: str, path: Path) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= PIXEL_MAX:  # also catches NaN
        raise UserError(
            f"{path}: {where}, column {column}: {value!r} is not a pixel value; write a "
            f"number from 0 to {PIXEL_MAX:g} (the sklearn digits scale)"
        )
    return number


def read_examples(path: str | Path) -> HumanExamples:
    """The examples a user wrote into a CSV file.

    The header names a ``label`` column (1 preferred / 0 not; ``true``/``false`` and
    ``yes``/``no`` also read) and the pixel columns ``p0`` .. ``p63`` (row-major 8x8) with
    values 0..16, the sklearn digits scale, mapped to ``[-1, 1]`` by ``x / 8 - 1``. Other
    columns (an id, a note) are ignored, blank lines skipped. The file is parsed as text by
    the ``csv`` module; nothing in it is executed.

    Returns:
        ``items [n, 64]`` float32, ``labels [n]`` int64.

    Raises:
        UserError: one line naming the file and the fix, for each problem with it.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(
            f"examples file {path} {what}; give a CSV with a label column and pixel columns p0..p63"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a spreadsheet's BOM is fine
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 (byte {exc.start}); save the examples as a UTF-8 CSV"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise UserError(f"{path}: the file is empty; write a header row (label,p0,...,p63)")
    header = [cell.strip() for cell in rows[0]]
    if "label" not in header:
        raise UserError(f"{path}: no 'label' column in the header; add one (1 preferred, 0 not)")
    missing = [name for name in PIXEL_COLUMNS if name not in header]
    if missing:
        raise UserError(
            f"{path}: pixel column {missing[0]} is missing ({len(missing)} of p0..p63 missing); "
            "write all 64 pixel columns p0..p63"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise UserError(f"{path}: column {duplicated[0]} appears twice; keep one")
    at = {name: header.index(name) for name in ("label", *PIXEL_COLUMNS)}
    items, labels = [], []
    for number, row in enumerate(rows[1:], start=1):
        where = f"row {number}"
        if len(row) != len(header):
            raise UserError(
                f"{path}: {where} has {len(row)} values but the header {len(header)}; "
                "give every row one value per column"
            )
        labels.append(_label(row[at["label"]], where, path))
        items.append([_pixel(row[at[c]], where, c, path) for c in PIXEL_COLUMNS])
    if len(labels) < 2:
        raise UserError(
            f"{path}: {len(labels)} example rows; write at least 2 (a preferred and another)"
        )
    n_pos = sum(labels)
    if n_pos == 0:
        raise UserError(
            f"{path}: has no preferred examples (label 1); label at least one example 1"
        )
    if n_pos == len(labels):
        raise UserError(
            f"{path}: has no examples that are not preferred (label 0); label at least one 0"
        )
    return HumanExamples(
        items=torch.tensor(items, dtype=torch.float32) / (PIXEL_MAX / 2) - 1.0,
        labels=torch.tensor(labels, dtype=torch.int64),
        source=f"file {path}: {len(labels)} examples, {n_pos} preferred",
    )


@dataclass(frozen=True)
class ExampleRow:
    """One member's view of the human's examples (validated on construction).

    Attributes:
        resample: bootstrap seed; ``None`` = the human's set as given (no resampling).
        subsample: share of examples kept, ``0 < s <= 1``.
        label_noise: share of the kept labels flipped (annotator noise), ``0 <= . < 0.5``.
        augment: image augmentation strength in ``[0, 1]``.
        seed: the evaluator's own seed (its initialisation).

    The subsample, the flipped labels and the augmentation are the human's side of the
    randomness, like the bootstrap: they are seeded by ``resample`` (by ``seed`` only when
    ``resample`` is None), so members that share a resample see the same example set and
    differ in the evaluator alone -- the two factors cross cleanly in a factorial design.
    """

    resample: int | None = None
    subsample: float = 1.0
    label_noise: float = 0.0
    augment: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("resample", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"example row {name} = {value!r}: give an integer")
        if not 0.0 < self.subsample <= 1.0:
            raise UserError(f"example row subsample = {self.subsample}: give a share in (0, 1]")
        if not 0.0 <= self.label_noise < 0.5:
            raise UserError(
                f"example row label_noise = {self.label_noise}: give a share in [0, 0.5) "
                "(at 0.5 the labels carry no information)"
            )
        if not 0.0 <= self.augment <= 1.0:
            raise UserError(f"example row augment = {self.augment}: give a strength in [0, 1]")


@dataclass(frozen=True)
class ExampleSets:
    """Every member's version of the examples, member dimension first.

    Attributes:
        items: ``[m, n, 64]`` float32, member ``i``'s (possibly augmented) copy.
        labels: ``[m, n]`` float32, 0./1. after the flips.
        weights: ``[m, n]`` float32, bootstrap count x kept (0/1), *not* rescaled: integer
            valued, 0 for a dropped example. A trainer normalises them per member (a
            weighted mean), so a rescaling would change nothing and would hide the counts.
    """

    items: Tensor
    labels: Tensor
    weights: Tensor

    @property
    def members(self) -> int:
        return int(self.labels.shape[0])


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # half up: round(2.5) == 2 would surprise a reader


def _counts(n: int, row: ExampleRow) -> Tensor:
    """Bootstrap counts ``[n]``: how often each example is among ``n`` draws with replacement."""
    if row.resample is None:
        return torch.ones(n)
    draws = torch.randint(n, (n,), generator=torch_generator("learned.resample", row.resample))
    return torch.bincount(draws, minlength=n).to(torch.float32)


def _kept(labels: Tensor, counts: Tensor, row: ExampleRow) -> Tensor:
    """Kept mask ``[n]`` bool: ``round(subsample n)`` examples, at least one of each label.

    The forced positive and negative are taken among examples the bootstrap drew (count > 0)
    where there are such, so the kept set really carries both labels.
    """
    n = labels.numel()
    k = max(_round(row.subsample * n), 1)
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    order = torch.randperm(
        n, generator=torch_generator("learned.subsample", human_seed(row))
    ).tolist()
    label_of, count_of = labels.tolist(), counts.tolist()
    first: list[int] = []
    for label in (1, 0):
        of_label = [i for i in order if label_of[i] == label]
        drawn = [i for i in of_label if count_of[i] > 0]
        if of_label:
            first.append((drawn or of_label)[0])
    rest = [i for i in order if i not in first]
    kept = torch.zeros(n, dtype=torch.bool)
    kept[(first + rest)[: max(k, len(first))]] = True
    return kept


def human_seed(row: ExampleRow) -> int:
    """The seed of the row's subsample, flips and augmentation (see :class:`ExampleRow`)."""
    return row.seed if row.resample is None else row.resample


def _shift(items: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """``items [n, 64]`` each moved by ``(dy, dx)`` in ``{-1, 0, 1}`` on the 8x8 grid;
    vacated pixels get the background ``-1``.
    """
    n = items.shape[0]
    padded = torch.full((n, SIDE + 2, SIDE + 2), BACKGROUND, dtype=items.dtype)
    padded[:, 1:-1, 1:-1] = items.reshape(n, SIDE, SIDE)
    out = items.reshape(n, SIDE, SIDE).clone()
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            sel = (dy == sy) & (dx == sx)
            # out[i, j] = in[i - sy, j - sx] = padded[i - sy + 1, j - sx + 1]
            out[sel] = padded[sel, 1 - sy : 1 - sy + SIDE, 1 - sx : 1 - sx + SIDE]
    return out.reshape(n, PIXELS)


def _augment(items: Tensor, row: ExampleRow) -> Tensor:
    """With probability ``augment`` a one-pixel shift, then pixel noise of sd ``0.2 augment``
    on every example, clamped to ``[-1, 1]``; ``augment = 0`` returns ``items`` untouched.
    """
    if row.augment == 0.0:
        return items
    n = items.shape[0]
    generator = torch_generator("learned.augment", human_seed(row))
    moved = torch.rand(n, generator=generator) < row.augment
    dy = torch.randint(-1, 2, (n,), generator=generator)
    dx = torch.randint(-1, 2, (n,), generator=generator)
    zero = torch.zeros_like(dy)
    shifted = _shift(items, torch.where(moved, dy, zero), torch.where(moved, dx, zero))
    noise = torch.randn(items.shape, generator=generator) * (0.2 * row.augment)
    return (shifted + noise).clamp(-1.0, 1.0)


def perturbed_labels(labels: Tensor, row: ExampleRow) -> tuple[Tensor, Tensor]:
    """A row's view of the labels, whatever the items are (digits, texts): its bootstrap
    counts, subsample and flips (see :func:`perturbed_sets`).

    Args:
        labels: ``[n]`` int64, the human's labels.

    Returns:
        ``labels [n]`` float32 after the flips, ``weights [n]`` float32 (count x kept).
    """
    n = int(labels.shape[0])
    flipped = labels.to(torch.float32)
    counts = _counts(n, row)
    kept = _kept(labels, counts, row)
    flips = _round(row.label_noise * int(kept.sum()))
    if flips:
        kept_index = kept.nonzero().squeeze(1)
        choice = torch.randperm(
            kept_index.numel(), generator=torch_generator("learned.flip", human_seed(row))
        )
        flipped = flipped.clone()
        flipped[kept_index[choice[:flips]]] = 1.0 - flipped[kept_index[choice[:flips]]]
    return flipped, counts * kept


def _one_set(examples: HumanExamples, row: ExampleRow) -> tuple[Tensor, Tensor, Tensor]:
    labels, weights = perturbed_labels(examples.labels, row)
    return _augment(examples.items.to(torch.float32), row), labels, weights


def perturbed_sets(examples: HumanExamples, rows: Sequence[ExampleRow]) -> ExampleSets:
    """Every member's version of the human's examples, one per row.

    Each row's bootstrap draws come from a generator seeded by its ``resample``; its
    subsample, flips and augmentation from separate generators seeded by its ``resample``
    too (by its ``seed`` when ``resample`` is None)
    (separate streams: changing the subsample share does not change the augmentation).
    The subsample keeps ``round(subsample n)`` examples (half up, at least one of each label
    the set has); ``round(label_noise kept)`` kept labels are flipped, chosen among the
    kept examples whatever their bootstrap count (a flip of a weight-0 example changes nothing).

    Returns:
        ``items [m, n, 64]``, ``labels [m, n]``, ``weights [m, n]``.
    """
    if not rows:
        raise UserError("no example rows; give at least one member's row")
    sets = [_one_set(examples, row) for row in rows]
    items, labels, weights = (torch.stack(parts) for parts in zip(*sets, strict=True))
    return ExampleSets(items=items, labels=labels, weights=weights)


__all__ = [
    "ExampleRow",
    "ExampleSets",
    "HumanExamples",
    "PIXEL_COLUMNS",
    "digits_examples",
    "held_out_digits",
    "human_seed",
    "labelled_draw",
    "perturbed_labels",
    "perturbed_sets",
    "read_examples",
]
