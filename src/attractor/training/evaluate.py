"""Every member's mean metrics on the train and test splits, at a snapshot."""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.tasks.base import Task
from attractor.training.forward import BatchedForward, Params

# Rows (members x examples) evaluated in one forward pass at a snapshot.
_EVAL_ROWS = 1 << 15


@torch.no_grad()
def evaluate(
    task: Task,
    template: torch.nn.Module,
    forward: BatchedForward,
    params: Params,
    buffers: Params,
    batch_size: int,
) -> dict[str, Tensor]:
    """Every member's mean metrics on the train and test splits: ``{"test_loss": [n], ...}``."""
    was_training = template.training
    template.eval()
    n = next(iter(params.values())).shape[0]
    # Bound the rows in flight (members x examples) so activations stay cache- and
    # memory-friendly however many members a chunk has.
    batch_size = max(1, min(batch_size, _EVAL_ROWS // n))
    results: dict[str, Tensor] = {}
    for split, xs, ys in (
        ("train", task.x_train, task.y_train),
        ("test", task.x_test, task.y_test),
    ):
        sums: dict[str, Tensor] = {}
        for start in range(0, len(xs), batch_size):
            xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
            logits = forward(params, buffers, xb.unsqueeze(0).expand(n, *xb.shape))
            for name, metric in task.evaluation_metrics().items():
                value = metric(logits, yb.unsqueeze(0).expand(n, *yb.shape)).reshape(n, -1).sum(1)
                sums[name] = sums.get(name, 0) + value
        for name, total in sums.items():
            results[f"{split}_{name}"] = total / ys.numel()
    template.train(was_training)
    return results
