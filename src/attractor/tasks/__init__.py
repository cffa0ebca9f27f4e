"""Task registry: built-in tasks by name, and user tasks given as ``module:function``.

A new built-in task is one file exposing an options model, ``make`` and ``SUMMARY``, plus
one line in :data:`TASKS`. A user task is any function returning a :class:`Task`; it is
called with the ``[task]`` options as keyword arguments::

    [task]
    name = "mytasks:make_task"     # mytasks.py on sys.path or in the current directory
    width = 32                     # -> make_task(width=32)

A run directory's task is built with ``search_cwd=False``: the module must be on
``sys.path`` (e.g. ``PYTHONPATH``), never found in the current directory implicitly, and
only after :mod:`attractor.runs.trust` allowed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from attractor.config import TaskConfig
from attractor.errors import UserError
from attractor.tasks import (
    cartpole,
    cifar10_resnet,
    cifar10_vgg,
    denoise_digits,
    digits_cnn,
    digits_mlp,
    image_folder,
    mnist_lenet,
    modular_addition,
    spurious_digits,
    tiny_lm,
)
from attractor.tasks.base import Task, accuracy, cross_entropy
from attractor.tasks.images import ImageDataOptions
from attractor.tasks.user_code import check_arguments, cwd_on_path, import_function

__all__ = [
    "TASKS",
    "Task",
    "TaskSpec",
    "absolute_paths",
    "accuracy",
    "build_task",
    "cross_entropy",
    "is_user_task",
    "list_tasks",
]

OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class TaskSpec(Generic[OptionsT]):
    """A built-in task: its options model (``extra="forbid"``), its builder, one summary line."""

    options: type[OptionsT]
    make: Callable[[OptionsT], Task]
    summary: str


TASKS: dict[str, TaskSpec[Any]] = {
    "digits-mlp": TaskSpec(digits_mlp.DigitsOptions, digits_mlp.make, digits_mlp.SUMMARY),
    "modular-addition": TaskSpec(
        modular_addition.ModularAdditionOptions, modular_addition.make, modular_addition.SUMMARY
    ),
    "spurious-digits": TaskSpec(
        spurious_digits.SpuriousDigitsOptions, spurious_digits.make, spurious_digits.SUMMARY
    ),
    "tiny-lm": TaskSpec(tiny_lm.TinyLMOptions, tiny_lm.make, tiny_lm.SUMMARY),
    "denoise-digits": TaskSpec(
        denoise_digits.DenoiseDigitsOptions, denoise_digits.make, denoise_digits.SUMMARY
    ),
    "cartpole-lqr": TaskSpec(cartpole.CartPoleOptions, cartpole.make, cartpole.SUMMARY),
    "digits-cnn": TaskSpec(digits_cnn.DigitsCNNOptions, digits_cnn.make, digits_cnn.SUMMARY),
    "mnist-lenet": TaskSpec(mnist_lenet.MnistLeNetOptions, mnist_lenet.make, mnist_lenet.SUMMARY),
    "cifar10-resnet20": TaskSpec(
        cifar10_resnet.CifarResNetOptions, cifar10_resnet.make, cifar10_resnet.SUMMARY
    ),
    "cifar10-vgg": TaskSpec(cifar10_vgg.CifarVGGOptions, cifar10_vgg.make, cifar10_vgg.SUMMARY),
    "image-folder": TaskSpec(
        image_folder.ImageFolderOptions, image_folder.make, image_folder.SUMMARY
    ),
}


def build_task(config: TaskConfig, search_cwd: bool = True) -> Task:
    """Build the task ``config.name`` with ``config.options``; bad input raises a one-line
    :class:`UserError`.

    Args:
        config: the ``[task]`` table.
        search_cwd: let a user task's module be found in the current directory (a config the
            user gave); ``False`` for a task read from a run directory.
    """
    name, options = config.name, config.options
    if name in TASKS:
        spec = TASKS[name]
        return spec.make(_validate_options(name, spec.options, options))
    if is_user_task(name):
        return _build_user_task(name, options, search_cwd)
    known = ", ".join(sorted(TASKS))
    raise UserError(f"unknown task {name!r}; known tasks: {known} (or give 'module:function')")


def absolute_paths(config: TaskConfig) -> TaskConfig:
    """``config`` with an image task's data ``root`` made absolute against the working
    directory (given or default), so that the run directory that records it finds its data
    from any directory it is measured from; other tasks unchanged.
    """
    spec = TASKS.get(config.name)
    if spec is None or not issubclass(spec.options, ImageDataOptions):
        return config
    root = config.options.get("root", spec.options.model_fields["root"].default)
    if not isinstance(root, str) or Path(root).expanduser().is_absolute():
        return config
    absolute = os.path.abspath(os.path.expanduser(root))
    return TaskConfig.model_validate({"name": config.name, **config.options, "root": absolute})


def is_user_task(name: str) -> bool:
    """Whether task ``name`` is user code (``module:function``), which importing would run."""
    return name not in TASKS and ":" in name


def list_tasks() -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, summary, {option: default})`` for every built-in task, for ``attractor tasks``."""
    return [
        (
            name,
            spec.summary,
            {
                key: field.get_default(call_default_factory=True)
                for key, field in spec.options.model_fields.items()
            },
        )
        for name, spec in TASKS.items()
    ]


def _validate_options(task: str, model: type[OptionsT], options: dict[str, Any]) -> OptionsT:
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise UserError(_describe(task, model, exc)) from None


def _describe(task: str, model: type[BaseModel], exc: ValidationError) -> str:
    """One line for the first error of a task's options, naming the key as ``task.<key>``."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    path = ".".join(["task", *loc])
    fields = model.model_fields
    if error["type"] == "extra_forbidden":
        return (
            f"unknown option '{path}' for task {task!r}; remove it or fix its spelling "
            f"(options: {', '.join(fields) or 'none'})"
        )
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a check across several options
        return f"invalid options for task {task!r}: {message}"
    described = fields.get(loc[0])
    hint = (
        f" ({loc[0]}: {described.description.rstrip('.')})"
        if described and described.description
        else ""
    )
    return f"invalid value for '{path}': {message}, got {error.get('input')!r}{hint}"


def _build_user_task(name: str, options: dict[str, Any], search_cwd: bool) -> Task:
    with cwd_on_path(search_cwd):
        function = import_function(name, "task", search_cwd)
        check_arguments(name, "task", function, options)
        task = function(**options)
    if not isinstance(task, Task):
        raise UserError(
            f"task function {name!r} returned {type(task).__name__}, not attractor.tasks.Task; "
            "return a Task(...)"
        )
    return task
