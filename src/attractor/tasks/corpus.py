"""Text corpora as streams of documents: the Python docs bundled with Python, files, folders.

A corpus spec is one of:

* ``builtin:pydoc``: the ``pydoc_data.topics`` help texts that ship with CPython (79 topics,
  ~466 kB on 3.11), one document per topic, in sorted topic order; no download.
* a directory: one document per ``*.txt`` / ``*.md`` / ``*.rst`` file below it (sorted
  paths), read lazily one file at a time, so a large folder is never all in memory.
* a text file: split into documents at blank lines, consecutive paragraphs merged until a
  document holds at least ``min_chars`` characters (so bootstrap over documents resamples
  units of similar size rather than single lines).

Pure Python: nothing here needs ``transformers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from attractor.errors import UserError

BUILTIN_PYDOC = "builtin:pydoc"
TEXT_SUFFIXES = (".txt", ".md", ".rst")
# A file corpus merges paragraphs until a document holds at least this many characters.
MIN_DOCUMENT_CHARS = 2000


@dataclass(frozen=True)
class Document:
    """One unit of a corpus: bootstrap intervals resample these."""

    name: str
    text: str


def pydoc_documents() -> list[Document]:
    """The ``pydoc_data.topics`` help texts, one document per topic, sorted by topic name."""
    from pydoc_data.topics import topics

    return [Document(name, topics[name]) for name in sorted(topics)]


def split_documents(
    documents: list[Document], test_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """A fixed random partition into (train, test) documents, both non-empty, each in the input
    order.
    """
    import random

    n = len(documents)
    if n < 2:
        raise UserError(f"a corpus needs at least 2 documents to hold some out, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    test = set(order[:n_test])
    return [d for i, d in enumerate(documents) if i not in test], [
        d for i, d in enumerate(documents) if i in test
    ]


def iter_corpus(spec: str, min_chars: int = MIN_DOCUMENT_CHARS) -> Iterator[Document]:
    """Documents of corpus ``spec`` (see the module docstring), lazily; bad specs raise
    :class:`UserError`.
    """
    if spec == BUILTIN_PYDOC:
        yield from pydoc_documents()
        return
    if spec.startswith("builtin:"):
        raise UserError(
            f"unknown built-in corpus {spec!r}; the built-in corpus is {BUILTIN_PYDOC!r}"
        )
    path = Path(spec)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        )
        if not files:
            raise UserError(f"corpus directory '{path}' holds no {'/'.join(TEXT_SUFFIXES)} files")
        for file in files:
            yield Document(str(file.relative_to(path)), _read(file))
        return
    if path.is_file():
        yield from paragraphs(_read(path), path.name, min_chars)
        return
    raise UserError(f"corpus '{spec}' is neither a text file, a directory nor {BUILTIN_PYDOC!r}")


def paragraphs(text: str, name: str, min_chars: int = MIN_DOCUMENT_CHARS) -> Iterator[Document]:
    """Split ``text`` at blank lines and merge paragraphs into documents of >= ``min_chars``."""
    current: list[str] = []
    size, index = 0, 0
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        current.append(block)
        size += len(block)
        if size >= min_chars:
            yield Document(f"{name}#{index}", "\n\n".join(current))
            current, size, index = [], 0, index + 1
    if current:
        yield Document(f"{name}#{index}", "\n\n".join(current))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read corpus file '{path}': {exc.strerror}") from None
