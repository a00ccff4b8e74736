"""Learned query points: the model owner trains its K (direction, ε) pairs on its own data (issue 24).

A query's answer is one bit, ``b_i(x) = [argmax M(x + ε_i d_i) != argmax M(x)]``, and the model
owner holds M (white box), so it can choose (d_i, ε_i) by gradient descent on its own training
images, jointly with a decoder that reads the bits back into the image:

    margin_i(x) = M(x + ε_i d_i)[y] - max_{j != y} M(x + ε_i d_i)[j],   y = argmax M(x)
    bit_i = hard + (soft - soft.detach()),  hard = sign(-margin_i),  soft = hardtanh(-margin_i / τ)

(straight-through: the forward pass is the exact oracle bit, +1 for a flip; τ is the median
|margin| of the first batch, so about half the pairs pass a gradient). d_i = v_i / ||v_i||,
ε_i = exp(ℓ_i) capped at ε_max; v starts as the ``random`` family's Gaussian set of the same seed
and ε at the median ε of those directions over ``LEARN_INIT_ROWS`` owner images (the prior-guided
search's M = 1 knot: each bit starts as a fair coin). The decoder during this training is the
attack's DCGAN generator (ngf 32) on the ±1 bits with MSE loss, plus ``balance`` times the mean
over directions of (batch mean of the soft bit)^2, which pulls each bit towards a fair coin
(without it the points drift to where most bits are flips: results/frontier/learned.json). With
``balance`` > 0 the learning rate of ε is a tenth of the directions'. That decoder is thrown
away: the attack trains its own on the fingerprints the real oracle gives.

The set carries its knots ε_i ([K, 1]), so ``hesig fingerprint`` asks each direction exactly once,
at its own ε (:meth:`Directions.point_search`). The points are trained as one set, so the family
has no prefix property (``nested=False``). Owner images: the first ``learn_images`` of the train
split (default all); the initial medians come from the ``LEARN_INIT_ROWS`` images after them (or
the split's last ones when none are left) -- always the owner's own data, never the victims'.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...core.defaults import COARSE_POINTS, EPS_MAX, LEARN_BALANCE, LEARN_EPOCHS, LEARN_INIT_ROWS, RTOL
from ...core.errors import InvalidValueError
from .base import QueryPoints, register_family

#: Training batch of the points (images; each image costs K forward passes of the model).
LEARN_BATCH = 64
#: Batch of the no-gradient passes (labels, flip rates).
_EVAL_BATCH = 4096
#: Rows whose flip rate is logged after every epoch.
_FLIP_ROWS = 512


class LearnablePoints(nn.Module):
    """K query points under training: unit directions d [K, C, H, W] and ε [K] in (0, ε_max]."""

    def __init__(self, directions: torch.Tensor, eps: torch.Tensor, eps_max: float):
        super().__init__()
        self.v = nn.Parameter(directions.clone())
        self.log_eps = nn.Parameter(eps.clamp(min=1e-3).log())
        self.eps_max = float(eps_max)

    def directions(self) -> torch.Tensor:
        return self.v / self.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def eps(self) -> torch.Tensor:
        return self.log_eps.exp().clamp(max=self.eps_max)


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, points: LearnablePoints) -> torch.Tensor:
    """margin_i(x) [B, K]: the original label's logit minus the best other one at x + ε_i d_i."""
    b, k = x.shape[0], points.v.shape[0]
    queries = x[:, None] + points.eps().view(1, k, 1, 1, 1) * points.directions()[None]
    logits = model(queries.flatten(0, 1)).view(b, k, -1)
    own = logits.gather(2, y.view(b, 1, 1).expand(b, k, 1)).squeeze(2)
    other = logits.scatter(2, y.view(b, 1, 1).expand(b, k, 1), -math.inf).amax(2)
    return own - other


def _flip_rates(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, points: LearnablePoints) -> dict:
    with torch.no_grad():
        flips = (margins(model, images[:_FLIP_ROWS], labels[:_FLIP_ROWS], points) < 0).float().mean(0)
    return {"flip_rate_mean": float(flips.mean()), "flip_rate_min": float(flips.min()), "flip_rate_max": float(flips.max())}


def learn_points(model: nn.Module, images: torch.Tensor, points: LearnablePoints, epochs: int, balance: float,
                 seed: int, progress: bool = False) -> dict[str, Any]:
    """Train ``points`` and a decoder on the owner's images [N, C, H, W] (on the model's device).
    The model's weights stay as they are (frozen here, their flags restored after).
    Returns {"tau", "history"}: the margin scale and each epoch's loss and flip rates."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return _learn(model, images, points, epochs, balance, seed, progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _learn(model: nn.Module, images: torch.Tensor, points: LearnablePoints, epochs: int, balance: float,
           seed: int, progress: bool) -> dict[str, Any]:
    from ...models.dcgan import DCGANDecoder  # models import the signature package, not the reverse
    from ...models.training import train_epochs
    with torch.no_grad():
        labels = torch.cat([model(images[s:s + _EVAL_BATCH]).argmax(1) for s in range(0, len(images), _EVAL_BATCH)])
        tau = float(margins(model, images[:LEARN_BATCH], labels[:LEARN_BATCH], points).abs().median())
    k = points.v.shape[0]
    decoder = DCGANDecoder(k, tuple(images.shape[1:]), ngf=32).to(images.device)
    opt = torch.optim.Adam([{"params": decoder.parameters(), "lr": 2e-3},
                            {"params": [points.v], "lr": 1e-2},
                            {"params": [points.log_eps], "lr": 1e-3 if balance else 1e-2}], betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    history = [{"epoch": 0, **_flip_rates(model, images, labels, points)}]

    def loss_of_batch(idx: torch.Tensor) -> torch.Tensor:
        m = margins(model, images[idx], labels[idx], points)
        soft = F.hardtanh(-m / tau)
        bits = torch.sign(-m).detach() + soft - soft.detach()   # forward: the oracle's bit (+1: flipped)
        loss = F.mse_loss(decoder(bits), images[idx])
        return loss + balance * soft.mean(0).pow(2).mean() if balance else loss

    for epoch in train_epochs([opt], loss_of_batch, len(images), batch_size=LEARN_BATCH, epochs=epochs, generator=gen,
                              modules=[decoder], min_batch=2, desc="learn points", progress=progress):
        history.append({"epoch": epoch.number, "train_mse": epoch.mean_loss, **_flip_rates(model, images, labels, points)})
    return {"tau": tau, "history": history}


def initial_knots(model: nn.Module, owner: torch.Tensor, directions: torch.Tensor, eps_max: float) -> torch.Tensor:
    """Each direction's median ε [K] over the owner images ``owner``, by the paper's search."""
    from ...oracles.plaintext import PlaintextOracle
    from ..fingerprints import Fingerprints
    from ..prior_search import PriorGuidedSearch
    from ..search import BoundarySearch
    device = next(model.parameters()).device
    r = BoundarySearch(eps_max, coarse_points=COARSE_POINTS, rtol=RTOL).run(
        PlaintextOracle(model, owner, batch_size=_EVAL_BATCH, device=device), directions)
    prior = Fingerprints(r.eps, r.censored, r.queries, torch.arange(len(owner)),
                         {"split": "train", "search": {"eps_max": eps_max}})
    return PriorGuidedSearch.from_prior(prior, 1).knots[:, 0]


def check_learn_options(epochs: Any, balance: Any, images: Any) -> None:
    """One line for a bad option: epochs >= 1, balance >= 0 and finite, images None or >= 2."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidValueError(f"learn epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(balance, bool) or not isinstance(balance, (int, float)) or not math.isfinite(balance) or balance < 0:
        raise InvalidValueError(f"learn balance must be a finite number >= 0, got {balance!r}")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 2):
        raise InvalidValueError(f"learn images must be an integer >= 2, got {images!r}")


@register_family("learned", needs=("model", "train_images"), nested=False)
def learned(count: int, shape: tuple[int, ...], gen: torch.Generator, *, model: nn.Module, train_images: torch.Tensor,
            learn_epochs: int = LEARN_EPOCHS, learn_balance: float = LEARN_BALANCE, learn_images: int | None = None,
            eps_max: float = EPS_MAX, seed: int = 0, progress: bool = False, **_: Any) -> QueryPoints:
    """Query points (direction and ε) trained by the model owner on its data; one query each."""
    check_learn_options(learn_epochs, learn_balance, learn_images)
    n = len(train_images) if learn_images is None else min(int(learn_images), len(train_images))
    start = torch.randn((count, *shape), generator=gen)   # the ``random`` family's set of this seed
    start = start / start.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    model = model.eval()
    device = next(model.parameters()).device
    rest = train_images[n:n + LEARN_INIT_ROWS]
    owner = rest if len(rest) == LEARN_INIT_ROWS else train_images[-LEARN_INIT_ROWS:]
    init = initial_knots(model, owner, start, eps_max)
    points = LearnablePoints(start, init.float(), eps_max).to(device)
    torch.manual_seed(seed)  # the joint decoder's initial weights
    t0 = time.perf_counter()
    summary = learn_points(model, train_images[:n].to(device), points, learn_epochs, float(learn_balance), seed, progress)
    with torch.no_grad():
        vectors, eps = points.directions().detach().cpu().contiguous(), points.eps().detach().cpu().double()
    return QueryPoints(vectors, eps[:, None], eps_max,
                       {"learn_images": n, "learn_seconds": round(time.perf_counter() - t0, 1), **summary})
