"""Fingerprint preprocessing: E_x [n, k] -> decoder input [n, 2k].

ε spans orders of magnitude and is a length, so the decoder sees log ε, standardised per
direction with the mean and standard deviation of the *training* fingerprints (stored in the
decoder checkpoint, reused verbatim at inference). Censored pairs (no flip in (0, ε_max]) carry
information too -- "this direction never flips this input" -- so their log ε is set to
log(2·ε_max) (beyond anything observed) and a second block of k inputs holds the censored mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FingerprintFeatures:
    """Fitted standardisation. mean, std: float32 [k]; eps_max: search range of the training set."""

    mean: torch.Tensor
    std: torch.Tensor
    eps_max: float

    @classmethod
    def fit(cls, eps: torch.Tensor, censored: torch.Tensor, eps_max: float) -> "FingerprintFeatures":
        log_eps = cls._log_eps(eps, censored, eps_max)
        return cls(log_eps.mean(0), log_eps.std(0).clamp_min(1e-3), float(eps_max))

    @staticmethod
    def _log_eps(eps: torch.Tensor, censored: torch.Tensor, eps_max: float) -> torch.Tensor:
        return torch.log(torch.where(censored, torch.full_like(eps, 2.0 * eps_max), eps.clamp_min(1e-12)))

    def transform(self, eps: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
        """Return float32 [n, 2k]: standardised log ε, then the censored mask (0/1)."""
        z = (self._log_eps(eps, censored, self.eps_max) - self.mean) / self.std
        return torch.cat([z, censored.float()], dim=1)

    @property
    def in_features(self) -> int:
        return 2 * self.mean.numel()
