"""``tiny-lm``: a byte-level GPT-2 trained on the Python help texts that ship with Python.

Data. The corpus (default ``builtin:pydoc``: the ``pydoc_data.topics`` help texts, one
document per topic; see :mod:`attractor.tasks.corpus`) is split into training and held-out
documents by a fixed seed. Bytes are tokens (vocabulary 256, UTF-8), so there is no
tokenizer to download. Each document is cut into fixed-length windows of ``context + 1``
bytes: input ``x int64 [context]`` and target ``y int64 [context]`` (the next byte at
every position). At most ``windows_per_document`` windows are taken per document, evenly
spaced over it, which keeps the default fast and stops one long document from
dominating; documents shorter than ``context + 1`` bytes are skipped.

Groups. Training documents are dealt round-robin into ``n_groups`` groups (document
``i`` of the training split is in group ``i % n_groups``); every window carries its
document's group, so ``holdout_group`` removes whole documents.

Bootstrap. ``units`` gives every window its document; a document-level (cluster)
bootstrap resamples documents and takes all windows of each drawn document. Whether
``plan.vary = ["bootstrap"]`` resamples documents or windows depends on the engine
honouring ``Task.units`` (see ``docs/language-models.md``); without it the resample is of
windows.

The model maps ``[batch, context]`` token ids to ``[batch, context, 256]`` logits: a
``GPT2LMHeadModel`` from ``transformers`` built from a ``GPT2Config`` (untied embeddings,
no dropout by default, eager attention so ``torch.func.vmap`` can batch members).

References:
    Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from attractor.errors import require
from attractor.tasks.base import Task
from attractor.tasks.corpus import BUILTIN_PYDOC, Document, iter_corpus, split_documents

NAME = "tiny-lm"
SUMMARY = (
    "byte-level GPT-2 (transformers) on the Python help texts bundled with Python; documents as "
    "groups"
)
VOCAB = 256


class TinyLMOptions(BaseModel):
    """Options of ``tiny-lm`` (the ``[task]`` keys besides ``name``)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(2, ge=1, description="Transformer blocks.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide width.")
    width: int = Field(128, ge=1, description="Model width (embedding size); the MLP is 4x wider.")
    context: int = Field(
        128, ge=2, description="Tokens (bytes) per training window, and the model's context length."
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "Dropout of GPT-2 (residual, embedding, attention); 0 allows vectorized training."
        ),
    )
    corpus: str = Field(
        BUILTIN_PYDOC,
        description="Text: 'builtin:pydoc', a text file or a directory of text files.",
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of documents held out for the test split."
    )
    split_seed: int = Field(
        0, ge=0, description="Seed of the fixed train/test split of the documents."
    )
    n_groups: int = Field(
        8, ge=1, description="Groups of training documents (round-robin), for holdout_group."
    )
    windows_per_document: int | None = Field(
        4, ge=1, description="At most this many windows per document, evenly spaced; None: all."
    )
    stride: int | None = Field(
        None,
        ge=1,
        description="Step between window starts before capping; None: context (no overlap).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TinyLMOptions:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        return self


class CausalLM(nn.Module):
    """A Hugging Face causal LM as a plain module: ``input_ids [batch, T]`` ->
    ``logits [batch, T, vocab]``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def gpt2_config(options: TinyLMOptions) -> dict[str, Any]:
    """``GPT2Config`` keyword arguments of the task's model (JSON-able)."""
    return {
        "vocab_size": VOCAB,
        "n_positions": options.context,
        "n_embd": options.width,
        "n_layer": options.layers,
        "n_head": options.heads,
        "resid_pdrop": options.dropout,
        "embd_pdrop": options.dropout,
        "attn_pdrop": options.dropout,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": None,
        "use_cache": False,
    }


def build_gpt2(config: dict[str, Any]) -> CausalLM:
    """A fresh byte-level GPT-2 from ``GPT2Config(**config)`` (weights from the global RNG)."""
    transformers = require("transformers", "lm")
    hf_config = transformers.GPT2Config(**config)
    hf_config._attn_implementation = "eager"  # plain tensor ops: torch.func can vmap it
    return CausalLM(transformers.GPT2LMHeadModel(hf_config))


def window_starts(length: int, context: int, stride: int, cap: int | None) -> list[int]:
    """Starts of the ``context + 1``-byte windows of a ``length``-byte document, at most ``cap``,
    evenly spaced.
    """
    starts = list(range(0, length - context, stride))
    if cap is not None and len(starts) > cap:
        picks = torch.linspace(0, len(starts) - 1, cap).round().long().tolist()
        starts = [starts[i] for i in picks]
    return starts


def windows(
    documents: list[Document], context: int, stride: int, cap: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Windows of the documents: ``x [n, context]``, ``y [n, context]``, document index ``[n]``."""
    rows: list[Tensor] = []
    owner: list[int] = []
    for index, document in enumerate(documents):
        data = torch.frombuffer(bytearray(document.text.encode("utf-8")), dtype=torch.uint8).long()
        for start in window_starts(len(data), context, stride, cap):
            rows.append(data[start : start + context + 1])
            owner.append(index)
    if not rows:
        raise ValueError(f"no document is longer than context + 1 = {context + 1} bytes")
    block = torch.stack(rows)
    return (
        block[:, :-1].contiguous(),
        block[:, 1:].contiguous(),
        torch.tensor(owner, dtype=torch.int64),
    )


def make(options: TinyLMOptions) -> Task:
    """Build ``tiny-lm``; see the module docstring for windows, groups and the bootstrap unit."""
    from attractor.errors import UserError

    documents = list(iter_corpus(options.corpus))
    train_docs, test_docs = split_documents(documents, options.test_fraction, options.split_seed)
    stride = options.stride or options.context
    try:
        x_train, y_train, units = windows(
            train_docs, options.context, stride, options.windows_per_document
        )
        x_test, y_test, test_units = windows(
            test_docs, options.context, stride, options.windows_per_document
        )
    except ValueError as exc:
        raise UserError(
            f"task {NAME!r}: {exc} in corpus {options.corpus!r}; lower task.context"
        ) from None
    # Compact the ids so that document i of `documents` below is unit i (short ones were skipped).
    kept, units = torch.unique(units, return_inverse=True)
    kept_test, test_units = torch.unique(test_units, return_inverse=True)
    config = gpt2_config(options)
    return Task(
        name=NAME,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        make_model=partial(build_gpt2, config),
        num_classes=VOCAB,
        groups=units % options.n_groups,
        description=SUMMARY,
        units=units,
        test_units=test_units,
        documents=tuple(train_docs[i].name for i in kept.tolist()),
        test_documents=tuple(test_docs[i].name for i in kept_test.tolist()),
        model_config=config,
    )
