"""A small tiny-lm member for the learned-evaluator text tests, trained once per module with a
plain Adam loop on the task's own windows (no run directory: the tests need a module only).
"""

from __future__ import annotations

import pytest
import torch


def train_text_base(context: int, steps: int = 400) -> torch.nn.Module:
    """A 2-layer, width-64 tiny-lm of ``context`` bytes after ``steps`` Adam steps (seeded)."""
    pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    from attractor.tasks.tiny_lm import TinyLMOptions, make

    task = make(
        TinyLMOptions(layers=2, width=64, heads=4, context=context, windows_per_document=None)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the module fixture runs outside the one_thread fixture
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = task.make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            index = torch.randint(len(task.x_train), (32,), generator=generator)
            logits = model(task.x_train[index])
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), task.y_train[index].flatten()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
