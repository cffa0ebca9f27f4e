"""Does a snapshot's weights fit the task's model? Read, check and (only if needed) adapt them.

A state dict fits when its tensor names, shapes and dtypes are the model's
(``model.state_dict()``) and every value is finite. Two differences are adapted instead
of refused, since they change no number the model computes: one name prefix added or
removed (``model.`` of :class:`~attractor.tasks.tiny_lm.CausalLM` around a Hugging Face
model, ``module.`` of DataParallel), and half precision (float16, bfloat16) widened to the
model's float32, which is exact. A Hugging Face directory with tied embeddings gets its
output embedding as a copy of the input one. A file that needed none of this is used as it
is (copied or linked); one that did is written anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.runs.checksums import sha256_bytes
from attractor.runs.imports import hf
from attractor.runs.imports.sources import Source

_WIDENED = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Fitted:
    """A snapshot's tensors as the model wants them.

    Attributes:
        tensors: name -> tensor, the model's names and dtypes.
        as_is: the source is one safetensors file whose bytes need no change (copy or link it).
        sums: every source file read (weights, config.json) -> its sha256.
        notes: what was adapted (a prefix, a widening, tied embeddings), for the record.
    """

    tensors: dict[str, Tensor]
    as_is: bool
    sums: dict[str, str]
    notes: tuple[str, ...] = ()


def fit(source: Source, template: nn.Module, task: str) -> Fitted:
    """``source``'s tensors fitted to ``template`` (the task's model); one line naming the
    first mismatch otherwise.
    """
    if source.hf:
        return _fit_hf(source.path, template, task)
    data = source.path.read_bytes()
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"'{source.path}' is not a readable safetensors file ({str(exc).splitlines()[0]})"
        ) from None
    sums = {str(source.path.resolve()): sha256_bytes(data)}
    fitted, notes = _adapt(source.path, tensors, template, task)
    return Fitted(fitted, not notes, sums, tuple(notes))


def _fit_hf(path: Path, template: nn.Module, task: str) -> Fitted:
    config = hf.read_config(path)
    hf_model = getattr(template, "model", template)
    wanted = getattr(hf_model, "config", None)
    if wanted is not None and hasattr(wanted, "to_dict"):
        hf.check_config(path, config, wanted.to_dict(), task)
    if task == "tiny-lm":
        hf.check_byte_level(path, config)
    tensors, sums = hf.read_weights(path)
    tie = bool(config.get("tie_word_embeddings"))
    fitted, notes = _adapt(path, tensors, template, task, tie=tie)
    return Fitted(fitted, False, sums, ("read from a Hugging Face directory", *notes))


def _adapt(
    path: Path, tensors: dict[str, Tensor], template: nn.Module, task: str, tie: bool = False
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename, tie and widen ``tensors`` to the template's, then check them; what was done."""
    expected = template.state_dict()
    notes: list[str] = []
    renamed, how = _rename(tensors, set(expected))
    if how:
        notes.append(how)
    if tie:
        tied = _tie(renamed, template)
        if tied:
            notes.append(tied)
    _check_names(path, renamed, expected, task)
    out = {}
    for name in sorted(expected):
        have, want = renamed[name], expected[name]
        if tuple(have.shape) != tuple(want.shape):
            raise _mismatch(
                path, task, f"'{name}' is {tuple(have.shape)}, the model wants {tuple(want.shape)}"
            )
        if have.dtype != want.dtype:
            if not (have.dtype in _WIDENED and want.dtype == torch.float32):
                raise _mismatch(
                    path, task, f"'{name}' is {_dtype(have)}, the model wants {_dtype(want)}"
                )
            have = have.to(torch.float32)
            if "widened" not in " ".join(notes):
                notes.append(f"widened {_dtype(renamed[name])} to float32 (exact)")
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise UserError(
                f"'{path}' has NaN or inf in '{name}' (a diverged run?); leave that member out "
                "of the import"
            )
        out[name] = have
    return out, notes


def _rename(tensors: dict[str, Tensor], expected: set[str]) -> tuple[dict[str, Tensor], str]:
    """``tensors`` under the model's names: as they are, or with the one prefix added or removed
    that makes the most of them the model's (a prefix ends at a dot).
    """
    names = set(tensors)
    best, best_hits, note = tensors, len(names & expected), ""
    if best_hits == len(expected):
        return tensors, ""
    candidates = {("add", e[: -len(f)]) for e in expected for f in names if _prefixed(e, f)}
    candidates |= {("remove", f[: -len(e)]) for e in expected for f in names if _prefixed(f, e)}
    for how, prefix in sorted(candidates):
        renamed = (
            {prefix + n: t for n, t in tensors.items()}
            if how == "add"
            else {n.removeprefix(prefix): t for n, t in tensors.items()}
        )
        hits = len(set(renamed) & expected)
        if hits > best_hits:
            best, best_hits = renamed, hits
            note = f"names {'prefixed with' if how == 'add' else 'stripped of'} '{prefix}'"
    return best, note


def _prefixed(longer: str, shorter: str) -> bool:
    """Whether ``longer`` is ``shorter`` under a dotted prefix (``model.`` + ``lm_head.weight``)."""
    return len(longer) > len(shorter) and longer.endswith("." + shorter)


def _tie(tensors: dict[str, Tensor], template: nn.Module) -> str:
    """Fill a missing output embedding from the input one (a directory that ties them)."""
    hf_model = getattr(template, "model", template)
    try:
        inputs, outputs = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return ""
    names = {id(p): n for n, p in template.named_parameters(remove_duplicate=False)}
    source, target = names.get(id(inputs.weight)), names.get(id(outputs.weight))
    if source is None or target is None or target in tensors or source not in tensors:
        return ""
    tensors[target] = tensors[source].clone()
    return f"output embedding '{target}' copied from the tied input embedding '{source}'"


def _check_names(
    path: Path, found: dict[str, Tensor], expected: dict[str, Tensor], task: str
) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise _mismatch(
            path,
            task,
            f"'{missing[0]}' is missing ({len(missing)} of the model's "
            f"{len(expected)} tensors are)",
        )
    if extra:
        raise _mismatch(path, task, f"'{extra[0]}' is not in the model ({len(extra)} such tensors)")


def _mismatch(path: Path, task: str, detail: str) -> UserError:
    return UserError(
        f"'{path}' does not fit task {task!r}'s model ({detail}); import with the --task and "
        "options the models were trained with"
    )


def _dtype(tensor: Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


__all__ = ["Fitted", "fit"]
