"""Each member's view of the training data: its pool of examples, its labels, its batch order.

A member trains on a *pool* of training-example indices: the whole split, a bootstrap
resample of it, or the split less one held-out group. Its minibatches walk through fresh
permutations of that pool (drawn from its ``data_seed``), one pass after another, so the
number of steps per epoch is the same for every member (``n_train // batch_size``) even
when pools differ in size: members of one chunk stay in lockstep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.seeds import torch_generator
from attractor.tasks.base import Task


def member_pool(task: Task, row: PlanRow) -> Tensor:
    """Indices into the training split that member ``row`` may draw, ``[pool_size]`` int64."""
    pool = torch.arange(task.n_train)
    if row.holdout_group is not None:
        groups = task.train_groups
        if groups is None:
            raise UserError(
                f"task '{task.name}' defines no groups; remove holdout_group from the plan"
            )
        pool = pool[groups != row.holdout_group]
        if len(pool) == 0:
            raise UserError(
                f"holdout_group {row.holdout_group} leaves no training data; pick another group"
            )
    if row.bootstrap is not None:
        gen = torch_generator("bootstrap", row.bootstrap)
        units = task.units
        if units is None:
            pool = pool[torch.randint(len(pool), (len(pool),), generator=gen)]
        else:
            # A cluster bootstrap: examples cut from one document are not independent, so whole
            # units (documents) are drawn with replacement and keep all their examples.
            ids, inverse = torch.unique(units[pool], return_inverse=True)
            counts = torch.bincount(
                torch.randint(len(ids), (len(ids),), generator=gen), minlength=len(ids)
            )
            pool = pool.repeat_interleave(counts[inverse])
    return pool


def member_targets(task: Task, row: PlanRow) -> Tensor:
    """Training targets as member ``row`` sees them: a ``label_noise`` share replaced by another
    class.
    """
    if row.label_noise == 0:
        return task.y_train
    if task.num_classes is None:
        raise UserError(
            f"task '{task.name}' has no classes, so label_noise cannot apply; remove it from the "
            "plan"
        )
    gen = torch_generator("label-noise", row.noise_seed)
    flip = torch.rand(task.y_train.shape, generator=gen) < row.label_noise
    # A shift in [1, C) guarantees the noisy label differs from the true one.
    shift = torch.randint(1, task.num_classes, task.y_train.shape, generator=gen)
    return torch.where(flip, (task.y_train + shift) % task.num_classes, task.y_train)


class BatchStream:
    """Member ``row``'s minibatch indices, one pass over a fresh permutation of its pool at a
    time.
    """

    def __init__(self, pool: Tensor, batch_size: int, data_seed: int) -> None:
        if batch_size > len(pool):
            raise UserError(
                f"batch_size {batch_size} is larger than a member's training pool ({len(pool)} "
                "examples); lower trainer.batch_size"
            )
        self.pool = pool
        self.batch_size = batch_size
        self.data_seed = data_seed
        self.generator = torch_generator("data-order", data_seed)
        #: Minibatches handed out so far (a resumed stream counts the skipped ones too).
        self.taken = 0
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self) -> Tensor:
        """Indices of the next minibatch, ``[batch_size]``; the tail of a pass is dropped."""
        if self._cursor + self.batch_size > len(self._order):
            self._order = self.pool[torch.randperm(len(self.pool), generator=self.generator)]
            self._cursor = 0
        batch = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        self.taken += 1
        return batch

    def augmenter(self) -> torch.Generator:
        """The generator for the augmentation of the batch :meth:`next` just gave: seeded
        from the member's ``data_seed`` and the batch's number, so it needs no state to resume.
        """
        return torch_generator("augment", self.data_seed, self.taken)

    def skip(self, batches: int) -> None:
        """Go on as if :meth:`next` had been called ``batches`` times (a resumed member's
        stream continues where the killed one stopped; only the permutations are redrawn).
        """
        per_pass = len(self.pool) // self.batch_size
        if batches <= 0:
            return
        self.taken += batches
        passes, within = divmod(batches, per_pass)
        if within == 0:  # the last batch ends a pass; the next call draws the next one
            passes, within = passes - 1, per_pass
        for _ in range(passes + 1):
            self._order = self.pool[torch.randperm(len(self.pool), generator=self.generator)]
        self._cursor = within * self.batch_size


def augmented(task: Task, x: Tensor, streams: list[BatchStream]) -> Tensor:
    """``x [n, B, ...]`` (member i's batch just drawn from ``streams[i]``) through the task's
    augmentation, member by member with each one's own generator; ``x`` itself without one.
    """
    if task.augment is None:
        return x
    return torch.stack([task.augment(x[i], s.augmenter()) for i, s in enumerate(streams)])


def steps_per_epoch(task: Task, batch_size: int) -> int:
    return max(1, task.n_train // batch_size)
