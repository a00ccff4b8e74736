"""The label-change oracle protocol (Moran & Juvekar, section 3).

An oracle holds one or many secret inputs X_r. The attacker hands it perturbations N and row
indices r and learns, per query, one bit: ``argmax M(X_r + N) == argmax M(X_r)``. It never sees
X, logits, labels or keys. Every answered query is counted; an optional budget ends the attack
with :class:`~hesig.errors.QueryBudgetExhausted` *before* the call that would exceed it, so the
count never overshoots.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import InvalidValueError, QueryBudgetExhausted, ShapeError


class Oracle(ABC):
    """Base class. Subclasses implement :meth:`_answer`; callers use :meth:`same_label`.

    Attributes visible to the attacker: ``num_rows``, ``input_shape`` (C, H, W), ``capacity``
    (how many queries one call answers most efficiently: a forward batch, or a CKKS slot count),
    ``device`` (where perturbations are best built), ``queries`` (answered so far), ``budget``.
    """

    capacity: int = 512
    device: torch.device = torch.device("cpu")

    def __init__(self, num_rows: int, input_shape: tuple[int, int, int], budget: int | None = None):
        if budget is not None and budget < 0:
            raise InvalidValueError(f"query budget must be >= 0, got {budget}")
        self.num_rows = int(num_rows)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.budget = budget
        self.queries = 0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def same_label(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Answer ``len(rows)`` queries.

        perturbations: float32 [Q, C, H, W], added to the secret row ``rows[q]``.
        rows: int64 [Q], indices into this oracle's secrets.
        Returns bool [Q] on the CPU: True where the top-1 class is unchanged.
        """
        if perturbations.ndim != 4 or tuple(perturbations.shape[1:]) != self.input_shape:
            raise ShapeError(f"perturbations have shape {tuple(perturbations.shape)}, expected [Q, {', '.join(map(str, self.input_shape))}]")
        if rows.shape != (perturbations.shape[0],):
            raise ShapeError(f"rows has shape {tuple(rows.shape)}, expected ({perturbations.shape[0]},)")
        count = int(rows.shape[0])
        if count and (int(rows.min()) < 0 or int(rows.max()) >= self.num_rows):
            raise ShapeError(f"row index out of range 0..{self.num_rows - 1}")
        if self.budget is not None and self.queries + count > self.budget:
            raise QueryBudgetExhausted(
                f"query budget exhausted: {self.queries} of {self.budget} queries used, the next call needs {count}")
        answer = self._answer(perturbations, rows)
        self.queries += count
        return answer

    @abstractmethod
    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Return bool [Q] (CPU): unchanged top-1 for each query."""
