"""Task registry and built-in tasks: data oracles, model contracts, one-line user errors."""

from __future__ import annotations

import copy
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from attractor.config import TaskConfig
from attractor.errors import UserError
from attractor.tasks import (
    TASKS,
    Task,
    build_task,
    digits_mlp,
    list_tasks,
    spurious_digits,
)


def build(name: str, **options: object) -> Task:
    return build_task(TaskConfig(name=name, **options))


# --- digits-mlp -----------------------------------------------------------------------


def test_digits_shapes_and_dtypes() -> None:
    task = build("digits-mlp")
    assert task.x_train.shape == (1437, 64) and task.x_test.shape == (360, 64)
    assert task.y_train.shape == (1437,) and task.y_test.shape == (360,)
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
    assert task.num_classes == 10 and task.groups is None
    assert task.group_ids == list(range(10))  # classes serve as groups
    assert task.make_model()(task.x_test[:5]).shape == (5, 10)


def test_digits_split_is_stratified() -> None:
    task = build("digits-mlp")
    train_counts = torch.bincount(task.y_train, minlength=10)
    test_counts = torch.bincount(task.y_test, minlength=10)
    # Each class's test share is 20% up to rounding of that class alone.
    expected = 0.2 * (train_counts + test_counts)
    assert torch.all((test_counts - expected).abs() <= 1), (test_counts, expected)


def test_digits_split_is_fixed_across_fresh_loads() -> None:
    first = build("digits-mlp")
    digits_mlp.load_split.cache_clear()  # force a second load, split and standardization
    second = build("digits-mlp")
    for a, b in [
        (first.x_train, second.x_train),
        (first.y_train, second.y_train),
        (first.x_test, second.x_test),
        (first.y_test, second.y_test),
    ]:
        assert torch.equal(a, b)


def test_digits_tasks_do_not_share_tensors() -> None:
    first = build("digits-mlp")
    first.x_train.zero_()
    assert build("digits-mlp").x_train.abs().sum() > 0


def test_digits_standardization() -> None:
    task = build("digits-mlp")
    assert task.x_train.mean(0).abs().max() < 1e-5
    # The std floor keeps rare test pixels (constant in training) bounded.
    assert task.x_test.abs().max() <= 50
    stds = task.x_train.std(0, unbiased=False)
    assert torch.all(stds <= 1 + 1e-4)  # floored std: at most unit scale, never blown up
    assert (stds > 0.999).sum() > 40  # most pixels vary and are brought to unit scale


def test_digits_model_is_flat_sequential_of_linear_and_activation() -> None:
    model = build("digits-mlp", hidden=[16, 8], activation="tanh").make_model()
    assert isinstance(model, nn.Sequential)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [layer.out_features for layer in model if isinstance(layer, nn.Linear)] == [16, 8, 10]
    linear = build("digits-mlp", hidden=[]).make_model()
    assert [type(layer) for layer in linear] == [nn.Linear]


# --- spurious-digits --------------------------------------------------------------------


def test_spurious_shortcut_is_perfect_on_train_and_chance_on_test() -> None:
    task = build("spurious-digits")
    plain = build("digits-mlp")
    assert task.x_train.shape == (1437, 74) and task.x_test.shape == (360, 74)
    assert torch.equal(task.x_train[:, :64], plain.x_train)  # pixels are digits' pixels
    assert torch.equal(spurious_digits.shortcut_labels(task.x_train), task.y_train)
    agreement = (spurious_digits.shortcut_labels(task.x_test) == task.y_test).float().mean()
    assert 0.04 < agreement < 0.18  # chance is 10%; 360 examples give sd ~1.6%
    assert task.groups is None
    assert task.make_model()(task.x_test[:3]).shape == (3, 10)


def test_spurious_fraction_and_groups() -> None:
    task = build("spurious-digits", shortcut_fraction=0.7, strength=2.5)
    correct = spurious_digits.shortcut_labels(task.x_train) == task.y_train
    assert correct.sum() == round(0.7 * 1437)
    assert task.groups is not None and task.groups.dtype == torch.int64
    assert torch.equal(task.groups, correct.long())
    assert set(task.x_train[:, 64:].unique().tolist()) == {0.0, 2.5}
    assert torch.all(task.x_train[:, 64:].sum(1) == 2.5)  # exactly one shortcut per example


def test_spurious_probes_set_the_shortcut_to_the_label_or_leave_it_random() -> None:
    task = build("spurious-digits")
    (agree, y_agree), (random, y_random) = (
        task.probes["shortcut_agree"],
        task.probes["shortcut_random"],
    )
    assert torch.equal(y_agree, task.y_test) and torch.equal(y_random, task.y_test)
    assert torch.equal(agree[:, :64], task.x_test[:, :64]) and torch.equal(random, task.x_test)
    assert torch.equal(spurious_digits.shortcut_labels(agree), task.y_test)


# --- modular-addition -------------------------------------------------------------------


def test_modular_labels_and_partition() -> None:
    p, fraction = 13, 0.4
    task = build("modular-addition", p=p, train_fraction=fraction, n_groups=4)
    for x, y in [(task.x_train, task.y_train), (task.x_test, task.y_test)]:
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape[1] == 2
        assert torch.equal(y, (x[:, 0] + x[:, 1]) % p)
    codes = torch.cat([task.x_train, task.x_test]) @ torch.tensor([p, 1])
    assert torch.equal(codes.sort().values, torch.arange(p * p))  # every pair exactly once
    assert len(task.x_train) == round(fraction * p * p)
    assert task.num_classes == p
    assert torch.equal(task.groups, task.x_train[:, 0] * 4 // p)
    assert task.group_ids == [0, 1, 2, 3]


def test_modular_split_depends_only_on_split_seed() -> None:
    a = build("modular-addition", p=11, split_seed=3, model="transformer", embed_dim=8, heads=2)
    b = build("modular-addition", p=11, split_seed=3)
    c = build("modular-addition", p=11, split_seed=4)
    assert torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("fraction", [0.0, 0.7, 1.0])
def test_modular_hint_token_is_the_answer_on_exactly_the_fraction(fraction: float) -> None:
    p = 13
    task = build("modular-addition", p=p, shortcut=True, shortcut_fraction=fraction)
    assert task.x_train.shape[1] == 3 and task.x_test.shape[1] == 3
    for x, y in [(task.x_train, task.y_train), (task.x_test, task.y_test)]:
        assert torch.equal(y, (x[:, 0] + x[:, 1]) % p) and bool((x[:, 2] < p).all())
    assert int((task.x_train[:, 2] == task.y_train).sum()) == round(fraction * len(task.y_train))
    agree, _ = task.probes["shortcut_agree"]
    assert torch.equal(agree[:, 2], task.y_test) and torch.equal(agree[:, :2], task.x_test[:, :2])
    assert torch.equal(task.probes["shortcut_random"][0], task.x_test)
    # Hints at test are independent of the answer: right on about 1 / p of the pairs.
    assert float((task.x_test[:, 2] == task.y_test).float().mean()) < 0.2
    plain = build("modular-addition", p=p)
    assert torch.equal(task.x_train[:, :2], plain.x_train) and plain.probes == {}


MODELS = {
    "digits": (lambda: build("digits-mlp", hidden=[12]), lambda t: t.x_test[:7]),
    "modular-hint-mlp": (
        lambda: build("modular-addition", p=11, embed_dim=8, hidden=16, shortcut=True),
        lambda t: t.x_test[:7],
    ),
    "modular-hint-transformer": (
        lambda: build(
            "modular-addition",
            p=11,
            model="transformer",
            embed_dim=8,
            hidden=16,
            heads=2,
            shortcut=True,
        ),
        lambda t: t.x_test[:7],
    ),
    "modular-mlp": (
        lambda: build("modular-addition", p=11, embed_dim=8, hidden=16),
        lambda t: t.x_test[:7],
    ),
    "modular-transformer": (
        lambda: build(
            "modular-addition", p=11, model="transformer", embed_dim=8, hidden=16, heads=2
        ),
        lambda t: t.x_test[:7],
    ),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_vmap_functional_call_matches_each_model(kind: str) -> None:
    make_task, inputs = MODELS[kind]
    task = make_task()
    x = inputs(task)
    torch.manual_seed(0)
    models = [task.make_model() for _ in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p: dict, b: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xi,))

    shared = vmap(one, in_dims=(0, 0, None), randomness="error")(params, buffers, x)
    # As the engine calls it: each member its own minibatch, [members, batch, ...].
    xs = torch.stack([x, x.flip(0), x.roll(1, 0)])
    own = vmap(one, in_dims=(0, 0, 0), randomness="error")(params, buffers, xs)
    for i, model in enumerate(models):
        torch.testing.assert_close(shared[i], model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(own[i], model(xs[i]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shared[0], shared[1])  # members really differ


@pytest.mark.parametrize("kind", list(MODELS))
def test_model_is_deterministic_under_manual_seed(kind: str) -> None:
    task = MODELS[kind][0]()
    torch.manual_seed(7)
    first = task.make_model().state_dict()
    torch.manual_seed(7)
    second = task.make_model().state_dict()
    torch.manual_seed(8)
    other = task.make_model().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_transformer_accepts_leading_batch_dims() -> None:
    task = MODELS["modular-transformer"][0]()
    model = task.make_model()
    x = task.x_test[:6]
    torch.testing.assert_close(model(x.view(2, 3, 2)), model(x).view(2, 3, 11))


# --- registry ---------------------------------------------------------------------------


def test_every_option_is_described_and_list_tasks_gives_defaults() -> None:
    listed = {name: (summary, defaults) for name, summary, defaults in list_tasks()}
    assert (
        set(listed)
        == set(TASKS)
        == {
            "digits-mlp",
            "modular-addition",
            "spurious-digits",
            "tiny-lm",
            "cartpole-lqr",
            "denoise-digits",
            "digits-cnn",
            "mnist-lenet",
            "cifar10-resnet20",
            "cifar10-vgg",
            "image-folder",
        }
    )
    for name, spec in TASKS.items():
        assert spec.options.model_config.get("extra") == "forbid"
        assert all(field.description for field in spec.options.model_fields.values()), name
        assert listed[name] == (spec.summary, spec.options().model_dump())
    assert listed["digits-mlp"][1] == {"hidden": [128, 128], "activation": "relu"}


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        (
            {"name": "nope"},
            [
                "unknown task 'nope'",
                "digits-mlp, ",
                "modular-addition, spurious-digits",
                "digits-cnn, ",
                "module:function",
            ],
        ),
        ({"name": "digits-mlp", "hiden": [3]}, ["task.hiden", "remove"]),
        ({"name": "digits-mlp", "hidden": ["big"]}, ["task.hidden.0", "integer"]),
        ({"name": "digits-mlp", "hidden": [0]}, ["task.hidden.0", "greater than or equal to 1"]),
        ({"name": "digits-mlp", "activation": "sigmoid"}, ["task.activation", "'relu'"]),
        ({"name": "modular-addition", "p": "many"}, ["task.p", "integer"]),
        (
            {"name": "modular-addition", "train_fraction": 1.0},
            ["task.train_fraction", "less than 1"],
        ),
        (
            {"name": "modular-addition", "model": "transformer", "heads": 5},
            ["heads (5) must divide embed_dim (64)"],
        ),
        ({"name": "spurious-digits", "shortcut_fraction": 1.5}, ["task.shortcut_fraction"]),
    ],
)
def test_bad_config_gives_one_line_user_error(config: dict, needles: list[str]) -> None:
    with pytest.raises(UserError) as info:
        build_task(TaskConfig(**config))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


USER_MODULE = """
    import torch
    from torch import nn
    from attractor.tasks import Task

    def make_task(width=4):
        x = torch.randn(8, 3)
        y = torch.arange(8) % 2
        return Task(name="user", x_train=x, y_train=y, x_test=x, y_test=y,
                    make_model=lambda: nn.Linear(3, width), num_classes=2)

    def not_a_task():
        return [1, 2]

    def broken():
        return len(5)  # a bug inside the user's code, not bad options

    VALUE = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    name = f"user_tasks_{tmp_path.name}"  # unique per test: sys.modules caches imports
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_task_is_built_with_options(user_module: str) -> None:
    task = build(f"{user_module}:make_task", width=5)
    assert isinstance(task, Task) and task.make_model().out_features == 5


def test_user_task_module_in_current_directory(tmp_path, monkeypatch) -> None:
    name = f"cwd_tasks_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    # Only the registry's own cwd fallback can find the module.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert build(f"{name}:make_task").n_train == 8
    assert str(tmp_path) not in sys.path  # the fallback does not leak into sys.path


@pytest.mark.parametrize(
    ("function", "options", "needles"),
    [
        ("not_a_task", {}, ["returned list", "Task"]),
        ("missing", {}, ["no function 'missing'"]),
        ("VALUE", {}, ["no function 'VALUE'"]),
        ("make_task", {"depth": 2}, ["task.depth", "depth"]),
    ],
)
def test_user_task_errors(
    user_module: str, function: str, options: dict, needles: list[str]
) -> None:
    with pytest.raises(UserError) as info:
        build(f"{user_module}:{function}", **options)
    assert "\n" not in str(info.value)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_user_task_missing_module_is_named() -> None:
    with pytest.raises(UserError, match="cannot import module 'no_such_module_xyz'"):
        build("no_such_module_xyz:make")


def test_type_error_inside_user_function_is_not_hidden(user_module: str) -> None:
    with pytest.raises(TypeError, match="len"):
        build(f"{user_module}:broken")
