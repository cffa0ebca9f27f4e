"""The stacked GPT-2 forward (:mod:`attractor.training.forward_lm`) against the module itself.

The loop strategy's ``functional_call`` of the Hugging Face module is the specification: the
stacked path gives its logits and gradients, trains alike (1e-5), keeps a member independent
of its chunk (bitwise), and stays differentiable to any order for the tangent replay.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.func import functional_call, grad, jvp

from attractor.config import TaskConfig, parse_config
from attractor.plan import PlanRow
from attractor.runs.launch import resolve_strategy
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.engine import train_chunk
from attractor.training.forward import _VmappedModule, batched_forward
from attractor.training.forward_lm import StackedGPT2, gpt2_shape

pytest.importorskip("transformers", reason="tiny-lm's model needs transformers ('attractor[lm]')")
pytestmark = pytest.mark.usefixtures("one_thread")

TASK = {"name": "tiny-lm", "layers": 2, "width": 32, "heads": 4, "context": 32}
TASK |= {"windows_per_document": 2}
GPT2 = {"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2}
GPT2 |= {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": False}


def _gpt2(**options: object) -> torch.nn.Module:
    from attractor.tasks.tiny_lm import build_gpt2

    return build_gpt2({**GPT2, **options})


def _stacked(n: int, dtype: torch.dtype = torch.float64, **options: object):
    """A template and ``n`` members' weights stacked ``[n, ...]`` (leaves needing grad)."""
    torch.manual_seed(0)
    models = [_gpt2(**options).to(dtype) for _ in range(n)]
    params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        .clone()
        .requires_grad_(True)
        for name, _ in models[0].named_parameters()
    }
    return models[0], params


def _per_member(template: torch.nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            functional_call(template, {k: v[i] for k, v in params.items()}, (x[i],))
            for i in range(x.shape[0])
        ]
    )


def _loss(logits: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1)[..., 3].mean() + logits.square().mean()


def test_recognizes_the_gpt2_it_computes_and_refuses_the_rest() -> None:
    model = build_task(TaskConfig(**TASK)).make_model()
    shape = gpt2_shape(model)
    assert shape is not None and shape.layers == 2 and shape.heads == 4 and not shape.tied
    assert isinstance(batched_forward(model), StackedGPT2)
    tied = gpt2_shape(_gpt2(tie_word_embeddings=True))
    assert tied is not None and tied.tied
    assert gpt2_shape(_gpt2().model) is not None  # the bare GPT2LMHeadModel
    for refused in (
        {"resid_pdrop": 0.1},  # dropout: random, so vmap decides (and refuses)
        {"activation_function": "relu"},
        {"reorder_and_upcast_attn": True},
    ):
        assert gpt2_shape(_gpt2(**refused)) is None, refused
        assert isinstance(batched_forward(_gpt2(**refused)), _VmappedModule)
    assert gpt2_shape(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())) is None


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 16), (3, 2, 9), (2, 2, 3, 5)])
def test_logits_and_gradients_are_the_modules(tied: bool, shape: tuple[int, ...]) -> None:
    template, params = _stacked(shape[0], tie_word_embeddings=tied)
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1))
    ours = batched_forward(template)(params, {}, x)
    flat = x.reshape(shape[0], -1, shape[-1])
    spec = _per_member(template, params, flat).reshape(ours.shape)
    assert ours.shape == (*shape, 256)
    torch.testing.assert_close(ours, spec, rtol=0, atol=1e-12)
    ours_grads = torch.autograd.grad(_loss(ours), list(params.values()))
    spec_grads = torch.autograd.grad(_loss(spec), list(params.values()))
    for name, a, b in zip(params, ours_grads, spec_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    with torch.no_grad():  # evaluation takes the kernel without a graph
        torch.testing.assert_close(batched_forward(template)(params, {}, x), ours.detach())


def test_differentiable_to_any_order_like_the_module() -> None:
    """Hessian-vector products (double backward) and forward-over-reverse ``jvp``, as the
    tangent replay takes them, agree with vmap of the module.
    """
    template, params = _stacked(2)
    x = torch.randint(0, 256, (2, 3, 8), generator=torch.Generator().manual_seed(2))
    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    paths = {"ours": batched_forward(template), "vmap": _VmappedModule(template)}

    def hvp(forward) -> list[torch.Tensor]:
        grads = torch.autograd.grad(
            _loss(forward(params, {}, x)), list(params.values()), create_graph=True
        )
        dot = sum((g * tangent[k]).sum() for g, k in zip(grads, params, strict=True))
        return list(torch.autograd.grad(dot, list(params.values())))

    def fwd_over_rev(forward) -> dict[str, torch.Tensor]:
        plain = {k: v.detach() for k, v in params.items()}
        return jvp(grad(lambda p: _loss(forward(p, {}, x))), (plain,), (tangent,))[1]

    for a, b in zip(hvp(paths["ours"]), hvp(paths["vmap"]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    ours, spec = fwd_over_rev(paths["ours"]), fwd_over_rev(paths["vmap"])
    for name in params:
        torch.testing.assert_close(ours[name], spec[name], rtol=0, atol=1e-10, msg=name)


def test_a_retained_graph_takes_a_second_backward() -> None:
    template, params = _stacked(2, torch.float32)
    x = torch.randint(0, 256, (2, 2, 8), generator=torch.Generator().manual_seed(3))
    loss = _loss(batched_forward(template)(params, {}, x))
    first = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
    second = torch.autograd.grad(loss, list(params.values()))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _task() -> Task:
    return build_task(TaskConfig(**TASK))


def _config(optimizer: str, lr: float, steps: int = 5):
    return parse_config(
        {
            "task": TASK,
            "trainer": {"optimizer": optimizer, "lr": lr, "batch_size": 8, "steps": steps},
            "run": {"snapshots": [steps]},
        }
    )


def _train(task: Task, config, rows: list[PlanRow], vectorized: bool) -> dict[int, tuple]:
    final: dict[int, tuple] = {}

    def sink(row: PlanRow, step: int, state: dict, metrics: dict) -> None:
        final[row.member] = (state, metrics)

    if vectorized:
        train_chunk(task, config, rows, True, sink)
    else:
        for row in rows:
            train_chunk(task, config, [row], False, sink)
    return final


def _rows(config, n: int) -> list[PlanRow]:
    t = config.trainer
    return [
        PlanRow(member=i, init_seed=i, data_seed=i, lr=t.lr, batch_size=8, optimizer=t.optimizer)
        for i in range(n)
    ]


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.1), ("adam", 3e-3)])
def test_trains_like_the_loop_and_a_member_does_not_depend_on_its_chunk(
    optimizer: str, lr: float
) -> None:
    task, config = _task(), _config(optimizer, lr)
    rows = _rows(config, 3)
    chunk = _train(task, config, rows, vectorized=True)
    loop = _train(task, config, rows, vectorized=False)
    alone = _train(task, config, rows[1:2], vectorized=True)  # padded with a copy of itself
    for member in range(3):
        state, metrics = chunk[member]
        for name, value in metrics.items():
            assert value == pytest.approx(loop[member][1][name], abs=1e-5), name
        if optimizer == "sgd":  # Adam's first steps are +-lr where a gradient is rounding noise
            for name in state:
                torch.testing.assert_close(state[name], loop[member][0][name], rtol=0, atol=1e-5)
    assert alone[1][1] == chunk[1][1]
    assert all(torch.equal(alone[1][0][k], chunk[1][0][k]) for k in chunk[1][0])


def test_auto_vectorizes_the_stacked_gpt2_and_loops_a_vmapped_hugging_face_model() -> None:
    task = _task()
    auto = parse_config({"task": TASK, "run": {"strategy": "auto", "device": "cpu"}})
    assert resolve_strategy(auto, task) == "vectorized"
    # A GPT-2 the stacked path does not compute trains through vmap, which on the CPU ran
    # slower than the loop end to end (benchmarks/lm_speed.py): auto loops; asked, it vmaps.
    relu = dataclasses.replace(
        task, make_model=lambda: _gpt2(activation_function="relu", n_positions=32)
    )
    assert resolve_strategy(auto, relu) == "loop"
    forced = parse_config({"task": TASK, "run": {"strategy": "vectorized", "device": "cpu"}})
    assert resolve_strategy(forced, relu) == "vectorized"
