"""Spread of a ``tiny-lm`` ensemble in function space, measured on held-out text.

For every member ``i`` and every position of the held-out windows, ``p_i`` is its
next-token distribution. Reported, each with a multi-bootstrap interval that resamples
members and held-out *documents* (a document's positions are averaged first):

* ``loss``: per-member next-token cross-entropy (nats per token) and its ensemble mean;
* ``pairwise_js``: mean over pairs ``i != j`` of ``JS(p_i, p_j)``;
* ``kl_to_mean``: mean over members of ``KL(p_i || p_bar)``, ``p_bar`` the members' mean
  distribution (the generalized JS divergence of the ensemble).

* ``cka``: linear CKA between members' residual streams (after the embeddings and after
  each block), per layer, on up to 2048 held-out token positions (:func:`residual_cka`).

Windows are scored in batches, so memory holds one batch of ``[members, batch, T, vocab]``.

References:
    Sellam et al. (2021), "The MultiBERTs" (multi-bootstrap); Lin (1991) (JS); Kornblith et
    al. (2019), "Similarity of Neural Network Representations Revisited" (CKA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure import divergence
from attractor.measure.bootstrap import multibootstrap, pairwise_multibootstrap
from attractor.runs.ensemble import Ensemble


@torch.no_grad()
def residual_cka(
    ensemble: Ensemble, members: list[int], x: Tensor, max_tokens: int = 2048
) -> dict[str, list[list[float]]]:
    """Linear CKA of members' residual streams per layer: ``{"embeddings" | "block N": [m, m]}``.

    The residual stream after the embeddings and after each transformer block (Hugging
    Face's ``hidden_states``), every token position of the first windows of ``x`` as one
    example, at most ``max_tokens`` of them (the same tokens for every member).
    """
    from attractor.measure.representation import pairwise_cka

    windows = max(1, min(len(x), max_tokens // max(1, x.shape[1])))
    streams: list[tuple[Tensor, ...]] = []
    for member in members:
        model = ensemble.module(member, None)
        hidden = model.model(
            input_ids=x[:windows], use_cache=False, output_hidden_states=True
        ).hidden_states
        streams.append(tuple(h.reshape(-1, h.shape[-1])[:max_tokens] for h in hidden))
    names = ["embeddings"] + [f"block {i}" for i in range(1, len(streams[0]))]
    return {
        name: pairwise_cka(torch.stack([s[k] for s in streams])).tolist()
        for k, name in enumerate(names)
    }


@dataclass(frozen=True, eq=False)
class LMMeasures:
    """The spread of a language-model run: a result of kind ``lm-measures`` named ``measures``.

    Attributes:
        run, split: the run directory and the held-out split measured.
        members: finished members, in the order of every per-member list and matrix.
        documents, windows: held-out documents (the bootstrap's units) and windows scored.
        loss: ``per_member`` next-token loss (nats per token) and the ensemble mean with its
            interval (``value``, ``low``, ``high``, ``draws``, ``level``).
        pairwise_js: mean pairwise JS with its interval, and the ``matrix`` ``[m, m]``.
        kl_to_mean: mean KL of a member to the ensemble's mean distribution, with interval.
        cka: layer -> ``[m, m]`` linear CKA of the residual streams.
    """

    run: str
    split: str
    members: list[int]
    documents: int
    windows: int
    loss: dict[str, Any]
    pairwise_js: dict[str, Any]
    kl_to_mean: dict[str, Any]
    cka: dict[str, list[list[float]]]

    kind: ClassVar[str] = "lm-measures"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        """``measures``, as for any run: a run holds one kind of spread measures."""
        return "measures"

    def to_json(self) -> dict[str, Any]:
        """Everything, as ``attractor measure --json`` prints it."""
        return {
            "run": self.run,
            "split": self.split,
            "members": self.members,
            "documents": self.documents,
            "windows": self.windows,
            "loss": self.loss,
            "pairwise_js": self.pairwise_js,
            "kl_to_mean": self.kl_to_mean,
            "cka": self.cka,
        }

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """One tidy table like a classifier run's: ``measure, member_a, member_b, value``."""
        ids = self.members
        rows = [
            {"measure": "loss", "member_a": m, "member_b": None, "value": float(v)}
            for m, v in zip(ids, self.loss["per_member"], strict=True)
        ]
        matrices = {
            "js": self.pairwise_js["matrix"],
            **{f"cka_{k}": v for k, v in self.cka.items()},
        }
        for name, matrix in matrices.items():
            rows += [
                {"measure": name, "member_a": a, "member_b": b, "value": float(matrix[i][j])}
                for i, a in enumerate(ids)
                for j, b in enumerate(ids)
                if i < j
            ]
        table = pd.DataFrame(rows)
        table["member_b"] = table["member_b"].astype("Int64")
        return {"": table}


def measure_lm_run(
    run_dir: str | Path, split: str = "test", batch_size: int = 16, draws: int = 500, seed: int = 0
) -> LMMeasures:
    """:func:`measure_lm` of the run in ``run_dir``."""
    return measure_lm(Ensemble.load(run_dir), split, batch_size, draws, seed)


def measure_lm(
    ensemble: Ensemble, split: str = "test", batch_size: int = 16, draws: int = 500, seed: int = 0
) -> LMMeasures:
    """Per-member loss, pairwise next-token JS and KL to the ensemble mean on ``split``.

    See the module docstring for what each measure is and how its interval is drawn.
    """
    run_dir = ensemble.store.root
    task = ensemble.task
    units = task.test_units if split == "test" else task.units
    if units is None:
        raise UserError(
            f"run '{run_dir}' is not a language-model run (task {ensemble.config.task.name!r})"
        )
    members = ensemble.members
    if len(members) < 2:
        raise UserError(
            f"run '{run_dir}' has {len(members)} finished members; measuring spread needs at "
            "least 2"
        )
    x, y = ensemble.eval_set(split)
    loss, pair_js, kl_mean = _window_measures(ensemble, members, x, y, batch_size)
    # Average windows per document, so the bootstrap resamples documents.
    docs = torch.unique(units)
    weights = (units[None, :] == docs[:, None]).double()
    weights /= weights.sum(1, keepdim=True)  # [docs, windows]
    loss_doc, kl_doc, js_doc = ((t @ weights.T).numpy() for t in (loss, kl_mean, pair_js))
    return LMMeasures(
        run=str(run_dir),
        split=split,
        members=members,
        documents=int(len(docs)),
        windows=len(x),
        loss={
            "per_member": loss.mean(1).tolist(),
            **multibootstrap(loss_doc, draws=draws, seed=seed).to_dict(),
        },
        pairwise_js={
            "matrix": np.asarray(pair_js.mean(-1)).tolist(),
            **pairwise_multibootstrap(js_doc, draws=draws, seed=seed).to_dict(),
        },
        kl_to_mean=multibootstrap(kl_doc, draws=draws, seed=seed).to_dict(),
        cka=residual_cka(ensemble, members, x),
    )


def _window_measures(
    ensemble: Ensemble, members: list[int], x: Tensor, y: Tensor, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per window: loss ``[m, n]``, pairwise JS ``[m, m, n]`` and KL to the mean ``[m, n]``."""
    m, n = len(members), len(x)
    loss = torch.zeros(m, n, dtype=torch.float64)
    pair_js = torch.zeros(m, m, n, dtype=torch.float64)
    kl_mean = torch.zeros(m, n, dtype=torch.float64)
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        window = slice(start, start + len(xb))
        logp = torch.log_softmax(
            ensemble.predict(xb, members, batch_size=batch_size).double(), -1
        )  # [m, B, T, V]
        loss[:, window] = (
            -logp.gather(-1, yb[None, ..., None].expand(m, -1, -1, 1)).squeeze(-1).mean(-1)
        )
        log_bar = divergence.log_mean(logp)  # log of the members' mean distribution
        kl_mean[:, window] = divergence.kl(logp, log_bar).mean(-1)
        for i in range(m):
            for j in range(i + 1, m):
                js = divergence.js(logp[i], logp[j])
                pair_js[i, j, window] = pair_js[j, i, window] = js.clamp(0, math.log(2)).mean(-1)
    return loss, pair_js, kl_mean
