"""Reconstruction risk R of Malekzadeh & Gunduz, eq. (6): a Mahalanobis-distance ratio.

``R = 1/N * sum_n d(x_n, mu) / d(x_n, x~_n)`` with ``d(a, b) = sqrt((a - b)^T Sigma^+ (a - b))``
and ``mu``, ``Sigma`` the mean and covariance of the *training* images (flattened to C*H*W
values). A reconstruction as far from ``x`` as the mean image is scores 1 per image; better
reconstructions of rarer (far-from-the-mean) images score higher.

Regularisation, stated because image covariances are singular (a resized MNIST digit has pixels
that are black in every training image, and 1,024 pixels are strongly correlated):

* ``"pinv"`` (default, what their code does): the Moore-Penrose pseudo-inverse, eigenvalues
  below ``rtol * largest`` treated as zero. ``rtol`` defaults to ``D * eps_float32`` (D = C*H*W),
  which is ``torch.linalg.pinv``'s default on the float32 covariance their code inverts; we
  compute in float64 so the cut-off, not round-off, decides which directions count.
* ``"shrinkage"``: ``Sigma + lambda * (tr(Sigma) / D) * I`` inverted exactly (ridge toward a
  scaled identity; ``lambda`` = ``shrinkage``). Never singular, and less dominated by the
  near-zero-variance directions that the pseudo-inverse keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.defaults import RISK_REGULARISATIONS
from ..core.errors import InvalidValueError, ShapeError
from .metrics import check_images

REGULARISATIONS = RISK_REGULARISATIONS
#: float32 machine epsilon: the pinv cut-off is D times this (torch's default for float32 inputs).
_EPS32 = float(torch.finfo(torch.float32).eps)
#: Distances below this are treated as this (a perfect reconstruction would divide by zero).
DIST_FLOOR = 1e-12


@dataclass
class ReconstructionRisk:
    """Fitted ``mu`` float64 [D] and ``precision`` float64 [D, D] (the regularised inverse of Sigma)."""

    mean: torch.Tensor
    precision: torch.Tensor
    regularisation: str
    strength: float

    @classmethod
    def fit(cls, train_images: torch.Tensor, regularisation: str = "pinv", rtol: float | None = None,
            shrinkage: float = 1e-2) -> "ReconstructionRisk":
        """Estimate ``mu`` and ``Sigma`` (unbiased, N - 1) from ``train_images`` [N, C, H, W]."""
        if regularisation not in REGULARISATIONS:
            raise InvalidValueError(f"unknown regularisation '{regularisation}' (choose from {', '.join(REGULARISATIONS)})")
        check_images(train_images, "train_images")
        x = train_images.detach().reshape(train_images.shape[0], -1).double()
        n, d = x.shape
        if n < 2:
            raise InvalidValueError("the reconstruction risk needs at least 2 training images for a covariance")
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / (n - 1)
        if regularisation == "pinv":
            strength = float(d * _EPS32 if rtol is None else rtol)
            if not strength >= 0:
                raise InvalidValueError(f"rtol must be >= 0, got {rtol}")
            precision = torch.linalg.pinv(cov, rtol=strength, hermitian=True)
        else:
            strength = float(shrinkage)
            if not strength > 0:
                raise InvalidValueError(f"shrinkage must be > 0, got {shrinkage}")
            eye = torch.eye(d, dtype=cov.dtype)
            precision = torch.linalg.inv(cov + strength * float(torch.trace(cov)) / d * eye)
        return cls(mean, precision, regularisation, strength)

    def mahalanobis(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``d(a_i, b_i)`` for rows of ``a``, ``b`` ([N, ...] or broadcastable [D]) -> float64 [N]."""
        a2 = a.detach().reshape(a.shape[0], -1).double() if a.ndim > 1 else a.detach().double()[None]
        b2 = b.detach().reshape(b.shape[0], -1).double() if b.ndim > 1 else b.detach().double()[None]
        if a2.shape[1] != self.mean.numel() or b2.shape[1] != self.mean.numel():
            raise ShapeError(f"risk was fitted on {self.mean.numel()} values per image, got {a2.shape[1]} and {b2.shape[1]}")
        diff = a2 - b2
        quad = torch.einsum("nj,jk,nk->n", diff, self.precision, diff).clamp_min(0.0)
        return quad.sqrt()

    def per_image(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``d(x_n, mu) / d(x_n, x~_n)`` per image -> float64 [N] (the terms of eq. 6)."""
        if recon.shape != target.shape:
            raise ShapeError(f"reconstructions {tuple(recon.shape)} and targets {tuple(target.shape)} differ in shape")
        to_mean = self.mahalanobis(target, self.mean)
        to_recon = self.mahalanobis(target, recon).clamp_min(DIST_FLOOR)
        return to_mean / to_recon

    def score(self, recon: torch.Tensor, target: torch.Tensor) -> float:
        """R of eq. (6): the mean of :meth:`per_image`."""
        return float(self.per_image(recon, target).mean())

    def describe(self) -> dict:
        key = "rtol" if self.regularisation == "pinv" else "shrinkage"
        return {"regularisation": self.regularisation, key: self.strength, "dims": int(self.mean.numel())}


__all__ = ["ReconstructionRisk", "REGULARISATIONS"]
