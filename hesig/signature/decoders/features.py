"""Fingerprint preprocessing: E_x [n, k] -> decoder input [n, 2k].

Two encodings of each direction's ε, both fitted on the *training* fingerprints only and stored in
the decoder checkpoint (reused verbatim at inference):

* ``log`` (default): ε spans orders of magnitude and is a length, so the decoder sees log ε,
  standardised per direction with the training mean and standard deviation. Censored pairs (no
  flip in (0, ε_max]) carry information too -- "this direction never flips this input" -- so
  their log ε is set to log(2·ε_max) (beyond anything observed).
* ``rank``: each ε's mid-rank u in (0, 1) among the direction's training fingerprints (censored
  pairs rank above every flip), then standardised. For the prior-guided search
  (:mod:`hesig.signature.prior_search`), whose ε is one of 2^M quantile knots, u is the quantile
  level the search ended in, evenly spaced, where log ε spaces the levels as the knots happen to
  lie (and puts the censored level far off). The ranks are read from a table of ``RANK_TABLE``
  training quantiles per direction (exact for a search with fewer distinct values than that).

A second block of k inputs holds the censored mask in both encodings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.defaults import DECODER_FEATURES as FEATURE_KINDS
from ...core.errors import InvalidValueError

#: Training quantiles kept per direction for the rank encoding (the checkpoint's ``features.table``).
RANK_TABLE = 1025


@dataclass
class FingerprintFeatures:
    """Fitted preprocessing. mean, std: float32 [k] of the encoded training fingerprints;
    eps_max: search range of the training set; table: float32 [k, T] sorted training quantiles of
    each direction (censored as 2·ε_max) for the rank encoding, None for log."""

    mean: torch.Tensor
    std: torch.Tensor
    eps_max: float
    table: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return "log" if self.table is None else "rank"

    @classmethod
    def fit(cls, eps: torch.Tensor, censored: torch.Tensor, eps_max: float, kind: str = "log") -> "FingerprintFeatures":
        if kind not in FEATURE_KINDS:
            raise InvalidValueError(f"decoder features must be one of {', '.join(FEATURE_KINDS)}, got {kind!r}")
        table = None
        if kind == "rank":
            values = cls._with_censored(eps, censored, eps_max).sort(dim=0).values  # [n, k]
            at = torch.linspace(0, values.shape[0] - 1, min(RANK_TABLE, values.shape[0])).round().long()
            table = values[at].T.contiguous()  # [k, T]
        encoded = cls(torch.zeros(eps.shape[1]), torch.ones(eps.shape[1]), float(eps_max), table)._encode(eps, censored)
        return cls(encoded.mean(0), encoded.std(0).clamp_min(1e-3), float(eps_max), table)

    @staticmethod
    def _with_censored(eps: torch.Tensor, censored: torch.Tensor, eps_max: float) -> torch.Tensor:
        return torch.where(censored, torch.full_like(eps, 2.0 * eps_max), eps.clamp_min(1e-12))

    def _encode(self, eps: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
        """[n, k] before standardisation: log ε, or the mid-rank u among the training quantiles."""
        values = self._with_censored(eps, censored, self.eps_max)
        if self.table is None:
            return torch.log(values)
        v = values.T.contiguous()  # [k, n]: searchsorted works row by row on the table [k, T]
        below = torch.searchsorted(self.table, v, right=False).double()
        upto = torch.searchsorted(self.table, v, right=True).double()
        return ((below + upto) / (2 * self.table.shape[1])).float().T

    def transform(self, eps: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
        """Return float32 [n, 2k]: the standardised encoding of ε, then the censored mask (0/1)."""
        z = (self._encode(eps, censored) - self.mean) / self.std
        return torch.cat([z, censored.float()], dim=1)

    @property
    def in_features(self) -> int:
        return 2 * self.mean.numel()
