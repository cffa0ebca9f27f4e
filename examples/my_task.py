"""Bring your own model and data: a function that returns an ``attractor.Task``.

Use it from a config with ``[task] name = "examples.my_task:make_task"`` (run from the
repository root, or put the module anywhere on your PYTHONPATH). Keyword arguments of the
function are the task's options: ``[task] channels = 16`` is passed as ``channels=16``.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from attractor import Task


class SmallCNN(nn.Module):
    """Any ``nn.Module`` works; the engine stacks this one (convolutions per member, the rest
    for all members at once), so it trains vectorized."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.head = nn.Linear(channels * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.max_pool2d(h, 2)
        return self.head(h.flatten(-3))


def make_task(channels: int = 8) -> Task:
    """8x8 digit images ``[n, 1, 8, 8]`` scaled to [0, 1], classified by a small CNN."""
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.2, random_state=0, stratify=digits.target
    )
    return Task(
        name="examples.my_task:make_task",
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        make_model=lambda: SmallCNN(channels),
        num_classes=10,
        description="digits as images, small CNN (a user task)",
    )
