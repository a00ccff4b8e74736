"""The one minibatch training loop: shuffled index batches, optimiser steps, a progress bar.

Every trainer in hesig (target classifiers, fingerprint decoders, inverse networks, shadow
edges, vicious classifiers and their adapted decoders) runs the same loop::

    for each epoch:  order = pool[randperm(len(pool), generator)]
        for each batch idx of order:  loss = loss_of_batch(idx)
                                      zero_grad (every optimiser); loss.backward()
                                      step (every optimiser); step (every scheduler)

:func:`train_epochs` owns that loop and yields after each epoch, so the caller keeps its own
per-epoch work (validation, model selection, early stopping by ``break``) in plain code. The
only random draw it makes is the one ``randperm`` per epoch from ``generator``, so a seeded
trainer gives the same weights whichever trainer calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass
class Epoch:
    """What :func:`train_epochs` yields after an epoch: its 1-based ``number``, the progress bar and
    ``mean_loss``, the epoch's loss averaged over the pool's rows (sum of batch loss x batch rows / rows)."""

    number: int
    bar: tqdm
    mean_loss: float

    def show(self, **values: str) -> None:
        """Show per-epoch figures (already formatted) next to the progress bar."""
        self.bar.set_postfix(values)


def batch_count(size: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch over ``size`` rows; ``drop_last`` keeps one short batch when size < batch_size."""
    return max(1, size // batch_size) if drop_last else -(-size // batch_size)


def train_epochs(optimizers: Sequence[torch.optim.Optimizer], loss_of_batch: Callable[[torch.Tensor], torch.Tensor],
                 pool: int | torch.Tensor, *, batch_size: int, epochs: int, generator: torch.Generator,
                 modules: Sequence[nn.Module] = (), schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler] = (),
                 drop_last: bool = False, min_batch: int = 1,
                 before_epoch: Callable[[int], None] | None = None, desc: str = "train",
                 progress: bool = False) -> Iterator[Epoch]:
    """Run ``epochs`` epochs of minibatch descent; yield an :class:`Epoch` after each.

    pool: the rows to train on, ``n`` (rows 0..n-1) or an int64 index tensor (a training split).
    loss_of_batch: row indices [b] -> scalar loss (a batch mean); it may keep its own running sums.
    modules: put in train mode at the start of every epoch (a validation pass in between sets eval).
    drop_last: only full batches (one short batch when the pool is smaller than a batch);
    min_batch: skip batches smaller than this (BatchNorm needs 2 rows).
    before_epoch(number): runs before the epoch's shuffle (fresh noise per epoch, say).
    Stop early by leaving the loop; the progress bar closes either way.
    """
    pool = torch.arange(pool) if isinstance(pool, int) else pool
    steps = batch_count(len(pool), batch_size, drop_last)
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        for number in range(1, epochs + 1):
            if before_epoch is not None:
                before_epoch(number)
            for module in modules:
                module.train()
            order = pool[torch.randperm(len(pool), generator=generator)]
            # The epoch's loss sum stays on the loss's device (in float64, so CPU sums are the bits a
            # Python float gave): a .item() per step would stall a GPU's queue once per step.
            total = 0.0
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                if len(idx) < min_batch:
                    continue
                loss = loss_of_batch(idx)
                total = total + loss.detach().double() * len(idx)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in optimizers:
                    opt.step()
                for scheduler in schedulers:
                    scheduler.step()
                bar.update(1)
            yield Epoch(number, bar, float(total) / max(1, len(pool)))
    finally:
        bar.close()
