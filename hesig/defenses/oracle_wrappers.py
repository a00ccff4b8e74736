"""Oracle-side defenses: wrappers around any :class:`~hesig.oracles.base.Oracle`.

A wrapper sits between the attacker and the oracle that holds the secrets, so every attack meets
it unchanged, with the plaintext and the CKKS oracle alike.
"""

from __future__ import annotations

import torch

from ..core.errors import InvalidValueError
from ..oracles.base import Oracle, OracleWrapper


class RandomizedResponse(OracleWrapper):
    """Flip each released bit independently with probability ``p`` (randomized response).

    p in [0, 0.5): 0 is no defense; 0.5 would make the bit pure noise. The flips are drawn from
    a generator seeded with ``seed``, so a run is reproducible; the attacker sees only the
    flipped bits. Against k independent repetitions of a query, a majority vote errs with
    probability sum_{j > k/2} C(k, j) p^j (1-p)^(k-j): the defense costs the attacker queries,
    not possibility.
    """

    def __init__(self, inner: Oracle, p: float, *, seed: int = 0, budget: int | None = None):
        if not 0.0 <= float(p) < 0.5:
            raise InvalidValueError(f"randomized-response flip probability must be in [0, 0.5), got {p}")
        super().__init__(inner, budget)
        self.p = float(p)
        self._generator = torch.Generator().manual_seed(int(seed))

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        bits = super()._answer(perturbations, rows)
        flip = torch.rand(bits.shape, generator=self._generator) < self.p
        return bits ^ flip
