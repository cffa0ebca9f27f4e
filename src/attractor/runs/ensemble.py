"""An ensemble: a finished run directory, loaded lazily.

ens = Ensemble.load("runs/digits")   # trust=True to run a user task this user did not sign
ens.plan                      # one row per member, with status and diverged_step
ens.predict(x)                # [members, batch, classes] at the final snapshot
ens.params(member=3, step=0)  # that member's initial parameters
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import Plan, PlanRow
from attractor.runs.store import RunStore
from attractor.runs.trust import check_task_trust
from attractor.tasks import build_task, is_user_task
from attractor.tasks.base import Task
from attractor.training.device import module_on, resolve_device
from attractor.training.forward import Params, batched_forward, single_forward
from attractor.training.init import initial_module


class Ensemble:
    """Members of one run; weights are read from disk only when asked for.

    A user task (``module:function``) is imported only if this user signed the manifest or
    ``trust`` is true (``None``: the process default, set by ``attractor --trust``); see
    :mod:`attractor.runs.trust`.
    """

    def __init__(
        self, store: RunStore, trust: bool | None = None, task: Task | None = None
    ) -> None:
        self.store = store
        self.trust = trust
        if task is not None:  # built by the caller from the config the user gave
            self.__dict__["task"] = task
        manifest = store.manifest()
        self.manifest = manifest
        rebuild = "re-run the config with --force to rebuild the run"
        try:
            self.config = Config.model_validate(manifest["config"])
        except (KeyError, ValidationError):
            raise UserError(
                f"'{store.root / 'manifest.json'}' holds no valid config; {rebuild}"
            ) from None
        self.strategy = manifest.get("strategy")
        try:
            plan = Plan.from_parquet(store.root / "plan.parquet").table
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"'{store.root / 'plan.parquet'}' is missing or corrupt "
                f"({str(exc).splitlines()[0]}); {rebuild}"
            ) from None
        try:
            status = manifest["members"]
            plan["status"] = [status[str(m)]["status"] for m in plan["member"]]
            plan["diverged_step"] = pd.array(
                [status[str(m)].get("diverged_step") for m in plan["member"]], dtype="Int64"
            )
            steps = manifest["snapshot_steps"].items()
            self._snapshot_steps = {int(bs): [int(s) for s in each] for bs, each in steps}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UserError(
                f"'{store.root / 'manifest.json'}' is damaged (its member status or snapshot "
                f"steps are missing or malformed: {type(exc).__name__} {exc}); {rebuild}"
            ) from None
        self.plan: pd.DataFrame = plan
        #: Where :meth:`predict` runs the members (outputs come back to the CPU).
        self.device = torch.device("cpu")

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        trust: bool | None = None,
        task: Task | None = None,
        device: str = "cpu",
    ) -> Ensemble:
        """The run in ``run_dir``.

        Args:
            run_dir: a run directory written by :func:`attractor.runs.launch.train`.
            trust: let its user task run though this user did not sign it (``None``: the
                process default, see :mod:`attractor.runs.trust`).
            task: its task, already built by the caller from the user's own config (what
                ``train`` returns), used instead of building it from the manifest.
            device: where :meth:`predict` runs the members (``auto``, ``cpu``, ``cuda[:N]``).
        """
        ens = cls(RunStore(run_dir), trust, task)
        ens.device = resolve_device(device)
        return ens

    # ---- what is there ---------------------------------------------------------------
    @functools.cached_property
    def task(self) -> Task:
        """The run's task, built from its manifest (user code only if trusted, see the class)."""
        name = self.config.task.name
        check_task_trust(self.store.root, self.manifest, name, is_user_task(name), self.trust)
        return build_task(self.config.task, search_cwd=False)

    def eval_set(self, split: str = "test") -> tuple[Tensor, Tensor]:
        """Inputs and targets of the task's ``"test"`` or ``"train"`` split."""
        task = self.task
        return (task.x_test, task.y_test) if split == "test" else (task.x_train, task.y_train)

    @functools.cached_property
    def _template(self) -> nn.Module:
        """The task's architecture, built once (outside the caller's RNG) to name and run
        parameters.
        """
        with torch.random.fork_rng(devices=[]):
            return self.task.make_model().eval()

    @functools.cached_property
    def _device_template(self) -> nn.Module:
        """The template on :attr:`device` (itself on the CPU): a buffer the snapshots leave out
        (a non-persistent one, e.g. a causal mask) is read from it there.
        """
        return module_on(self._template, self.device)

    @property
    def members(self) -> list[int]:
        """Members that finished training without diverging."""
        return [int(m) for m in self.plan.loc[self.plan["status"] == "done", "member"]]

    def row(self, member: int) -> PlanRow:
        return next(r for r in Plan(self.plan).rows() if r.member == member)

    def steps(self, member: int | None = None) -> list[int]:
        """Snapshot steps of ``member`` (or of the first member): its batch size sets the count."""
        member = int(self.plan["member"].iloc[0]) if member is None else member
        batch_size = int(self.plan.loc[self.plan["member"] == member, "batch_size"].iloc[0])
        return self._snapshot_steps[batch_size]

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per (member, snapshot step): train/test loss and the task's metrics."""
        return self.store.metrics()

    def final_metrics(self) -> pd.DataFrame:
        """Each member's metrics at its last snapshot, one row per member, ordered by member."""
        metrics = self.metrics
        if metrics.empty:
            return metrics
        return (
            metrics.sort_values("step")
            .groupby("member")
            .tail(1)
            .sort_values("member")
            .reset_index(drop=True)
        )

    # ---- weights -----------------------------------------------------------------------
    def params(self, member: int, step: int | None = None) -> dict[str, Tensor]:
        """Parameters and buffers of ``member`` at snapshot ``step`` (default: its last)."""
        step = self.steps(member)[-1] if step is None else step
        tensors = self.store.load_snapshot(member, step)
        self._check_shapes(member, step, tensors)
        return tensors

    def _check_shapes(self, member: int, step: int, tensors: dict[str, Tensor]) -> None:
        """Refuse weights that do not fit the task's model (an edited [task], another run's
        files) with one line, before any forward pass fails on them."""
        expected = {k: tuple(v.shape) for k, v in self._template.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found == expected:
            return
        wrong = sorted(set(found) ^ set(expected)) or sorted(
            k for k in expected if found[k] != expected[k]
        )
        name = wrong[0]
        have, want = found.get(name, "missing"), expected.get(name, "none")
        detail = f"'{name}' is {have}, the model wants {want}"
        raise UserError(
            f"weights of member {member} at step {step} do not fit the run's task ({detail}): "
            "its manifest's [task] was edited or the files are another run's; re-run the config "
            "with --force to rebuild the run"
        )

    def module(self, member: int, step: int | None = None) -> nn.Module:
        """A ready ``nn.Module`` of ``member`` at ``step`` (eval mode)."""
        model = initial_module(self.task, self.row(member))
        model.load_state_dict(self.params(member, step))
        return model.eval()

    def stacked(
        self, members: list[int] | None = None, step: int | None = None
    ) -> tuple[Params, Params]:
        """Parameters and buffers of ``members`` stacked along a new first dimension."""
        members = self.members if members is None else members
        states = [self.params(m, step) for m in members]
        names = {k for k, _ in self._template.named_parameters()}
        params = {k: torch.stack([s[k] for s in states]) for k in states[0] if k in names}
        buffers = {k: torch.stack([s[k] for s in states]) for k in states[0] if k not in names}
        return params, buffers

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        members: list[int] | None = None,
        step: int | None = None,
        batch_size: int = 1024,
    ) -> Tensor:
        """Outputs of every member on ``x [batch, ...]``: ``[members, batch, ...]`` (logits)."""
        members = self.members if members is None else members
        params, buffers = self.stacked(members, step)
        if self.device.type != "cpu":
            params = {k: v.to(self.device) for k, v in params.items()}
            buffers = {k: v.to(self.device) for k, v in buffers.items()}
        template = self._device_template
        vectorized = self.manifest.get("strategy", "vectorized") != "loop"
        forward = (
            batched_forward(template)
            if vectorized and len(members) > 1
            else single_forward(template)
        )
        outs = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            xb = xb.to(self.device)
            out = forward(params, buffers, xb.unsqueeze(0).expand(len(members), *xb.shape))
            outs.append(out.cpu())
        return torch.cat(outs, dim=1)

    def __len__(self) -> int:
        return len(self.plan)

    def __repr__(self) -> str:
        counts = self.plan["status"].value_counts().to_dict()
        return (
            f"Ensemble({str(self.store.root)!r}, task={self.config.task.name!r}, "
            f"members={len(self)}, status={counts})"
        )
