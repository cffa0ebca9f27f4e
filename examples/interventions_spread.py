"""Which stability interventions shrink the seed-to-seed spread on digits-mlp, and at what cost?

Trains the ensemble of ``examples/digits.toml`` (16 members: init seed, data order and a
bootstrap resample differ) once per trainer option, with the same plan rows, and prints for
each: test accuracy (mean over members), the spread (mean pairwise Jensen-Shannon divergence
between members' test predictions, and the share of test inputs two members disagree on),
and the change in spread against the plain trainer with a *paired* multi-bootstrap interval
(the same member rows and test examples are resampled for both, so seed luck cancels)::

    python examples/interventions_spread.py [--out runs/interventions] [--draws 500]

Run it to see the table; the README quotes one run of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from attractor.config import load_config
from attractor.measure.bootstrap import multibootstrap, pairwise_multibootstrap
from attractor.measure.function import pairwise_js
from attractor.runs.launch import train

ROOT = Path(__file__).resolve().parent
VARIANTS: dict[str, dict[str, object]] = {
    "plain (sgd, momentum 0.9)": {},
    "label_smoothing 0.1": {"label_smoothing": 0.1},
    "clip_norm 1": {"clip_norm": 1.0},
    "sam_rho 0.05": {"sam_rho": 0.05},
    "ema_decay 0.99": {"ema_decay": 0.99},
    "swa_start 0.75": {"swa_start": 0.75},
    "weight_decay 5e-4": {"weight_decay": 5e-4},
}


def _predictions(
    out: Path, name: str, changes: dict[str, object]
) -> tuple[torch.Tensor, torch.Tensor]:
    config = load_config(ROOT / "digits.toml")
    config = config.model_copy(
        update={"trainer": config.trainer.model_copy(update=changes)}, deep=True
    )
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    ensemble = train(config, out / slug)
    x, y = ensemble.eval_set("test")
    return ensemble.predict(x).softmax(-1).double(), y


def _paired_spread_change(
    a: np.ndarray, b: np.ndarray, draws: int, seed: int
) -> tuple[float, float, float]:
    """Mean pairwise JS of ``a`` minus that of ``b`` (``[m, m, n]`` each, same rows and
    examples), with a paired bootstrap over members and examples.
    """
    rng = np.random.default_rng(seed)
    m, _, n = a.shape
    off = ~np.eye(m, dtype=bool)

    def stat(members: np.ndarray, examples: np.ndarray) -> float:
        pa = a[np.ix_(members, members, examples)].mean(-1)
        pb = b[np.ix_(members, members, examples)].mean(-1)
        keep = members[:, None] != members[None, :]  # a member against its own copy: no pair
        return float(pa[keep].mean() - pb[keep].mean())

    value = float(a.mean(-1)[off].mean() - b.mean(-1)[off].mean())
    stats = [stat(rng.integers(0, m, m), rng.integers(0, n, n)) for _ in range(draws)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return value, float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/interventions"))
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    per_pair: dict[str, np.ndarray] = {}
    print(f"{'trainer':<28}{'accuracy':>22}{'pairwise JS':>26}{'disagree':>10}{'JS vs plain':>30}")
    for name, changes in VARIANTS.items():
        probs, y = _predictions(args.out, name, changes)
        correct = (probs.argmax(-1) == y).double().numpy()
        accuracy = multibootstrap(correct, np.mean, args.draws)
        js = pairwise_js(probs, per_example=True).numpy()
        spread = pairwise_multibootstrap(js, args.draws)
        votes = probs.argmax(-1)
        disagree = (votes[:, None, :] != votes[None, :, :]).double().mean(-1)
        m = len(votes)
        disagreement = float(disagree.sum() / (m * (m - 1)))
        per_pair[name] = js
        plain = next(iter(per_pair.values()))
        change = (
            ""
            if js is plain
            else "{:+.4f} [{:+.4f}, {:+.4f}]".format(
                *_paired_spread_change(js, plain, args.draws, 0)
            )
        )
        print(
            f"{name:<28}{accuracy.value:>8.4f} [{accuracy.low:.4f}, {accuracy.high:.4f}]"
            f"{spread.value:>10.4f} [{spread.low:.4f}, {spread.high:.4f}]"
            f"{disagreement:>10.4f}{change:>30}"
        )


if __name__ == "__main__":
    main()
