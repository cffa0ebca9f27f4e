"""Snapshots read back in one order: name order, whatever order the bytes were parsed in."""

from __future__ import annotations

from pathlib import Path

import torch

from attractor.runs.store import RunStore


def test_load_snapshot_returns_tensors_in_name_order_every_time(tmp_path: Path) -> None:
    """load(bytes) yields a hash map's order; per-tensor random draws need a fixed one."""
    store = RunStore(tmp_path)
    names = [f"{layer}.{kind}" for layer in (4, 0, 2) for kind in ("weight", "bias")]
    store.save_snapshot(0, 3, {name: torch.full((2,), float(i)) for i, name in enumerate(names)})
    orders = {tuple(store.load_snapshot(0, 3)) for _ in range(20)}
    assert orders == {tuple(sorted(names))}
