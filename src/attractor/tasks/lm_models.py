"""Causal language models from local sources only: tokenizers, :class:`LanguageModel`, loading.

A model spec read here is one of:

* a directory holding a Hugging Face causal LM (``config.json`` and weights), loaded with
  ``local_files_only=True``; its tokenizer from the same directory, or bytes for a
  directory written by :func:`attractor.runs.lm_models.save_member`
  (``"attractor_tokenizer": "bytes"`` in its config).
* ``module:function``: a function returning ``(model, tokenizer)``: a Hugging Face causal LM
  or any module mapping ``input_ids [batch, T]`` to logits ``[batch, T, vocab]``, and a
  Hugging Face tokenizer or the string ``"bytes"``. This imports and runs the named module:
  it comes from the user's command line, never from a run directory.

``RUN_DIR:MEMBER`` (a member of a finished ``tiny-lm`` run) reads a run directory, so it is
resolved one layer up, by :func:`attractor.runs.lm_models.load_model`, which also takes
every spec above. Nothing here downloads: every ``from_pretrained`` is ``local_files_only``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from attractor.errors import UserError, require

#: Key in a saved member's ``config.json`` naming its tokenizer.
TOKENIZER_KEY = "attractor_tokenizer"


class Tokenizer(Protocol):
    """What comparison and search need from a tokenizer."""

    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256): the tokenizer of ``tiny-lm``, nothing to download."""

    fingerprint = "bytes-256"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer behind the :class:`Tokenizer` protocol (no special tokens added)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = sorted(tokenizer.get_vocab().items())
        self.fingerprint = "hf-" + hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode([int(i) for i in ids]))


@dataclass(eq=False)
class LanguageModel:
    """A causal LM ready to score text.

    Attributes:
        module: maps ``input_ids int64 [batch, T]`` to logits ``[batch, T, vocab]`` (eval mode).
        tokenizer: turns text into ids and back.
        vocab_size: size of the logits' last dimension.
        context: longest input the model takes (its position count).
        name: the spec it was loaded from.
        embeddings: the input embedding module where there is one (token search needs it).
        hf: the Hugging Face model where there is one (forward from ``inputs_embeds``).
    """

    module: nn.Module
    tokenizer: Tokenizer
    vocab_size: int
    context: int
    name: str
    embeddings: nn.Embedding | None = None
    hf: Any = None

    @property
    def device(self) -> torch.device:
        """Where the model computes (the CPU for a model without parameters)."""
        first = next(self.module.parameters(), None)
        return torch.device("cpu") if first is None else first.device

    def to(self, device: torch.device) -> LanguageModel:
        """Compute on ``device`` from now on (the modules move in place); callers keep their
        tensors where they are: inputs are moved in and logits come back to the inputs'
        device.
        """
        self.module.to(device)
        if self.hf is not None:
            self.hf.to(device)
        return self

    @torch.no_grad()
    def logits(self, input_ids: Tensor) -> Tensor:
        """Logits ``[batch, T, vocab]`` of ``input_ids [batch, T]`` (T at most ``context``), on
        the device ``input_ids`` is on.
        """
        return self.module(input_ids.to(self.device)).to(input_ids.device)

    def embed(self, onehot: Tensor) -> Tensor:
        """Input embeddings ``[batch, T, width]`` of one-hot rows ``[batch, T, vocab]`` on the
        model's device (differentiable in ``onehot``; for token search).
        """
        if self.embeddings is None:
            raise UserError(
                f"token search (gcg) needs a model with input embeddings; {self.name!r} has none"
            )
        weight = self.embeddings.weight
        return onehot.to(weight.device, weight.dtype) @ weight

    def logits_from_embeddings(self, embeds: Tensor, out: torch.device | None = None) -> Tensor:
        """Logits from input embeddings ``[batch, T, width]`` (differentiable; for token
        search), moved to ``out`` (default: where ``embeds`` are).
        """
        if self.hf is None:
            raise UserError(
                f"model {self.name!r} is not a Hugging Face model, so token search cannot run on it"
            )
        logits = self.hf(inputs_embeds=embeds.to(self.device), use_cache=False).logits
        return logits.to(embeds.device if out is None else out)


def load_local_model(spec: str) -> LanguageModel:
    """Load a Hugging Face model directory or a ``module:function`` spec (see the module docstring).

    Raises:
        UserError: one line for a spec that is neither, or that fails to load.
    """
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"'{path}' has no config.json: it is neither a Hugging Face model "
                "directory nor a run directory member (RUN_DIR:MEMBER)"
            )
        return load_hf_dir(path, spec)
    run, _, member = spec.rpartition(":")
    if run and member.isdigit():  # RUN_DIR:MEMBER (a function's name never is a number)
        why = "no manifest.json in it" if Path(run).is_dir() else "it does not exist"
        raise UserError(
            f"'{run}' is not a run directory ({why}); pass RUN_DIR:MEMBER of a finished tiny-lm "
            "run, a Hugging Face model directory or module:function"
        )
    if ":" in spec and not path.exists():
        return load_function(spec)
    raise UserError(f"model {spec!r} is not a model directory, RUN_DIR:MEMBER or module:function")


def quiet_transformers() -> Any:
    """``transformers``, imported (or a one-line install hint), with its progress bars off."""
    transformers = require("transformers", "lm")
    transformers.utils.logging.disable_progress_bar()
    return transformers


def wrap_hf(model: Any, tokenizer: Tokenizer, name: str) -> LanguageModel:
    """A Hugging Face causal LM as a :class:`LanguageModel` (eval mode, context and vocabulary read
    off it).
    """
    from attractor.tasks.tiny_lm import CausalLM

    model.eval()
    config = model.config
    context = (
        getattr(config, "n_positions", None)
        or getattr(config, "max_position_embeddings", None)
        or 1024
    )
    vocab = (
        int(model.get_output_embeddings().weight.shape[0])
        if model.get_output_embeddings() is not None
        else int(config.vocab_size)
    )
    return LanguageModel(
        CausalLM(model).eval(),
        tokenizer,
        vocab,
        int(context),
        name,
        model.get_input_embeddings(),
        model,
    )


def load_hf_dir(path: Path, spec: str) -> LanguageModel:
    """The causal LM in Hugging Face directory ``path`` with its tokenizer (bytes where its config
    says so).
    """
    transformers = quiet_transformers()
    config = json.loads((path / "config.json").read_text())
    kwargs: dict[str, Any] = {"local_files_only": True}
    if config.get(TOKENIZER_KEY) == "bytes":
        kwargs["attn_implementation"] = "eager"  # as trained, so reloaded logits are identical
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"cannot load a causal LM from '{path}': {str(exc).splitlines()[0]}"
        ) from None
    if config.get(TOKENIZER_KEY) == "bytes":
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        try:
            tokenizer = HFTokenizer(
                transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            )
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"cannot load a tokenizer from '{path}' (save one beside the model): "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return wrap_hf(model, tokenizer, spec)


def load_function(spec: str) -> LanguageModel:
    """Call ``module:function`` (user code named on the command line) for ``(model, tokenizer)``."""
    module_name, _, function_name = spec.partition(":")
    if not all(part.isidentifier() for part in [*module_name.split("."), function_name]):
        # 'runs/x:best' or 'model.py:make': a path, not an importable module:function.
        raise UserError(
            f"model {spec!r} is not module:function (dotted Python names) and '{module_name}' is "
            "not a model directory; pass RUN_DIR:MEMBER, a Hugging Face model directory or "
            "module:function"
        )
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load model function {spec!r}: {exc}") from None
    result = function()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise UserError(
            f"model function {spec!r} must return (model, tokenizer), got {type(result).__name__}"
        )
    model, tokenizer = result
    tok: Tokenizer = (
        ByteTokenizer()
        if tokenizer == "bytes"
        else tokenizer
        if hasattr(tokenizer, "fingerprint")
        else HFTokenizer(tokenizer)
    )
    if hasattr(model, "get_input_embeddings") and hasattr(model, "config"):
        return wrap_hf(model, tok, spec)
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model function {spec!r} returned {type(model).__name__}, not a torch module"
        )
    model.eval()
    with torch.no_grad():
        vocab = int(model(torch.zeros(1, 1, dtype=torch.long)).shape[-1])
    return LanguageModel(model, tok, vocab, int(getattr(model, "context", 1024)), spec)


def check_compatible(a: LanguageModel, b: LanguageModel) -> None:
    """Refuse two models whose vocabularies or tokenizers differ (one line, :class:`UserError`)."""
    if a.vocab_size != b.vocab_size:
        raise UserError(
            f"models have different vocabularies ({a.name}: {a.vocab_size} tokens, {b.name}: "
            f"{b.vocab_size}); their next-token distributions cannot be compared"
        )
    if a.tokenizer.fingerprint != b.tokenizer.fingerprint:
        raise UserError(
            f"models use different tokenizers ({a.tokenizer.fingerprint} vs "
            f"{b.tokenizer.fingerprint}); their next-token distributions cannot be compared"
        )
