"""Causal language models from local sources only, and run members saved as Hugging Face directories.

A model spec is one of:

* ``RUN_DIR:MEMBER``: member ``MEMBER`` of a finished ``tiny-lm`` run (last snapshot); its
  tokenizer is bytes (vocabulary 256).
* a directory holding a Hugging Face causal LM (``config.json`` and weights), loaded with
  ``local_files_only=True``; its tokenizer from the same directory, or bytes for a
  directory written by :func:`save_member` (``"attractor_tokenizer": "bytes"`` in its config).
* ``module:function``: a function returning ``(model, tokenizer)``: a Hugging Face causal LM
  or any module mapping ``input_ids [batch, T]`` to logits ``[batch, T, vocab]``, and a
  Hugging Face tokenizer or the string ``"bytes"``.

Nothing here downloads: every ``from_pretrained`` is ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import tempfile
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

    @torch.no_grad()
    def logits(self, input_ids: Tensor) -> Tensor:
        """Logits ``[batch, T, vocab]`` of ``input_ids [batch, T]`` (T at most ``context``)."""
        return self.module(input_ids)

    def logits_from_embeddings(self, embeds: Tensor) -> Tensor:
        """Logits from input embeddings ``[batch, T, width]`` (differentiable; for token search)."""
        if self.hf is None:
            raise UserError(f"model {self.name!r} is not a Hugging Face model, so token search cannot run on it")
        return self.hf(inputs_embeds=embeds, use_cache=False).logits


def load_model(spec: str) -> LanguageModel:
    """Load ``spec`` (see the module docstring); bad specs raise a one-line :class:`UserError`."""
    run, _, member = spec.rpartition(":")
    if run and member.isdigit() and (Path(run) / "manifest.json").is_file():
        return _load_member(run, int(member), spec)
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"'{path}' has no config.json: it is neither a Hugging Face model directory nor a run directory member (RUN_DIR:MEMBER)")
        return _load_hf_dir(path, spec)
    if ":" in spec and not path.exists():
        return _load_function(spec)
    raise UserError(f"model {spec!r} is not a model directory, RUN_DIR:MEMBER or module:function")


def quiet_transformers() -> Any:
    """``transformers``, imported (or a one-line install hint), with its progress bars off."""
    transformers = require("transformers", "lm")
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _wrap_hf(model: Any, tokenizer: Tokenizer, name: str) -> LanguageModel:
    from attractor.tasks.tiny_lm import CausalLM

    model.eval()
    config = model.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
    vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() is not None else int(config.vocab_size)
    return LanguageModel(CausalLM(model).eval(), tokenizer, vocab, int(context), name, model.get_input_embeddings(), model)


def _load_member(run: str, member: int, spec: str) -> LanguageModel:
    from attractor.runs.ensemble import Ensemble
    from attractor.tasks.tiny_lm import CausalLM

    ensemble = Ensemble.load(run)
    if member not in [int(m) for m in ensemble.plan["member"]]:
        raise UserError(f"run '{run}' has no member {member} (members 0..{len(ensemble) - 1})")
    if member not in ensemble.members:
        raise UserError(f"member {member} of run '{run}' did not finish training (finished: {ensemble.members})")
    module = ensemble.module(member)
    if not isinstance(module, CausalLM):
        raise UserError(f"run '{run}' is not a language-model run (task {ensemble.config.task.name!r}); lm commands need a tiny-lm run")
    return _wrap_hf(module.model, ByteTokenizer(), spec)


def _load_hf_dir(path: Path, spec: str) -> LanguageModel:
    transformers = quiet_transformers()
    config = json.loads((path / "config.json").read_text())
    kwargs: dict[str, Any] = {"local_files_only": True}
    if config.get(TOKENIZER_KEY) == "bytes":
        kwargs["attn_implementation"] = "eager"  # as trained, so reloaded logits are identical
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load a causal LM from '{path}': {str(exc).splitlines()[0]}") from None
    if config.get(TOKENIZER_KEY) == "bytes":
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        try:
            tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot load a tokenizer from '{path}' (save one beside the model): {str(exc).splitlines()[0]}") from None
    return _wrap_hf(model, tokenizer, spec)


def _load_function(spec: str) -> LanguageModel:
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load model function {spec!r}: {exc}") from None
    result = function()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise UserError(f"model function {spec!r} must return (model, tokenizer), got {type(result).__name__}")
    model, tokenizer = result
    tok: Tokenizer = ByteTokenizer() if tokenizer == "bytes" else tokenizer if hasattr(tokenizer, "fingerprint") else HFTokenizer(tokenizer)
    if hasattr(model, "get_input_embeddings") and hasattr(model, "config"):
        return _wrap_hf(model, tok, spec)
    if not isinstance(model, nn.Module):
        raise UserError(f"model function {spec!r} returned {type(model).__name__}, not a torch module")
    model.eval()
    with torch.no_grad():
        vocab = int(model(torch.zeros(1, 1, dtype=torch.long)).shape[-1])
    return LanguageModel(model, tok, vocab, int(getattr(model, "context", 1024)), spec)


def check_compatible(a: LanguageModel, b: LanguageModel) -> None:
    """Refuse two models whose vocabularies or tokenizers differ (one line, :class:`UserError`)."""
    if a.vocab_size != b.vocab_size:
        raise UserError(f"models have different vocabularies ({a.name}: {a.vocab_size} tokens, {b.name}: {b.vocab_size}); their next-token distributions cannot be compared")
    if a.tokenizer.fingerprint != b.tokenizer.fingerprint:
        raise UserError(f"models use different tokenizers ({a.tokenizer.fingerprint} vs {b.tokenizer.fingerprint}); their next-token distributions cannot be compared")


def save_member(run_dir: str | Path, member: int, out: str | Path, step: int | None = None, force: bool = False) -> Path:
    """Write member ``member`` of a ``tiny-lm`` run as a standard Hugging Face model directory.

    The directory (``config.json``, ``model.safetensors``, ``generation_config.json``)
    loads with ``transformers.AutoModelForCausalLM.from_pretrained(out)`` and with
    :func:`load_model`; its config records ``"attractor_tokenizer": "bytes"``. Written to a
    temporary directory and renamed, so ``out`` is never half-written; an existing
    non-empty ``out`` is refused unless ``force``.

    Returns:
        The path of the directory.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.tasks.tiny_lm import CausalLM

    quiet_transformers()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"'{out}' exists and is not empty; pick another path or pass --force")
    ensemble = Ensemble.load(run_dir)
    if member not in ensemble.members:
        raise UserError(f"run '{run_dir}' has no finished member {member} (finished: {ensemble.members})")
    module = ensemble.module(member, step)
    if not isinstance(module, CausalLM):
        raise UserError(f"run '{run_dir}' is not a language-model run (task {ensemble.config.task.name!r})")
    model = module.model
    model.config.update({TOKENIZER_KEY: "bytes"})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
