"""Mixes of direction families, interleaved so that every prefix keeps the mixing weights."""

from __future__ import annotations

from typing import Any

import torch

from ...core.errors import InvalidValueError
from .base import FAMILIES, register_family, unit_l2


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """"random:1,centroid:1" -> [("random", 1.0), ("centroid", 1.0)] (weights > 0, families known, no repeats)."""
    parts = []
    for item in str(spec).split(","):
        name, _, weight = item.strip().partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise InvalidValueError(f"mix weight for '{name}' must be a number, got '{weight}'") from None
        mixable = [f for f, fam in FAMILIES.items() if f != "mix" and fam.nested]
        if name not in mixable:  # a mix interleaves prefixes, so its parts need the prefix property
            raise InvalidValueError(f"unknown family '{name}' in mix '{spec}' (choose from {', '.join(mixable)})")
        if not w > 0:
            raise InvalidValueError(f"mix weight for '{name}' must be > 0, got {weight}")
        if any(name == p[0] for p in parts):
            raise InvalidValueError(f"family '{name}' appears twice in mix '{spec}'")
        parts.append((name, w))
    if len(parts) < 2:
        raise InvalidValueError(f"a mix needs at least two families, got '{spec}'")
    return parts


def allocation(weights: list[float], count: int) -> list[int]:
    """Component of each of the ``count`` directions: position j goes to the component furthest
    behind its share w_f·(j+1)/Σw (ties to the first listed), so every prefix is as close to the
    weights as integers allow -- 50 of random:1,centroid:1 is exactly 25 + 25."""
    total = sum(weights)
    taken = [0] * len(weights)
    owner = []
    for j in range(count):
        deficit = [w * (j + 1) / total - n for w, n in zip(weights, taken)]
        f = max(range(len(weights)), key=lambda i: (deficit[i], -i))
        taken[f] += 1
        owner.append(f)
    return owner


@register_family("mix")
def mix(count: int, shape: tuple[int, ...], gen: torch.Generator, *, mix: str | None = None, seed: int = 0,
        **context: Any) -> torch.Tensor:
    """A weighted mix of families ('random:1,centroid:1'), interleaved prefix by prefix."""
    if not mix:
        raise InvalidValueError("family 'mix' needs a mix specification such as 'random:1,centroid:1'")
    parts = parse_mix(mix)
    owner = allocation([w for _, w in parts], count)
    out = torch.empty((count, *shape))
    for f, (name, _) in enumerate(parts):
        rows = [j for j, o in enumerate(owner) if o == f]
        if not rows:
            continue
        fam = FAMILIES[name]
        missing = [k for k in fam.needs if context.get(k) is None]
        if missing:
            raise InvalidValueError(f"direction family '{name}' (in the mix) needs {', '.join(missing)}")
        # Each component uses the mix's seed, so it is exactly that family's own prefix.
        sub = fam.build(len(rows), shape, torch.Generator().manual_seed(seed), seed=seed, **context)
        out[rows] = unit_l2(sub)
    return out


def required_context(family: str, mix: str | None = None) -> tuple[str, ...]:
    """Context keys a family (or every component of a mix) needs, e.g. ("model", "train_images")."""
    if family not in FAMILIES:
        raise InvalidValueError(f"unknown direction family '{family}' (choose from {', '.join(FAMILIES)})")
    if family != "mix":
        return FAMILIES[family].needs
    if not mix:
        raise InvalidValueError("family 'mix' needs a mix specification such as 'random:1,centroid:1' (--mix)")
    needs: list[str] = []
    for name, _ in parse_mix(mix):
        needs += [k for k in FAMILIES[name].needs if k not in needs]
    return tuple(needs)
