"""Perturbation direction families N_i (Moran & Juvekar, section 4).

A :class:`Directions` set is a float32 tensor [k, C, H, W] plus the family, seed and parameters
that made it and a content hash. Unless a family says otherwise each direction has unit L2 norm,
so ε is the L2 length of the perturbation ε·N_i in pixel units ([0, 1] images).

Adding a family is one decorated function::

    @register_family("name", needs=())
    def _name(count, shape, gen, **context) -> torch.Tensor  # [count, *shape]

``needs`` lists the context keys (e.g. "train_images", "model") the CLI must supply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .errors import CheckpointError, InvalidValueError, ShapeError
from .io import load_tensors, save_tensors, tensor_hash


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., torch.Tensor]
    needs: tuple[str, ...] = ()
    doc: str = ""


FAMILIES: dict[str, Family] = {}


def register_family(name: str, needs: tuple[str, ...] = ()):
    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        FAMILIES[name] = Family(name, fn, tuple(needs), (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return wrap


def unit_l2(vectors: torch.Tensor) -> torch.Tensor:
    """Scale each direction [k, ...] to unit L2 norm (zero vectors are rejected)."""
    norms = vectors.flatten(1).norm(dim=1)
    if (norms <= 1e-12).any():
        raise InvalidValueError("a direction has zero norm and cannot be normalised")
    return vectors / norms.view(-1, *([1] * (vectors.ndim - 1)))


@register_family("random")
def _random(count: int, shape: tuple[int, ...], gen: torch.Generator, **_: Any) -> torch.Tensor:
    """i.i.d. standard Gaussian entries, scaled to unit L2 norm (the paper's choice)."""
    return unit_l2(torch.randn((count, *shape), generator=gen))


@dataclass
class Directions:
    """A seeded, hashed set of directions. ``vectors``: float32 [k, C, H, W]."""

    vectors: torch.Tensor
    family: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    norm: str = "unit-l2"

    def __post_init__(self):
        if self.vectors.ndim != 4:
            raise ShapeError(f"directions must be [k, C, H, W], got shape {tuple(self.vectors.shape)}")
        if not torch.isfinite(self.vectors).all():
            raise InvalidValueError("directions contain NaN or infinity")
        self.vectors = self.vectors.to(torch.float32).contiguous()

    @property
    def count(self) -> int:
        return self.vectors.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.vectors.shape[1:])

    @property
    def hash(self) -> str:
        return tensor_hash(self.vectors)

    def check_input_shape(self, shape: tuple[int, ...], what: str = "the model input") -> None:
        if tuple(shape) != self.shape:
            raise ShapeError(f"directions have shape {list(self.shape)} but {what} is {list(shape)}")

    def meta(self) -> dict[str, Any]:
        return {"family": self.family, "seed": self.seed, "count": self.count, "shape": list(self.shape),
                "norm": self.norm, "params": self.params, "directions_hash": self.hash, "hesig_version": __version__}

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"directions": self.vectors}, self.meta())

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        tensors, meta = load_tensors(path, what="directions file")
        if "directions" not in tensors or "family" not in meta:
            raise CheckpointError(f"{path} is not a hesig directions file")
        out = cls(tensors["directions"], meta["family"], int(meta.get("seed", 0)), meta.get("params", {}), meta.get("norm", "unit-l2"))
        if meta.get("directions_hash") not in (None, out.hash):
            raise CheckpointError(f"directions file {path} is corrupt: content hash does not match its metadata")
        return out


def make_directions(family: str, count: int, shape: tuple[int, int, int], seed: int = 0, **context: Any) -> Directions:
    """Build ``count`` directions of ``family`` for inputs of ``shape`` (C, H, W)."""
    if family not in FAMILIES:
        raise InvalidValueError(f"unknown direction family '{family}' (choose from {', '.join(FAMILIES)})")
    if count < 1:
        raise InvalidValueError(f"direction count must be >= 1, got {count}")
    fam = FAMILIES[family]
    missing = [k for k in fam.needs if context.get(k) is None]
    if missing:
        raise InvalidValueError(f"direction family '{family}' needs {', '.join(missing)}")
    gen = torch.Generator().manual_seed(int(seed))
    vectors = fam.build(int(count), tuple(shape), gen, **context)
    params = {k: v for k, v in context.items() if isinstance(v, (int, float, str, bool))}
    return Directions(vectors, family, int(seed), params)
