"""Level 1 of the learned trainer2: the human's examples (digits, CSV) and their perturbations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attractor.errors import UserError
from attractor.stack.learned.examples import (
    PIXEL_COLUMNS,
    ExampleRow,
    HumanExamples,
    _shift,
    digits_examples,
    held_out_digits,
    perturbed_sets,
    read_examples,
)
from attractor.tasks.denoise_digits import load_images

pytestmark = pytest.mark.usefixtures("one_thread")


def classes_of(items: torch.Tensor) -> torch.Tensor:
    """The training class of each item, found by exact match (the split's images are unique)."""
    x_train, y_train, _, _ = load_images()
    match = (items.unsqueeze(1) == torch.tensor(x_train).unsqueeze(0)).all(-1)  # [n, pool]
    assert (match.sum(1) == 1).all()
    return torch.tensor(y_train)[match.float().argmax(1)]


# --- digits_examples / held_out_digits -------------------------------------------------------


def test_digits_examples_labels_follow_the_preferred_classes() -> None:
    examples = digits_examples([3, 7], n=60, seed=4)
    classes = classes_of(examples.items)
    assert examples.items.shape == (60, 64) and examples.items.dtype == torch.float32
    assert examples.labels.dtype == torch.int64
    assert torch.equal(examples.labels, ((classes == 3) | (classes == 7)).long())
    assert torch.unique(examples.items, dim=0).shape[0] == 60  # distinct images
    assert "preferred [3, 7]" in examples.source


@pytest.mark.parametrize(
    ("positives", "n", "expected"), [(0.25, 40, 10), (0.5, 7, 4), (0.9, 20, 18)]
)
def test_digits_examples_positives_share(positives: float, n: int, expected: int) -> None:
    examples = digits_examples([5], n=n, seed=1, positives=positives)
    assert int(examples.labels.sum()) == expected  # round half up: 3.5 -> 4
    assert torch.equal(examples.labels, (classes_of(examples.items) == 5).long())


def test_digits_examples_deterministic_in_seed() -> None:
    a, b = digits_examples([3], 30, seed=2), digits_examples([3], 30, seed=2)
    assert torch.equal(a.items, b.items) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.items, digits_examples([3], 30, seed=3).items)


@pytest.mark.parametrize(
    ("preferred", "n", "positives", "fragment"),
    [
        ([10], 20, None, "preferred class 10 is not a digit"),
        ([-1, 3], 20, None, "preferred class -1"),
        ([], 20, None, "preferred is empty"),
        ([3], 1, None, "n = 1 examples"),
        ([3], 1438, None, "between 2 and 1437"),
        ([3], 20, 0.0, "have no preferred item"),
        ([3], 20, 1.0, "no item that is not preferred"),
        (list(range(10)), 20, None, "no item that is not preferred"),
        ([3], 20, 1.5, "positives = 1.5"),
        ([3], 1000, 0.5, "the training split has"),
    ],
)
def test_digits_examples_errors_are_one_line(
    preferred: list[int], n: int, positives: float | None, fragment: str
) -> None:
    with pytest.raises(UserError, match=fragment) as err:
        digits_examples(preferred, n, seed=0, positives=positives)
    assert "\n" not in str(err.value)


def test_held_out_digits_is_the_test_split() -> None:
    _, _, x_test, y_test = load_images()
    items, labels = held_out_digits([0, 9])
    assert items.shape == (360, 64) and items.dtype == torch.float32
    assert torch.equal(items, torch.tensor(x_test))
    assert torch.equal(labels, torch.isin(torch.tensor(y_test), torch.tensor([0, 9])).long())


# --- read_examples ----------------------------------------------------------------------------


def write_csv(
    path: Path, examples: HumanExamples, label_words: tuple[str, str] = ("0", "1")
) -> None:
    """The examples as a user would write them: an id column, label, pixels 0..16."""
    pixels = ((examples.items + 1) * 8).round().long()
    lines = ["id,label," + ",".join(PIXEL_COLUMNS)]
    for i, (row, label) in enumerate(zip(pixels.tolist(), examples.labels.tolist(), strict=True)):
        lines.append(f"{i},{label_words[label]}," + ",".join(map(str, row)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("label_words", [("0", "1"), ("false", "True"), ("no", "YES")])
def test_read_examples_round_trips(tmp_path: Path, label_words: tuple[str, str]) -> None:
    examples = digits_examples([3], 25, seed=0, positives=0.4)
    write_csv(tmp_path / "ex.csv", examples, label_words)
    read = read_examples(tmp_path / "ex.csv")
    assert torch.equal(read.items, examples.items)  # x / 8 - 1 is exact in float32
    assert torch.equal(read.labels, examples.labels) and read.labels.dtype == torch.int64
    assert "25 examples, 10 preferred" in read.source


def header(drop: str | None = None) -> str:
    return ",".join(c for c in ("label", *PIXEL_COLUMNS) if c != drop)


def row(label: str, value: str = "0", at: int | None = None) -> str:
    pixels = ["8"] * 64
    if at is not None:
        pixels[at] = value
    return ",".join([label, *pixels])


BAD_CSVS = {
    "empty": (b"", "the file is empty"),
    "blank lines": (b"\n \n", "the file is empty"),
    "not utf-8": (b"label,p0\n\xff\xfe1,2\n", "not UTF-8"),
    "no label": (",".join(PIXEL_COLUMNS).encode() + b"\n", "no 'label' column"),
    "missing pixel": (
        f"{header('p17')}\n{row('1')[:-2]}\n".encode(),
        "pixel column p17 is missing",
    ),
    "non-numeric": (
        f"{header()}\n{row('1')}\n{row('0', 'dark', 5)}\n".encode(),
        "row 2, column p5: 'dark'",
    ),
    "above 16": (f"{header()}\n{row('1', '17', 0)}\n{row('0')}\n".encode(), "row 1, column p0"),
    "negative": (f"{header()}\n{row('1')}\n{row('0', '-1', 63)}\n".encode(), "row 2, column p63"),
    "nan": (f"{header()}\n{row('1', 'nan', 9)}\n{row('0')}\n".encode(), "row 1, column p9"),
    "label 2": (f"{header()}\n{row('2')}\n{row('0')}\n".encode(), "'2' is not a label"),
    "no positives": (
        f"{header()}\n{row('0')}\n{row('no')}\n".encode(),
        "has no preferred examples (label 1)",
    ),
    "no negatives": (f"{header()}\n{row('1')}\n{row('yes')}\n".encode(), "not preferred (label 0)"),
    "one row": (f"{header()}\n{row('1')}\n".encode(), "1 example rows; write at least 2"),
    "header only": (f"{header()}\n".encode(), "0 example rows"),
    "ragged": (f"{header()}\n{row('1')}\n0,1,2\n".encode(), "row 2 has 3 values"),
    "duplicate column": (f"{header()},p3\n".encode(), "column p3 appears twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_read_examples_bad_files_one_line(tmp_path: Path, case: str) -> None:
    content, fragment = BAD_CSVS[case]
    path = tmp_path / "ex.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(fragment)) as err:
        read_examples(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("make_dir", "fragment"), [(False, "does not exist"), (True, "is a directory")]
)
def test_read_examples_no_file(tmp_path: Path, make_dir: bool, fragment: str) -> None:
    path = tmp_path / "ex.csv"
    if make_dir:
        path.mkdir()
    with pytest.raises(UserError, match=fragment) as err:
        read_examples(path)
    assert "\n" not in str(err.value)


# --- perturbed_sets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples() -> HumanExamples:
    return digits_examples([3], 40, seed=0, positives=0.3)


def test_default_row_is_the_examples_unchanged(examples: HumanExamples) -> None:
    sets = perturbed_sets(examples, [ExampleRow(), ExampleRow(seed=9)])
    assert sets.items.shape == (2, 40, 64) and sets.labels.shape == sets.weights.shape == (2, 40)
    for i in range(2):
        assert torch.equal(sets.items[i], examples.items)
        assert torch.equal(sets.labels[i], examples.labels.float())
        assert torch.equal(sets.weights[i], torch.ones(40))


def test_bootstrap_weights_are_counts_summing_to_n(examples: HumanExamples) -> None:
    sets = perturbed_sets(examples, [ExampleRow(resample=r) for r in range(5)])
    assert torch.equal(sets.weights, sets.weights.round())
    assert torch.equal(sets.weights.sum(1), torch.full((5,), 40.0))
    assert (sets.weights == 0).any(1).all()  # P(no example dropped) = 40!/40^40
    assert not torch.equal(sets.weights[0], sets.weights[1])
    assert torch.equal(sets.labels, examples.labels.float().expand(5, -1))


@pytest.mark.parametrize(
    ("subsample", "noise", "kept", "flips"),
    [(1.0, 0.25, 40, 10), (0.5, 0.1, 20, 2), (0.3, 0.45, 12, 5)],
)
def test_subsample_and_flips_exact_counts(
    examples: HumanExamples, subsample: float, noise: float, kept: int, flips: int
) -> None:
    rows = [ExampleRow(subsample=subsample, label_noise=noise, seed=s) for s in range(4)]
    sets = perturbed_sets(examples, rows)
    assert torch.equal((sets.weights > 0).sum(1), torch.full((4,), kept))
    flipped = sets.labels != examples.labels.float()
    assert torch.equal(flipped.sum(1), torch.full((4,), flips))
    assert not (flipped & (sets.weights == 0)).any()  # only kept labels are flipped


def test_subsample_keeps_both_labels() -> None:
    rare = digits_examples([3], 40, seed=0, positives=0.05)  # 2 preferred of 40
    sets = perturbed_sets(rare, [ExampleRow(subsample=0.05, seed=s) for s in range(20)])
    assert torch.equal((sets.weights > 0).sum(1), torch.full((20,), 2))
    assert torch.equal((sets.labels * sets.weights).sum(1), torch.ones(20))


def test_subsample_after_bootstrap_keeps_a_drawn_example_of_each_label() -> None:
    rare = digits_examples([3], 40, seed=0, positives=0.05)
    positive = rare.labels == 1
    for s in range(20):
        counts = perturbed_sets(rare, [ExampleRow(resample=s)]).weights[0]
        kept = perturbed_sets(rare, [ExampleRow(resample=s, subsample=0.05, seed=s)]).weights[0]
        for of_label in (positive, ~positive):
            # The bootstrap may draw no preferred example at all (P = 0.95^40 = 0.13).
            assert bool((kept[of_label] > 0).any()) == bool((counts[of_label] > 0).any())


def test_augment_zero_unchanged_one_changes(examples: HumanExamples) -> None:
    sets = perturbed_sets(
        examples, [ExampleRow(augment=0.0, resample=1, seed=3), ExampleRow(augment=1.0, seed=3)]
    )
    assert torch.equal(sets.items[0], examples.items)
    changed = (sets.items[1] != examples.items).any(1)
    assert changed.all() and sets.items[1].abs().max() <= 1.0
    noise = sets.items[1] - examples.items
    assert noise.abs().mean() > 0.05


def test_shift_moves_pixels_and_fills_background() -> None:
    image = torch.arange(64, dtype=torch.float32).reshape(1, 64) / 64
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out = _shift(image, torch.tensor([dy]), torch.tensor([dx])).reshape(8, 8)
            expected = torch.full((8, 8), -1.0)
            src = image.reshape(8, 8)
            for i in range(8):
                for j in range(8):
                    if 0 <= i - dy < 8 and 0 <= j - dx < 8:
                        expected[i, j] = src[i - dy, j - dx]
            assert torch.equal(out, expected), (dy, dx)


ROWS = [
    ExampleRow(resample=4, subsample=0.6, label_noise=0.2, augment=0.7, seed=1),
    ExampleRow(resample=None, subsample=0.9, augment=0.3, seed=2),
    ExampleRow(resample=2, label_noise=0.1, seed=3),
]


def test_same_rows_same_sets(examples: HumanExamples) -> None:
    a, b = perturbed_sets(examples, ROWS), perturbed_sets(examples, ROWS)
    for name in ("items", "labels", "weights"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_a_row_does_not_depend_on_the_others(examples: HumanExamples) -> None:
    together = perturbed_sets(examples, ROWS)
    for i, r in enumerate(ROWS):
        alone = perturbed_sets(examples, [r])
        for name in ("items", "labels", "weights"):
            assert torch.equal(getattr(alone, name)[0], getattr(together, name)[i])


def test_the_evaluator_seed_leaves_the_humans_side_alone(examples: HumanExamples) -> None:
    """Bootstrap, subsample, flips and augmentation follow the resample; the evaluator's
    seed changes none of them (the two factors cross cleanly), while another resample does.
    """
    human = {"subsample": 0.7, "label_noise": 0.2, "augment": 0.5}
    sets = perturbed_sets(
        examples,
        [
            ExampleRow(resample=3, seed=0, **human),
            ExampleRow(resample=3, seed=9, **human),
            ExampleRow(resample=4, seed=0, **human),
        ],
    )
    for values in (sets.items, sets.labels, sets.weights):
        assert torch.equal(values[0], values[1])
    assert not torch.equal(sets.items[0], sets.items[2])


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"subsample": 0.0}, "subsample = 0.0"),
        ({"subsample": 1.5}, "subsample = 1.5"),
        ({"label_noise": 0.5}, "label_noise = 0.5"),
        ({"label_noise": -0.1}, "label_noise = -0.1"),
        ({"augment": 1.2}, "augment = 1.2"),
        ({"resample": 1.5}, "resample = 1.5"),
        ({"seed": True}, "seed = True"),
    ],
)
def test_rows_validated_one_line(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as err:
        ExampleRow(**fields)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_no_rows_is_an_error(examples: HumanExamples) -> None:
    with pytest.raises(UserError, match="no example rows"):
        perturbed_sets(examples, [])
