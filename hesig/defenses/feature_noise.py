"""Defenses of He et al. (ACSAC 2019, §7.4) that change what the untrusted party observes.

Deeper splits and a fully connected layer on the trusted side need no code: they are split
points (``--split``). This module holds the one that does -- Gaussian noise on the intermediate
output, v = f_θ1(x) + σ·n with n ~ N(0, I) -- and the accuracy the split model keeps under it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import InvalidValueError


class FeatureNoise:
    """v -> v + σ·N(0, I), σ in the features' own units; every call draws from one seeded stream.

    Applied on the trusted side to *everything* it sends, so the adversary's queries (black-box)
    are answered with noise too. σ = 0 is the identity.
    """

    def __init__(self, sigma: float = 0.0, seed: int = 0):
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise InvalidValueError(f"feature noise sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return features
        noise = torch.randn(features.shape, generator=self.generator, dtype=features.dtype)
        return features + self.sigma * noise.to(features.device)


@torch.no_grad()
def edge_features(edge: nn.Module, images: torch.Tensor, noise: FeatureNoise | None = None,
                  batch_size: int = 2048) -> torch.Tensor:
    """f_θ1(images) [+ noise] -> [N, ...] on CPU; images [N, C, H, W]."""
    device = next(edge.parameters()).device
    edge.eval()
    out = torch.cat([edge(images[s:s + batch_size].to(device)).cpu() for s in range(0, len(images), batch_size)])
    return noise(out) if noise is not None else out


@torch.no_grad()
def split_accuracy(edge: nn.Module, cloud: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   noise: FeatureNoise | None = None, batch_size: int = 2048) -> float:
    """Top-1 accuracy (0..1) of cloud(edge(x) + noise) against ``labels`` [N]."""
    feats = edge_features(edge, images, noise, batch_size)
    device = next(cloud.parameters()).device if any(True for _ in cloud.parameters()) else torch.device("cpu")
    cloud.eval()
    correct = 0
    for s in range(0, len(feats), batch_size):
        correct += (cloud(feats[s:s + batch_size].to(device)).argmax(1).cpu() == labels[s:s + batch_size]).sum().item()
    return correct / max(1, len(labels))
