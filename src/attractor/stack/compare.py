"""Returned trainers compared by the models they produce, not by how their numbers look.

Each study returns one trainer (its best trial's hyperparameters). Studies that return
the same trainer share it: every *distinct* trainer is trained once, as an ensemble of
``final_members`` members on the task's whole training split, member ``k`` with init and
data-order seed ``final_seed(k)`` for every trainer (fresh seeds, not the trials': a
trainer is judged by new models, not by the lucky ones that won the search). Outputs are
read on the test split, which no study saw.

Distances between two trainers A and B (``[trainers, trainers]``, in nats or a share of
test inputs; each is 0 for a trainer and itself):

* ``js_mean``: Jensen-Shannon divergence between the ensembles' mean predictive
  distributions ``p_A = mean_k softmax(f_A,k)``, averaged over test inputs. The basins
  are found on this one: it compares what the two trainers predict, seed noise averaged out.
* ``js_matched``: mean over ``k`` of JS between member ``k`` of A and member ``k`` of B
  (same seeds, so it isolates the hyperparameters' effect per draw of the seeds).
* ``disagreement``: share of test inputs where ``argmax p_A != argmax p_B``.

For scale, ``seed_js`` of a trainer is the mean pairwise JS between its own members:
what a change of seed alone moves a model. ``function_spread`` summarises the study x
study matrices: the mean over pairs of distinct studies of ``js_mean`` and ``js_matched``
with multi-bootstrap intervals (studies and test inputs resampled), the mean ``seed_js``
over trainers, and ``matched_over_seed`` = mean ``js_matched`` / mean ``seed_js``: about 1
or below, the trainer2's initial conditions move a model no more than a new seed does.
``seed_scaled_basins`` counts basins of studies on ``js_matched`` cut at ``seed_js``
(average linkage): groups of returned trainers whose models differ by more than two
seeds of one trainer do. It is anchored to the seed noise, where the default basins
(silhouette rule) are scale-free and can split models that are all close.

Per study: ``distance_to_center`` = JS between its trainer's ``p_A`` and the mean of
``p`` over all studies (each study weighted once); ``ensemble_accuracy`` = accuracy of
``argmax p_A``; ``member_accuracy`` = mean accuracy of its members. Basins of studies:
:func:`attractor.measure.basins.find_basins` on the study x study ``js_mean`` matrix.

References:
    Lin (1991), "Divergence measures based on the Shannon entropy"; Fort, Hu &
    Lakshminarayanan (2019), "Deep Ensembles: A Loss Landscape Perspective".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.config import Config
from attractor.measure.basins import Basins, find_basins
from attractor.measure.bootstrap import pairwise_multibootstrap
from attractor.measure.function import pairwise_disagreement, pairwise_js, probabilities
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.stack.fit import train_predict
from attractor.stack.search import HPARAMS
from attractor.tasks.base import Task

DISTANCES = ("js_mean", "js_matched", "disagreement")


def final_seed(k: int) -> int:
    """Init and data-order seed of member ``k`` of every returned trainer's ensemble."""
    return derive_seed("trainer2-final", k) % 2**31


@dataclass(frozen=True, eq=False)
class Comparison:
    """The returned trainers and their ensembles, compared in function space.

    Attributes:
        trainers: one row per distinct returned trainer: ``trainer`` id, the hyperparameters,
            ``studies`` (how many returned it), ``ensemble_accuracy``, ``member_accuracy``,
            ``member_accuracy_sd``, ``seed_js``, ``diverged`` (members).
        studies: per study: ``trainer`` (id of its returned trainer), ``ensemble_accuracy``,
            ``member_accuracy``, ``distance_to_center`` and ``basin``.
        trainer_distances: name -> ``[trainers, trainers]`` (see the module docstring).
        distances: name -> ``[studies, studies]``, the same expanded to studies.
        basins: basins of the studies by ``js_mean``.
        function_spread: summary of the distances (see the module docstring).
        p_true: ``[studies, n_test]`` probability of the true class under each study's trainer.
    """

    trainers: pd.DataFrame
    studies: pd.DataFrame
    trainer_distances: dict[str, np.ndarray]
    distances: dict[str, np.ndarray]
    basins: Basins
    function_spread: dict[str, Any]
    p_true: np.ndarray


def distinct_trainers(best: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``(trainers, index)``: distinct hyperparameter tuples of ``best`` (first-seen order) and
    each row's trainer id.
    """
    keys = [tuple(row) for row in best[list(HPARAMS)].itertuples(index=False)]
    ids: dict[tuple, int] = {}
    index = np.array([ids.setdefault(key, len(ids)) for key in keys])
    trainers = pd.DataFrame(list(ids), columns=list(HPARAMS))
    trainers.insert(0, "trainer", np.arange(len(trainers)))
    trainers["studies"] = np.bincount(index, minlength=len(trainers))
    return trainers, index


def ensemble_outputs(
    task: Task, config: Config, trainers: pd.DataFrame, members: int, strategy: str
) -> tuple[Tensor, Tensor]:
    """Train each trainer's ensemble on the training split: ``(logits [T, K, n_test, C], diverged
    [T, K])``.
    """
    # Plain Python values (itertuples gives numpy scalars) so the rows hash and print cleanly.
    cast = {
        "lr": float,
        "momentum": float,
        "weight_decay": float,
        "batch_size": int,
        "optimizer": str,
    }
    rows = [
        PlanRow(
            member=t * members + k,
            init_seed=final_seed(k),
            data_seed=final_seed(k),
            **{n: cast[n](getattr(h, n)) for n in HPARAMS},
        )
        for t, h in enumerate(trainers.itertuples(index=False))
        for k in range(members)
    ]
    logits, diverged = train_predict(task, config, rows, strategy, task.x_test)
    return logits.reshape(len(trainers), members, *logits.shape[1:]), diverged.reshape(
        len(trainers), members
    )


def trainer_distances(probs: Tensor) -> dict[str, np.ndarray]:
    """``probs [T, K, n, C]`` -> name -> ``[T, T]`` distances (definitions in the module
    docstring).
    """
    mean = probs.mean(1)
    matched = torch.stack([pairwise_js(probs[:, k]) for k in range(probs.shape[1])]).mean(0)
    return {
        "js_mean": pairwise_js(mean).numpy(),
        "js_matched": matched.numpy(),
        "disagreement": pairwise_disagreement(mean.argmax(-1)).numpy(),
    }


def compare(
    task: Task,
    config: Config,
    best: pd.DataFrame,
    members: int,
    strategy: str,
    threshold: float | None = None,
    draws: int = 200,
    seed: int = 0,
) -> Comparison:
    """Train, measure and cluster the trainers that the studies returned.

    Args:
        task: the full task (training split to train on, test split to compare on).
        config: trainer settings not searched, and ``[run]``.
        best: one row per study with ``study`` and the hyperparameter columns.
        members: members per trainer's ensemble.
        strategy: ``vectorized`` or ``loop``.
        threshold: basin threshold on ``js_mean`` (None: the silhouette rule).
        draws, seed: multi-bootstrap settings of ``function_spread`` (0 draws: no intervals).
    """
    best = best.sort_values("study").reset_index(drop=True)
    trainers, index = distinct_trainers(best)
    logits, diverged = ensemble_outputs(task, config, trainers, members, strategy)
    probs = probabilities(logits).to(torch.float64)  # [T, K, n, C]
    mean = probs.mean(1)  # [T, n, C]
    y = task.y_test
    member_correct = (logits.argmax(-1) == y).to(torch.float64).mean(-1)  # [T, K]
    trainers["ensemble_accuracy"] = (mean.argmax(-1) == y).to(torch.float64).mean(-1).numpy()
    trainers["member_accuracy"] = member_correct.mean(1).numpy()
    trainers["member_accuracy_sd"] = member_correct.std(1).numpy() if members > 1 else np.nan
    trainers["seed_js"] = [
        _mean_off_diagonal(pairwise_js(probs[t]).numpy()) for t in range(len(trainers))
    ]
    trainers["diverged"] = diverged.sum(1).numpy()

    per_trainer = trainer_distances(probs)
    distances = {name: d[np.ix_(index, index)] for name, d in per_trainer.items()}
    center = mean[torch.from_numpy(index)].mean(0, keepdim=True)  # every study counts once
    to_center = pairwise_js(torch.cat([mean, center]))[-1, :-1].numpy()  # [T]
    basins = find_basins(distances["js_mean"], members=best["study"].tolist(), threshold=threshold)
    studies = pd.DataFrame(
        {
            "study": best["study"].to_numpy(),
            "trainer": index,
            "ensemble_accuracy": trainers["ensemble_accuracy"].to_numpy()[index],
            "member_accuracy": trainers["member_accuracy"].to_numpy()[index],
            "distance_to_center": to_center[index],
            "basin": basins.labels,
        }
    )
    p_true = mean[:, torch.arange(len(y)), y].numpy()[index]  # [S, n]
    spread = function_spread(probs, index, trainers["seed_js"].to_numpy(), draws, seed)
    scaled = seed_scaled_basins(distances["js_matched"], best["study"].tolist(), spread["seed_js"])
    spread["seed_scaled_basins"] = None if scaled is None else scaled.n_basins
    studies["seed_basin"] = None if scaled is None else scaled.labels
    return Comparison(trainers, studies, per_trainer, distances, basins, spread, p_true)


def function_spread(
    probs: Tensor, index: np.ndarray, seed_js: np.ndarray, draws: int, seed: int
) -> dict[str, Any]:
    """Mean distances between studies' trainers with intervals, against the seed spread (module
    docstring).
    """
    out: dict[str, Any] = {
        "seed_js": float(np.nanmean(seed_js)) if np.isfinite(seed_js).any() else None
    }
    per_example = {
        "js_mean": pairwise_js(probs.mean(1), per_example=True),
        "js_matched": torch.stack(
            [pairwise_js(probs[:, k], per_example=True) for k in range(probs.shape[1])]
        ).mean(0),
    }
    for name, values in per_example.items():
        studies = values.numpy()[np.ix_(index, index)]  # [S, S, n]
        if len(index) < 2:
            out[name] = None
        elif draws > 0:
            out[name] = pairwise_multibootstrap(studies, draws=draws, seed=seed).to_dict()
        else:
            off = ~np.eye(len(index), dtype=bool)
            out[name] = {"value": float(studies.mean(-1)[off].mean()), "low": None, "high": None}
    matched = out["js_matched"]
    out["matched_over_seed"] = (
        matched["value"] / out["seed_js"] if matched and out["seed_js"] else None
    )
    return out


def seed_scaled_basins(
    matched: np.ndarray, studies: list[int], seed_js: float | None
) -> Basins | None:
    """Basins of studies on ``js_matched`` cut at ``seed_js``: groups whose models differ more
    than reseeding does.
    """
    if seed_js is None or not seed_js > 0:
        return None
    return find_basins(matched, members=studies, threshold=seed_js)


def _mean_off_diagonal(d: np.ndarray) -> float:
    n = len(d)
    return float(d.sum() / (n * (n - 1))) if n > 1 else float("nan")
