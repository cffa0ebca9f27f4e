"""Language models that live in run directories: load a ``RUN_DIR:MEMBER``, export a member.

:func:`load_model` takes every model spec: ``RUN_DIR:MEMBER`` (member ``MEMBER`` of a
finished ``tiny-lm`` run, last snapshot, tokenizer bytes) here, and Hugging Face
directories and ``module:function`` through :func:`attractor.tasks.lm_models.load_local_model`.
:func:`save_member` writes a member as a standard Hugging Face model directory. A run's task
is imported only when trusted (:mod:`attractor.runs.trust`; ``trust=None`` takes the process
default that ``attractor --trust`` sets).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.runs.owned import refuse_protected
from attractor.tasks.lm_models import (
    TOKENIZER_KEY,
    ByteTokenizer,
    LanguageModel,
    load_local_model,
    quiet_transformers,
    wrap_hf,
)
from attractor.tasks.tiny_lm import CausalLM

__all__ = ["load_model", "member_model", "save_member"]

#: The file that marks a directory as an lm-export (and lists its files): only such a
#: directory may be replaced with ``--force``.
EXPORT_MARKER = "attractor-export.json"


def load_model(spec: str, trust: bool | None = None) -> LanguageModel:
    """Load ``spec`` (see the module docstring); bad specs raise a one-line :class:`UserError`."""
    run, _, member = spec.rpartition(":")
    if run and member.isdigit() and (Path(run) / "manifest.json").is_file():
        return _load_member(run, int(member), spec, trust)
    return load_local_model(spec)


def _load_member(run: str, member: int, spec: str, trust: bool | None) -> LanguageModel:
    return member_model(Ensemble.load(run, trust), member, spec)


def member_model(ensemble: Ensemble, member: int, spec: str) -> LanguageModel:
    """Member ``member`` of a loaded ``tiny-lm`` run as a :class:`LanguageModel` named
    ``spec``; one line if it is not a finished member of a language-model run.
    """
    run = ensemble.store.root
    if member not in [int(m) for m in ensemble.plan["member"]]:
        raise UserError(f"run '{run}' has no member {member} (members 0..{len(ensemble) - 1})")
    if member not in ensemble.members:
        raise UserError(
            f"member {member} of run '{run}' did not finish training (finished: {ensemble.members})"
        )
    module = ensemble.module(member)
    if not isinstance(module, CausalLM):
        raise UserError(
            f"run '{run}' is not a language-model run (task "
            f"{ensemble.config.task.name!r}); lm commands need a tiny-lm run"
        )
    return wrap_hf(module.model, ByteTokenizer(), spec)


def save_member(
    run_dir: str | Path, member: int, out: str | Path, step: int | None = None, force: bool = False
) -> Path:
    """Write member ``member`` of a ``tiny-lm`` run as a standard Hugging Face model directory.

    The directory (``config.json``, ``model.safetensors``, ``generation_config.json``)
    loads with ``transformers.AutoModelForCausalLM.from_pretrained(out)`` and with
    :func:`load_model`; its config records ``"attractor_tokenizer": "bytes"``. Written to a
    temporary directory and renamed, so ``out`` is never half-written; an existing
    non-empty ``out`` is refused unless ``force``, and even then replaced only if it is an
    export this function wrote (its marker :data:`EXPORT_MARKER` lists its files) holding
    nothing else. '.', home, '/' and parents of the working directory are always refused.

    Returns:
        The path of the directory.
    """
    out = Path(out)
    # Where it may write is checked first: those refusals need no optional dependency.
    refuse_protected(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise UserError(f"'{out}' exists and is not empty; pick another path or pass --force")
        _check_replaceable(out)
    quiet_transformers()
    ensemble = Ensemble.load(run_dir)
    if member not in ensemble.members:
        raise UserError(
            f"run '{run_dir}' has no finished member {member} (finished: {ensemble.members})"
        )
    module = ensemble.module(member, step)
    if not isinstance(module, CausalLM):
        raise UserError(
            f"run '{run_dir}' is not a language-model run (task {ensemble.config.task.name!r})"
        )
    model = module.model
    model.config.update({TOKENIZER_KEY: "bytes"})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        files = sorted(p.name for p in staging.iterdir())
        marker = {"attractor_export": 1, "run": str(run_dir), "member": member, "files": files}
        (staging / EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
        if out.exists():
            shutil.rmtree(out)  # an empty folder or an export of ours: _check_replaceable
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_replaceable(out: Path) -> None:
    """Refuse ``--force`` on anything but a directory holding only an attractor export."""
    try:
        marker = json.loads((out / EXPORT_MARKER).read_text()) if out.is_dir() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        marker = {}
    if not isinstance(marker, dict) or marker.get("attractor_export") != 1:
        raise UserError(
            f"'{out}' is not an attractor export (no {EXPORT_MARKER}); --force replaces only a "
            "directory lm-export wrote: pick another path"
        )
    ours = {EXPORT_MARKER, *marker.get("files", [])}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if others:
        raise UserError(
            f"'{out}' holds files lm-export did not write ({', '.join(others[:5])}); move them "
            "away or pick another path"
        )
