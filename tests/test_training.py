"""The one minibatch training loop (hesig.models.training)."""

from __future__ import annotations

import torch
from torch import nn

from hesig.models.training import batch_count, train_epochs


def _regression(seed: int):
    torch.manual_seed(seed)
    x = torch.randn(50, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    return nn.Linear(3, 1), x, y


def test_train_epochs_equals_the_hand_written_loop_bit_for_bit():
    net, x, y = _regression(0)
    reference = nn.Linear(3, 1)
    reference.load_state_dict(net.state_dict())
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(reference.parameters(), lr=0.1)
    for _ in range(3):
        order = torch.randperm(50, generator=gen)
        for start in range(0, 50, 16):
            idx = order[start:start + 16]
            loss = (reference(x[idx]).squeeze(1) - y[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    epochs = [e.number for e in train_epochs([opt], lambda idx: (net(x[idx]).squeeze(1) - y[idx]).pow(2).mean(), 50,
                                             batch_size=16, epochs=3, generator=torch.Generator().manual_seed(1))]
    assert epochs == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))


def test_batches_pool_drop_last_min_batch_modules_and_early_stop():
    seen: list[list[int]] = []
    net = nn.Linear(1, 1)

    def loss(idx):
        seen.append(idx.tolist())
        return net.weight.sum() * 0

    pool = torch.tensor([10, 11, 12, 13, 14])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.eval()
    for epoch in train_epochs([opt], loss, pool, batch_size=2, epochs=5, generator=torch.Generator(), modules=[net],
                              drop_last=True):
        assert net.training  # put in train mode at the start of every epoch
        net.eval()
        if epoch.number == 2:
            break
    assert len(seen) == 4 and all(len(b) == 2 and set(b) <= set(pool.tolist()) for b in seen)
    seen.clear()
    list(train_epochs([opt], loss, 5, batch_size=2, epochs=1, generator=torch.Generator(), min_batch=2))
    assert [len(b) for b in seen] == [2, 2]  # the single leftover row is skipped
    assert batch_count(5, 2, drop_last=False) == 3 and batch_count(5, 2, drop_last=True) == 2
    assert batch_count(3, 8, drop_last=True) == 1  # a pool smaller than a batch still trains once


def test_before_epoch_runs_before_each_shuffle():
    calls = []
    net = nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    list(train_epochs([opt], lambda idx: net.weight.sum() * 0, 4, batch_size=4, epochs=3, generator=torch.Generator(),
                      before_epoch=calls.append))
    assert calls == [1, 2, 3]
