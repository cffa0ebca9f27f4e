"""lm-compare's cost over two bare forward passes, and token search vs random contexts, same run.

Two members of a small ``tiny-lm`` run (trained here: width 64, context 64, 80 Adam steps)
are compared over the held-out pydoc documents:

* **overhead**: ``attractor.measure.lm_compare.compare_models`` (every statistic, top-k, reservoir
  quantiles, per-document sums) against the bare work it cannot avoid — the same padded
  batches of the same windows through both models — timed best of ``--repeats``. Goal:
  overhead at most 25 %.
* **search**: ``attractor.search.tokens.search_divergent`` with the random-context baseline and
  GCG at the same number of forward passes (``--budget``); the ratio of the best JS found.
  Goal: GCG at least 3x the baseline.

    python benchmarks/lm_compare.py [--budget 512] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from timing import (  # benchmarks/timing.py: scripts run from this folder
    best_time,
    finish,
    machine,
    write_report,
)

from attractor.config import parse_config
from attractor.measure.lm_compare import _batches, _windows, compare_models
from attractor.runs.launch import train
from attractor.runs.lm_models import load_model
from attractor.search.tokens import search_divergent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=512, help="forward passes per search method")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side, best kept")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON to this path"
    )
    args = parser.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    from attractor.tasks.corpus import iter_corpus, pydoc_documents, split_documents

    with tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        print("  training two tiny-lm members ...", file=sys.stderr, flush=True)
        config = parse_config(
            {
                "task": {"name": "tiny-lm", "width": 64, "context": 64},
                "trainer": {"optimizer": "adam", "lr": 0.003, "batch_size": 16, "steps": 80},
                "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
                "run": {"snapshots": 1},
            }
        )
        run = Path(tmp) / "run"
        train(config, run)
        a, b = load_model(f"{run}:0"), load_model(f"{run}:1")
        documents = split_documents(pydoc_documents(), 0.2, 0)[1]
        window, stride, batch_size = (
            min(a.context, b.context),
            max(1, min(a.context, b.context) // 2),
            8,
        )

        def bare() -> int:
            positions = 0
            for batch in _batches(_windows(documents, a, window, stride, []), batch_size):
                longest = max(w.end - w.start for w in batch)
                ids = torch.zeros(len(batch), longest, dtype=torch.long)
                for i, w in enumerate(batch):
                    ids[i, : w.end - w.start] = torch.tensor(w.ids[w.start : w.end])
                a.logits(ids), b.logits(ids)
                positions += sum(w.end - w.first for w in batch)
            return positions

        positions = bare()
        print("  timing ...", file=sys.stderr, flush=True)
        t_bare = best_time(bare, args.repeats)
        t_compare = best_time(
            lambda: compare_models(a, b, documents, batch_size=batch_size, draws=200), args.repeats
        )
        overhead = t_compare / t_bare - 1
        print("  searching ...", file=sys.stderr, flush=True)
        found = search_divergent(
            a,
            b,
            iter_corpus("builtin:pydoc"),
            budget=args.budget,
            methods=("baseline", "gcg"),
            seed=0,
        ).to_dict()
    best = {
        name: (m["best"][0]["divergence"] if m["best"] else float("nan"))
        for name, m in found["methods"].items()
    }
    ratio = best["gcg"] / best["baseline"] if best["baseline"] > 0 else float("inf")
    print(
        f"\n{positions} positions of {len(documents)} held-out documents, window {window}, stride "
        f"{stride}, batch {batch_size}"
    )
    print(f"bare forward passes (both models): {t_bare:.2f} s = {positions / t_bare:,.0f} tokens/s")
    print(
        f"lm-compare:                        {t_compare:.2f} s = {positions / t_compare:,.0f} "
        "tokens/s"
    )
    print(f"overhead {overhead:.1%} (goal <= 25 %: {'met' if overhead <= 0.25 else 'MISSED'})")
    print(
        f"best JS at {args.budget} forward passes: random contexts {best['baseline']:.4f}, GCG "
        f"{best['gcg']:.4f}: "
        f"{ratio:.2f}x (goal >= 3x: {'met' if ratio >= 3 else 'MISSED'})"
    )
    load_after = finish(started, load_before)
    report = {
        "positions": positions,
        "bare_s": t_bare,
        "compare_s": t_compare,
        "overhead": overhead,
        "budget": args.budget,
        "best_js": best,
        "gcg_over_baseline": ratio,
        "machine": machine(load_before, load_after),
    }
    if args.json:
        write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
