"""Direction sets, the family registry and :func:`make_directions`.

A :class:`Directions` set is a float32 tensor [k, C, H, W] plus the family, seed and parameters
that made it and a content hash. Unless a family says otherwise each direction has unit L2 norm,
so ε is the L2 length of the perturbation ε·N_i in pixel units ([0, 1] images).

Adding a family is one decorated function::

    @register_family("name", needs=())
    def _name(count, shape, gen, **context) -> torch.Tensor  # [count, *shape]

``needs`` lists the context keys (e.g. "train_images", "model") the CLI must supply. A family
may instead return :class:`QueryPoints` (vectors plus one ε knot per direction, the points it
was trained to ask at, and what it learned, recorded in the set's params).

**Prefix property.** Every family registered with ``nested=True`` (all but ``learned``) is built
so that ``make_directions(f, k, seed=s)`` equals the first k rows of ``make_directions(f, K,
seed=s)`` for k <= K. A count that is not a multiple of a family's natural block (10 classes,
90 class pairs) therefore takes a well-defined, balanced prefix, and the leakage study can
fingerprint once with K directions and read off every smaller count from the first columns
(tests/test_directions.py checks this for every such family).
``learned`` trains its points jointly, so the first k of a learned set are not a learned set of
k: :meth:`Directions.first` refuses them, and the study builds one set per count.

**Query points.** A set may carry ``knots`` [k, 2^m - 1] in (0, knots_eps_max]: the ε at which
each direction is to be asked (the prior-guided search's knots, :mod:`hesig.signature.prior_search`).
``hesig fingerprint`` then searches the set at its own knots -- exactly m queries per pair --
and the set's hash covers the knots as well as the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ... import __version__
from ...core.errors import CheckpointError, InvalidValueError, ShapeError
from ...core.io import load_tensors, save_tensors, tensor_hash
from ...core.validate import check_field, is_choice, is_int


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., Any]
    needs: tuple[str, ...] = ()
    doc: str = ""
    nested: bool = True  # the prefix property holds (see the module docstring)


FAMILIES: dict[str, Family] = {}


def register_family(name: str, needs: tuple[str, ...] = (), nested: bool = True):
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        FAMILIES[name] = Family(name, fn, tuple(needs), (fn.__doc__ or "").strip().splitlines()[0], nested)
        return fn
    return wrap


@dataclass
class QueryPoints:
    """What a family that learns its query points returns: vectors [k, C, H, W], knots [k, 2^m - 1]
    (L2 units, in (0, eps_max]) and ``params`` (JSON values) describing how they were learned."""

    vectors: torch.Tensor
    knots: torch.Tensor
    eps_max: float
    params: dict[str, Any] = field(default_factory=dict)


def unit_l2(vectors: torch.Tensor) -> torch.Tensor:
    """Scale each direction [k, ...] to unit L2 norm (zero vectors are rejected)."""
    norms = vectors.flatten(1).norm(dim=1)
    if (norms <= 1e-12).any():
        raise InvalidValueError("a direction has zero norm and cannot be normalised")
    return vectors / norms.view(-1, *([1] * (vectors.ndim - 1)))


#: How far a stored direction's L2 norm may be from 1 (float32 rounding of a normalised vector is ~1e-7).
NORM_TOLERANCE = 1e-4


@dataclass
class Directions:
    """A seeded, hashed set of directions. ``vectors``: float32 [k, C, H, W]; ``knots``: None, or
    float64 [k, 2^m - 1], the ε (L2 units, in (0, knots_eps_max]) each direction is asked at."""

    vectors: torch.Tensor
    family: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    norm: str = "unit-l2"
    knots: torch.Tensor | None = None
    knots_eps_max: float | None = None

    def __post_init__(self):
        if self.vectors.ndim != 4:
            raise ShapeError(f"directions must be [k, C, H, W], got shape {tuple(self.vectors.shape)}")
        if not torch.isfinite(self.vectors).all():
            raise InvalidValueError("directions contain NaN or infinity")
        self.vectors = self.vectors.to(torch.float32).contiguous()
        if (self.knots is None) != (self.knots_eps_max is None):
            raise InvalidValueError("query points need both their knots and their eps_max")
        if self.knots is not None:
            if self.knots.ndim != 2 or self.knots.shape[0] != self.count:
                raise ShapeError(f"knots must be [{self.count}, 2^m - 1], got {list(self.knots.shape)}")
            self.knots = self.knots.to(torch.float64).contiguous()
            self.point_search()  # the search validates the knots (levels, range, order) now

    @property
    def nested(self) -> bool:
        """Whether the first k of this set are the family's set of k (the prefix property)."""
        return FAMILIES[self.family].nested if self.family in FAMILIES else True

    def point_search(self):
        """The prior-guided search at this set's own knots (m queries per pair); None without knots."""
        if self.knots is None:
            return None
        from ..prior_search import PriorGuidedSearch  # the search module imports nothing from here
        return PriorGuidedSearch(self.knots, float(self.knots_eps_max),
                                 {"source": "directions", "family": self.family,
                                  "directions_hash": tensor_hash(self.vectors)})

    @property
    def count(self) -> int:
        return self.vectors.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.vectors.shape[1:])

    @property
    def hash(self) -> str:
        """Content hash of the vectors (and of the knots, for query points)."""
        return tensor_hash(self.vectors) if self.knots is None else tensor_hash(self.vectors, self.knots)

    def first(self, k: int) -> "Directions":
        """The first k directions (the prefix property makes this the set of k; a family without
        it gives only its whole set)."""
        if not 1 <= k <= self.count:
            raise InvalidValueError(f"cannot take the first {k} of {self.count} directions")
        if not self.nested or self.knots is not None:
            if k == self.count:
                return self
            raise InvalidValueError(f"the first {k} of {self.count} '{self.family}' directions are not a set of "
                                    f"{k}: the family learns its points jointly, so build a set of {k}")
        return Directions(self.vectors[:k].clone(), self.family, self.seed, {**self.params, "prefix_of": self.hash},
                          self.norm)

    def check_input_shape(self, shape: tuple[int, ...], what: str = "the model input") -> None:
        if tuple(shape) != self.shape:
            raise ShapeError(f"directions have shape {list(self.shape)} but {what} is {list(shape)}")

    def meta(self) -> dict[str, Any]:
        meta = {"family": self.family, "seed": self.seed, "count": self.count, "shape": list(self.shape),
                "norm": self.norm, "params": self.params, "directions_hash": self.hash, "hesig_version": __version__}
        if self.knots is not None:
            meta["query_points"] = {"eps_max": self.knots_eps_max, "steps": self.point_search().steps}
        return meta

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the set (``extra``: more metadata, e.g. the job identity)."""
        tensors = {"directions": self.vectors} if self.knots is None else {"directions": self.vectors, "knots": self.knots}
        return save_tensors(path, tensors, {**self.meta(), **(extra or {})})

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        tensors, meta = load_tensors(path, what="directions file")
        if "directions" not in tensors or "family" not in meta:
            raise CheckpointError(f"{path} is not a hesig directions file")
        check_field(meta, "family", path, f"one of {', '.join(FAMILIES)}", lambda v: is_choice(v, FAMILIES))
        check_field(meta, "seed", path, "an integer", is_int)
        check_field(meta, "norm", path, "'unit-l2'", lambda v: v in (None, "unit-l2"))
        check_field(meta, "params", path, "a JSON object", lambda v: v is None or isinstance(v, dict))
        vectors = tensors["directions"]
        if vectors.ndim != 4 or vectors.shape[0] < 1 or not vectors.is_floating_point():
            raise CheckpointError(f"{path}: directions must be a float tensor [k >= 1, C, H, W], "
                                  f"got {str(vectors.dtype).removeprefix('torch.')} {list(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise CheckpointError(f"{path}: directions contain NaN or infinity")
        norms = vectors.double().flatten(1).norm(dim=1)
        worst = int((norms - 1).abs().argmax())
        if abs(float(norms[worst]) - 1) > NORM_TOLERANCE:
            raise CheckpointError(f"{path}: direction {worst} has L2 norm {float(norms[worst]):.6g}, "
                                  f"but every direction must have unit norm (within {NORM_TOLERANCE:g})")
        points = meta.get("query_points")
        if ("knots" in tensors) != (points is not None):
            raise CheckpointError(f"{path}: query points need both the knots tensor and their 'query_points' metadata")
        eps_max = None
        if points is not None:
            check_field(meta, "query_points", path, "a JSON object with eps_max",
                        lambda v: isinstance(v, dict) and isinstance(v.get("eps_max"), (int, float)))
            eps_max = float(points["eps_max"])
        try:
            out = cls(vectors, meta["family"], meta["seed"], meta.get("params") or {}, "unit-l2",
                      tensors.get("knots"), eps_max)
        except (InvalidValueError, ShapeError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        if meta.get("directions_hash") not in (None, out.hash):
            raise CheckpointError(f"directions file {path} is corrupt: content hash does not match its metadata")
        return out


def make_directions(family: str, count: int, shape: tuple[int, int, int], seed: int = 0, progress: bool = False,
                    **context: Any) -> Directions:
    """Build ``count`` directions of ``family`` for inputs of ``shape`` (C, H, W); ``progress``: a
    progress bar where the family trains (not part of the set's params)."""
    if family not in FAMILIES:
        raise InvalidValueError(f"unknown direction family '{family}' (choose from {', '.join(FAMILIES)})")
    if count < 1:
        raise InvalidValueError(f"direction count must be >= 1, got {count}")
    fam = FAMILIES[family]
    missing = [k for k in fam.needs if context.get(k) is None]
    if missing:
        raise InvalidValueError(f"direction family '{family}' needs {', '.join(missing)}")
    gen = torch.Generator().manual_seed(int(seed))
    built = fam.build(int(count), tuple(shape), gen, seed=int(seed), progress=progress, **context)
    points = built if isinstance(built, QueryPoints) else None
    vectors = built.vectors if points else built
    if tuple(vectors.shape) != (count, *shape):
        raise ShapeError(f"family '{family}' built {tuple(vectors.shape)}, expected {(count, *shape)}")
    params = {k: v for k, v in context.items() if isinstance(v, (int, float, str, bool))}
    if points is None:
        return Directions(unit_l2(vectors), family, int(seed), params)
    # Learned vectors are kept as trained (already unit norm; their knots were learned for these bits).
    return Directions(vectors, family, int(seed), {**params, **points.params}, knots=points.knots,
                      knots_eps_max=float(points.eps_max))


def balanced_class_pairs(num_classes: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """All C(C-1) ordered pairs (source a, target b), a != b, in blocks of C.

    Block s pairs every class a with (a + shift_s) mod C for one shift, so each block of C uses
    every class exactly once as source and once as target: any prefix of a multiple of C is
    class-balanced, and a shorter prefix never repeats a class. The order of the shifts and of
    the classes inside a block is a seeded shuffle.
    """
    shifts = (torch.randperm(num_classes - 1, generator=gen) + 1).tolist()
    pairs = []
    for shift in shifts:
        for a in torch.randperm(num_classes, generator=gen).tolist():
            pairs.append((a, (a + shift) % num_classes))
    return pairs


def class_sample_order(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A seeded permutation of the indices of each class c (list of C LongTensors)."""
    order = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() == 0:
            raise InvalidValueError(f"the attacker's training data has no images of class {c}")
        order.append(idx[torch.randperm(idx.numel(), generator=gen)])
    return order
