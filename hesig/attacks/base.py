"""The one protocol of the sibling attacks: an adversary gets only what its threat model grants.

An :class:`Attack` is built from its parameters alone (validated in ``__init__``, scikit-learn
style), learns from exactly one kind of *knowledge* in :meth:`Attack.fit`, and turns an
*observation* -- what the untrusted party sees of a victim's inference -- into images with
:meth:`Attack.reconstruct`::

    attack = RMLE(iterations=500).fit(WhiteBoxEdge(edge, (1, 28, 28)))
    result = attack.reconstruct(observed_features)        # -> Reconstruction

The knowledge types spell each threat model out in code, so an adversary can never use more
than it is given; handing one the wrong kind is refused with one line:

======================  ========================================================  ==========================
knowledge               what the adversary holds                                  attack (observation)
======================  ========================================================  ==========================
:class:`WhiteBoxEdge`   the edge part f_θ1 itself (weights) and its input shape  rMLE (edge outputs v0)
:class:`EdgeQueryAccess` the answers f_θ1(x_i) to its m queries x_i              inverse network (v0)
:class:`ShadowKnowledge` the cloud part f_θ2, the edge's structure, labelled data shadow model + rMLE (v0)
:class:`LabelledData`   its own labelled training data                            vicious classifier
                                                                                  (released vectors y^)
======================  ========================================================  ==========================
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.errors import InvalidValueError, ShapeError


@dataclass(frozen=True)
class Reconstruction:
    """What an attack returns.

    images: float32 [n, C, H, W] in [0, 1], one per observed victim (CPU).
    queries: inputs the adversary had the target evaluate for it -- the attack's query cost, the
    queries spent in :meth:`Attack.fit` included (0 for white-box and query-free adversaries).
    seconds: wall time of this :meth:`Attack.reconstruct` call (training time is in ``details``).
    details: attack-specific figures (feature distances, training losses, ...), JSON-serialisable.
    """

    images: torch.Tensor
    queries: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


# -- what each threat model grants ------------------------------------------------------------------

@dataclass(frozen=True)
class WhiteBoxEdge:
    """The edge part f_θ1 (weights included) and the shape [C, H, W] of its inputs (He et al. §4)."""

    edge: nn.Module
    in_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.in_shape) != 3:
            raise ShapeError(f"in_shape must be [C, H, W], got {list(self.in_shape)}")
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))


@dataclass(frozen=True)
class EdgeQueryAccess:
    """Black-box access, used up: the adversary's m queries ``query_inputs`` [m, C, H, W] and the
    trusted side's ``answers`` [m, ...] = f_θ1(x_i) (plus whatever noise the trusted side adds)."""

    query_inputs: torch.Tensor
    answers: torch.Tensor

    def __post_init__(self) -> None:
        x, v = self.query_inputs, self.answers
        if v.shape[0] != x.shape[0] or x.ndim != 4 or x.shape[0] < 1:
            raise ShapeError(f"need m >= 1 matching pairs, got answers {list(v.shape)} and inputs {list(x.shape)}")
        if not (torch.isfinite(v).all() and torch.isfinite(x).all()):
            raise InvalidValueError("query answers or inputs contain NaN or infinity")

    @property
    def queries(self) -> int:
        return int(self.query_inputs.shape[0])


@dataclass(frozen=True)
class ShadowKnowledge:
    """Query-free (He et al. §6): the cloud part f_θ2, an ``edge_template`` with the edge's
    *structure* only (its weights are never read), and labelled ``images`` [m, C, H, W] in
    [0, 1] with ``labels`` [m] int64 from the training distribution."""

    edge_template: nn.Sequential
    cloud: nn.Module
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.ndim != 4 or tuple(y.shape) != (x.shape[0],) or x.shape[0] < 1:
            raise ShapeError(f"need images [m, C, H, W] and labels [m], got {list(x.shape)} and {list(y.shape)}")


def check_labelled(images: torch.Tensor, labels: Any, num_classes: int | None = None) -> torch.Tensor:
    """The task needs labels: int64 [N] in [0, num_classes) with at least two classes present."""
    if labels is None:
        raise InvalidValueError("this dataset has no labels; a vicious classifier is trained for a labelled task")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or tuple(labels.shape) != (images.shape[0],):
        raise InvalidValueError(f"labels must be integer classes [{images.shape[0]}], got {labels.dtype} {list(labels.shape)}")
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        raise InvalidValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    if labels.unique().numel() < 2:
        raise InvalidValueError("the labels hold fewer than two classes: there is no classification task to hide behind")
    return labels


@dataclass(frozen=True)
class LabelledData:
    """The server's own labelled training data: ``images`` float32 [N, C, H, W] in [0, 1], ``labels``
    [N] (checked and stored as int64), ``num_classes`` (default: the largest label + 1)."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int | None = None

    def __post_init__(self) -> None:
        from ..evaluation.metrics import check_images
        check_images(self.images, "training images")
        labels = check_labelled(self.images, self.labels, self.num_classes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "num_classes", int(self.num_classes or int(labels.max()) + 1))


# -- the protocol -------------------------------------------------------------------------------------

class Attack(ABC):
    """An adversary. Subclasses set ``knowledge`` (the one type :meth:`fit` accepts) and ``name``,
    validate their parameters in ``__init__``, and implement :meth:`_fit` and :meth:`_reconstruct`."""

    knowledge: ClassVar[type]
    name: ClassVar[str]
    _fitted: bool = False

    def fit(self, knowledge: Any, **options: Any) -> "Attack":
        """Learn from what the threat model grants (``options``: attack-specific); returns self."""
        if not isinstance(knowledge, self.knowledge):
            raise InvalidValueError(f"the {self.name} adversary receives {self.knowledge.__name__}, "
                                    f"not {type(knowledge).__name__}")
        self._fit(knowledge, **options)
        self._fitted = True
        return self

    def reconstruct(self, observation: torch.Tensor, **options: Any) -> Reconstruction:
        """Images [n, C, H, W] in [0, 1] from what the adversary observes of n victims."""
        if not self._fitted:
            raise InvalidValueError(f"the {self.name} is not trained yet (call fit first)")
        if not torch.isfinite(observation).all():
            raise InvalidValueError("the observation contains NaN or infinity")
        t0 = time.perf_counter()
        images, details = self._reconstruct(observation, **options)
        return Reconstruction(images, self.queries, time.perf_counter() - t0, details)

    @property
    def queries(self) -> int:
        """Queries to the target this adversary has spent (fit included); 0 unless it queries."""
        return 0

    @abstractmethod
    def _fit(self, knowledge: Any, **options: Any) -> None:
        """Learn from ``knowledge`` (already type-checked)."""

    @abstractmethod
    def _reconstruct(self, observation: torch.Tensor, **options: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """(images float32 [n, C, H, W] in [0, 1] on the CPU, details) for a finite ``observation``."""
