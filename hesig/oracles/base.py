"""The label-change oracle protocol (Moran & Juvekar, section 3).

An oracle holds one or many secret inputs X_r. The attacker hands it perturbations N and row
indices r and learns, per query, one bit: ``argmax M(X_r + N) == argmax M(X_r)``. It never sees
X, logits, labels or keys. Every answered query is counted; an optional budget ends the attack
with :class:`~hesig.core.errors.QueryBudgetExhausted` *before* the call that would exceed it, so the
count never overshoots.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..core.errors import InvalidValueError, QueryBudgetExhausted, ShapeError


class Oracle(ABC):
    """Base class. Subclasses implement :meth:`_answer`; callers use :meth:`same_label`.

    Attributes visible to the attacker: ``num_rows``, ``input_shape`` (C, H, W), ``capacity``
    (how many queries one call answers most efficiently: a forward batch, or a CKKS slot count),
    ``device`` (where perturbations are best built), ``queries`` (answered so far), ``budget``.
    """

    capacity: int = 512
    device: torch.device = torch.device("cpu")
    #: How many secret rows the oracle can work on at once without its memory growing (None: all).
    #: The search fingerprints rows in groups of this size and releases each group when done.
    rows_at_once: int | None = None

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
        Returns bool [Q] on the device of ``rows``: True where the top-1 class is unchanged
        (the search engine keeps its rows on a GPU oracle's device, so no answer crosses to the host).
        """
        if perturbations.ndim != 4 or tuple(perturbations.shape[1:]) != self.input_shape:
            raise ShapeError(f"perturbations have shape {tuple(perturbations.shape)}, expected [Q, {', '.join(map(str, self.input_shape))}]")
        if rows.shape != (perturbations.shape[0],):
            raise ShapeError(f"rows has shape {tuple(rows.shape)}, expected ({perturbations.shape[0]},)")
        count = int(rows.shape[0])
        # Rows on an accelerator come from the search engine, which checked them once on the host;
        # checking them here would stall the device on every call (and indexing asserts anyway).
        if count and rows.device.type == "cpu" and (int(rows.min()) < 0 or int(rows.max()) >= self.num_rows):
            raise ShapeError(f"row index out of range 0..{self.num_rows - 1}")
        if self.budget is not None and self.queries + count > self.budget:
            raise QueryBudgetExhausted(
                f"query budget exhausted: {self.queries} of {self.budget} queries used, the next call needs {count}")
        answer = self._answer(perturbations, rows)
        self.queries += count
        return answer

    @abstractmethod
    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Return bool [Q] (on ``rows``' device): unchanged top-1 for each query."""

    def costs(self) -> dict[str, int | float]:
        """What answering has cost so far, beyond the query count: **additive** counters only
        (bytes, seconds, evaluations, ...), so the costs of several oracles (chunks) add up key by
        key. Empty for the plaintext oracle; the fingerprint file stores whatever this returns."""
        return {}

    def release(self, rows: torch.Tensor) -> None:
        """The attacker is done with these rows: free what the oracle holds for them (no-op by default)."""

    def close(self) -> None:
        """Free what the oracle holds (CKKS sessions, device memory)."""


def add_costs(total: dict[str, int | float], more: dict[str, int | float]) -> dict[str, int | float]:
    """Key-wise sum of two :meth:`Oracle.costs` dicts (floats rounded to 4 decimals)."""
    out = dict(total)
    for key, value in more.items():
        out[key] = out.get(key, 0) + value
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


class OracleWrapper(Oracle):
    """An oracle that wraps another: the pattern for oracle-side defenses and instrumentation.

    The wrapper presents the inner oracle's rows, input shape, capacity and device, counts the
    queries the *attacker* makes (its own ``queries`` / ``budget``) and forwards every call to the
    inner oracle's :meth:`same_label`, so the inner oracle's counters and costs stay exact. A
    subclass overrides :meth:`_answer` (call ``super()._answer`` for the inner bits, then change
    or withhold them); see :class:`hesig.signature.attackers.MajorityVote`.
    """

    def __init__(self, inner: Oracle, budget: int | None = None):
        super().__init__(inner.num_rows, inner.input_shape, budget)
        self.inner = inner
        self.capacity = inner.capacity
        self.device = inner.device
        self.rows_at_once = inner.rows_at_once

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.inner.same_label(perturbations, rows)

    def costs(self) -> dict[str, int | float]:
        return self.inner.costs()

    def release(self, rows: torch.Tensor) -> None:
        self.inner.release(rows)

    def close(self) -> None:
        self.inner.close()
