"""Adversarial direction families, built from the model M before any victim is seen.

The adversary of the threat model is the model owner: it has M's weights and M's training data,
so white-box adversarial directions cost it nothing per victim. Three constructions:

* ``fgsm``  untargeted FGSM sign-gradients sign(∇_x CE(M(x), y)) at the owner's training samples,
  cycling through the classes. Cheap and sample-specific.
* ``pgd``   targeted L2 gradient walks from the class centroid μ_a until M predicts class b,
  direction = total displacement. One per ordered class pair (90 for 10 classes); beyond that the
  walks start from training samples of class a. This is the "smallest step from a to b" a victim
  of class a would take, found on the centroid rather than on the victim.
* ``uap``   universal adversarial perturbations: for each target class t, the δ on the L2 sphere of
  radius ``uap_radius`` that maximises the mean log-probability of t over a shard of training
  images of other classes (Moosavi-Dezfooli et al.'s universal perturbation, in its
  gradient-ascent form). Natural size C; further UAPs per target use disjoint data shards and
  their own random starts.

All three batch over every direction at once and return unit-L2 directions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .base import balanced_class_pairs, class_sample_order, register_family

NEEDS = ("model", "train_images", "train_labels")


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """∇_x CE(M(x), target) for x [n, C, H, W] (per-row losses, so rows do not interact)."""
    dev = _model_device(model)
    grads = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(dev).requires_grad_(True)
        loss = F.cross_entropy(model(xb), target[start:start + batch_size].to(dev), reduction="sum")
        grads.append(torch.autograd.grad(loss, xb)[0].cpu())
    return torch.cat(grads)


@register_family("fgsm", needs=NEEDS)
def fgsm_at_samples(count: int, shape: tuple[int, ...], gen: torch.Generator, *, model: nn.Module,
                    train_images: torch.Tensor, train_labels: torch.Tensor, **_: Any) -> torch.Tensor:
    """Untargeted FGSM directions sign(∇_x CE(M(x_j), y_j)) at seeded training samples, classes in turn."""
    labels = train_labels.long()
    num_classes = int(labels.max()) + 1
    order = class_sample_order(labels, num_classes, gen)
    picks = torch.stack([order[j % num_classes][(j // num_classes) % len(order[j % num_classes])] for j in range(count)])
    model.eval()
    grad = _gradient(model, train_images[picks].float(), labels[picks])
    return torch.sign(grad).view(count, *shape)


def _pgd_starts(count: int, train_images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Start points [count, C, H, W] and target classes [count] for the ``pgd`` family."""
    num_classes = int(labels.max()) + 1
    centroids = torch.stack([train_images[labels == c].float().mean(0) for c in range(num_classes)])
    pairs = balanced_class_pairs(num_classes, gen)
    order = class_sample_order(labels, num_classes, gen)
    starts, targets = [], []
    for j in range(count):
        a, b = pairs[j % len(pairs)]
        cycle = j // len(pairs)
        starts.append(centroids[a] if cycle == 0 else train_images[order[a][(cycle - 1) % len(order[a])]].float())
        targets.append(b)
    return torch.stack(starts), torch.tensor(targets)


@register_family("pgd", needs=NEEDS)
def pgd_from_centroids(count: int, shape: tuple[int, ...], gen: torch.Generator, *, model: nn.Module,
                       train_images: torch.Tensor, train_labels: torch.Tensor, pgd_step: float = 0.1,
                       pgd_steps: int = 200, **_: Any) -> torch.Tensor:
    """Targeted L2 gradient walks from class centroids μ_a to class b; direction = displacement.

    Each step moves ``pgd_step`` (L2, pixel units) along -∇_x CE(M(x), b) / ||·||; a walk stops
    as soon as M predicts b, or after ``pgd_steps`` steps (its displacement is used either way).
    Every walk takes at least one step: a class mean can already be labelled b (it happens on
    Fashion-MNIST), and its direction is then the first gradient step.
    """
    labels = train_labels.long()
    x0, targets = _pgd_starts(count, train_images, labels, gen)
    x = x0.clone()
    active = torch.ones(count, dtype=torch.bool)
    model.eval()
    dev = _model_device(model)
    for step in range(int(pgd_steps)):
        if step > 0:  # every walk takes at least one step, even from a start M already labels b
            with torch.no_grad():
                pred = model(x.to(dev)).argmax(1).cpu()
            active &= pred != targets
            if not active.any():
                break
        idx = torch.nonzero(active).flatten()
        g = _gradient(model, x[idx], targets[idx])
        norms = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * len(shape)))
        x[idx] = x[idx] - pgd_step * g / norms
    return (x - x0).view(count, *shape)


@register_family("uap", needs=NEEDS)
def universal_perturbations(count: int, shape: tuple[int, ...], gen: torch.Generator, *, model: nn.Module,
                            train_images: torch.Tensor, train_labels: torch.Tensor, uap_radius: float = 5.0,
                            uap_steps: int = 40, uap_shard: int = 64, uap_lr: float = 0.05, **_: Any) -> torch.Tensor:
    """Per-target-class universal perturbations on the L2 sphere of radius ``uap_radius``.

    Direction j targets class t = j mod C and is fitted on data shard j // C (``uap_shard``
    seeded training images of classes != t, disjoint across shards of the same target) by Adam
    ascent on mean log softmax(M(x + r δ/||δ||))_t, from a seeded Gaussian start.
    """
    labels = train_labels.long()
    num_classes = int(labels.max()) + 1
    dev = _model_device(model)
    perm = torch.randperm(labels.numel(), generator=gen)
    starts = torch.randn((count, *shape), generator=gen)
    shards = []
    for j in range(count):
        t, s = j % num_classes, j // num_classes
        others = perm[labels[perm] != t]
        take = torch.arange(s * uap_shard, (s + 1) * uap_shard) % others.numel()
        shards.append(others[take])
    shard_idx = torch.stack(shards)  # [count, shard]
    x = train_images[shard_idx.flatten()].float().to(dev).view(count, uap_shard, *shape)
    targets = (torch.arange(count) % num_classes).to(dev)
    delta = starts.to(dev).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=uap_lr)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(int(uap_steps)):
            unit = delta / delta.flatten(1).norm(dim=1).view(-1, *([1] * len(shape)))
            logits = model((x + uap_radius * unit[:, None]).flatten(0, 1))
            logp = F.log_softmax(logits, dim=1).view(count, uap_shard, -1)
            # Sum of per-direction means: each δ's gradient does not depend on how many are fitted.
            loss = -logp.gather(2, targets.view(count, 1, 1).expand(count, uap_shard, 1)).mean(dim=(1, 2)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return delta.detach().cpu().view(count, *shape)
