"""What every benchmark here times with: the best of several wall-clock runs."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls (noise from other processes only adds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sync(device: object) -> None:
    """Wait for a CUDA ``device``'s queued work (its kernels run asynchronously), so a timing
    covers the work, not its launch; nothing on the CPU.
    """
    import torch

    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)


def finish(started: float, load_before: float) -> float:
    """Print the run's length and a noise warning when other processes were busy; the load at the
    end.
    """
    import os

    load_after = os.getloadavg()[0]
    print(
        f"\nload average {load_after:.2f} at end; benchmark took "
        f"{time.perf_counter() - started:.0f} s"
    )
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("note: other processes were running; figures are noisy (best-of kept).")
    return load_after


def machine(load_before: float, load_after: float) -> dict[str, object]:
    """Where and when the figures were measured, for the JSON output."""
    import datetime as dt
    import os
    import platform

    import torch

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": {"start": load_before, "end": load_after},
    }


def finite(value: object) -> object:
    """``value`` with every NaN / inf float replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def write_report(path: object, report: dict[str, object]) -> None:
    """Write the benchmark's figures as strict JSON to ``path`` (a ``pathlib.Path``) and say so."""
    import json

    path.write_text(json.dumps(finite(report), indent=2) + "\n")  # type: ignore[attr-defined]
    print(f"wrote {path}")
