"""Data-free direction families: Gaussian and Rademacher noise."""

from __future__ import annotations

from typing import Any

import torch

from .base import register_family


@register_family("random")
def random_gaussian(count: int, shape: tuple[int, ...], gen: torch.Generator, **_: Any) -> torch.Tensor:
    """i.i.d. standard Gaussian entries, scaled to unit L2 norm (the paper's choice)."""
    return torch.randn((count, *shape), generator=gen)


@register_family("rademacher")
def rademacher(count: int, shape: tuple[int, ...], gen: torch.Generator, **_: Any) -> torch.Tensor:
    """i.i.d. ±1 entries (each sign with probability 1/2), scaled to unit L2 norm: every pixel moves by 1/sqrt(d)."""
    return torch.randint(0, 2, (count, *shape), generator=gen).float() * 2 - 1
