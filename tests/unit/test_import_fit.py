"""Whether an imported snapshot fits the task's model, and what is adapted rather than refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attractor.errors import UserError
from attractor.runs.imports.fit import fit
from attractor.runs.imports.sources import Source


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Source:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Source(path, hf=False)


def test_a_state_dict_of_the_model_is_used_as_it_is(tmp_path: Path) -> None:
    model = _model()
    fitted = fit(_save(tmp_path / "w.safetensors", model.state_dict()), model, "t")
    assert fitted.as_is and not fitted.notes
    assert list(fitted.sums) == [str((tmp_path / "w.safetensors").resolve())]
    for name, tensor in model.state_dict().items():
        assert torch.equal(fitted.tensors[name], tensor)


@pytest.mark.parametrize(("prefix", "how"), [("module.", "stripped of"), ("", "prefixed with")])
def test_one_name_prefix_is_added_or_removed(tmp_path: Path, prefix: str, how: str) -> None:
    model = _model()
    wrapped = nn.Sequential(model) if how == "prefixed with" else model  # names '0.0.weight'
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    fitted = fit(_save(tmp_path / "w.safetensors", state), wrapped, "t")
    assert not fitted.as_is and how in fitted.notes[0]
    assert set(fitted.tensors) == set(wrapped.state_dict())


def test_half_precision_is_widened_exactly(tmp_path: Path) -> None:
    model = _model()
    half = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    fitted = fit(_save(tmp_path / "w.safetensors", half), model, "t")
    assert not fitted.as_is and "widened bfloat16" in fitted.notes[0]
    assert all(t.dtype == torch.float32 for t in fitted.tensors.values())
    assert torch.equal(fitted.tensors["0.weight"], half["0.weight"].float())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda s: {**s, "2.weight": torch.zeros(3, 4)},
            "'2.weight' is (3, 4), the model wants (2, 4)",
        ),
        (lambda s: {k: v for k, v in s.items() if k != "2.bias"}, "'2.bias' is missing"),
        (lambda s: {**s, "3.weight": torch.zeros(1)}, "'3.weight' is not in the model"),
        (lambda s: {**s, "0.bias": s["0.bias"].double()}, "is float64, the model wants float32"),
        (lambda s: {**s, "0.bias": torch.full((4,), float("nan"))}, "NaN or inf in '0.bias'"),
    ],
)
def test_a_mismatch_is_one_line_naming_the_first(tmp_path: Path, change, fragment: str) -> None:
    model = _model()
    source = _save(tmp_path / "w.safetensors", change(dict(model.state_dict())))
    with pytest.raises(UserError) as raised:
        fit(source, model, "my-task")
    message = str(raised.value)
    assert fragment in message and "\n" not in message and str(source.path) in message


def test_a_damaged_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        fit(Source(path, hf=False), _model(), "t")


# ---- Hugging Face directories (read as data: config.json and safetensors) ---------------
transformers = pytest.importorskip("transformers")


def _tiny_lm(width: int = 16):
    from attractor.tasks.tiny_lm import TinyLMOptions, build_gpt2, gpt2_config

    torch.manual_seed(0)
    return build_gpt2(gpt2_config(TinyLMOptions(layers=1, heads=2, width=width, context=8))).eval()


def _hf_dir(path: Path, model, **config) -> Source:
    model.model.save_pretrained(str(path))
    if config:
        data = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**data, **config}))
    return Source(path, hf=True)


def test_a_hugging_face_directory_is_renamed_into_the_task_model(tmp_path: Path) -> None:
    model = _tiny_lm()
    fitted = fit(_hf_dir(tmp_path / "m", model), _tiny_lm(), "tiny-lm")
    assert not fitted.as_is and "names prefixed with 'model.'" in fitted.notes
    assert any(k.endswith("config.json") for k in fitted.sums)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fitted.tensors[name], tensor)


def test_tied_embeddings_get_their_output_copy(tmp_path: Path) -> None:
    model = _tiny_lm()
    directory = tmp_path / "m"
    _hf_dir(directory, model, tie_word_embeddings=True)
    state = {
        k.removeprefix("model."): v for k, v in model.state_dict().items() if "lm_head" not in k
    }
    save_file(state, str(directory / "model.safetensors"))
    fitted = fit(Source(directory, hf=True), _tiny_lm(), "tiny-lm")
    wte = fitted.tensors["model.transformer.wte.weight"]
    assert torch.equal(fitted.tensors["model.lm_head.weight"], wte)
    assert any("tied input embedding" in note for note in fitted.notes)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: _hf_dir(d, _tiny_lm(), n_embd=32), "has n_embd = 32, task 'tiny-lm'"),
        (lambda d: _hf_dir(d, _tiny_lm(), activation_function="relu"), "activation_function"),
        (lambda d: (_hf_dir(d, _tiny_lm()), (d / "tokenizer.json").write_text("{}")), "tokenizer"),
        (
            lambda d: (
                _hf_dir(d, _tiny_lm()),
                (d / "model.safetensors").unlink(),
                (d / "pytorch_model.bin").write_bytes(b"x"),
            ),
            "only pickled weights (pytorch_model.bin)",
        ),
        (lambda d: (_hf_dir(d, _tiny_lm()), (d / "config.json").write_text("[1]")), "JSON object"),
    ],
)
def test_hugging_face_directories_that_do_not_fit_are_refused(
    tmp_path: Path, setup, fragment: str
) -> None:
    directory = tmp_path / "m"
    setup(directory)
    with pytest.raises(UserError) as raised:
        fit(Source(directory, hf=True), _tiny_lm(), "tiny-lm")
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_a_shard_index_may_not_point_outside_its_directory(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    _hf_dir(directory, _tiny_lm())
    (directory / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    index = {"weight_map": {"lm_head.weight": "../elsewhere.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="not a safetensors file in that directory"):
        fit(Source(directory, hf=True), _tiny_lm(), "tiny-lm")
