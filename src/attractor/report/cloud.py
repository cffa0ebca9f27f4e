"""The ensemble cloud: every member's function at every snapshot, seen in one plane.

A member at a snapshot is represented by its outputs on a fixed probe set (softmax
probabilities for classification, flattened to one vector). One PCA is fit over all
members at all snapshots together, so the axes stay fixed and the panels show the cloud
moving and contracting (or spreading) through training rather than each snapshot's own
most-spread directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA
from torch import Tensor

from attractor.report.style import color, figure_uri, step_axis, styled
from attractor.runs.ensemble import Ensemble
from attractor.tasks.base import Task

#: Probe vectors longer than this (e.g. language models: positions × vocabulary) are first
#: reduced by a fixed Gaussian random projection, which keeps pairwise distances within a
#: few percent (Johnson–Lindenstrauss) and keeps the PCA small.
MAX_FEATURES = 4096


@dataclass(frozen=True)
class Cloud:
    """Members' probe outputs through training, projected on one PCA plane.

    Attributes:
        points: one row per (member, snapshot): ``member, snapshot, step, pc1, pc2``;
            ``snapshot`` is the index into that member's snapshot steps.
        mean: the ensemble mean per snapshot (``snapshot, step, pc1, pc2, radius``; ``step``
            is the median step where members with other batch sizes have other steps): the
            mean of member probabilities, projected (PCA is affine, so it is also the mean
            point), and ``radius``, the members' mean Euclidean distance from it in the full
            probe space (not just the plane): the size of the cloud.
        explained_variance_ratio: ``[2]`` share of the total variance along pc1 and pc2.
    """

    points: pd.DataFrame
    mean: pd.DataFrame
    explained_variance_ratio: np.ndarray

    @property
    def steps_agree(self) -> bool:
        """Whether every member took its i-th snapshot at the same step (same batch size)."""
        return bool((self.points.groupby("snapshot")["step"].nunique() == 1).all())


def probe_set(task: Task, size: int = 64, seed: int = 0) -> Tensor:
    """A fixed subset of the test inputs: ``[size, ...]`` (all of them if there are fewer).

    The same seed always picks the same examples, so reports of different runs on one
    task show their clouds on the same probe.
    """
    n = int(task.x_test.shape[0])
    if n <= size:
        return task.x_test
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return task.x_test[torch.as_tensor(chosen)]


def _features(ens: Ensemble, probe: Tensor, members: list[int]) -> tuple[np.ndarray, pd.DataFrame]:
    """Flattened outputs ``[rows, features]`` with ``member, snapshot, step`` per row."""
    # Members with another batch size have other snapshot steps: predict each group apart.
    groups: dict[tuple[int, ...], list[int]] = {}
    for member in members:
        groups.setdefault(tuple(ens.steps(member)), []).append(member)
    blocks, rows = [], []
    for steps, group in groups.items():
        for snapshot, step in enumerate(steps):
            out = ens.predict(probe, group, step=step).double()
            if ens.task.num_classes is not None:
                out = out.softmax(-1)
            blocks.append(out.reshape(len(group), -1).numpy())
            rows += [(member, snapshot, step) for member in group]
    features = np.concatenate(blocks)
    if features.shape[1] > MAX_FEATURES:
        sketch = np.random.default_rng(0).standard_normal((features.shape[1], MAX_FEATURES))
        features = features @ sketch / np.sqrt(MAX_FEATURES)
    return features, pd.DataFrame(rows, columns=["member", "snapshot", "step"])


def cloud_coordinates(
    ens: Ensemble, probe: Tensor | None = None, members: list[int] | None = None
) -> Cloud:
    """Project every member at every snapshot onto the first two principal components.

    Args:
        ens: a finished run.
        probe: inputs ``[probe, ...]``; default :func:`probe_set` of the run's task.
        members: which members (default: every finished, non-diverged one).

    Returns:
        A :class:`Cloud` with one point per (member, snapshot).

    References:
        Fort, Hu & Lakshminarayanan (2019), "Deep Ensembles: A Loss Landscape
        Perspective" (function-space trajectories of members projected by PCA).
    """
    members = ens.members if members is None else list(members)
    if not members:
        raise ValueError("the ensemble cloud needs at least one finished member")
    probe = probe_set(ens.task) if probe is None else probe
    features, points = _features(ens, probe, members)
    coords = np.zeros((len(features), 2))
    ratio = np.zeros(2)
    # All points equal (or a single point): there is no direction to show, so all sit at 0.
    if len(features) > 1 and features.var(axis=0).sum() > 0:
        k = min(2, len(features) - 1, features.shape[1])
        pca = PCA(n_components=k, svd_solver="full").fit(features)
        coords[:, :k] = pca.transform(features)
        ratio[:k] = pca.explained_variance_ratio_
    points["pc1"], points["pc2"] = coords[:, 0], coords[:, 1]
    mean = points.groupby("snapshot", as_index=False).agg(
        step=("step", "median"), pc1=("pc1", "mean"), pc2=("pc2", "mean")
    )
    # The plane hides most directions; the radius is measured in the full probe space.
    snapshot = points["snapshot"].to_numpy()
    mean["radius"] = [
        np.linalg.norm(features[snapshot == s] - features[snapshot == s].mean(0), axis=1).mean()
        for s in mean["snapshot"]
    ]
    return Cloud(points=points, mean=mean, explained_variance_ratio=ratio)


def _rare_last(points: pd.DataFrame, basins: dict[int, int] | None) -> pd.DataFrame:
    """Points of small basins drawn last, so the big basin's crowd cannot hide them."""
    if not basins:
        return points
    sizes = pd.Series(basins).value_counts()
    rank = points["member"].map(
        lambda m: -sizes[basins.get(int(m), 0)] if basins.get(int(m), 0) in sizes else 0
    )
    return points.iloc[np.argsort(rank.to_numpy(), kind="stable")]


def _colors(points: pd.DataFrame, basins: dict[int, int] | None) -> list[str]:
    return [color(basins.get(int(m), 0) if basins else 0) for m in points["member"]]


def _axis_labels(cloud: Cloud) -> tuple[str, str]:
    r = cloud.explained_variance_ratio
    return f"PC1 ({100 * r[0]:.0f} % of variance)", f"PC2 ({100 * r[1]:.0f} %)"


def _legend(fig: Figure, basins: dict[int, int] | None) -> None:
    """Legend above the plot, where it cannot cover the axis labels."""
    handles = [
        Line2D([], [], color="black", marker="X", linestyle="", markersize=8, label="ensemble mean")
    ]
    for basin in sorted(set(basins.values())) if basins else []:
        handles.append(
            Line2D([], [], color=color(basin), marker="o", linestyle="", label=f"basin {basin}")
        )
    fig.legend(handles=handles[:9], loc="outside upper center", ncols=min(len(handles), 9))


def cloud_panels(cloud: Cloud, basins: dict[int, int] | None = None, max_panels: int = 16) -> str:
    """Small multiples, one per snapshot, on shared axes; faint grey shows every other snapshot.

    Args:
        cloud: from :func:`cloud_coordinates`.
        basins: member id -> basin label, for colour (default: one colour).
        max_panels: more snapshots than this are thinned evenly (first and last kept).
    """
    snapshots = sorted(cloud.points["snapshot"].unique())
    if len(snapshots) > max_panels:
        keep = np.unique(np.round(np.linspace(0, len(snapshots) - 1, max_panels)).astype(int))
        snapshots = [snapshots[i] for i in keep]
    ncols = min(4, len(snapshots))
    nrows = int(np.ceil(len(snapshots) / ncols))
    xlabel, ylabel = _axis_labels(cloud)
    with styled(2.4 * ncols + 0.4, 2.3 * nrows + 0.6) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax, snapshot in zip(axes.ravel(), snapshots, strict=False):
            _snapshot_panel(ax, cloud, snapshot, basins)
        for ax in axes.ravel()[len(snapshots) :]:
            ax.set_visible(False)
        fig.supxlabel(xlabel, fontsize=9)
        fig.supylabel(ylabel, fontsize=9)
        _legend(fig, basins)
        return figure_uri(fig)


def _snapshot_panel(ax: Axes, cloud: Cloud, snapshot: int, basins: dict[int, int] | None) -> None:
    """One snapshot's members and mean over every snapshot's points in grey."""
    points = cloud.points
    here = _rare_last(points[points["snapshot"] == snapshot], basins)
    ax.scatter(points["pc1"], points["pc2"], s=5, color="#d0d0d0", linewidths=0)
    ax.scatter(
        here["pc1"],
        here["pc2"],
        s=16,
        c=_colors(here, basins),
        edgecolors="white",
        linewidths=0.4,
        zorder=3,
    )
    centre = cloud.mean[cloud.mean["snapshot"] == snapshot]
    ax.scatter(
        centre["pc1"],
        centre["pc2"],
        s=55,
        marker="X",
        color="black",
        edgecolors="white",
        linewidths=0.6,
        zorder=4,
    )
    steps = sorted(here["step"].unique())
    ax.set_title(
        f"step {steps[0]}"
        if len(steps) == 1
        else f"snapshot {snapshot} (steps {steps[0]}–{steps[-1]})"
    )


def cloud_trails(cloud: Cloud, basins: dict[int, int] | None = None) -> str:
    """Each member's path through training in the PCA plane, beside the cloud's radius vs step.

    Paths are faint, starts hollow, ends filled; the black path is the ensemble mean.
    """
    points = _rare_last(cloud.points.sort_values(["member", "snapshot"]), basins)
    mean = cloud.mean.sort_values("snapshot")
    with styled(9.6, 4.6) as fig:
        ax, size = fig.subplots(1, 2, width_ratios=[1.7, 1])
        _paths(ax, points, mean, basins)
        xlabel, ylabel = _axis_labels(cloud)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("paths (hollow: init, filled: final)")
        if cloud.steps_agree:
            size.plot(
                mean["step"], mean["radius"], color="black", marker="o", markersize=3, linewidth=1.4
            )
            step_axis(size)
        else:  # snapshots of different batch sizes fall at different steps: index them instead
            size.plot(
                mean["snapshot"],
                mean["radius"],
                color="black",
                marker="o",
                markersize=3,
                linewidth=1.4,
            )
            size.set_xlabel("snapshot")
        size.set_ylim(bottom=0)
        size.set_ylabel("mean distance to ensemble mean")
        size.set_title("cloud radius (full probe space)")
        _legend(fig, basins)
        return figure_uri(fig)


def _paths(
    ax: Axes, points: pd.DataFrame, mean: pd.DataFrame, basins: dict[int, int] | None
) -> None:
    """Members' faint paths with hollow starts and filled ends, and the mean's black path."""
    for member, path in points.groupby("member", sort=False):
        shade = color(basins.get(int(member), 0) if basins else 0)
        ax.plot(path["pc1"], path["pc2"], color=shade, alpha=0.35, linewidth=0.9)
    starts = points.groupby("member", sort=False).head(1)
    ends = points.groupby("member", sort=False).tail(1)
    ax.scatter(
        starts["pc1"],
        starts["pc2"],
        s=18,
        facecolors="none",
        edgecolors=_colors(starts, basins),
        linewidths=0.8,
    )
    ax.scatter(
        ends["pc1"],
        ends["pc2"],
        s=28,
        c=_colors(ends, basins),
        edgecolors="white",
        linewidths=0.5,
        zorder=3,
    )
    ax.plot(
        mean["pc1"], mean["pc2"], color="black", linewidth=1.4, marker=".", markersize=4, zorder=4
    )
    ax.scatter(
        mean["pc1"].iloc[-1:],
        mean["pc2"].iloc[-1:],
        s=70,
        marker="X",
        color="black",
        edgecolors="white",
        zorder=5,
    )
