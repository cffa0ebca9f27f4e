"""Hugging Face model directories read as data: ``config.json`` parsed as JSON, weights from
safetensors only.

Nothing here imports ``transformers`` or runs code a directory names: no ``from_pretrained``,
no ``trust_remote_code``, no pickled ``pytorch_model.bin``. A directory's config is checked
against the config of the task's model (the keys that change what the network computes),
and for ``tiny-lm`` it supplies the model's size when the user gave none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load
from torch import Tensor

from attractor.errors import UserError
from attractor.runs.checksums import sha256_bytes

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
#: Config keys that change what a causal LM computes (GPT-2's names and the common ones);
#: compared where both configs have them. Dropout, token ids, dtype and versions do not.
FUNCTIONAL = (
    "model_type",
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "max_position_embeddings",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
)
#: tiny-lm option <- GPT-2 config key: the size of an imported byte-level GPT-2.
TINY_LM_SIZE = {"layers": "n_layer", "heads": "n_head", "width": "n_embd", "context": "n_positions"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def read_config(path: Path) -> dict[str, Any]:
    """``path/config.json`` as a dict (JSON only; one line if it is not a JSON object)."""
    try:
        data = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"'{path / CONFIG}' is not readable JSON ({exc}); fix or replace it"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"'{path / CONFIG}' is not a JSON object; it is not a model config")
    return data


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of model directory ``path`` (one, or the shards its index names)."""
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / INDEX).is_file():
        try:
            index = json.loads((path / INDEX).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (
            OSError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ):
            raise UserError(
                f"'{path / INDEX}' is not a safetensors index; fix or replace it"
            ) from None
        files = [path / shard for shard in shards]
        for file in files:  # a shard is a file name beside the index, never a path elsewhere
            if file.parent != path or not file.name.endswith(".safetensors") or not file.is_file():
                raise UserError(
                    f"'{path / INDEX}' names shard '{file.name}', which is not a "
                    "safetensors file in that directory"
                )
        return files
    pickled = sorted(p.name for p in path.glob("*.bin"))
    why = (
        f"only pickled weights ({pickled[0]}), which attractor never loads (they can run code); "
        "save the model with save_pretrained(..., safe_serialization=True)"
        if pickled
        else f"no {WEIGHTS} (nor a sharded {INDEX})"
    )
    raise UserError(f"model directory '{path}' has {why}")


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor of model directory ``path``, and the sha256 of each file read (config too)."""
    tensors: dict[str, Tensor] = {}
    sums = {str((path / CONFIG).resolve()): sha256_bytes((path / CONFIG).read_bytes())}
    for file in weight_files(path):
        data = file.read_bytes()
        sums[str(file.resolve())] = sha256_bytes(data)
        try:
            tensors.update(load(data))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"'{file}' is not a readable safetensors file ({str(exc).splitlines()[0]})"
            ) from None
    return tensors, sums


def check_config(path: Path, found: dict[str, Any], wanted: dict[str, Any], task: str) -> None:
    """Refuse a directory whose config computes another network than the task's model."""
    for key in FUNCTIONAL:
        if key in found and key in wanted and found[key] != wanted[key]:
            raise UserError(
                f"'{path / CONFIG}' has {key} = {found[key]!r}, task {task!r}'s model has "
                f"{wanted[key]!r}; import with the task options the models were made with"
            )


def check_byte_level(path: Path, config: dict[str, Any]) -> None:
    """tiny-lm reads bytes as tokens: refuse a directory that carries a tokenizer of its own."""
    if config.get("attractor_tokenizer") == "bytes":
        return
    carried = [name for name in _TOKENIZER_FILES if (path / name).is_file()]
    if carried:
        raise UserError(
            f"'{path}' carries its own tokenizer ({carried[0]}) but a tiny-lm run reads bytes as "
            "tokens; compare such models with `attractor lm-compare DIR_A DIR_B` instead"
        )


def tiny_lm_size(path: Path, config: dict[str, Any]) -> dict[str, int]:
    """The tiny-lm options (layers, heads, width, context) a GPT-2 directory's config gives."""
    if config.get("model_type") != "gpt2":
        raise UserError(
            f"'{path / CONFIG}' is a {config.get('model_type')!r} model; task 'tiny-lm' is a "
            "GPT-2 (give a module:function task that builds this architecture)"
        )
    try:
        return {option: int(config[key]) for option, key in TINY_LM_SIZE.items()}
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"'{path / CONFIG}' lacks one of {', '.join(TINY_LM_SIZE.values())}; it is not a "
            "complete GPT-2 config"
        ) from None


__all__ = [
    "check_byte_level",
    "check_config",
    "read_config",
    "read_weights",
    "tiny_lm_size",
    "weight_files",
]
