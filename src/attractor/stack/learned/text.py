"""Level 1 of the learned trainer2, text: the human's labelled windows and a fixed feature map.

The text setting mirrors the image one (:mod:`attractor.stack.learned.examples`): the items
are short texts, the "human" is simulated by a known rule (:data:`RULES`), so the true
preference of any text, the generator's samples included, is known. :func:`pydoc_examples`
labels windows of the bundled pydoc corpus's *training* documents (the ones ``tiny-lm``
learns from) and :func:`held_out_texts` windows of its held-out documents, on which an
evaluator's accuracy and disagreement are measured.

A member's view of the examples (:func:`text_sets`) is the image setting's row, with the
same bootstrap counts, subsample and flips (:func:`~attractor.stack.learned.examples.
perturbed_labels`, one implementation for both settings) and a text augmentation,
:func:`paraphrase`, in place of shifts and pixel noise. An evaluator (level 2,
:mod:`~attractor.stack.learned.reward_model`) does not read bytes: it reads
:class:`BaseFeatures`, the base language model's final hidden state averaged over the text,
a fixed map from texts to vectors (the reward-model-on-a-frozen-LM of Christiano et al.
2017 and Stiennon et al. 2020, minus the fine-tuning of the trunk)::

    for member i (row r):
        labels, weights = perturbed_labels(human labels, r)      # bootstrap, subsample, flips
        texts_i = [paraphrase(t, r.augment, gen(r)) for t in texts]
        items[i] = BaseFeatures(texts_i)                         # [n, d]

References:
    Christiano et al., "Deep Reinforcement Learning from Human Preferences", NeurIPS 2017.
    Stiennon et al., "Learning to Summarize from Human Feedback", NeurIPS 2020.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.seeds import torch_generator
from attractor.stack.learned.examples import (
    ExampleRow,
    ExampleSets,
    human_seed,
    labelled_draw,
    perturbed_labels,
)
from attractor.tasks.corpus import Document, pydoc_documents, split_documents
from attractor.tasks.tiny_lm import TinyLMOptions
from attractor.training.device import module_on

#: A code line of the pydoc corpus: an indented line (the corpus indents its blocks by 3
#: spaces, nested ones deeper, so 4+ marks the nested code of examples) or a prompt.
_INDENTED = re.compile(r"(?:^|\n) {4,}\S")


def _code(text: str) -> bool:
    """A line indented by 4+ spaces (with something on it) or holding a ``>>>`` prompt."""
    return ">>>" in text or _INDENTED.search(text) is not None


RULES: dict[str, Callable[[str], bool]] = {"code": _code}
"""The simulated human's preference, by name: text -> preferred."""

#: Windows are labelled and cut by the same split as ``tiny-lm``'s default options.
_SPLIT = TinyLMOptions()
_SENTENCE_END = re.compile(r"(?<=[.!?]) +")
_INNER_SPACE = re.compile(r"(?<=\S) (?=\S)")  # one space between two non-blanks
_INNER_NEWLINE = re.compile(r"(?<=\S)\n(?=\S)")  # a line break that does not indent
_WORD = re.compile(r"[A-Za-z]+")


def rule_of(rule: str) -> Callable[[str], bool]:
    """``RULES[rule]``, or a one-line :class:`UserError` naming the rules."""
    if rule not in RULES:
        raise UserError(f"unknown text rule {rule!r}; known: {', '.join(sorted(RULES))}")
    return RULES[rule]


@dataclass(frozen=True)
class TextExamples:
    """The human's labelled texts.

    Attributes:
        texts: ``n`` strings.
        labels: ``[n]`` int64, 1 = preferred, 0 = not.
        source: where they came from, for the record.
    """

    texts: list[str]
    labels: Tensor
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _cut(documents: list[Document], length: int) -> list[str]:
    """Non-overlapping ``length``-character windows of each document, cut from its start."""
    return [
        d.text[start : start + length]
        for d in documents
        for start in range(0, len(d.text) - length + 1, length)
    ]


def _windows(split: str, length: int) -> list[str]:
    """The pydoc ``split``'s windows (see :func:`_cut`). The held-out ones exclude windows
    that occur verbatim in a training document: pydoc topics quote each other (the
    augmented-assignment topic is part of the assignment one), so about half of the
    held-out documents' windows are training text.
    """
    if length < 1:
        raise UserError(f"window length = {length}: give at least 1 character")
    train, test = split_documents(pydoc_documents(), _SPLIT.test_fraction, _SPLIT.split_seed)
    if split == "train":
        return _cut(train, length)
    seen = "\x00".join(d.text for d in train)  # NUL: no window spans two documents
    return [w for w in _cut(test, length) if w not in seen]


def pydoc_windows(split: str, length: int) -> list[str]:
    """Every window of ``length`` characters of the pydoc ``"train"`` or ``"test"`` documents
    (the held-out ones without the windows quoted verbatim from training documents).
    """
    return _windows(split, length)


def pydoc_examples(
    rule: str, n: int, seed: int, positives: float | None = 0.5, length: int = 96
) -> TextExamples:
    """``n`` distinct windows of the pydoc training documents labelled by ``RULES[rule]``.

    Args:
        rule: the simulated human's preference (a key of :data:`RULES`).
        n: how many windows.
        seed: seeds the draw (same arguments -> the same examples, in the same order).
        positives: share of preferred windows, ``round(positives n)`` drawn from the
            preferred windows and the rest from the others, shuffled together; ``None``
            draws uniformly.
        length: characters per window.

    Returns:
        ``texts`` (``n`` strings), ``labels [n]`` int64.
    """
    preferred = rule_of(rule)
    pool = _windows("train", length)
    if not 2 <= n <= len(pool):
        raise UserError(
            f"n = {n} examples: draw between 2 and {len(pool)} (pydoc training windows of "
            f"{length} characters)"
        )
    is_pos = torch.tensor([preferred(t) for t in pool])
    generator = torch_generator("learned.pydoc_examples", seed)
    index = labelled_draw(is_pos, n, positives, generator, "windows", f"rule {rule!r} gives")
    labels = is_pos[index].to(torch.int64)
    hint = "draw more examples or set positives"
    if labels.sum() == 0:
        raise UserError(f"the human's examples have no preferred text; {hint}")
    if labels.sum() == n:
        raise UserError(f"the human's examples have no text that is not preferred; {hint}")
    return TextExamples(
        texts=[pool[i] for i in index.tolist()],
        labels=labels,
        source=f"pydoc: {n} windows of {length} characters (seed {seed}), rule {rule!r}, "
        f"{int(labels.sum())} preferred",
    )


def held_out_texts(rule: str, n: int, length: int = 96) -> tuple[list[str], Tensor]:
    """The first ``n`` windows of the held-out pydoc documents that are not training text,
    with their rule labels: ``texts`` and ``labels [n]`` int64 (the truth evaluators are
    scored against; 231 windows of 96 characters, 350 of 64).
    """
    preferred = rule_of(rule)
    pool = _windows("test", length)
    if not 1 <= n <= len(pool):
        raise UserError(
            f"n = {n} held-out texts: take between 1 and {len(pool)} (held-out windows of "
            f"{length} characters)"
        )
    texts = pool[:n]
    return texts, torch.tensor([preferred(t) for t in texts], dtype=torch.int64)


def _pick(count: int, generator: torch.Generator) -> int:
    return int(torch.randint(count, (1,), generator=generator))


def _swap_sentences(text: str, generator: torch.Generator) -> str:
    parts = _SENTENCE_END.split(text)
    seps = _SENTENCE_END.findall(text)
    if len(parts) < 2:
        return text
    i = _pick(len(parts) - 1, generator)  # adjacent ones: the nearest thing to a reordering
    parts[i], parts[i + 1] = parts[i + 1], parts[i]
    return "".join(p + s for p, s in zip(parts, [*seps, ""], strict=True))


def _drop_sentence(text: str, generator: torch.Generator) -> str:
    parts = _SENTENCE_END.split(text)
    seps = _SENTENCE_END.findall(text)
    if len(parts) < 2:
        return text  # never drop the only sentence: an empty text says nothing
    i = _pick(len(parts), generator)
    pieces = [p + s for j, (p, s) in enumerate(zip(parts, [*seps, ""], strict=True)) if j != i]
    joined = "".join(pieces)
    # Dropping the last sentence leaves its separator at the end: trim it.
    return joined.rstrip(" ") if i == len(parts) - 1 else joined


def _whitespace(text: str, generator: torch.Generator) -> str:
    # Only blanks between two non-blanks: an indentation is never touched, so the edit
    # keeps a code line a code line.
    spots = [(m.start(), "space") for m in _INNER_SPACE.finditer(text)]
    spots += [(m.start(), "newline") for m in _INNER_NEWLINE.finditer(text)]
    if not spots:
        return text
    spots.sort()
    at, kind = spots[_pick(len(spots), generator)]
    if kind == "newline":
        new = " "
    else:
        new = "  " if _pick(2, generator) == 0 else "\n"
    return text[:at] + new + text[at + 1 :]


def _case(text: str, generator: torch.Generator) -> str:
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = words[_pick(len(words), generator)]
    w = word.group()
    new = w.lower() if w != w.lower() else w.capitalize() if len(w) > 1 else w.upper()
    return text[: word.start()] + new + text[word.end() :]


_EDITS = (_swap_sentences, _whitespace, _case, _drop_sentence)


def paraphrase(text: str, strength: float, generator: torch.Generator) -> str:
    """A nearby text: each edit applied once with probability ``strength``, in this order:
    swap two adjacent sentences, change one blank between words (one space to two or to a
    line break, a line break to a space), change the case of one word, drop one sentence
    (of two or more). Indentation is never edited; dropping a sentence may drop the thing
    the rule looks for (as a shift may move a digit's stroke off the grid).

    ``strength = 0`` returns ``text`` unchanged and draws nothing from ``generator``.
    """
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"paraphrase strength = {strength}: give a strength in [0, 1]")
    if strength == 0.0:
        return text
    # One draw per edit whatever applies, so a text's edits use a fixed share of the stream.
    applied = torch.rand(len(_EDITS), generator=generator) < strength
    for edit, on in zip(_EDITS, applied.tolist(), strict=True):
        if on:
            text = edit(text, generator)
    return text


def text_sets(
    examples: TextExamples,
    rows: Sequence[ExampleRow],
    features: Callable[[list[str]], Tensor],
) -> ExampleSets:
    """Every member's version of the human's texts, one per row, as features.

    The labels and weights are :func:`~attractor.stack.learned.examples.perturbed_sets`'s
    (the same bootstrap counts, subsample and flips for the same row); ``augment`` is the
    :func:`paraphrase` strength, each text edited with a generator seeded by the row's human
    seed (``resample``, or ``seed`` without one), so members sharing a resample see the
    same texts.

    Args:
        features: texts -> float ``[b, d]`` (:class:`BaseFeatures`).

    Returns:
        ``items [m, n, d]`` float32, ``labels [m, n]``, ``weights [m, n]``.
    """
    if not rows:
        raise UserError("no example rows; give at least one member's row")
    labels, weights, texts = [], [], []
    for row in rows:
        flipped, weight = perturbed_labels(examples.labels, row)
        labels.append(flipped)
        weights.append(weight)
        generator = torch_generator("learned.paraphrase", human_seed(row))
        texts.append([paraphrase(t, row.augment, generator) for t in examples.texts])
    # Members that see the same texts share one feature pass (the unaugmented ones, most).
    cache: dict[tuple[str, ...], Tensor] = {}
    items = []
    for member in texts:
        key = tuple(member)
        if key not in cache:
            cache[key] = features(member).to(torch.float32)
        items.append(cache[key])
    return ExampleSets(
        items=torch.stack(items), labels=torch.stack(labels), weights=torch.stack(weights)
    )


def encode_bytes(texts: Sequence[str], context: int) -> list[list[int]]:
    """UTF-8 byte ids of each text, cut to the last ``context`` bytes."""
    return [list(t.encode("utf-8", errors="replace"))[-context:] for t in texts]


class BaseFeatures:
    """The fixed feature map of texts: the base LM's final hidden state (after its last layer
    norm), mean over the text's byte positions, float32 ``[b, d]``.

    Texts longer than ``context`` bytes are cut to their last ``context`` bytes. Every text is
    padded on the right to ``context`` bytes and run alone in its row: attention is causal,
    so the padding never reaches the text's positions, and a text's features do not depend on
    the other texts of the call. The trunk runs on ``device``; the features come back to the
    CPU.
    """

    def __init__(
        self,
        module: nn.Module,
        context: int,
        chunk: int = 256,
        device: torch.device | None = None,
    ) -> None:
        """Args:
        module: a ``tiny-lm`` member (:class:`~attractor.tasks.tiny_lm.CausalLM` around a
            ``GPT2LMHeadModel``), used frozen in eval mode.
        context: the most bytes the model reads (its positions).
        chunk: texts per forward pass (memory).
        device: where the trunk runs (None: the CPU); off the CPU a copy of it is moved
            there, so ``module`` itself stays where it is.
        """
        inner = getattr(module, "model", module)
        trunk = getattr(inner, "transformer", None)
        if trunk is None:
            raise UserError("BaseFeatures needs a tiny-lm member (a GPT-2 with a .transformer)")
        positions = int(getattr(inner.config, "n_positions", context))
        if not 1 <= context <= positions:
            raise UserError(
                f"BaseFeatures context = {context}: give 1 to {positions} (the model's positions)"
            )
        self.device = torch.device("cpu") if device is None else device
        self.trunk = module_on(trunk, self.device).eval()
        self.context = context
        self.chunk = chunk
        self.width = int(inner.config.n_embd)

    def __call__(self, texts: list[str]) -> Tensor:
        ids = encode_bytes(texts, self.context)
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:
            raise UserError(f"BaseFeatures: text {empty[0]} is empty; it has no bytes to read")
        out = []
        for start in range(0, len(ids), self.chunk):
            rows = ids[start : start + self.chunk]
            tokens = torch.zeros(len(rows), self.context, dtype=torch.int64)
            mask = torch.zeros(len(rows), self.context)
            for r, row in enumerate(rows):
                tokens[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1.0
            tokens, mask = tokens.to(self.device), mask.to(self.device)
            with torch.no_grad():
                hidden = self.trunk(input_ids=tokens, use_cache=False).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.append(pooled.cpu())
        if not out:
            return torch.zeros(0, self.width)
        return torch.cat(out).to(torch.float32)


__all__ = [
    "RULES",
    "BaseFeatures",
    "TextExamples",
    "encode_bytes",
    "held_out_texts",
    "paraphrase",
    "pydoc_examples",
    "pydoc_windows",
    "rule_of",
    "text_sets",
]
