"""Pairwise function-space metrics: vectorized against a per-pair Python loop, in one run.

All three pair metrics of :mod:`attractor.measure.function` (prediction disagreement,
Jensen-Shannon divergence, symmetric KL; each a ``[members, members]`` matrix of means
over examples) for 128 members on inputs the size of the digits test split
(``[128, 360, 10]`` logits). The logits are random (seeded normal draws, scaled so the
members are confident but disagree on some inputs) rather than taken from a trained
ensemble: the cost of the metrics depends only on the shape, and random logits need no
training run. Both sides compute in float64.

* **baseline**: for every pair ``i < j``, each metric from the two members' tensors with
  plain torch ops (softmax, log, elementwise products, sums), written into the matrix.
* **ours**: :func:`attractor.measure.function.pairwise_metrics` (matmuls and broadcasting
  over all pairs at once).

Timings are the best of ``--repeats`` runs. The two results are checked to agree (max
absolute difference, asserted below 1e-9); the speed goal (>= 20x) is printed, not asserted.

Also printed: the time of the float64 logarithms alone that Jensen-Shannon needs (one per
pair ``i < j``, example and class, for the mixture ``(p_i + p_j) / 2``). The loop takes the
same logarithms, so that time is a floor for the vectorized side and the ratio cannot
exceed ``t(loop) / t(logs)``.

    python benchmarks/measure_speed.py [--members 128] [--batch 360] [--classes 10] [--repeats 3]
    [--threads T]
"""

from __future__ import annotations

import argparse

import torch
from timing import best_time  # benchmarks/timing.py: scripts run from this folder

from attractor.measure.function import pairwise_metrics

GOAL = 20.0


def loop_pairwise(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The specification: each pair ``i < j`` on its own, mirrored into the matrix."""
    m = logits.shape[0]
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
    predictions = logits.argmax(-1)
    out = {
        name: torch.zeros(m, m, dtype=torch.float64)
        for name in ("disagreement", "js", "symmetric_kl")
    }
    for i in range(m):
        for j in range(i + 1, m):
            p, q, log_p, log_q = probs[i], probs[j], log_probs[i], log_probs[j]
            disagreement = (predictions[i] != predictions[j]).to(torch.float64).mean()
            log_mix = torch.log((p + q) / 2)
            js = 0.5 * ((p * (log_p - log_mix)).sum(-1) + (q * (log_q - log_mix)).sum(-1)).mean()
            symmetric_kl = ((p - q) * (log_p - log_q)).sum(-1).mean()
            for name, value in (
                ("disagreement", disagreement),
                ("js", js),
                ("symmetric_kl", symmetric_kl),
            ):
                out[name][i, j] = out[name][j, i] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=128)
    parser.add_argument("--batch", type=int, default=360, help="examples (digits test split: 360)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="best of R timings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    # A shared signal plus member noise: confident members that agree on most inputs.
    shared = 4.0 * torch.randn(1, args.batch, args.classes, generator=generator)
    logits = shared + 2.0 * torch.randn(args.members, args.batch, args.classes, generator=generator)

    ours = pairwise_metrics(logits)
    reference = loop_pairwise(logits)
    error = max(float((ours[k] - reference[k]).abs().max()) for k in reference)
    assert error < 1e-9, f"vectorized and loop disagree: max |difference| = {error:.3g}"

    pairs = args.members * (args.members - 1) // 2
    t_ours = best_time(lambda: pairwise_metrics(logits), args.repeats)
    t_loop = best_time(lambda: loop_pairwise(logits), max(1, args.repeats - 2))
    ratio = t_loop / t_ours
    n_logs = pairs * args.batch * args.classes
    # In cache-sized pieces into one buffer, as the vectorized code takes them.
    piece = 1 << 18
    operand = torch.rand(piece, dtype=torch.float64, generator=generator) + 0.5
    result = torch.empty_like(operand)

    def logs() -> None:
        for _ in range(-(-n_logs // piece)):
            torch.log(operand, out=result)

    t_logs = best_time(logs, args.repeats)
    print(
        f"pairwise disagreement + JS + symmetric KL, logits {list(logits.shape)} (random), "
        "float64, "
        f"{pairs} pairs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"  loop over pairs : {t_loop * 1e3:9.1f} ms")
    print(f"  vectorized      : {t_ours * 1e3:9.1f} ms")
    print(
        f"  ratio           : {ratio:9.1f}x  (goal >= {GOAL:.0f}x: "
        f"{'met' if ratio >= GOAL else 'missed'})"
    )
    print(f"  max |vectorized - loop| = {error:.2e}")
    print(
        f"  floor: the {n_logs / 1e6:.1f} M float64 logs of JS alone take {t_logs * 1e3:.1f} ms "
        f"(ratio bound t(loop) / t(logs) = {t_loop / t_logs:.1f}x)"
    )
    for name, matrix in ours.items():
        upper = matrix[torch.triu_indices(args.members, args.members, offset=1).unbind()]
        print(f"  mean pairwise {name:<13}: {float(upper.mean()):.4f}")


if __name__ == "__main__":
    main()
